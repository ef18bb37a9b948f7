"""STREAM's proxy next to LiteLLM's, in one run, in front of the same instant backend.

Three processes on loopback: the instant OpenAI-compatible backend (:mod:`._backend`),
STREAM's proxy (``stream-local`` forced: its local tier is ``ChatOpenAI`` pointed at the
backend, so no judge runs) and LiteLLM's proxy (``litellm --num_workers 1``, the same backend
as an ``openai/`` model, a master key). LiteLLM is installed by this benchmark in its own
virtualenv (``~/.cache/stream-bench/litellm-venv``, ``pip install 'litellm[proxy]'``); it is
not a dependency of STREAM.

1. **Added TTFT**, ``rounds`` interleaved rounds (the order of backend, STREAM, LiteLLM
   rotates each round; every query new): each proxy's TTFT (request -> first content chunk,
   one kept-alive ``httpx`` connection each) minus the backend's own TTFT in the same round.
2. **Requests/s** at each concurrency (``concurrency``; 50 and 100 streams), every stream read
   to ``[DONE]``; failures counted.
3. **CPU per request**: the proxy process tree's CPU time (user + system, ``/proc``) over
   the requests it served, in each phase.

Goal (issue 23): STREAM's added TTFT p50 <= 0.3x LiteLLM's, p95 <= 0.6x.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import TOPICS, pct
from stream_langchain.tiers.llama_server import free_port

__all__ = ["LITELLM_VENV", "compare", "ensure_litellm"]

LITELLM_VENV = Path.home() / ".cache" / "stream-bench" / "litellm-venv"
GOALS = {"p50_ratio": 0.3, "p95_ratio": 0.6}
_MASTER = "sk-bench-litellm-0000"
_TICK = os.sysconf("SC_CLK_TCK")


def _summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": statistics.median(xs), "p95": pct(xs, 0.95),
            "mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}


def ensure_litellm() -> tuple[Path, str]:
    """The ``litellm`` command in the benchmark's own virtualenv (created and installed
    from PyPI when missing) and its version."""
    exe = LITELLM_VENV / "bin" / "litellm"
    py = LITELLM_VENV / "bin" / "python"
    if not exe.exists():
        LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    version = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return exe, version


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (``/proc``)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(ticks.get(p, 0) for p in tree) / _TICK


class Proc:
    """A server process on a loopback port, started and waited for."""

    def __init__(self, name: str, cmd: list[str], health: str, *,
                 env: dict[str, str] | None = None, timeout_s: float = 180.0,
                 first_line: bool = False) -> None:
        self.name = name
        self.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if first_line else subprocess.DEVNULL,
                                     text=True, env={**os.environ, **(env or {})})
        self.line = ""
        """The first line the process printed (``first_line``), e.g. an API key."""
        if first_line:
            assert self.proc.stdout is not None
            self.line = self.proc.stdout.readline().strip()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(health, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start ({' '.join(cmd[:4])} ...)")
            time.sleep(0.2)

    def cpu_s(self) -> float:
        return _tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Target:
    """Where the client sends a chat-completions request: URL, key, model, and the process
    whose CPU is counted (``None``: the backend itself)."""

    def __init__(self, name: str, base: str, key: str, model: str,
                 proc: Proc | None) -> None:
        self.name, self.base, self.model, self.proc = name, base, model, proc
        self.url = base + "/v1/chat/completions"
        self.headers = {"authorization": f"Bearer {key}"}
        self.client = httpx.Client(timeout=60)

    def body(self, text: str) -> dict[str, Any]:
        return {"model": self.model, "stream": True,
                "messages": [{"role": "user", "content": text}]}

    def ttft(self, text: str) -> float:
        """Milliseconds from sending a streamed request to its first content chunk (the rest
        is read, so the connection is reused)."""
        t0 = time.perf_counter()
        first = None
        with self.client.stream("POST", self.url, headers=self.headers,
                                json=self.body(text)) as r:
            for line in r.iter_lines():
                if first is None and _has_content(line):
                    first = (time.perf_counter() - t0) * 1000.0
        if first is None:
            raise RuntimeError(f"{self.name}: no content chunk")
        return first


def _has_content(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def _query(i: int) -> str:
    return f"Explain {TOPICS[i % len(TOPICS)]} briefly. (round {i}, {time.time_ns()})"


def added_ttft(backend: Target, proxies: list[Target], rounds: int) -> dict[str, Any]:
    """Interleaved rounds; each proxy's TTFT minus the backend's in the same round."""
    targets = [backend, *proxies]
    for i in range(10):  # warm every path (imports, token tables, connections)
        for t in targets:
            t.ttft("warm " + _query(i))
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    cpu0 = {t.name: t.proc.cpu_s() for t in proxies if t.proc is not None}
    for i in range(rounds):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            samples[t.name].append(t.ttft(_query(i)))
    out: dict[str, Any] = {"rounds": rounds,
                           "backend_ttft_ms": _summary(samples[backend.name])}
    for t in proxies:
        added = [p - d for p, d in zip(samples[t.name], samples[backend.name], strict=True)]
        cpu = (t.proc.cpu_s() - cpu0[t.name]) if t.proc is not None else float("nan")
        out[t.name] = {"ttft_ms": _summary(samples[t.name]), "added_ttft_ms": _summary(added),
                       "cpu_ms_per_request": cpu * 1000.0 / rounds,
                       "samples_added_ms": added}
    return out


async def _stream_one(client: httpx.AsyncClient, t: Target, i: int) -> float:
    t0 = time.perf_counter()
    first = None
    last = ""
    async with client.stream("POST", t.url, headers=t.headers, json=t.body(_query(i))) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if first is None and _has_content(line):
                first = (time.perf_counter() - t0) * 1000.0
            if line:
                last = line
    if first is None or last != "data: [DONE]":
        raise RuntimeError(f"incomplete stream (last line {last[:60]!r})")
    return first


async def _load(t: Target, streams: int,
                per_stream: int) -> tuple[list[float], list[str], float]:
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams)
    ok: list[float] = []
    failed: list[str] = []

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        for j in range(per_stream):
            try:
                ok.append(await _stream_one(client, t, w * per_stream + j))
            except (httpx.HTTPError, RuntimeError) as exc:
                failed.append(f"{type(exc).__name__}: {exc}"[:200])

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(w, client) for w in range(min(streams, 5))))  # warm
        ok.clear()
        failed.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w, client) for w in range(streams)))
        wall = time.perf_counter() - t0
    return ok, failed, wall


def throughput(proxies: list[Target], concurrency: list[int],
               per_stream: int) -> list[dict[str, Any]]:
    """Requests/s, TTFT and CPU per request at each concurrency, the proxies alternating."""
    out = []
    for streams in concurrency:
        row: dict[str, Any] = {"streams": streams, "requests": streams * per_stream}
        for t in proxies:
            assert t.proc is not None
            cpu0 = t.proc.cpu_s()
            ok, failed, wall = asyncio.run(_load(t, streams, per_stream))
            cpu = t.proc.cpu_s() - cpu0
            row[t.name] = {"requests_per_s": len(ok) / wall, "failed": len(failed),
                           "errors": failed[:5], "wall_s": wall,
                           "ttft_ms": _summary(ok) if ok else None,
                           "cpu_ms_per_request": cpu * 1000.0 / max(len(ok) + len(failed), 1)}
        out.append(row)
    return out


def _litellm_proc(exe: Path, backend: str, tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: instant\n    litellm_params:\n"
        f"      model: openai/instant\n      api_base: {backend}/v1\n      api_key: bench\n"
        f"general_settings:\n  master_key: {_MASTER}\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n")
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"}
    base = f"http://127.0.0.1:{port}"
    proc = Proc("litellm", [str(exe), "--config", str(config), "--host", "127.0.0.1",
                            "--port", str(port), "--num_workers", "1"],
                base + "/health/liveliness", env=env)
    return proc, base


def _stream_proc(backend: str, db: str) -> tuple[Proc, str, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = Proc("stream", [sys.executable, "-m", "benchmarks.proxy._server", "openai",
                           str(port), db, backend], base + "/health", first_line=True)
    return proc, base, proc.line


def compare(*, rounds: int, concurrency: list[int], per_stream: int,
            litellm: bool) -> dict[str, Any]:
    """The whole comparison; ``litellm=False`` measures STREAM alone (quick runs)."""
    tmp = Path(tempfile.mkdtemp(prefix="stream-vs-litellm-"))
    procs: list[Proc] = []
    targets: list[Target] = []
    try:
        port = free_port()
        bproc = Proc("backend", [sys.executable, "-m", "benchmarks.proxy._backend", str(port)],
                     f"http://127.0.0.1:{port}/health")
        procs.append(bproc)
        backend_url = f"http://127.0.0.1:{port}"
        backend = Target("backend", backend_url, "none", "instant", None)
        sproc, sbase, key = _stream_proc(backend_url, f"sqlite:///{tmp}/bench.db")
        procs.append(sproc)
        proxies = [Target("stream", sbase, key, "stream-local", sproc)]
        version = None
        if litellm:
            exe, version = ensure_litellm()
            lproc, lbase = _litellm_proc(exe, backend_url, tmp)
            procs.append(lproc)
            proxies.append(Target("litellm", lbase, _MASTER, "instant", lproc))
        targets = [backend, *proxies]
        ttft = added_ttft(backend, proxies, rounds)
        load = throughput(proxies, concurrency, per_stream)
    finally:
        for t in targets:
            t.client.close()
        for p in reversed(procs):
            p.stop()
    out: dict[str, Any] = {"backend": "instant OpenAI-compatible loopback server "
                                      "(benchmarks/proxy/_backend.py), 5 tokens",
                           "stream_model": "stream-local (forced tier: ChatOpenAI -> backend)",
                           "litellm_version": version, "workers": 1, "goals": GOALS,
                           "added_ttft": ttft, "throughput": load}
    if litellm:
        s, lt = ttft["stream"]["added_ttft_ms"], ttft["litellm"]["added_ttft_ms"]
        out["ratios"] = {"added_ttft_p50": s["p50"] / lt["p50"],
                         "added_ttft_p95": s["p95"] / lt["p95"],
                         "requests_per_s": {str(r["streams"]): r["stream"]["requests_per_s"]
                                            / r["litellm"]["requests_per_s"] for r in load}}
    return out
