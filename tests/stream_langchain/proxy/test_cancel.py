"""A client that disconnects mid-stream cancels the upstream generation: the tier stops
producing tokens (counted where they are made), on the scripted tier and on the HPC path
(ChatHPC over a loopback relay and a thread-pool executor, in front of a paced
OpenAI-compatible backend)."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stream_langchain.proxy import Store
from tests.paced_backend import PacedBackend

from .conftest import ScriptedModel, ServeFn, make_chat, wait_for

MSG = [{"role": "user", "content": "Tell a very long story about a dragon."}]


def read_then_leave(url: str, key: str, model: str, n: int) -> int:
    """Stream, read ``n`` chunks with text, close the connection; returns chunks read."""
    got = 0
    with httpx.stream("POST", url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": MSG, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            got += bool((choices[0].get("delta") or {}).get("content"))
            if got >= n:
                break
    return got


def test_disconnect_stops_the_tier(serve: ServeFn, keys: dict[str, str], store: Store) -> None:
    """After the client closes, the tier generates at most one more token, then nothing."""
    model = ScriptedModel(script=[f" t{i}" for i in range(1000)], delay=0.005)
    server = serve(make_chat(model))
    got = read_then_leave(server.url, keys["user"], "stream", 10)
    wait_for(lambda: len(store.rows()) == 1)
    wait_for(lambda: model.stopped)  # the tier's stream is over: nothing more is generated
    store.flush()
    (row,) = store.rows()
    assert row["status"] == "aborted" and got <= row["output_chunks"]
    assert model.generated < 1000
    assert model.generated - row["output_chunks"] <= 1
    metrics = httpx.get(server.url + "/metrics").text
    assert "stream_proxy_cancelled_total 1.0" in metrics


def test_disconnect_cancels_a_non_streamed_request(serve: ServeFn, keys: dict[str, str],
                                                   store: Store) -> None:
    """A client that gives up on a non-streamed answer cancels the generation too: the tier
    stops and the row says aborted."""
    model = ScriptedModel(script=[f" t{i}" for i in range(1000)], delay=0.005)
    server = serve(make_chat(model))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", timeout=0.5,
                   headers={"authorization": f"Bearer {keys['user']}"},
                   json={"model": "stream", "messages": MSG})
    wait_for(lambda: len(store.rows()) == 1)
    wait_for(lambda: model.stopped)
    store.flush()
    (row,) = store.rows()
    assert model.generated < 1000
    assert row["status"] == "aborted" and row["stream"] is False
    assert model.generated - row["output_chunks"] <= 1


class _Recording(concurrent.futures.ThreadPoolExecutor):
    """A real thread pool that keeps its futures (to read the node function's summary)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.futures: list[concurrent.futures.Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut = super().submit(fn, *args, **kwargs)
        self.futures.append(fut)
        return fut


@pytest.fixture
def recording() -> Iterator[_Recording]:
    ex = _Recording()
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def test_disconnect_stops_the_hpc_node(serve: ServeFn, keys: dict[str, str], store: Store,
                                       recording: _Recording,
                                       hpc_relay: tuple[str, str]) -> None:
    """On the HPC tier the consumer closes the relay channel and the node stops: its
    producer says cancelled and its backend (a paced OpenAI-compatible server that stops
    when its client disconnects, as vLLM does) made at most 2 tokens more than the client
    was sent (the README's promise)."""
    from stream_langchain.tiers.hpc import ChatHPC

    url, secret = hpc_relay
    with PacedBackend(tokens=1000, interval=0.05) as backend:
        hpc = ChatHPC(executor=recording, relay_url=url, relay_secret=secret, model="paced",
                      backend_url=backend.base_url, max_tokens=1000)
        server = serve(make_chat(hpc=hpc))
        got = read_then_leave(server.url, keys["user"], "stream-hpc", 5)
        summary = recording.futures[0].result(timeout=30)
        made = backend.wait_ended(0)
    wait_for(lambda: len(store.rows()) == 1)
    store.flush()
    (row,) = store.rows()
    assert summary["cancelled"] is True and made.reason == "disconnected"
    assert row["status"] == "aborted" and row["tier"] == "hpc" and row["hpc_seconds"] > 0
    assert got == 5 <= row["output_chunks"]
    assert 0 <= made.emitted - got <= 2
    assert 0 <= summary["completion_tokens"] - got <= 2
