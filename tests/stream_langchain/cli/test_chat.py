"""The `stream` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "stream"


def run(args: list[str], tmp_path: Path, stdin: str = "",
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("STREAM_CONFIG", None)
    return subprocess.run([str(BIN), *args], cwd=tmp_path, input=stdin, capture_output=True,
                          text=True, timeout=300, env=full_env)


@pytest.mark.slow
def test_interactive_chat_keeps_history(tmp_path: Path) -> None:
    """Two turns in one session: each answered with its own header and footer."""
    proc = run(["chat", "--no-hpc", "--max-tokens", "4"], tmp_path, stdin="Hello\nAnd again\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[local | qwen2.5-coder-0.5b-instruct") == 2
    assert proc.stdout.count("TTFT") == 2


@pytest.mark.slow
def test_json_output_is_one_object_with_the_record(tmp_path: Path) -> None:
    proc = run(["chat", "--no-hpc", "--json", "--max-tokens", "4", "--tier", "local", "Hi"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stream"]["override"] == "local" and isinstance(out["answer"], str)


def test_unknown_tier_is_rejected_by_the_parser(tmp_path: Path) -> None:
    proc = run(["chat", "--tier", "gpu", "Hi"], tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'gpu'" in proc.stderr


def test_bad_settings_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[local]\nmodle = 'x'\n")
    proc = run(["chat", "--config", str(bad), "Hi"], tmp_path)
    assert proc.returncode == 1
    assert "unknown key 'local.modle'" in proc.stderr and "Traceback" not in proc.stderr


def test_empty_stdin_is_a_clear_error(tmp_path: Path) -> None:
    proc = run(["chat", "-"], tmp_path, stdin="")
    assert proc.returncode == 2 and "no question on stdin" in proc.stderr


def test_footer_names_preferred_tiers_that_were_skipped() -> None:
    """The footer says why a HIGH answer did not come from cloud, but not for an override."""
    from stream_langchain.cli.chat import _footer
    from stream_langchain.record import RouteRecord

    rec = {"tier": "local", "complexity": "HIGH", "ttft_ms": 100.0, "override": None,
           "usage": {"output_tokens": 10}, "fallbacks": [],
           "skipped": [{"tier": "cloud", "reason": "not configured"},
                       {"tier": "hpc", "reason": "circuit open after repeated failures"}]}
    text = _footer(RouteRecord.from_dict(rec), elapsed=1.1)
    assert "skipped: cloud (not configured); hpc (circuit open" in text
    assert "10 tokens | 10.0 tokens/s" in text
    assert "skipped" not in _footer(RouteRecord.from_dict({**rec, "override": "local"}),
                                    elapsed=1.1)
