"""ChatHPC over a real loopback relay, real executors and (slow tests) the real llama server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

import relay
from stream_langchain.tiers.hpc import (
    ChatHPC,
    HPCError,
    HPCFirstTokenTimeout,
    HPCQueueTimeout,
    HPCRemoteError,
    HPCTaskError,
)
from stream_langchain.tiers.llama_server import LlamaServer, free_port
from tests.paced_backend import PacedBackend


class RecordingExecutor(concurrent.futures.Executor):
    """A real thread pool that remembers its futures and can rewrite task arguments."""

    def __init__(
        self, workers: int = 2, rewrite: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self._rewrite = rewrite
        self.futures: list[concurrent.futures.Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if self._rewrite is not None:
            args = self._rewrite(args)
        fut = self._pool.submit(fn, *args, **kwargs)
        self.futures.append(fut)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@pytest.fixture
def executor() -> Iterator[RecordingExecutor]:
    ex = RecordingExecutor()
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def dead_backend() -> str:
    """An http URL on a loopback port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def hung_backend() -> Iterator[str]:
    """A loopback TCP server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def _hpc(executor: concurrent.futures.Executor, hpc_relay: tuple[str, str], **kw: Any) -> ChatHPC:
    url, secret = hpc_relay
    kw.setdefault("backend_url", "http://127.0.0.1:9/v1")
    return ChatHPC(
        executor=executor, relay_url=url, relay_secret=secret, model="gemma-3-270m", **kw
    )


# -- configuration and hygiene (fast) ----------------------------------------------------------


def test_secret_never_in_repr_or_serialization(hpc_relay: tuple[str, str]) -> None:
    """The relay secret appears in neither repr, str nor the serialized model."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        llm = _hpc(ex, hpc_relay)
        secret = hpc_relay[1]
        assert secret not in repr(llm)
        assert secret not in str(llm)
        assert secret not in llm.model_dump_json()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relay_url": "http://relay"}, "ws://"),
        ({"relay_secret": None}, "relay_secret"),
        ({"backend_url": "localhost:8000"}, "backend_url"),
        ({"executor": object()}, "Executor"),
    ],
)
def test_bad_configuration_is_named(
    kwargs: dict[str, Any], message: str, hpc_relay: tuple[str, str]
) -> None:
    """Bad constructor arguments fail with an error naming the field."""
    base: dict[str, Any] = {
        "executor": concurrent.futures.ThreadPoolExecutor(1),
        "relay_url": hpc_relay[0],
        "relay_secret": hpc_relay[1],
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ChatHPC(**base)


def test_bind_tools_sends_openai_tools() -> None:
    """bind_tools converts tools to the OpenAI format and forwards tool_choice."""

    def get_weather(city: str) -> str:
        """Weather for a city."""
        return city

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        bound = ChatHPC(executor=ex).bind_tools([get_weather], tool_choice="get_weather")
    kwargs = bound.kwargs  # type: ignore[attr-defined]
    assert kwargs["tools"][0]["function"]["name"] == "get_weather"
    assert kwargs["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_request_body_is_plain_data_with_max_tokens() -> None:
    """The task argument is plain data and carries max_tokens (llama.cpp ignores the new name)."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        llm = ChatHPC(executor=ex, max_tokens=7, temperature=0.0, backend_url="http://n:1/v1")
        body = llm.request_body([HumanMessage("hi")], stop=["\n"])
    assert body["max_tokens"] == 7 and body["stop"] == ["\n"] and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["backend_url"] == "http://n:1/v1"


# -- failures before the first chunk (fast: no model) ------------------------------------------


def test_shut_down_executor_raises_task_error(hpc_relay: tuple[str, str]) -> None:
    """An executor that refuses the task raises HPCTaskError before any chunk."""
    ex = concurrent.futures.ThreadPoolExecutor(1)
    ex.shutdown()
    with pytest.raises(HPCTaskError, match="executor refused"):
        _hpc(ex, hpc_relay).invoke("hi")


def test_backend_down_is_a_remote_error_before_first_chunk(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], dead_backend: str
) -> None:
    """A backend that refuses connections reaches the client as an authentic error frame."""
    chunks: list[AIMessageChunk] = []
    with pytest.raises(HPCRemoteError, match="backend failed") as info:
        for c in _hpc(executor, hpc_relay, backend_url=dead_backend).stream("hi"):
            chunks.append(c)
    assert info.value.tokens == 0 and chunks == []
    summary = executor.futures[0].result(timeout=30)
    assert summary["error_kind"] == "backend" and not summary["ok"]


def test_wrong_key_is_detected(hpc_relay: tuple[str, str], dead_backend: str) -> None:
    """A node holding a different key than the client: the consumer raises, nothing yields."""

    def swap_key(args: tuple[Any, ...]) -> tuple[Any, ...]:
        body, relay_info = args
        return body, {**relay_info, "key": relay.new_key()}

    ex = RecordingExecutor(rewrite=swap_key)
    try:
        with pytest.raises(HPCError, match="WrongKey") as info:
            _hpc(ex, hpc_relay, backend_url=dead_backend).invoke("hi")
        assert isinstance(info.value.__cause__, relay.WrongKey)
    finally:
        ex.shutdown()


def test_task_that_never_starts_hits_queue_timeout(hpc_relay: tuple[str, str]) -> None:
    """With every worker busy the task never starts: HPCQueueTimeout, and it is cancelled."""
    ex = RecordingExecutor(workers=1)
    gate = threading.Event()
    ex.submit(gate.wait, 30)  # occupy the only worker
    try:
        with pytest.raises(HPCQueueTimeout, match="queue_timeout=0.5"):
            _hpc(ex, hpc_relay, queue_timeout=0.5).invoke("hi")
        assert ex.futures[1].cancelled()  # never ran: the slot was given back
    finally:
        gate.set()
        ex.shutdown()


def test_started_task_without_tokens_hits_first_token_timeout(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], hung_backend: str
) -> None:
    """The task starts but the backend never answers: HPCFirstTokenTimeout."""
    llm = _hpc(
        executor, hpc_relay, backend_url=hung_backend, first_token_timeout=0.5, backend_timeout=2.0
    )
    with pytest.raises(HPCFirstTokenTimeout, match="first_token_timeout=0.5"):
        llm.invoke("hi")
    summary = executor.futures[0].result(timeout=30)
    assert not summary["ok"]


def test_relay_down_without_fallback_raises(executor: RecordingExecutor, dead_backend: str) -> None:
    """batch_fallback=False and no relay: a clear error before the first chunk, no task."""
    llm = ChatHPC(
        executor=executor,
        relay_url=f"ws://127.0.0.1:{free_port()}",
        relay_secret="s" * 32,
        backend_url=dead_backend,
        batch_fallback=False,
    )
    with pytest.raises(HPCError, match="could not open the relay channel"):
        llm.invoke("hi")
    assert executor.futures == []


def test_wrong_relay_secret_is_not_hidden_by_batch_fallback(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], dead_backend: str
) -> None:
    """A relay that rejects our tokens is a configuration error, not 'relay down'."""
    llm = ChatHPC(
        executor=executor,
        relay_url=hpc_relay[0],
        relay_secret="wrong" * 8,
        backend_url=dead_backend,
    )
    with pytest.raises(HPCError, match="AuthRejected"):
        llm.invoke("hi")
    assert executor.futures == []


# -- the real path (slow: bundled model behind llama.cpp's server) -----------------------------


@pytest.mark.slow
def test_stream_through_relay_yields_tokens_and_usage(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """Tokens stream through the relay; the aggregate carries usage and hpc_mode=stream."""
    llm = _hpc(executor, hpc_relay, backend_url=llama_server.base_url, max_tokens=12)
    chunks = list(llm.stream("Write one sentence about rivers."))
    texts = [c.content for c in chunks if c.content]
    assert len(texts) >= 2
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == len(texts) <= 12
    assert total.response_metadata["hpc_mode"] == "stream"
    assert (
        0 < total.response_metadata["hpc_backend_ttft_ms"] < total.response_metadata["hpc_total_ms"]
    )
    summary = executor.futures[0].result(timeout=30)
    assert summary["ok"] and summary["frames"] >= len(texts)


@pytest.mark.slow
def test_structured_request_reaches_the_embedded_stand_in(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """response_format json_schema (vLLM's form) goes through the relay to the llama.cpp
    stand-in, which now takes it and answers under the schema's grammar."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    llm = _hpc(executor, hpc_relay, backend_url=llama_server.base_url, max_tokens=40)
    out = llm.invoke("Is water wet? Answer in JSON.", temperature=0, response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    assert isinstance(out.content, str) and out.content.lstrip().startswith("{")
    if out.response_metadata.get("finish_reason") == "stop":
        assert set(json.loads(out.content)) == {"ok"}


@pytest.mark.slow
async def test_astream_and_ainvoke_use_the_same_path(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """The async path streams several chunks and ainvoke aggregates them."""
    llm = _hpc(executor, hpc_relay, backend_url=llama_server.base_url, max_tokens=8)
    pieces = [c.content async for c in llm.astream("Count: one, two,")]
    assert sum(1 for p in pieces if p) >= 2
    msg = await llm.ainvoke("Say hello.")
    assert msg.response_metadata["hpc_mode"] == "stream"
    assert msg.usage_metadata is not None and 1 <= msg.usage_metadata["output_tokens"] <= 8


@pytest.mark.slow
def test_relay_down_falls_back_to_batch_and_says_so(
    executor: RecordingExecutor, llama_server: LlamaServer
) -> None:
    """No relay listening: the answer comes back in batch mode, marked in response_metadata."""
    llm = ChatHPC(
        executor=executor,
        relay_url=f"ws://127.0.0.1:{free_port()}",
        relay_secret="s" * 32,
        backend_url=llama_server.base_url,
        max_tokens=8,
    )
    msg = llm.invoke("Say hello.")
    assert msg.content
    assert msg.response_metadata["hpc_mode"] == "batch"
    assert "relay unreachable" in msg.response_metadata["hpc_fallback_reason"]


@pytest.mark.slow
def test_node_that_cannot_reach_relay_falls_back_to_batch(
    hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """The client reaches the relay but the node does not: batch result, marked."""

    def unreachable_from_node(args: tuple[Any, ...]) -> tuple[Any, ...]:
        body, relay_info = args
        return body, {**relay_info, "url": f"ws://127.0.0.1:{free_port()}"}

    ex = RecordingExecutor(rewrite=unreachable_from_node)
    try:
        llm = _hpc(ex, hpc_relay, backend_url=llama_server.base_url, max_tokens=8)
        msg = llm.invoke("Say hello.")
    finally:
        ex.shutdown()
    assert msg.content
    assert msg.response_metadata["hpc_mode"] == "batch"
    assert "from the HPC node" in msg.response_metadata["hpc_fallback_reason"]


@pytest.mark.slow
def test_backend_dying_mid_stream_raises_after_tokens(
    executor: RecordingExecutor, hpc_relay: tuple[str, str]
) -> None:
    """Killing the backend after tokens flowed raises mid-stream (never a short answer)."""
    with LlamaServer(n_ctx=512, n_threads=1) as server:
        llm = _hpc(executor, hpc_relay, backend_url=server.base_url, max_tokens=400)
        seen = 0
        with pytest.raises(HPCError) as info:
            for c in llm.stream("Tell a very long story about a dragon."):
                if c.content:
                    seen += 1
                if seen == 3:
                    assert server._proc is not None
                    server._proc.kill()
    assert seen >= 3
    assert info.value.tokens >= 3
    summary = executor.futures[0].result(timeout=30)
    assert summary["error_kind"] == "backend"


# -- cancellation and interruption (fast: a scripted backend that paces a long answer) --------
#
# The README promises that at most 2 tokens are generated after the client leaves. These tests
# count at the backend (PacedBackend stops when its HTTP client disconnects, as vLLM does) and
# at the node's producer (the task summary), against what the consumer had received.

AFTER_CLOSE_MAX = 2


@pytest.fixture
def paced() -> Iterator[PacedBackend]:
    with PacedBackend(tokens=1000, interval=0.05) as backend:
        yield backend


def _assert_stopped_soon(summary: dict[str, Any], paced: PacedBackend, received: int) -> None:
    stream = paced.wait_ended(0)
    assert stream.reason == "disconnected"  # the node closed the backend request
    assert summary["cancelled"] is True and summary["error_kind"] == "relay"
    assert 0 <= stream.emitted - received <= AFTER_CLOSE_MAX
    assert 0 <= summary["completion_tokens"] - received <= AFTER_CLOSE_MAX


def test_consumer_that_stops_early_stops_the_producer(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], paced: PacedBackend
) -> None:
    """Closing the stream after two tokens: the node stops, at most 2 tokens later."""
    llm = _hpc(executor, hpc_relay, backend_url=paced.base_url, max_tokens=1000)
    stream = llm.stream("Tell a very long story about a dragon.")
    received = 0
    for chunk in stream:
        assert isinstance(chunk, AIMessageChunk)
        received += bool(chunk.content)
        if received == 2:
            break
    stream.close()
    summary = executor.futures[0].result(timeout=30)
    _assert_stopped_soon(summary, paced, received)


def test_cancelling_an_async_consumer_task_stops_the_producer(
    executor: RecordingExecutor, hpc_relay: tuple[str, str], paced: PacedBackend
) -> None:
    """Cancelling the asyncio task that consumes the stream stops remote generation, at
    most 2 tokens after the cancel."""
    llm = _hpc(executor, hpc_relay, backend_url=paced.base_url, max_tokens=1000)
    received = 0

    async def main() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            nonlocal received
            async for c in llm.astream("Tell a very long story about a dragon."):
                if c.content:
                    received += 1
                    first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    summary = executor.futures[0].result(timeout=30)
    assert received >= 1
    _assert_stopped_soon(summary, paced, received)


def test_backend_that_interrupts_a_stream_is_an_error_not_a_short_answer(
    executor: RecordingExecutor, hpc_relay: tuple[str, str]
) -> None:
    """A backend that ends a stream with a bare [DONE] when another request arrives
    (llama.cpp's interrupt_requests) makes that stream an error, never a cut-short answer;
    the request that interrupted it completes."""
    with PacedBackend(tokens=1000, interval=0.02, interrupt_requests=True) as backend:
        first = _hpc(executor, hpc_relay, backend_url=backend.base_url, max_tokens=1000)
        second = _hpc(executor, hpc_relay, backend_url=backend.base_url, max_tokens=5)
        stream = first.stream("Tell a long story.")
        seen = []
        for chunk in stream:
            if chunk.content:
                seen.append(chunk.content)
                break  # the first request is streaming now
        answer = second.invoke("Tell another long story.")
        with pytest.raises(HPCRemoteError, match="cut short"):
            for chunk in stream:
                seen.append(chunk.content)
        assert backend.wait_ended(0).reason == "interrupted"
    assert seen and len(seen) == backend.streams[0].emitted
    assert answer.response_metadata["finish_reason"] == "length"
    assert answer.content == " t0 t1 t2 t3 t4"
