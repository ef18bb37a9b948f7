"""Every GGUF load runs on every x86 CPU: llama.cpp's extra buffer types (AMX) stay off.

On Xeons with AMX (``amx_int8`` in /proc/cpuinfo) a model loaded with llama.cpp's extra
buffer types segfaults on its first decode (llama.cpp issue 20824). These tests check the
mechanism exactly (the parameters each model was really loaded with, the server's own log),
so they protect the next machine even where this one has no AMX, and generate for real, in a
subprocess where a crash would otherwise take pytest down with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stream_langchain.tiers._llama_cpu import (
    EXTRA_BUFTS_ENV,
    check_loaded,
    extra_bufts_default,
    system_info,
)
from stream_langchain.tiers.llama_server import LlamaServer, describe_exit

REPO = Path(__file__).resolve().parents[3]


def test_extra_bufts_are_off_unless_asked_for() -> None:
    """Off by default and for 0/false; on for 1/true; anything else is a named error."""
    assert extra_bufts_default({}) is False
    assert extra_bufts_default({EXTRA_BUFTS_ENV: "0"}) is False
    assert extra_bufts_default({EXTRA_BUFTS_ENV: "false"}) is False
    assert extra_bufts_default({EXTRA_BUFTS_ENV: "1"}) is True
    assert extra_bufts_default({EXTRA_BUFTS_ENV: "TRUE"}) is True
    with pytest.raises(ValueError, match=EXTRA_BUFTS_ENV):
        extra_bufts_default({EXTRA_BUFTS_ENV: "amx please"})


def test_exit_codes_are_described_in_words() -> None:
    """A server killed by SIGSEGV is reported as a native crash, not as a bare -11."""
    assert describe_exit(1) == "exited with code 1"
    assert "SIGSEGV" in describe_exit(-11) and "native" in describe_exit(-11)
    assert describe_exit(-15) == "was killed by SIGTERM"


@pytest.mark.slow
def test_in_process_chat_model_loads_without_extra_buffer_types() -> None:
    """ChatLlamaCpp's model was loaded with use_extra_bufts=False and generates."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    llm = ChatLlamaCpp(max_tokens=4, temperature=0)
    assert llm.extra_bufts is False
    assert llm._llm.model_params.use_extra_bufts is False
    assert llm.invoke("Say hi").usage_metadata["output_tokens"] > 0


@pytest.mark.slow
def test_embedding_model_loads_without_extra_buffer_types() -> None:
    """The embeddings model (LlamaIndex and cookbook) goes through the same safe loader."""
    from stream_llamaindex.embeddings import embed_texts, load_embedder

    llm, _ = load_embedder()
    assert llm.model_params.use_extra_bufts is False
    assert len(embed_texts(["hello"])[0]) > 0


@pytest.mark.slow
def test_check_loaded_refuses_a_model_loaded_otherwise() -> None:
    """The check is exact: a model whose parameters differ from the wanted ones is an error."""
    from stream_langchain.tiers.llama_server import bundled_model_path
    from stream_langchain.tiers.llamacpp import load_llama

    llm, _ = load_llama(bundled_model_path(), n_ctx=256)
    check_loaded(llm, False)
    with pytest.raises(RuntimeError, match="use_extra_bufts=False, expected True"):
        check_loaded(llm, True)


_GENERATE = textwrap.dedent(
    """
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp
    llm = ChatLlamaCpp(max_tokens=16, temperature=0, n_ctx=512)
    print(repr(llm.invoke("What is the capital of France?").content))
    """
)


@pytest.mark.slow
def test_generation_as_the_project_loads_it_does_not_crash() -> None:
    """A full load + decode in a fresh process exits 0 (a segfault would be named here)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(EXTRA_BUFTS_ENV, None)
    proc = subprocess.run([sys.executable, "-c", _GENERATE], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, (
        f"generation {describe_exit(proc.returncode)}; CPU: {system_info().strip()}\n"
        f"{proc.stderr[-2000:]}")


@pytest.mark.slow
def test_server_subprocess_loads_without_extra_buffer_types() -> None:
    """The llama.cpp server says in its own log what it loaded with, and answers."""
    import httpx

    with LlamaServer(n_ctx=512, n_threads=1) as server:
        log = server.log_tail(200_000)
        assert "stream: llama.cpp extra buffer types off" in log
        assert "use_extra_bufts=False" in log
        assert "AMX model buffer" not in log and "REPACK model buffer" not in log
        resp = httpx.post(server.base_url + "/chat/completions", timeout=120, json={
            "model": server.model_alias, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Say hi"}]})
        assert resp.status_code == 200
        assert server.running
