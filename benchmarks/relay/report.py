"""README rows of the relay benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def readme_rows(results_dir: Path) -> list[Row]:
    """This relay against streamrelay 0.3.1: throughput, latency, memory, and goals missed."""
    path = results_dir / "relay_vs_streamrelay.json"
    data = load_results(path)
    ours, theirs = data["results"]["relay"], data["results"]["streamrelay"]
    p = data["parameters"]
    fps = ours["frames_per_s"]
    ratio = {k: fps[k] / theirs["frames_per_s"][k] for k in fps}
    missed = [k for k, ok in data["goals_met"].items() if not ok]
    lat = (f"p50 added latency {ours['latency_ms']['p50']:.2f} ms vs "
           f"{theirs['latency_ms']['p50']:.2f} ms (p99 {ours['latency_ms']['p99']:.2f} vs "
           f"{theirs['latency_ms']['p99']:.2f}; bare TCP forwarder "
           f"{data['floor_raw_tcp_forwarder_latency_ms']['p50']:.2f})")
    mem = (f"{ours['idle_memory']['added_mib']:.0f} vs "
           f"{theirs['idle_memory']['added_mib']:.0f} MiB for {p['idle_channels']:,} idle "
           "channels")
    thr = ", ".join(f"{r:.1f}x ({k.replace('_', ' ')})" for k, r in ratio.items())
    return [Row(
        claim="relay vs streamrelay 0.3.1, both AES-256-GCM encrypted, loopback",
        figure=f"frames/s {thr}; {lat}; {mem}; goals missed: "
               + (", ".join(missed) if missed else "none"),
        reproduce="`python -m benchmarks.relay`",
        sources=(path,))]
