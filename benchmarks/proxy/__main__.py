"""Proxy overhead: what the OpenAI-compatible HTTP layer adds, under load, and cancellation.

Everything on this machine; the proxy is real uvicorn on a loopback port in this process
(its own thread and event loop), the client is ``httpx`` with a kept-alive connection.

1. **Added TTFT** (``--runs`` pairs, alternating which goes first, every query new): TTFT of
   a streamed request through the proxy (HTTP request -> first SSE content chunk; the proxy in
   its own process, as deployed) minus the TTFT of the same ChatStream called in process
   (``astream`` -> first content chunk). For scale, a bare ``GET /health`` round trip to the
   same server (what any HTTP hop costs on this machine) is reported next to it, and the
   app's own share is measured by calling the ASGI app in process (no sockets, no client).
   Sub-models: ``instant`` (streams a fixed reply at once: isolates the proxy's own cost)
   and ``llamacpp`` (the embedded model, KV cache reset before each call; ``--llama-runs``).
   Goal: p50 <= 1 ms for ``instant`` (LiteLLM documents 2-12 ms medians).
2. **Concurrency**: ``--clients`` (100) streaming clients at once, each a 20-token answer at
   10 ms/token; failed requests (goal 0) and TTFT p50/p95.
3. **Next to LiteLLM** (:mod:`._versus`): STREAM's proxy (``stream-local`` forced) and
   LiteLLM's proxy (its own virtualenv, one worker each) in front of the same instant
   OpenAI-compatible backend: added TTFT over ``--versus-rounds`` interleaved rounds,
   requests/s at ``--versus-streams`` concurrent streams, CPU per request. Goal: STREAM's
   added TTFT p50 <= 0.3x LiteLLM's, p95 <= 0.6x. ``--quick`` and ``--no-litellm`` measure
   STREAM alone (no LiteLLM install).
4. **Cancellation**: a client reads 5 content chunks then disconnects; tokens the tier
   generated after the proxy saw the close (the usage row's chunk count). On a scripted tier
   at 200 tokens/s, and on the HPC path (ChatHPC: thread-pool executor, loopback relay,
   llama.cpp server; the node's own count) unless ``--no-hpc``. Goal on HPC: <= 2.

Run: ``python -m benchmarks.proxy [--runs 200] [--llama-runs 20] [--clients 100]
[--versus-rounds 500]``; writes
``benchmarks/proxy/results/proxy.{json,png}`` (``--quick``: a smoke run into ``--out`` or a
temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import HumanMessage

from benchmarks._common import TOPICS, add_run_args, pct, results_dir, write_results
from benchmarks.proxy._models import Ticking
from benchmarks.proxy._server import BIG, sub_model
from benchmarks.proxy._versus import compare
from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.proxy import KeyRing, ProxyServer, Store, create_app
from stream_langchain.tiers.llama_server import free_port

OUT = Path(__file__).with_name("results")


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": statistics.median(xs), "p95": pct(xs, 0.95),
            "mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}


def query(i: int) -> str:
    return f"What is {TOPICS[i % len(TOPICS)]}? (#{i})"


class Served:
    """The proxy serving a ChatStream: in this process (``chat``, for counting what the tier
    generated) or, for timings, in its own process (``kind``) so the client and the server do
    not share a GIL (in one process the client waits for the server thread's switch interval,
    5 ms, and the measurement says more about the GIL than about the proxy)."""

    def __init__(self, store: Store, *, chat: ChatStream | None = None,
                 kind: str | None = None, db: str | None = None) -> None:
        self.store = store
        self.proc: subprocess.Popen[str] | None = None
        self.server: ProxyServer | None = None
        if kind is not None:
            port = free_port()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.proxy._server", kind, str(port), str(db)],
                stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            self.key = self.proc.stdout.readline().strip()
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.HTTPError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the proxy process did not start") from None
                    time.sleep(0.2)
        else:
            assert chat is not None
            self.key = KeyRing(store).create("bench")[0]
            self.server = ProxyServer(create_app(chat, store=store, config=BIG)).start()
            base = self.server.url
        self.url = base + "/v1/chat/completions"
        self.headers = {"authorization": f"Bearer {self.key}"}
        self.client = httpx.Client(timeout=120)
        if kind is not None:
            self.ttft("warm up")  # loads the token counter's tables before anything is timed

    def ttft(self, text: str, **extra: Any) -> float:
        body = {"model": "stream", "messages": [{"role": "user", "content": text}],
                "stream": True, **extra}
        t0 = time.perf_counter()
        with self.client.stream("POST", self.url, headers=self.headers, json=body) as r:
            lines = r.iter_lines()
            for line in lines:
                if '"content":"' in line and '"content":""' not in line:
                    t = (time.perf_counter() - t0) * 1000.0
                    for _ in lines:  # drain: the next request reuses the connection
                        pass
                    return t
        raise RuntimeError("no token through the proxy")

    def http_floor(self, n: int) -> dict[str, float]:
        """``GET /health`` round trips on the same connection: what any HTTP hop costs here."""
        url = self.url.replace("/v1/chat/completions", "/health")
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.client.get(url)
            xs.append((time.perf_counter() - t0) * 1000.0)
        return summary(xs)

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def in_process_ttft(chat: ChatStream, text: str, loop: asyncio.AbstractEventLoop) -> float:
    async def first() -> float:
        t0 = time.perf_counter()
        agen = chat.astream([HumanMessage(text)])
        t = None
        async for chunk in agen:
            if chunk.content and t is None:
                t = (time.perf_counter() - t0) * 1000.0
        assert t is not None
        return t

    return loop.run_until_complete(first())


def added_ttft(kind: str, store: Store, db: str, runs: int) -> dict[str, Any]:
    chat = ChatStream(local=sub_model(kind), judge=KeywordJudge())
    served = Served(store, kind=kind, db=db)
    loop = asyncio.new_event_loop()
    try:
        for i in range(5):  # warm both paths
            in_process_ttft(chat, "warm " + query(i), loop)
            served.ttft("warm " + query(i))
        direct, proxied, diffs = [], [], []
        for i in range(runs):
            q = query(i)
            if i % 2 == 0:
                d = in_process_ttft(chat, q, loop)
                p = served.ttft(q)
            else:
                p = served.ttft(q)
                d = in_process_ttft(chat, q, loop)
            direct.append(d)
            proxied.append(p)
            diffs.append(p - d)
        floor = served.http_floor(min(runs, 100))
    finally:
        loop.close()
        served.close()
    return {"sub_model": kind, "runs": runs, "in_process_ttft_ms": summary(direct),
            "proxy_ttft_ms": summary(proxied), "added_ttft_ms": summary(diffs),
            "http_round_trip_ms": floor,
            "samples": {"in_process": direct, "proxy": proxied}}


def asgi_added_ttft(store: Store, runs: int) -> dict[str, Any]:
    """The app's own share: the same pairs, but the proxy called as an ASGI app in this
    process (no sockets, no HTTP parsing, no client, no cross-process scheduling)."""
    chat = ChatStream(local=sub_model("instant"), judge=KeywordJudge())
    app = create_app(chat, store=store, config=BIG)
    key = KeyRing(store).create("bench-asgi")[0]

    async def via(text: str) -> float:
        body = json.dumps({"model": "stream", "stream": True,
                           "messages": [{"role": "user", "content": text}]}).encode()
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80), "state": {},
                 "headers": [(b"authorization", f"Bearer {key}".encode()),
                             (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        state = {"sent": False, "ttft": None}
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not state["sent"]:
                state["sent"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        t0 = time.perf_counter()

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.body":
                if state["ttft"] is None and b'"content"' in msg.get("body", b""):
                    state["ttft"] = (time.perf_counter() - t0) * 1000.0
                if not msg.get("more_body"):
                    done.set()

        await app(scope, receive, send)
        assert state["ttft"] is not None
        return float(state["ttft"])

    async def direct(text: str) -> float:
        t0 = time.perf_counter()
        async for chunk in chat.astream([HumanMessage(text)]):
            if chunk.content:
                return (time.perf_counter() - t0) * 1000.0
        raise RuntimeError("no token")

    async def run() -> tuple[list[float], list[float]]:
        for i in range(10):
            await via("warm " + query(i))
            await direct("warm " + query(i))
        d, p = [], []
        for i in range(runs):
            if i % 2 == 0:
                d.append(await direct(query(i)))
                p.append(await via(query(i)))
            else:
                p.append(await via(query(i)))
                d.append(await direct(query(i)))
        return d, p

    d, p = asyncio.run(run())
    return {"sub_model": "instant (ASGI app, in process)", "runs": runs,
            "in_process_ttft_ms": summary(d), "proxy_ttft_ms": summary(p),
            "added_ttft_ms": summary([b - a for a, b in zip(d, p, strict=True)]),
            "samples": {"in_process": d, "proxy": p}}


async def _one_client(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                      i: int) -> float:
    body = {"model": "stream", "messages": [{"role": "user", "content": query(i)}],
            "stream": True}
    t0 = time.perf_counter()
    ttft = None
    async with client.stream("POST", url, headers=headers, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        last = ""
        async for line in r.aiter_lines():
            if ttft is None and '"content":" w' in line:
                ttft = (time.perf_counter() - t0) * 1000.0
            if line:
                last = line
        if last != "data: [DONE]":
            raise RuntimeError(f"stream ended with {last[:80]!r}")
    assert ttft is not None
    return ttft


def concurrency(store: Store, db: str, clients: int) -> dict[str, Any]:
    served = Served(store, kind="ticking", db=db)

    async def run() -> tuple[list[float], list[str], float]:
        limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(_one_client(client, served.url, served.headers, i) for i in range(clients)),
                return_exceptions=True)
            wall = time.perf_counter() - t0
        ok = [r for r in results if isinstance(r, float)]
        bad = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, float)]
        return ok, bad, wall

    try:
        ok, bad, wall = asyncio.run(run())
    finally:
        served.close()
    return {"clients": clients, "tokens_each": 20, "token_interval_ms": 10,
            "failed": len(bad), "errors": bad[:5], "wall_s": wall,
            "ttft_ms": summary(ok) if ok else None, "samples": ok}


def _leave_after(served: Served, n: int, model: str = "stream") -> None:
    got = 0
    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": "Tell a very long story about a dragon."}]}
    with httpx.stream("POST", served.url, headers=served.headers, json=body, timeout=120) as r:
        for line in r.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                got += 1
            if got >= n:
                return


def _last_row(store: Store, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while len(store.rows()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("usage row not written")
        time.sleep(0.01)
    store.flush()
    return store.rows()[-1]


def cancellation_scripted(store: Store, trials: int) -> dict[str, Any]:
    model = Ticking(n=100_000, delay=0.005)
    served = Served(store, chat=ChatStream(local=model, judge=KeywordJudge()))
    after = []
    try:
        base = len(store.rows())
        for t in range(trials):
            _leave_after(served, 5)
            row = _last_row(store, base + t + 1)
            time.sleep(0.1)  # 20 tokens' worth: anything still generating would show
            before = model.generated
            after.append(before - row["output_chunks"])
            model.generated = 0
    finally:
        served.close()
    return {"tier": "scripted (200 tokens/s)", "trials": trials, "tokens_after_close": after,
            "max": max(after), "mean": statistics.fmean(after)}


def cancellation_hpc(store: Store, trials: int) -> dict[str, Any]:
    import relay
    from stream_langchain.tiers.hpc import ChatHPC, new_relay_secret
    from stream_langchain.tiers.llama_server import LlamaServer

    secret = new_relay_secret()
    handle = relay.run_in_thread(secret=secret, host="127.0.0.1", port=0)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    futures: list[concurrent.futures.Future[Any]] = []

    class Recording(concurrent.futures.Executor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            fut = pool.submit(fn, *args, **kwargs)
            futures.append(fut)
            return fut

    after, cancelled = [], []
    with LlamaServer(n_ctx=2048, n_threads=2) as backend:
        hpc = ChatHPC(executor=Recording(), relay_url=handle.url, relay_secret=secret,
                      model="gemma", backend_url=backend.base_url, max_tokens=400,
                      temperature=0.0)
        served = Served(store, chat=ChatStream(hpc=hpc, judge=KeywordJudge()))
        try:
            base = len(store.rows())
            for t in range(trials):
                _leave_after(served, 5, model="stream-hpc")
                summary_ = futures[-1].result(timeout=120)
                row = _last_row(store, base + t + 1)
                after.append(summary_["completion_tokens"] - row["output_chunks"])
                cancelled.append(bool(summary_["cancelled"]))
        finally:
            served.close()
            pool.shutdown(wait=True, cancel_futures=True)
            handle.stop()
    return {"tier": "hpc (ChatHPC, relay, llama.cpp server)", "trials": trials,
            "tokens_after_close": after, "node_cancelled": cancelled, "max": max(after),
            "mean": statistics.fmean(after)}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ttft = report["added_ttft"]
    fig, axes = plt.subplots(1, len(ttft) + 2, figsize=(4.5 * (len(ttft) + 2), 4))
    for ax, res in zip(axes, ttft, strict=False):
        ax.boxplot([res["samples"]["in_process"], res["samples"]["proxy"]], showfliers=False)
        ax.set_xticks([1, 2], ["in process", "through proxy"])
        ax.set_ylabel("TTFT (ms)")
        ax.set_title(f"{res['sub_model']}: added p50 {res['added_ttft_ms']['p50']:.2f} ms",
                     fontsize=9)
    conc = report["concurrency"]
    ax = axes[len(ttft)]
    ax.hist(conc["samples"], bins=30)
    ax.set_xlabel("TTFT (ms)")
    ttft_c = conc["ttft_ms"] or {"p95": float("nan")}
    ax.set_title(f"{conc['clients']} concurrent streams: {conc['failed']} failed, "
                 f"p95 {ttft_c['p95']:.0f} ms", fontsize=9)
    ax = axes[len(ttft) + 1]
    cancel = report["cancellation"]
    ax.bar(range(len(cancel)), [c["max"] for c in cancel])
    ax.set_xticks(range(len(cancel)), [c["tier"].split(" ")[0] for c in cancel])
    ax.set_ylabel("max tokens generated after disconnect")
    ax.set_title("Cancellation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_versus(v: dict[str, Any]) -> None:
    """The LiteLLM comparison, one line per proxy and concurrency."""
    a = v["added_ttft"]
    for name in ("stream", "litellm"):
        if name in a:
            t = a[name]["added_ttft_ms"]
            print(f"{name:>8}: added TTFT p50 {t['p50']:.2f} ms p95 {t['p95']:.2f} ms over "
                  f"{a['rounds']} rounds, CPU {a[name]['cpu_ms_per_request']:.1f} ms/request")
    for row in v["throughput"]:
        for name in ("stream", "litellm"):
            if name in row:
                r = row[name]
                print(f"{name:>8} at {row['streams']} streams: {r['requests_per_s']:.1f} "
                      f"requests/s, {r['failed']} failed, CPU {r['cpu_ms_per_request']:.1f} "
                      "ms/request")
    if "ratios" in v:
        r = v["ratios"]
        print(f"STREAM/LiteLLM added TTFT: p50 {r['added_ttft_p50']:.2f}x (goal <= "
              f"{v['goals']['p50_ratio']}), p95 {r['added_ttft_p95']:.2f}x (goal <= "
              f"{v['goals']['p95_ratio']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--llama-runs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--no-hpc", action="store_true", help="skip the HPC cancellation part")
    ap.add_argument("--versus-rounds", type=int, default=500,
                    help="interleaved rounds of the LiteLLM comparison (0: skip it)")
    ap.add_argument("--versus-streams", default="50,100",
                    help="concurrent streams for requests/s (comma-separated)")
    ap.add_argument("--versus-per-stream", type=int, default=8,
                    help="requests each concurrent stream makes in turn")
    ap.add_argument("--no-litellm", action="store_true",
                    help="the comparison measures STREAM alone (no LiteLLM install)")
    args = add_run_args(ap).parse_args()
    if args.quick:
        args.runs, args.llama_runs, args.clients, args.trials = 20, 3, 20, 2
        args.versus_rounds, args.versus_streams, args.versus_per_stream = 20, "10", 2
        args.no_litellm = True
    tmp = tempfile.TemporaryDirectory()
    db = f"sqlite:///{tmp.name}/bench.db"
    store = Store(db)
    try:
        results = [added_ttft("instant", store, db, args.runs), asgi_added_ttft(store, args.runs)]
        if args.llama_runs:
            results.append(added_ttft("llamacpp", store, db, args.llama_runs))
        conc = concurrency(store, db, args.clients)
        versus = (compare(rounds=args.versus_rounds,
                          concurrency=[int(n) for n in args.versus_streams.split(",")],
                          per_stream=args.versus_per_stream, litellm=not args.no_litellm)
                  if args.versus_rounds else None)
        cancel = [cancellation_scripted(store, args.trials)]
        if not args.no_hpc:
            cancel.append(cancellation_hpc(store, max(2, args.trials // 2)))
    finally:
        store.close()
        tmp.cleanup()
    report = {"benchmark": "proxy", "quick": args.quick,
              "goals": {"added_ttft_p50_ms": 1.0, "failed": 0, "hpc_tokens_after_close": 2},
              "client": "httpx (kept-alive connection)", "added_ttft": results,
              "concurrency": conc, "versus_litellm": versus, "cancellation": cancel}
    out = results_dir(args, OUT)
    write_results(out / "proxy.json", report)
    plot(report, out / "proxy.png")
    for r in results:
        a = r["added_ttft_ms"]
        print(f"{r['sub_model']:>18}: in-process p50 {r['in_process_ttft_ms']['p50']:.2f} ms, "
              f"proxy p50 {r['proxy_ttft_ms']['p50']:.2f} ms, added p50 {a['p50']:.2f} ms "
              f"p95 {a['p95']:.2f} ms" + (f" (bare HTTP round trip p50 "
                                          f"{r['http_round_trip_ms']['p50']:.2f} ms)"
                                          if "http_round_trip_ms" in r else ""))
    t = conc["ttft_ms"] or {"p50": float("nan"), "p95": float("nan")}
    print(f"{conc['clients']} concurrent streams: {conc['failed']} failed, TTFT p50 "
          f"{t['p50']:.1f} ms p95 {t['p95']:.1f} ms, wall {conc['wall_s']:.2f} s")
    if versus is not None:
        print_versus(versus)
    for c in cancel:
        print(f"cancellation, {c['tier']}: tokens after close max {c['max']} mean "
              f"{c['mean']:.2f} over {c['trials']} trials")


if __name__ == "__main__":
    main()
