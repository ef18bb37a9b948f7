"""The public surface of stream_langchain is pinned (a change here is an API change)."""

from __future__ import annotations

import stream_langchain

EXPECTED = [
    "AllTiersFailed", "CachedJudge", "CapabilityError", "CascadeJudge", "ChatStream", "Complexity",
    "FallbackJudge", "Judge", "JudgeError", "Judgement", "KeywordJudge", "LLMJudge",
    "Settings", "SettingsError", "TierFailure", "model_name",
]


def test_public_surface() -> None:
    assert sorted(stream_langchain.__all__) == sorted(EXPECTED)
    for name in EXPECTED:
        assert getattr(stream_langchain, name) is not None


def test_import_does_not_load_models_or_servers() -> None:
    """Importing the package loads no llama.cpp, no relay server, no torch."""
    import subprocess
    import sys

    code = ("import sys, stream_langchain; "
            "print(sorted(m for m in ('llama_cpp', 'torch', 'sklearn', 'relay.server') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
