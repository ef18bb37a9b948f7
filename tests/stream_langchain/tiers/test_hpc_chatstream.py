"""The HPC tier inside ChatStream: routing record, batch fallback, mid-stream failover."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI

from stream_langchain import ChatStream
from stream_langchain.judges import Complexity, Judge, Judgement
from stream_langchain.tiers.hpc import ChatHPC
from stream_langchain.tiers.llama_server import LlamaServer, free_port


class MediumJudge(Judge):
    """Labels everything MEDIUM, so the paper's order hpc > cloud > local applies."""

    name = "always-medium"

    def _judge(self, text: str) -> Judgement:
        return Judgement(Complexity.MEDIUM, 1.0, self.name)


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        yield ex


def _local(server: LlamaServer) -> ChatOpenAI:
    # llama.cpp's server ignores max_completion_tokens: send max_tokens in the body too.
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="unused",
        model="gemma-3-270m",
        extra_body={"max_tokens": 12},
    )


def _router(local: Any, hpc: ChatHPC) -> ChatStream:
    return ChatStream(local=local, hpc=hpc, judge=MediumJudge())


def _record(chunks: list[AIMessageChunk]) -> dict[str, Any]:
    records = [c.response_metadata["stream"] for c in chunks if "stream" in c.response_metadata]
    assert records, "no routing record on the stream"
    return records[-1]


@pytest.mark.slow
def test_medium_query_streams_through_hpc_relay(
    pool: concurrent.futures.Executor, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """A MEDIUM query is answered by the HPC tier in stream mode, and the record says so."""
    hpc = ChatHPC(
        executor=pool,
        relay_url=hpc_relay[0],
        relay_secret=hpc_relay[1],
        backend_url=llama_server.base_url,
        model="gemma-3-270m",
        max_tokens=10,
    )
    chunks = list(_router(_local(llama_server), hpc).stream("Explain tides briefly."))
    rec = _record(chunks)
    assert rec["tier"] == "hpc" and rec["hpc_mode"] == "stream"
    assert rec["fallbacks"] == [] and rec["failover"] is False
    assert sum(1 for c in chunks if c.content) >= 1


@pytest.mark.slow
def test_relay_down_answers_in_batch_mode_and_records_it(
    pool: concurrent.futures.Executor, llama_server: LlamaServer
) -> None:
    """Relay unreachable: the HPC tier still answers (batch), and the record shows why."""
    hpc = ChatHPC(
        executor=pool,
        relay_url=f"ws://127.0.0.1:{free_port()}",
        relay_secret="s" * 32,
        backend_url=llama_server.base_url,
        max_tokens=10,
    )
    msg = _router(_local(llama_server), hpc).invoke("Explain tides briefly.")
    rec = msg.response_metadata["stream"]
    assert rec["tier"] == "hpc" and rec["hpc_mode"] == "batch"
    assert "relay unreachable" in rec["hpc_fallback_reason"]


@pytest.mark.slow
def test_hpc_failure_before_first_token_falls_back_to_next_tier(
    pool: concurrent.futures.Executor, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """HPC backend down: the error frame arrives before any token, ChatStream falls back."""
    hpc = ChatHPC(
        executor=pool,
        relay_url=hpc_relay[0],
        relay_secret=hpc_relay[1],
        backend_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    msg = _router(_local(llama_server), hpc).invoke("Explain tides briefly.")
    rec = msg.response_metadata["stream"]
    assert rec["tier"] == "local" and rec["failover"] is False
    assert rec["fallbacks"][0]["tier"] == "hpc"
    assert "backend failed" in rec["fallbacks"][0]["error"]


@pytest.mark.slow
def test_backend_dying_mid_stream_fails_over_to_next_tier(
    pool: concurrent.futures.Executor, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """vLLM stand-in killed after 3 tokens: error frame, then ChatStream continues elsewhere."""
    with LlamaServer(n_ctx=512, n_threads=1) as doomed:
        hpc = ChatHPC(
            executor=pool,
            relay_url=hpc_relay[0],
            relay_secret=hpc_relay[1],
            backend_url=doomed.base_url,
            max_tokens=300,
        )
        chunks: list[AIMessageChunk] = []
        for chunk in _router(_local(llama_server), hpc).stream("Tell a long story."):
            chunks.append(chunk)
            if sum(1 for c in chunks if c.content) == 3 and doomed.running:
                assert doomed._proc is not None
                doomed._proc.kill()
    rec = _record(chunks)
    assert rec["failover"] is True
    assert rec["tiers"] == ["hpc", "local"]
    assert rec["fallbacks"][0]["tier"] == "hpc"
    assert sum(1 for c in chunks if c.content) > 3  # the answer went on after the failure


@pytest.mark.slow
def test_embedded_chatstream_answers_on_the_hpc_tier() -> None:
    """ChatStream.embedded() brings the HPC stack up itself; tier='hpc' goes through it."""
    llm = ChatStream.embedded(max_tokens=8)
    try:
        assert "hpc" in llm.tiers
        msg = llm.invoke("Hello there.", tier="hpc")
        rec = msg.response_metadata["stream"]
        assert rec["tier"] == "hpc" and rec["hpc_mode"] == "stream"
        assert msg.content
    finally:
        llm.close()
