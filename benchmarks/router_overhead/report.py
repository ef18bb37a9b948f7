"""README rows of the router-overhead benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def readme_rows(results_dir: Path) -> list[Row]:
    """One row: overhead p50/p95 per sub-model (instant and llama.cpp), with the goal."""
    path = results_dir / "router_overhead.json"
    data = load_results(path)
    parts = []
    for r in data["results"]:
        o, d = r["overhead_ms"], r["direct_ttft_ms"]
        parts.append(f"{r['sub_model']}: p50 {o['p50']:.2f} ms, p95 {o['p95']:.1f} ms "
                     f"(direct TTFT p50 {d['p50']:.1f} ms)")
    first = data["results"][0]
    return [Row(
        claim=f"router overhead: TTFT via ChatStream minus the same sub-model called directly, "
              f"{first['runs']} paired runs each, judge {first['judge']}",
        figure="; ".join(parts) + f" (goal: {data['goal']})",
        reproduce="`python -m benchmarks.router_overhead`",
        sources=(path,))]
