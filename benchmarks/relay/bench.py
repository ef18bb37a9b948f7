"""Side-by-side benchmark: this relay vs streamrelay 0.3.1, both with encryption on.

Both relay servers run as separate processes on loopback, started by this script; the
producers and consumers run in this process, each project's own asyncio clients. One
run measures, for the same load through each relay:

(a) latency per token, producer send -> consumer receive (p50, p99): one token in
    flight at a time with both clients in this process ("ping-pong"), and tokens paced
    every millisecond by each project's sync producer in its own process, as on an
    HPC node ("paced", timestamps carried in the token);
(b) sustained frames per second, one channel and 100 concurrent channels, from the
    first send to the last verified receive;
(c) the relay process's resident memory with 1,000 idle channels (both peers
    connected, one frame delivered), as the RSS increase over the warmed-up server.

For context the report also measures a floor: the same ping-pong through a bare
asyncio TCP forwarder process (no WebSocket, no crypto).

Results go to ``benchmarks/relay/results/relay_vs_streamrelay.json`` and ``.png``.
Run ``python -m benchmarks.relay`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import relay
from benchmarks._common import add_run_args, results_dir, write_results

__all__ = ["main", "run"]

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "benchmark-relay-secret"
TOKEN = "tok"  # a typical token delta


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"relay on port {port} did not start")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A relay server process."""

    name: str
    url: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_ours() -> Server:
    port = _free_port()
    env = dict(os.environ, STREAM_RELAY_SECRET=SECRET)
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "--port", str(port), "--log-level", "WARNING"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    _wait_port(port)
    return Server("relay", f"ws://127.0.0.1:{port}", process)


def start_streamrelay() -> Server:
    port = _free_port()
    code = (
        "import asyncio, os, sys\n"
        "from streamrelay.server import start_relay\n"
        "asyncio.run(start_relay(host='127.0.0.1', port=int(sys.argv[1]),"
        " secret=os.environ['BENCH_SECRET']))\n"
    )
    env = dict(os.environ, BENCH_SECRET=SECRET)
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _wait_port(port)
    return Server("streamrelay", f"ws://127.0.0.1:{port}", process)


# --------------------------------------------------------------------------- clients
#
# Each side exposes the same three operations over its own public clients:
# open_pair() -> (send, receive, close) for one channel with both peers connected.

Send = Callable[[str], Awaitable[None]]
Receive = Callable[[], Awaitable[Any]]
Close = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def ours_pair(url: str) -> AsyncIterator[tuple[Send, Receive, Close]]:
    channel, key = relay.new_channel(), relay.new_key()
    tokens = relay.mint_tokens(SECRET, channel, ttl=600)
    consumer = await relay.Consumer(url, channel, tokens.consumer, key).connect()
    producer = await relay.AsyncProducer(url, channel, tokens.producer, key).connect()
    iterator = consumer.__aiter__()

    async def send(text: str) -> None:
        await producer.send({"content": text})

    async def receive() -> Any:
        return await iterator.__anext__()

    async def close() -> None:
        await producer.close()
        async for _ in iterator:  # drain to the verified end frame
            pass

    try:
        yield send, receive, close
    finally:
        await consumer.aclose()


@contextlib.asynccontextmanager
async def streamrelay_pair(url: str) -> AsyncIterator[tuple[Send, Receive, Close]]:
    from streamrelay import RelayConsumer, RelayProducer, generate_key

    channel, key = relay.new_channel(), generate_key()
    stream = RelayConsumer(url, channel, encryption_key=key, relay_secret=SECRET).astream()
    first = asyncio.ensure_future(stream.__anext__())  # connects the consumer
    await asyncio.sleep(0.05)
    producer = RelayProducer(url, channel, encryption_key=key, relay_secret=SECRET)
    await producer.__aenter__()
    await producer._async_send_raw({"type": "token", "content": "warm-up"})
    await first
    exited = False

    async def send(text: str) -> None:
        await producer._async_send_raw({"type": "token", "content": text})

    async def receive() -> Any:
        return await stream.__anext__()

    async def close() -> None:
        nonlocal exited
        exited = True
        await producer.__aexit__(None, None, None)  # sends its "done" message
        async for _ in stream:
            pass

    try:
        yield send, receive, close
    finally:
        if not exited:
            await producer.__aexit__(None, None, None)
        await stream.aclose()


PAIRS = {"relay": ours_pair, "streamrelay": streamrelay_pair}


# --------------------------------------------------------------------------- measurements


async def latency(url: str, pair: Any, tokens: int) -> list[float]:
    """Seconds from the producer's send to the consumer's receive, one token at a time."""
    samples = []
    async with pair(url) as (send, receive, close):
        for _ in range(50):  # warm-up
            await send(TOKEN)
            await receive()
        for _ in range(tokens):
            start = time.perf_counter()
            await send(TOKEN)
            await receive()
            samples.append(time.perf_counter() - start)
        await close()
    return samples


async def throughput(url: str, pair: Any, channels: int, frames: int) -> float:
    """Frames per second through ``channels`` concurrent channels, first send to last receive."""
    async with contextlib.AsyncExitStack() as stack:
        ends = await asyncio.gather(
            *(stack.enter_async_context(pair(url)) for _ in range(channels))
        )
        counts = [0] * channels

        async def consume(index: int) -> None:
            receive = ends[index][1]
            for _ in range(frames):
                await receive()
                counts[index] += 1

        async def produce(index: int) -> None:
            send = ends[index][0]
            for _ in range(frames):
                await send(TOKEN)

        consumers = [asyncio.ensure_future(consume(i)) for i in range(channels)]
        start = time.perf_counter()
        await asyncio.gather(*(produce(i) for i in range(channels)), *consumers)
        elapsed = time.perf_counter() - start
        assert counts == [frames] * channels, "frames were lost"
        await asyncio.gather(*(end[2]() for end in ends))
    return channels * frames / elapsed


async def idle_memory(server: Server, pair: Any, channels: int) -> dict[str, float]:
    """RSS increase of the relay process with ``channels`` idle, paired channels."""
    async with pair(server.url) as (send, receive, close):  # warm the server's code paths
        await send(TOKEN)
        await receive()
        await close()
    await asyncio.sleep(0.5)
    before = _rss_kib(server.process.pid)
    async with contextlib.AsyncExitStack() as stack:
        for start in range(0, channels, 100):
            ends = await asyncio.gather(
                *(
                    stack.enter_async_context(pair(server.url))
                    for _ in range(start, min(channels, start + 100))
                )
            )
            for send, receive, _ in ends:
                await send(TOKEN)
                await receive()
        await asyncio.sleep(1.0)
        after = _rss_kib(server.process.pid)
    return {
        "rss_before_mib": before / 1024,
        "rss_with_idle_channels_mib": after / 1024,
        "added_mib": (after - before) / 1024,
        "per_channel_kib": (after - before) / channels,
    }


_PACED_PRODUCERS = {
    "relay": (
        "import sys, time, relay\n"
        "url, channel, token, key, n, interval = sys.argv[1:]\n"
        "with relay.Producer(url, channel, token, bytes.fromhex(key)) as producer:\n"
        "    due = time.perf_counter()\n"
        "    for _ in range(int(n)):\n"
        "        due += float(interval)\n"
        "        while (left := due - time.perf_counter()) > 0:\n"
        "            time.sleep(left)\n"
        "        producer.send({'content': f'{time.perf_counter():.9f}'})\n"
        "    producer.close()\n"
    ),
    "streamrelay": (
        "import sys, time\n"
        "from streamrelay import RelayProducer\n"
        "url, channel, secret, key, n, interval = sys.argv[1:]\n"
        "with RelayProducer(url, channel, encryption_key=key, relay_secret=secret) as producer:\n"
        "    due = time.perf_counter()\n"
        "    for _ in range(int(n)):\n"
        "        due += float(interval)\n"
        "        while (left := due - time.perf_counter()) > 0:\n"
        "            time.sleep(left)\n"
        "        producer.send_token(f'{time.perf_counter():.9f}')\n"
    ),
}


async def paced_latency(url: str, name: str, tokens: int, interval: float) -> list[float]:
    """Latency of tokens sent every ``interval`` s by the sync producer in another process.

    Both processes read the same system-wide monotonic clock (``perf_counter``), so the
    send time travels inside the token.
    """
    from streamrelay import RelayConsumer, generate_key

    channel = relay.new_channel()
    samples: list[float] = []
    if name == "relay":
        key = relay.new_key()
        tokens_ = relay.mint_tokens(SECRET, channel, ttl=600)
        consumer = await relay.Consumer(url, channel, tokens_.consumer, key).connect()
        args = [tokens_.producer, key.hex()]

        async def texts() -> AsyncIterator[str]:
            async for payload in consumer:
                yield payload["content"]
    else:
        key_hex = generate_key()
        stream = RelayConsumer(url, channel, encryption_key=key_hex, relay_secret=SECRET)
        args = [SECRET, key_hex]

        async def texts() -> AsyncIterator[str]:
            async for text in stream.astream():
                yield text

    iterator = texts()
    first = asyncio.ensure_future(iterator.__anext__())
    await asyncio.sleep(0.1)  # the consumer is connected before the producer starts
    producer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PACED_PRODUCERS[name],
        url,
        channel,
        *args,
        str(tokens),
        str(interval),
        cwd=REPO,
    )
    samples.append(time.perf_counter() - float(await first))
    async for text in iterator:
        samples.append(time.perf_counter() - float(text))
    await producer.wait()
    assert len(samples) == tokens, f"{name}: {len(samples)} of {tokens} tokens arrived"
    return samples[20:]  # skip the producer's warm-up


_FORWARDER = """
import asyncio, sys
peers = []
class Forward(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        peers.append(self)
    def connection_lost(self, exc):
        peers.remove(self)
    def data_received(self, data):
        other = peers[1] if peers[0] is self else peers[0]
        other.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Forward, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def floor_latency(tokens: int) -> list[float]:
    """Ping-pong through a bare asyncio TCP forwarder process: the OS and asyncio floor."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", _FORWARDER, str(port)])
    try:
        _wait_port(port)
        await asyncio.sleep(0.05)  # the forwarder forgets the readiness probe
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)  # the forwarder registers the first peer
        sink, sink_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        message = b"x" * 64
        samples = []
        for i in range(tokens + 50):
            start = time.perf_counter()
            writer.write(message)
            await sink.readexactly(len(message))
            if i >= 50:
                samples.append(time.perf_counter() - start)
        writer.close()
        sink_writer.close()
        return samples
    finally:
        process.kill()
        process.wait()


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": 1e3 * _percentile(samples, 0.50),
        "p90": 1e3 * _percentile(samples, 0.90),
        "p99": 1e3 * _percentile(samples, 0.99),
        "mean": 1e3 * statistics.fmean(samples),
        "samples": len(samples),
    }


# --------------------------------------------------------------------------- the run


async def _run(quick: bool) -> dict[str, Any]:
    tokens = 300 if quick else 3000
    paced_tokens = 300 if quick else 1500
    one_frames = 2000 if quick else 20_000
    many_channels, many_frames = (20, 100) if quick else (100, 400)
    idle_channels = 100 if quick else 1000
    repeats = 1 if quick else 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    results: dict[str, dict[str, Any]] = {name: {} for name in PAIRS}
    servers = {"relay": start_ours(), "streamrelay": start_streamrelay()}
    try:
        # (a) latency: interleave rounds so drift in machine load hits both alike.
        samples: dict[str, list[float]] = {name: [] for name in PAIRS}
        for _ in range(repeats):
            for name, pair in PAIRS.items():
                samples[name] += await latency(servers[name].url, pair, tokens // repeats)
        paced: dict[str, list[float]] = {name: [] for name in PAIRS}
        for _ in range(repeats):
            for name in PAIRS:
                paced[name] += await paced_latency(
                    servers[name].url, name, paced_tokens // repeats, 0.001
                )
        for name in PAIRS:
            results[name]["latency_ms"] = _summary(samples[name])
            results[name]["paced_latency_ms"] = _summary(paced[name])
        floor = _summary(await asyncio.wait_for(floor_latency(tokens), 60))
        # (b) throughput, median of interleaved repeats; relay CPU per frame on the side.
        for label, channels, frames in (
            ("one_channel", 1, one_frames),
            (f"{many_channels}_channels", many_channels, many_frames),
        ):
            runs: dict[str, list[float]] = {name: [] for name in PAIRS}
            cpu: dict[str, list[float]] = {name: [] for name in PAIRS}
            for _ in range(repeats):
                for name, pair in PAIRS.items():
                    pid = servers[name].process.pid
                    before = _cpu_seconds(pid)
                    runs[name].append(await throughput(servers[name].url, pair, channels, frames))
                    cpu[name].append(1e6 * (_cpu_seconds(pid) - before) / (channels * frames))
            for name in PAIRS:
                results[name].setdefault("frames_per_s", {})[label] = statistics.median(runs[name])
                results[name].setdefault("relay_cpu_us_per_frame", {})[label] = statistics.median(
                    cpu[name]
                )
    finally:
        for server in servers.values():
            server.stop()
    # (c) memory, on fresh server processes.
    for name, pair in PAIRS.items():
        server = start_ours() if name == "relay" else start_streamrelay()
        try:
            results[name]["idle_memory"] = await idle_memory(server, pair, idle_channels)
        finally:
            server.stop()

    ours, theirs = results["relay"], results["streamrelay"]
    ratios = {
        "latency_p50_vs_streamrelay": ours["latency_ms"]["p50"] / theirs["latency_ms"]["p50"],
        "latency_p99_vs_streamrelay": ours["latency_ms"]["p99"] / theirs["latency_ms"]["p99"],
        "paced_latency_p50_vs_streamrelay": ours["paced_latency_ms"]["p50"]
        / theirs["paced_latency_ms"]["p50"],
        "paced_latency_p99_vs_streamrelay": ours["paced_latency_ms"]["p99"]
        / theirs["paced_latency_ms"]["p99"],
        **{
            f"throughput_{label}_vs_streamrelay": ours["frames_per_s"][label]
            / theirs["frames_per_s"][label]
            for label in ours["frames_per_s"]
        },
        "idle_memory_vs_streamrelay": ours["idle_memory"]["added_mib"]
        / max(theirs["idle_memory"]["added_mib"], 1e-9),
    }
    goals = {
        "throughput_at_least_2x": all(
            v >= 2.0 for k, v in ratios.items() if k.startswith("throughput")
        ),
        "latency_p50_at_most_half": ratios["latency_p50_vs_streamrelay"] <= 0.5,
        "paced_latency_p50_at_most_half": ratios["paced_latency_p50_vs_streamrelay"] <= 0.5,
        "latency_p50_under_0_5_ms": ours["latency_ms"]["p50"] < 0.5
        and ours["paced_latency_ms"]["p50"] < 0.5,
    }
    return {
        "benchmark": "relay vs streamrelay 0.3.1 (both AES-256-GCM encrypted, loopback)",
        "quick": quick,
        "parameters": {
            "latency_tokens": tokens,
            "paced_tokens": paced_tokens,
            "paced_interval_s": 0.001,
            "one_channel_frames": one_frames,
            "many_channels": many_channels,
            "frames_per_channel": many_frames,
            "idle_channels": idle_channels,
            "repeats": repeats,
            "token": TOKEN,
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "websockets": metadata.version("websockets"),
            "cryptography": metadata.version("cryptography"),
            "streamrelay": metadata.version("streamrelay"),
            "loadavg_1m": os.getloadavg()[0],
        },
        "results": results,
        "floor_raw_tcp_forwarder_latency_ms": floor,
        "ratios": ratios,
        "goals_met": goals,
    }


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = list(results)
    colors = {"relay": "#1f77b4", "streamrelay": "#999999"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    width = 0.38

    ax = axes[0]
    groups = [
        ("latency_ms", "p50"),
        ("paced_latency_ms", "p50"),
        ("latency_ms", "p99"),
        ("paced_latency_ms", "p99"),
    ]
    for i, name in enumerate(names):
        values = [results[name][kind][q] for kind, q in groups]
        positions = [x + (i - 0.5) * width for x in range(len(groups))]
        ax.bar(positions, values, width, label=name, color=colors[name])
    ax.axhline(
        report["floor_raw_tcp_forwarder_latency_ms"]["p50"],
        color="black",
        lw=0.8,
        ls="--",
        label="bare TCP forwarder p50",
    )
    ax.set_xticks(
        range(len(groups)),
        ["ping-pong\np50", "paced\np50", "ping-pong\np99", "paced\np99"],
    )
    ax.set_yscale("log")
    ax.set_ylabel("ms, send -> verified receive (log)")
    ax.set_title("(a) latency per token")
    ax.legend()

    ax = axes[1]
    labels = list(results["relay"]["frames_per_s"])
    for i, name in enumerate(names):
        values = [results[name]["frames_per_s"][label] / 1000 for label in labels]
        ax.bar(
            [x + (i - 0.5) * width for x in range(len(labels))],
            values,
            width,
            label=name,
            color=colors[name],
        )
    ax.set_xticks(range(len(labels)), [label.replace("_", " ") for label in labels])
    ax.set_ylabel("thousand frames / s")
    ax.set_title("(b) sustained throughput")

    ax = axes[2]
    channels = report["parameters"]["idle_channels"]
    values = [results[name]["idle_memory"]["added_mib"] for name in names]
    ax.bar(names, values, color=[colors[n] for n in names])
    ax.set_ylabel("MiB added to relay RSS")
    ax.set_title(f"(c) memory, {channels} idle channels")

    fig.suptitle(report["benchmark"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, out: Path = RESULTS) -> dict[str, Any]:
    """Run the benchmark and write the JSON report and the plot.

    Args:
        quick: A small, fast smoke run (numbers not meaningful).
        out: Output directory.

    Returns:
        The report.
    """
    report = asyncio.run(_run(quick))
    stem = "relay_vs_streamrelay"
    write_results(out / f"{stem}.json", report)
    _plot(report, out / f"{stem}.png")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.relay [--quick] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    args = add_run_args(parser).parse_args(argv)
    start = time.monotonic()
    args.out = results_dir(args, RESULTS)
    report = run(args.quick, args.out)
    ours, theirs = report["results"]["relay"], report["results"]["streamrelay"]
    print(f"{'':28}{'relay':>14}{'streamrelay':>14}{'ratio':>9}")
    rows = [
        ("latency p50 (ms)", ours["latency_ms"]["p50"], theirs["latency_ms"]["p50"]),
        ("latency p99 (ms)", ours["latency_ms"]["p99"], theirs["latency_ms"]["p99"]),
        (
            "paced latency p50 (ms)",
            ours["paced_latency_ms"]["p50"],
            theirs["paced_latency_ms"]["p50"],
        ),
        (
            "paced latency p99 (ms)",
            ours["paced_latency_ms"]["p99"],
            theirs["paced_latency_ms"]["p99"],
        ),
        *[
            (f"frames/s {label}", ours["frames_per_s"][label], theirs["frames_per_s"][label])
            for label in ours["frames_per_s"]
        ],
        *[
            (
                f"relay CPU us/frame {label}",
                ours["relay_cpu_us_per_frame"][label],
                theirs["relay_cpu_us_per_frame"][label],
            )
            for label in ours["relay_cpu_us_per_frame"]
        ],
        (
            "idle memory added (MiB)",
            ours["idle_memory"]["added_mib"],
            theirs["idle_memory"]["added_mib"],
        ),
    ]
    for label, a, b in rows:
        print(f"{label:28}{a:14.3f}{b:14.3f}{a / b if b else float('nan'):9.2f}")
    floor = report["floor_raw_tcp_forwarder_latency_ms"]
    print(f"floor (bare TCP forwarder) p50 {floor['p50']:.3f} ms, p99 {floor['p99']:.3f} ms")
    print("goals met:", json.dumps(report["goals_met"]))
    print(f"({time.monotonic() - start:.0f} s; results in {args.out})")
    return 0
