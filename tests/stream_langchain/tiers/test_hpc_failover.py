"""Several relays and endpoints behind one ChatHPC (#25): real loopback relays, real executors,
a real streaming backend (PacedBackend) and, in the slow test, the embedded stack's model."""

from __future__ import annotations

import concurrent.futures
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import relay
from stream_langchain.tiers.hpc import ChatHPC
from stream_langchain.tiers.hpc_pool import HealthPool
from tests.paced_backend import PacedBackend


class NeverStarts(concurrent.futures.Executor):
    """An endpoint that accepts tasks and never runs them (an offline Globus endpoint)."""

    def __init__(self) -> None:
        self.futures: list[concurrent.futures.Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.futures.append(fut)
        return fut


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def two_relays(secret: str) -> Iterator[list[Any]]:
    handles = [relay.run_in_thread(secret=secret, host="127.0.0.1", port=0) for _ in range(2)]
    try:
        yield handles
    finally:
        for h in handles:
            h.stop()


@pytest.fixture
def backend() -> Iterator[PacedBackend]:
    with PacedBackend(tokens=4, interval=0.001) as b:
        yield b


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    ex = concurrent.futures.ThreadPoolExecutor(2)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _meta(llm: ChatHPC) -> dict[str, Any]:
    return dict(llm.invoke("hello").response_metadata)


def test_health_pool_orders_healthy_first_and_recovers() -> None:
    """A failed target goes last until its cooldown ends; a success clears it at once."""
    now = [0.0]
    pool = HealthPool(["a", "b", "c"], cooldown=10, clock=lambda: now[0])
    assert sorted(pool.order("k")) == ["a", "b", "c"]
    firsts = {pool.order(f"k{i}")[0] for i in range(60)}
    assert firsts == {"a", "b", "c"}  # spread by key
    pool.failed("b", "down")
    assert all(pool.order(f"k{i}")[-1] == "b" for i in range(20))
    assert not pool.healthy("b")
    now[0] = 10.5
    assert pool.healthy("b")
    pool.failed("b", "down again")  # second failure: twice the cooldown
    now[0] = 25.0
    assert not pool.healthy("b")
    pool.succeeded("b")
    assert pool.healthy("b") and pool.snapshot()["b"]["failures"] == 0


def test_relay_killed_part_way_no_request_fails(
    two_relays: list[Any], secret: str, backend: PacedBackend,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """Requests spread over two relays; after one dies, 0 fail, later ones name the other,
    and the dead one is avoided until it is healthy again."""
    a, b = two_relays
    # The cooldown outlasts the test on any machine: the dead relay is not probed again.
    llm = ChatHPC(executor=pool, relay_urls=[a.url, b.url], relay_secret=secret,
                  backend_url=backend.base_url, model="m", max_tokens=3,
                  failover_cooldown=3600)
    used: list[str] = []
    for _ in range(40):  # both relays get traffic (2**-39 chance of one alone)
        meta = _meta(llm)
        assert meta["hpc_mode"] == "stream"
        used.append(meta["hpc_relay"])
        if {a.url, b.url} <= set(used):
            break
    assert set(used) == {a.url, b.url}
    dead_port = a.port
    a.stop()
    metas = []
    while not any(m["hpc_failovers"] for m in metas):  # until one request picks the dead one
        assert len(metas) < 40, "no request tried the dead relay"
        metas.append(_meta(llm))
    assert metas[-1]["hpc_failovers"] == [
        {"relay": a.url, "error": metas[-1]["hpc_failovers"][0]["error"]}]
    assert not llm._relay_pool.healthy(a.url)
    metas += [_meta(llm) for _ in range(8)]  # now avoided: no request tries it again
    assert [m["hpc_mode"] for m in metas] == ["stream"] * len(metas)
    assert {m["hpc_relay"] for m in metas} == {b.url}
    assert sum(bool(m["hpc_failovers"]) for m in metas) == 1
    # The relay comes back; once its cooldown is over it serves again.
    back = relay.run_in_thread(secret=secret, host="127.0.0.1", port=dead_port)
    try:
        shift = time.monotonic() + 10 * llm.failover_cooldown
        llm._relay_pool._clock = lambda: shift
        seen = {_meta(llm)["hpc_relay"] for _ in range(40)}
        assert back.url in seen
    finally:
        back.stop()


def test_relay_lost_while_task_waits_moves_to_other_relay(
    two_relays: list[Any], secret: str, backend: PacedBackend,
) -> None:
    """The relay dies after the consumer joined but before the task started: the request
    starts over on the other relay (new channel) and streams; the record names that relay."""
    a, b = two_relays
    gate = threading.Event()
    ex = concurrent.futures.ThreadPoolExecutor(1)
    try:
        ex.submit(gate.wait, 60)  # the endpoint is busy: our task waits in its queue
        llm = ChatHPC(executor=ex, relay_urls=[a.url, b.url], relay_secret=secret,
                      backend_url=backend.base_url, model="m", max_tokens=3)
        llm._relay_pool.failed(b.url, "test: make a the first choice")
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(meta=_meta(llm)))
        t.start()
        deadline = time.monotonic() + 30
        while a.server.channels == 0:
            assert time.monotonic() < deadline, "consumer never joined relay a"
            time.sleep(0.01)
        a.stop()
        gate.set()
        t.join(60)
        meta = result["meta"]
        assert meta["hpc_mode"] == "stream" and meta["hpc_relay"] == b.url
        assert meta["hpc_failovers"][0]["relay"] == a.url
    finally:
        gate.set()
        ex.shutdown(wait=True, cancel_futures=True)


def test_all_relays_down_falls_back_to_batch(
    secret: str, pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """No relay reachable: every relay is tried, then batch mode, which says why."""
    from stream_langchain.tiers.llama_server import free_port

    urls = [f"ws://127.0.0.1:{free_port()}" for _ in range(2)]
    # batch needs a non-streaming backend: none here, so the batch task fails; the error
    # must come from batch mode, after both relays were tried.
    llm = ChatHPC(executor=pool, relay_urls=urls, relay_secret=secret,
                  backend_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    with pytest.raises(Exception, match="batch"):
        llm.invoke("hello")
    assert all(not llm._relay_pool.healthy(u) for u in urls)


def test_endpoint_that_never_starts_moves_to_next(
    two_relays: list[Any], secret: str, backend: PacedBackend,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """Two endpoints, one never picks up tasks: after queue_timeout the request goes to the
    other, streams, and the record names it; the dead endpoint is then avoided."""
    stuck = NeverStarts()
    llm = ChatHPC(executors=[stuck, pool], endpoint_ids=["stuck", "good"],
                  relay_urls=[two_relays[0].url], relay_secret=secret,
                  backend_url=backend.base_url, model="m", max_tokens=3, queue_timeout=0.5)
    llm._endpoint_pool.failed("good", "test: make 'stuck' the first choice")
    meta = _meta(llm)
    assert meta["hpc_mode"] == "stream" and meta["hpc_endpoint"] == "good"
    assert meta["hpc_failovers"][0]["endpoint"] == "stuck"
    assert "HPCQueueTimeout" in meta["hpc_failovers"][0]["error"]
    assert all(f.cancelled() for f in stuck.futures)
    metas = [_meta(llm) for _ in range(6)]
    assert {m["hpc_endpoint"] for m in metas} == {"good"}
    assert all(not m["hpc_failovers"] for m in metas)
    assert len(stuck.futures) == 1


def test_endpoint_that_refuses_moves_to_next(
    two_relays: list[Any], secret: str, backend: PacedBackend,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """An endpoint whose executor refuses tasks (shut down, offline) is skipped at once."""
    down = concurrent.futures.ThreadPoolExecutor(1)
    down.shutdown()
    llm = ChatHPC(executors=[down, pool], endpoint_ids=["down", "up"],
                  relay_urls=[two_relays[1].url], relay_secret=secret,
                  backend_url=backend.base_url, model="m", max_tokens=3)
    llm._endpoint_pool.failed("up", "test: make 'down' the first choice")
    metas = [_meta(llm) for _ in range(6)]
    assert {m["hpc_endpoint"] for m in metas} == {"up"}
    assert metas[0]["hpc_failovers"][0]["endpoint"] == "down"
    assert "refused" in metas[0]["hpc_failovers"][0]["error"]
    assert all(not m["hpc_failovers"] for m in metas[1:])  # avoided from then on


def test_endpoint_reported_offline_is_skipped_without_waiting(
    two_relays: list[Any], secret: str, backend: PacedBackend,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """An endpoint the status check reports offline gets no task: the request goes to the
    next endpoint at once (no queue timeout), and the record says why."""
    stuck = NeverStarts()
    asked: list[str] = []

    def status(name: str) -> str:
        asked.append(name)
        return "offline" if name == "down" else "online"

    llm = ChatHPC(executors=[stuck, pool], endpoint_ids=["down", "up"], endpoint_status=status,
                  relay_urls=[two_relays[0].url], relay_secret=secret,
                  backend_url=backend.base_url, model="m", max_tokens=3, queue_timeout=600)
    llm._endpoint_pool.failed("up", "test: make 'down' the first choice")
    meta = _meta(llm)
    assert meta["hpc_endpoint"] == "up"
    assert meta["hpc_failovers"] == [{"endpoint": "down", "error": "reported offline"}]
    assert stuck.futures == [] and "down" in asked


def test_chatstream_record_names_relay_and_endpoint(
    two_relays: list[Any], secret: str, backend: PacedBackend,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    """ChatStream's routing record carries hpc_relay, hpc_endpoint and hpc_failovers."""
    from stream_langchain import ChatStream, KeywordJudge

    a, b = two_relays
    llm = ChatHPC(executor=pool, endpoint_ids=["cluster-1"], relay_urls=[a.url, b.url],
                  relay_secret=secret, backend_url=backend.base_url, model="m", max_tokens=3)
    chat = ChatStream(judge=KeywordJudge(), hpc=llm)
    record = chat.invoke("hello", tier="hpc").response_metadata["stream"]
    assert record["tier"] == "hpc" and record["hpc_relay"] in (a.url, b.url)
    assert record["hpc_endpoint"] == "cluster-1" and record["hpc_failovers"] == []


def test_from_globus_builds_one_executor_per_endpoint(tmp_path: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """from_globus(endpoint_ids=[...]) builds a globus_compute_sdk.Executor per endpoint,
    names them by id and asks Globus Compute for their status (cached)."""
    import uuid

    import globus_sdk
    from globus_compute_sdk import Client, Executor

    from stream_langchain.tiers.hpc_globus import globus_endpoint_status

    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path))
    client = Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
    ids = [str(uuid.uuid4()) for _ in range(2)]
    llm = ChatHPC.from_globus(endpoint_ids=ids, client=client, relay_urls=["wss://r.example"],
                              relay_secret="x" * 32)
    try:
        assert list(llm._executor_map) == ids
        assert all(isinstance(e, Executor) for e in llm._executor_map.values())
        assert [str(e.endpoint_id) for e in llm._executor_map.values()] == ids
        assert llm.endpoint_status is not None
    finally:
        for e in llm._executor_map.values():
            e.shutdown(wait=False, cancel_futures=True)

    class StatusClient:  # what Client.get_endpoint_status answers (the service is offline here)
        calls = 0

        def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
            StatusClient.calls += 1
            if endpoint_id == "broken":
                raise OSError("service unreachable")
            return {"status": "offline" if endpoint_id == "b" else "online"}

    holder = type("Ex", (), {"client": StatusClient()})()
    status = globus_endpoint_status({"a": holder, "b": holder, "broken": holder})
    assert [status("a"), status("b"), status("broken"), status("b")] == [
        "online", "offline", None, "offline"]
    assert StatusClient.calls == 3  # the second "b" came from the cache


def test_settings_relay_urls_and_endpoint_ids_reach_chathpc(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[hpc] relay_urls and endpoint_ids (with or without endpoint_id) build a ChatHPC over
    every relay and endpoint."""
    import uuid

    import globus_sdk
    from globus_compute_sdk import Client

    from stream_langchain._factory import build_hpc
    from stream_langchain.settings import Settings

    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path))
    client = Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
    e1, e2 = str(uuid.uuid4()), str(uuid.uuid4())
    s = Settings.model_validate({"hpc": {"endpoint_ids": [e1, e2],
                                         "relay_urls": ["wss://a.example", "wss://b.example"]}})
    llm = build_hpc(s, env={"STREAM_RELAY_SECRET": "x" * 32}, globus_client=client)
    assert isinstance(llm, ChatHPC)
    try:
        assert llm._relays() == ["wss://a.example", "wss://b.example"]
        assert list(llm._executor_map) == [e1, e2]
    finally:
        for e in llm._executor_map.values():
            e.shutdown(wait=False, cancel_futures=True)


@pytest.mark.slow
def test_embedded_stack_batch_with_relay_killed_part_way(secret: str) -> None:
    """30 HPC requests on the embedded stack (real model server, process-pool endpoint), two
    relays, one killed after ten: 0 failures, the later ones name the surviving relay."""
    from stream_langchain.tiers.hpc_stack import EmbeddedHPC

    relays = [relay.run_in_thread(secret=secret, host="127.0.0.1", port=0) for _ in range(2)]
    try:
        with EmbeddedHPC(max_tokens=2, temperature=0.0) as stack:
            llm = ChatHPC(executor=stack.executor, relay_urls=[r.url for r in relays],
                          relay_secret=secret, backend_url=stack.backend_url,
                          model=stack.chat_model.model, max_tokens=2, temperature=0.0,
                          failover_cooldown=3600)  # no probe of the dead relay in this test
            metas = []
            for i in range(30):
                if i == 10:
                    relays[0].stop()
                metas.append(_meta(llm))
        assert [m["hpc_mode"] for m in metas] == ["stream"] * 30
        assert {m["hpc_relay"] for m in metas[11:]} == {relays[1].url}
        assert sum(bool(m["hpc_failovers"]) for m in metas[10:]) <= 1  # then avoided
    finally:
        for r in relays:
            r.stop()
