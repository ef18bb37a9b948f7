"""The public surface of stream_langchain is pinned (a change here is an API change)."""

from __future__ import annotations

import stream_langchain

EXPECTED = [
    "AllTiersFailed", "CachedJudge", "CapabilityError", "CascadeJudge", "ChatStream", "Complexity",
    "FallbackJudge", "Judge", "JudgeError", "Judgement", "KeywordJudge", "LLMJudge",
    "Settings", "SettingsError", "TierFailure", "model_name",
    # errors (one root, stream_langchain.errors)
    "StreamError", "UnsupportedFeature", "HPCError", "ImageFileError", "LlamaServerError",
    "ModelError", "OllamaError",
]


def test_every_public_error_derives_from_the_root_and_keeps_its_builtin() -> None:
    """One root for what STREAM raises; each error still is the built-in callers catch."""
    from stream_langchain import errors

    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.StreamError), name
    assert issubclass(errors.SettingsError, ValueError)
    assert issubclass(errors.CapabilityError, ValueError)
    assert issubclass(errors.UnsupportedFeature, NotImplementedError)
    assert issubclass(errors.HPCIdleTimeout, TimeoutError)
    # the old import paths name the same classes
    from stream_langchain.ollama import OllamaNotRunning
    from stream_langchain.routing import CapabilityError
    from stream_langchain.tiers.hpc_errors import HPCError

    assert CapabilityError is errors.CapabilityError and HPCError is errors.HPCError
    assert OllamaNotRunning is errors.OllamaNotRunning


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
