"""A client that disconnects mid-stream cancels the upstream generation: the tier stops
producing tokens (counted after the close), on the scripted tier and on the real HPC path
(ChatHPC over a loopback relay, a thread-pool executor and llama.cpp's server)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stream_langchain.proxy import Store

from .conftest import ScriptedModel, ServeFn, make_chat, wait_for

MSG = [{"role": "user", "content": "Tell a very long story about a dragon."}]


def read_then_leave(url: str, key: str, model: str, n: int) -> int:
    """Stream, read ``n`` content chunks, close the connection; returns chunks read."""
    got = 0
    with httpx.stream("POST", url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": MSG, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if '"content"' in line:
                got += 1
            if got >= n:
                break
    return got


def test_disconnect_stops_the_tier(serve: ServeFn, keys: dict[str, str], store: Store) -> None:
    """After the client closes, the tier generates at most one more token, then nothing."""
    model = ScriptedModel(script=[f" t{i}" for i in range(1000)], delay=0.005)
    server = serve(make_chat(model))
    got = read_then_leave(server.url, keys["user"], "stream", 10)
    wait_for(lambda: len(store.rows()) == 1)
    store.flush()
    (row,) = store.rows()
    at_close = model.generated
    time.sleep(0.3)  # 60 more tokens' worth of time, had it kept going
    assert model.generated == at_close
    assert row["status"] == "aborted" and got <= row["output_chunks"]
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
    store.flush()
    (row,) = store.rows()
    at_close = model.generated
    time.sleep(0.3)
    assert model.generated == at_close < 1000
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


@pytest.mark.slow
def test_disconnect_stops_the_hpc_node(serve: ServeFn, keys: dict[str, str], store: Store,
                                       recording: _Recording, hpc_relay: tuple[str, str],
                                       llama_server: Any) -> None:
    """On the HPC tier the consumer closes the relay channel and the node's producer stops:
    its summary says cancelled, with few tokens generated after the proxy saw the close."""
    from stream_langchain.tiers.hpc import ChatHPC

    url, secret = hpc_relay
    hpc = ChatHPC(executor=recording, relay_url=url, relay_secret=secret, model="gemma",
                  backend_url=llama_server.base_url, max_tokens=400, temperature=0.0)
    server = serve(make_chat(hpc=hpc))
    read_then_leave(server.url, keys["user"], "stream-hpc", 5)
    summary = recording.futures[0].result(timeout=60)
    wait_for(lambda: len(store.rows()) == 1)
    store.flush()
    (row,) = store.rows()
    assert summary["cancelled"] is True
    assert row["status"] == "aborted" and row["tier"] == "hpc" and row["hpc_seconds"] > 0
    after = summary["completion_tokens"] - row["output_chunks"]
    assert 0 <= after < 400 - row["output_chunks"]
    print(f"HPC tokens generated after the proxy saw the disconnect: {after}")
