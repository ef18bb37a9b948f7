"""``python -m benchmarks.scale``: what scaling out costs (#25).

1. **Redis-backed limits**: one admission (check + charge, then settle and release) through
   :class:`~stream_langchain.proxy.shared.SharedLimiter` on a loopback Redis against the
   in-process :class:`~stream_langchain.proxy.limits.Limiter`; and the per-request revocation +
   breaker read. p50/p95 in ms; goal: <= 1 ms added at p50.
2. **Whole requests through the proxy app** (ASGI, in process, an instant tier): with and
   without ``redis_url``; the difference is what a request pays for shared state.
3. **Relay failover**: TTFT of an HPC request whose first relay is down (connection refused)
   against the same request on a healthy relay (loopback relays, thread-pool endpoint, a
   paced streaming backend); the request must still stream.
4. **Endpoint failover**: the same with a first endpoint that never starts tasks
   (``queue_timeout`` seconds are the price, by design).

Needs a Redis: ``--redis URL`` or ``STREAM_TEST_REDIS_URL`` (``.ci/run`` starts one); its
database is flushed. Writes ``benchmarks/scale/results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks._common import add_run_args, pct, results_dir, write_results

__all__ = ["main"]

HERE = Path(__file__).resolve().parent


def _summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50_ms": round(pct(xs, 0.5), 4), "p95_ms": round(pct(xs, 0.95), 4)}


async def _timed(n: int, op: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def limits(url: str, n: int) -> dict[str, Any]:
    """Admission cost: in-process vs Redis (one identity per 50 requests, big limits)."""
    from stream_langchain.proxy.limits import Limiter, Limits
    from stream_langchain.proxy.shared import SharedLimiter, SharedState
    from stream_langchain.routing import CircuitBreaker

    big = Limits(rpm=10**9, tpm=10**12, max_concurrent=10**6)
    local = Limiter(big)
    shared = SharedState(url)
    remote = SharedLimiter(shared, big)
    breaker = CircuitBreaker()

    async def in_process(i: int) -> None:
        p = local.admit(f"user{i // 50}", tokens=100)
        p.settle(150)
        p.release()

    async def via_redis(i: int) -> None:
        p = await remote.aadmit(f"user{i // 50}", tokens=100)
        p.settle(150)
        p.release()

    async def settle_wait(i: int) -> None:  # admission plus waiting for the background writes
        await via_redis(i)
        await shared.drain()

    async def check(i: int) -> None:
        await shared.before_request(f"k{i % 7}", breaker, ["local", "hpc", "cloud"])

    try:
        await _timed(50, via_redis)  # warm the connection and the script cache
        await shared.drain()
        res: dict[str, Any] = {
            "in_process": _summary(await _timed(n, in_process)),
            "redis_admit": _summary(await _timed(n, via_redis)),
            "redis_admit_settle_release": _summary(await _timed(n, settle_wait)),
            "redis_revocation_breaker_read": _summary(await _timed(n, check)),
        }
        await shared.drain()
    finally:
        await shared.close()
    res["added_p50_ms"] = round(res["redis_admit"]["p50_ms"] + res[
        "redis_revocation_breaker_read"]["p50_ms"] - res["in_process"]["p50_ms"], 4)
    res["goal_p50_ms"] = 1.0
    return res


async def requests_through_app(url: str, n: int, tmp: Path) -> dict[str, Any]:
    """Whole non-streamed requests through the ASGI app, with and without Redis, alternated
    request by request (so load on the machine hits both alike)."""
    import httpx

    from benchmarks.proxy._models import Ticking
    from stream_langchain import ChatStream, KeywordJudge
    from stream_langchain.proxy import KeyRing, ProxyConfig, Store, create_app
    from stream_langchain.proxy.limits import Limits

    big = Limits(rpm=10**9, tpm=10**12, max_concurrent=10**6)
    body = {"model": "stream-local", "messages": [{"role": "user", "content": "hi"}]}
    store = Store(f"sqlite:///{tmp / 'scale.db'}")
    key = KeyRing(store).create("bench")[0]
    apps = {name: create_app(ChatStream(judge=KeywordJudge(), local=Ticking(n=4, delay=0.0)),
                             store=store, config=ProxyConfig(limits=big, redis_url=redis_url))
            for name, redis_url in (("in_process", None), ("redis", url))}
    times: dict[str, list[float]] = {name: [] for name in apps}
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for name, app in apps.items():
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients[name] = await stack.enter_async_context(httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://app",
                    headers={"Authorization": f"Bearer {key}"}))
            for i in range(n + 20):
                for name, client in clients.items():
                    t = time.perf_counter()
                    r = await client.post("/v1/chat/completions", json=body)
                    r.raise_for_status()
                    if i >= 20:  # warm-up excluded
                        times[name].append((time.perf_counter() - t) * 1000)
    finally:
        store.close()
    out: dict[str, Any] = {name: _summary(xs) for name, xs in times.items()}
    out["added_p50_ms"] = round(out["redis"]["p50_ms"] - out["in_process"]["p50_ms"], 4)
    out["added_p95_ms"] = round(out["redis"]["p95_ms"] - out["in_process"]["p95_ms"], 4)
    return out


async def _load(urls: list[str], key: str, body: dict[str, Any], n: int,
                clients: int) -> tuple[float, int]:
    """``n`` requests from ``clients`` concurrent clients, round-robin over ``urls``."""
    import httpx

    todo = iter(range(n))
    errors = 0

    async def client(c: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                     timeout=60) as h:
            for i in todo:
                r = await h.post(urls[(i + c) % len(urls)] + "/v1/chat/completions", json=body)
                errors += r.status_code != 200
    t = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return time.perf_counter() - t, errors


def throughput(url: str, n: int, clients: int, tmp: Path) -> dict[str, Any]:
    """Requests/s of one vs two replica processes sharing Redis (and one without Redis),
    ``clients`` concurrent clients spread round-robin over the replicas."""
    import subprocess

    import httpx

    from stream_langchain.proxy import KeyRing, Store
    from stream_langchain.tiers.llama_server import free_port

    db = f"sqlite:///{tmp / 'replicas.db'}"
    store = Store(db)
    key = KeyRing(store).create("bench")[0]
    store.close()
    body = {"model": "stream-local", "messages": [{"role": "user", "content": "hi"}]}
    out: dict[str, Any] = {"clients": clients, "requests": n}
    for name, count, redis_url in (("one_no_redis", 1, None), ("one", 1, url),
                                   ("two", 2, url)):
        ports = [free_port() for _ in range(count)]
        procs = [subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "benchmarks.scale._replica", "--port", str(p), "--db", db,
             *(["--redis", redis_url] if redis_url else [])], cwd=HERE.parent.parent)
            for p in ports]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        try:
            for u in urls:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(u + "/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"replica {u} did not start")
                    time.sleep(0.1)

            asyncio.run(_load(urls, key, body, n, clients))  # warm-up (connections, scripts)
            wall, errors = asyncio.run(_load(urls, key, body, n, clients))
            out[name] = {"replicas": count, "redis": redis_url is not None,
                         "requests_per_s": round(n / wall, 1), "errors": errors}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    for suffix in ("", "-wal", "-shm"):
        (tmp / f"replicas.db{suffix}").unlink(missing_ok=True)
    out["two_over_one"] = round(out["two"]["requests_per_s"] / out["one"]["requests_per_s"], 2)
    out["cores"] = os.cpu_count()
    return out


def _ttft(llm: Any) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    first = None
    meta: dict[str, Any] = {}
    for chunk in llm.stream("hello"):
        if first is None and chunk.content:
            first = (time.perf_counter() - t) * 1000
        if chunk.response_metadata.get("hpc_mode"):
            meta = dict(chunk.response_metadata)
    assert first is not None, "no token"
    return first, meta


def failover(n: int) -> dict[str, Any]:
    """Added TTFT when the first relay (or endpoint) is down, against a healthy one."""
    import relay
    from stream_langchain.tiers.hpc import ChatHPC
    from stream_langchain.tiers.llama_server import free_port

    sys.path.insert(0, str(HERE.parent.parent))
    from tests.paced_backend import PacedBackend

    class NeverStarts(concurrent.futures.Executor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            return concurrent.futures.Future()

    secret = secrets.token_urlsafe(32)
    dead = f"ws://127.0.0.1:{free_port()}"
    queue_timeout, open_timeout = 0.5, 1.0
    hung = socket.socket()  # accepts TCP connections, never answers the WebSocket handshake
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    hung_url = f"ws://127.0.0.1:{hung.getsockname()[1]}"
    rows: dict[str, list[float]] = {"healthy": [], "relay_failover": [],
                                    "relay_hung_failover": [], "endpoint_failover": []}
    modes: dict[str, set[str]] = {k: set() for k in rows}
    with relay.run_in_thread(secret=secret, host="127.0.0.1", port=0) as live, \
            PacedBackend(tokens=4, interval=0.001) as backend, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        base = {"relay_secret": secret, "backend_url": backend.base_url, "model": "m",
                "max_tokens": 3}
        for _ in range(n):
            healthy = ChatHPC(executor=pool, relay_urls=[live.url], **base)
            r_fail = ChatHPC(executor=pool, relay_urls=[dead, live.url], **base)
            r_fail._relay_pool.failed(live.url, "bench: the dead relay goes first")
            r_hung = ChatHPC(executor=pool, relay_urls=[hung_url, live.url],
                             relay_open_timeout=open_timeout, **base)
            r_hung._relay_pool.failed(live.url, "bench: the hung relay goes first")
            e_fail = ChatHPC(executors=[NeverStarts(), pool], endpoint_ids=["stuck", "ok"],
                             relay_urls=[live.url], queue_timeout=queue_timeout, **base)
            e_fail._endpoint_pool.failed("ok", "bench: the stuck endpoint goes first")
            for name, llm in (("healthy", healthy), ("relay_failover", r_fail),
                              ("relay_hung_failover", r_hung), ("endpoint_failover", e_fail)):
                ms, meta = _ttft(llm)
                rows[name].append(ms)
                modes[name].add(f"{meta.get('hpc_mode')}/{len(meta.get('hpc_failovers', []))}")
    hung.close()
    out: dict[str, Any] = {k: {**_summary(v), "mode/failovers": sorted(modes[k])}
                           for k, v in rows.items()}
    out["relay_hung_failover"]["relay_open_timeout_s"] = open_timeout
    for k in ("relay_failover", "relay_hung_failover", "endpoint_failover"):
        out[k]["added_ttft_p50_ms"] = round(out[k]["p50_ms"] - out["healthy"]["p50_ms"], 3)
    out["endpoint_failover"]["queue_timeout_s"] = queue_timeout
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``scale.json``."""
    ap = add_run_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--redis", default=os.environ.get("STREAM_TEST_REDIS_URL"),
                    help="Redis URL (its database is flushed; default $STREAM_TEST_REDIS_URL)")
    args = ap.parse_args(argv)
    if not args.redis:
        print("benchmarks.scale: needs --redis URL or STREAM_TEST_REDIS_URL; skipped",
              file=sys.stderr)
        return 2 if os.environ.get("CI") == "true" else 0
    import redis

    r = redis.Redis.from_url(args.redis)
    r.flushdb()
    r.close()
    out_dir = results_dir(args, HERE / "results")
    n_lim, n_req, n_fail, n_tp = (200, 100, 5, 100) if args.quick else (3000, 1000, 30, 2000)
    report = {
        "limits": asyncio.run(limits(args.redis, n_lim)),
        "requests": asyncio.run(requests_through_app(args.redis, n_req, out_dir)),
        "failover": failover(n_fail),
        "throughput": throughput(args.redis, n_tp, 8, out_dir),
    }
    (out_dir / "scale.db").unlink(missing_ok=True)
    path = write_results(out_dir / "scale.json", report)
    print(path)
    lim, req, fo = report["limits"], report["requests"], report["failover"]
    print(f"limits: in-process p50 {lim['in_process']['p50_ms']} ms, redis admit p50 "
          f"{lim['redis_admit']['p50_ms']} / p95 {lim['redis_admit']['p95_ms']} ms, "
          f"revocation+breaker read p50 {lim['redis_revocation_breaker_read']['p50_ms']} ms")
    print(f"requests: in-process p50 {req['in_process']['p50_ms']} ms, redis p50 "
          f"{req['redis']['p50_ms']} ms (added p50 {req['added_p50_ms']}, p95 "
          f"{req['added_p95_ms']} ms)")
    tp = report["throughput"]
    print(f"throughput ({tp['clients']} clients): one replica {tp['one']['requests_per_s']}/s, "
          f"two {tp['two']['requests_per_s']}/s (x{tp['two_over_one']}); one without Redis "
          f"{tp['one_no_redis']['requests_per_s']}/s")
    print(f"failover: relay refused +{fo['relay_failover']['added_ttft_p50_ms']} ms, relay "
          f"hung +{fo['relay_hung_failover']['added_ttft_p50_ms']} ms, endpoint "
          f"+{fo['endpoint_failover']['added_ttft_p50_ms']} ms TTFT at p50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
