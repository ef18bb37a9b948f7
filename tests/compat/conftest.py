"""The proxy the client programs talk to, and the runner that starts them in their own
environments.

One proxy per module, on a loopback port, over two in-process llama.cpp tiers: ``stream-local``
is Qwen2.5-Coder-0.5B-Instruct (plain and structured answers: a JSON-schema grammar makes its
JSON valid on any CPU) and ``stream-hpc`` is the 1.5B instruct (it calls tools; the 0.5B does
not reliably). Every access-log line is kept for the tests that read it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ._venvs import ensure_venv, venv_python

CLIENTS_DIR = Path(__file__).parent / "clients"


@dataclass
class Target:
    """Where the clients point: the ``/v1`` base URL, a key and the two model names."""

    url: str
    key: str
    text_model: str = "stream-local"
    tool_model: str = "stream-hpc"
    access: list[dict[str, Any]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        return {**keep, "STREAM_URL": self.url, "STREAM_KEY": self.key,
                "STREAM_MODEL": self.text_model, "STREAM_TOOL_MODEL": self.tool_model,
                "OPENAI_AGENTS_DISABLE_TRACING": "1", "PYTHONUNBUFFERED": "1", **extra}


class _Collect(logging.Handler):
    def __init__(self, into: list[dict[str, Any]]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(json.loads(record.getMessage()))


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The proxy over the two Qwen tiers, with one API key."""
    from stream_langchain import ChatStream, KeywordJudge
    from stream_langchain.proxy import KeyRing, ProxyServer, Store, create_app
    from stream_langchain.proxy.ops import ACCESS_LOGGER
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp
    from stream_langchain.tiers.models import QWEN_15B, model_path

    store = Store(f"sqlite:///{tmp_path_factory.mktemp('compat') / 'proxy.db'}")
    key = KeyRing(store).create("compat")[0]
    chat = ChatStream(local=ChatLlamaCpp(max_tokens=128, temperature=0.0),
                      hpc=ChatLlamaCpp(model_path=model_path(QWEN_15B), max_tokens=128,
                                       temperature=0.0),
                      judge=KeywordJudge(), context_windows={"local": 2048, "hpc": 2048})
    out = Target(url="", key=key)
    logger = logging.getLogger(ACCESS_LOGGER)
    handler, level = _Collect(out.access), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    server = ProxyServer(create_app(chat, store=store)).start()
    out.url = server.url + "/v1"
    try:
        yield out
    finally:
        server.stop()
        logger.removeHandler(handler)
        logger.setLevel(level)
        store.close()


def run_client(env_name: str, script: str, target: Target, *args: str,
               timeout: float = 1500) -> dict[str, dict[str, Any]]:
    """Run ``clients/<script>`` in the ``env_name`` environment; its JSON lines by case."""
    python = venv_python(ensure_venv(env_name))
    proc = subprocess.run([str(python), str(CLIENTS_DIR / script), *args], env=target.env(),
                          capture_output=True, text=True, timeout=timeout, check=False)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            results[data["case"]] = data
    assert results or proc.returncode == 0, proc.stderr[-4000:]
    return results
