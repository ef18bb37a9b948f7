"""Every cookbook recipe runs, offline, as a user would run it (``python cookbook/NAME.py``
from the repository root), and prints what it claims to show."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COOKBOOK = ROOT / "cookbook"
RECORD = r"tier=local model=\S+\.gguf complexity=(LOW|MEDIUM|HIGH) judge=\S+"

# recipe -> patterns its output must contain (checked with re.search, multiline)
EXPECTED: dict[str, list[str]] = {
    "lcel_chain": [r"^A: \S", rf"^routing record: {RECORD}", r'"tier": "local"'],
    # the embedded 0.5B calls tools for real: the multiply call is the model's own
    "langchain_agent": [r"^Running the agent \(tool-capable tiers: local\)",
                        r"^  tool call: multiply\(\{'a': 17, 'b': 23\}\)", r"^A: \S",
                        rf"^routing record: {RECORD}"],
    "rag_llamaindex": [r"^indexed 5 documents", r"^source: relay\.md",
                       rf"^routing record: {RECORD}"],
    "rag_langchain": [r"^retrieved: routing\.md", r"^A: ", rf"^routing record: {RECORD}"],
    "llamaindex_agent": [r"^agent: FunctionAgent",
                         r"^  tool multiply\(\{'a': 12, 'b': 7\}\) -> 84", r"^LLM calls: [1-9]",
                         rf"^last routing record: {RECORD}"],
    "force_tier": [r"^configured tiers: .*local",
                   r"^routed by the judge: tier=\w+",
                   rf"^forced tier='local': {RECORD} override=local",
                   r"^forced via config stream_tier='(\w+)': tier=\1 .* override=\1",
                   rf"^LlamaIndex StreamLLM\(tier='local'\): {RECORD} override=local",
                   r"^an unknown tier is refused: unknown tier 'gpu'"],
    "proxy_openai_client": [r"^created key \w{8} for alice", r"^models: stream, stream-local",
                            r"^A: '\S", r"^route: tier=local model=\S+\.gguf",
                            r"^streamed: '\S", r"^usage: prompt_tokens=\d+ completion_tokens=[1-9]",
                            r"^an unknown model is refused: 404 model_not_found",
                            r"^usage rows: alice local 2 requests"],
}


def _recipes() -> list[str]:
    return sorted(p.stem for p in COOKBOOK.glob("*.py") if not p.name.startswith("_"))


def _run(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "STREAM_CONFIG"}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, f"cookbook/{name}.py"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=240,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_recipe_is_checked_and_documented() -> None:
    """Each cookbook/*.py recipe is listed here and opens with a docstring saying how to run
    it."""
    assert _recipes() == sorted(EXPECTED)
    for name in _recipes():
        doc = ast.get_docstring(ast.parse((COOKBOOK / f"{name}.py").read_text()))
        assert doc and f"python cookbook/{name}.py" in doc, name


def test_rag_documents_are_shipped() -> None:
    """The RAG recipes' document folder ships with the cookbook."""
    assert len(list((COOKBOOK / "data").glob("*.md"))) == 5


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_runs_offline(name: str) -> None:
    """The recipe exits 0 on the embedded stack and prints its answer and routing record."""
    out = _run(name)
    for pattern in EXPECTED[name]:
        assert re.search(pattern, out, flags=re.M), f"{name}: no {pattern!r} in:\n{out}"
