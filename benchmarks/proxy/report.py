"""README rows of the proxy benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def _added(r: dict[str, Any]) -> str:
    a = r["added_ttft_ms"]
    text = (f"{r['sub_model']} ({r['runs']} pairs): p50 {a['p50']:.1f} ms, "
            f"p95 {a['p95']:.1f} ms")
    if "http_round_trip_ms" in r:
        text += f" (a bare GET /health round trip: p50 {r['http_round_trip_ms']['p50']:.1f} ms)"
    return text


def _failed(row: dict[str, Any]) -> str:
    bad = [f"{name} {row[name]['failed']} of {row['requests']}" for name in ("stream", "litellm")
           if row[name]["failed"]]
    return f" (failed: {', '.join(bad)})" if bad else ""


def _versus(v: dict[str, Any] | None) -> str:
    if v is None:
        return "not measured in this run"
    a = v["added_ttft"]
    s = a["stream"]
    if "litellm" not in a:
        return (f"STREAM alone (LiteLLM not run): added TTFT p50 "
                f"{s['added_ttft_ms']['p50']:.1f} ms, p95 {s['added_ttft_ms']['p95']:.1f} ms; "
                f"CPU {s['cpu_ms_per_request']:.1f} ms/request")
    lt, r, g = a["litellm"], v["ratios"], v["goals"]
    load = "; ".join(
        f"{row['streams']} streams: {row['stream']['requests_per_s']:.0f} vs "
        f"{row['litellm']['requests_per_s']:.0f} requests/s "
        f"({r['requests_per_s'][str(row['streams'])]:.1f}x), CPU "
        f"{row['stream']['cpu_ms_per_request']:.1f} vs "
        f"{row['litellm']['cpu_ms_per_request']:.1f} ms/request" + _failed(row)
        for row in v["throughput"])
    return (f"added TTFT p50 {s['added_ttft_ms']['p50']:.1f} vs "
            f"{lt['added_ttft_ms']['p50']:.1f} ms ({r['added_ttft_p50']:.2f}x, goal <= "
            f"{g['p50_ratio']:g}x), p95 {s['added_ttft_ms']['p95']:.1f} vs "
            f"{lt['added_ttft_ms']['p95']:.1f} ms ({r['added_ttft_p95']:.2f}x, goal <= "
            f"{g['p95_ratio']:g}x) over {a['rounds']} interleaved rounds; CPU "
            f"{s['cpu_ms_per_request']:.1f} vs {lt['cpu_ms_per_request']:.1f} ms/request; "
            + load)


def readme_rows(results_dir: Path) -> list[Row]:
    """Added TTFT per sub-model, concurrency, and tokens generated after a disconnect."""
    path = results_dir / "proxy.json"
    data = load_results(path)
    goals = data["goals"]
    conc = data["concurrency"]
    t = conc["ttft_ms"]
    cancel = "; ".join(
        f"{c['tier']}: max {c['max']}, mean {c['mean']:.1f} over {c['trials']} trials"
        + (f", node producer cancelled {sum(c['node_cancelled'])} of {c['trials']}"
           if "node_cancelled" in c else "")
        for c in data["cancellation"])
    return [
        Row(claim="proxy: added TTFT, a streamed request through `stream proxy` (own process, "
                  "httpx client) minus the same ChatStream in process; the ASGI row calls the "
                  "app in process (no sockets)",
            figure="; ".join(_added(r) for r in data["added_ttft"])
                   + f" (goal p50 <= {goals['added_ttft_p50_ms']:g} ms on the instant model)",
            reproduce="`python -m benchmarks.proxy`", sources=(path,)),
        Row(claim=f"proxy: {conc['clients']} concurrent streaming clients "
                  f"({conc['tokens_each']} tokens each, {conc['token_interval_ms']} ms apart)",
            figure=f"{conc['failed']} failed (goal {goals['failed']}); TTFT p50 "
                   f"{t['p50']:.0f} ms, p95 {t['p95']:.0f} ms",
            reproduce="same", sources=(path,)),
        Row(claim="proxy: STREAM's proxy (stream-local forced) vs LiteLLM's proxy"
                  + (f" {data['versus_litellm']['litellm_version']}"
                     if (data.get("versus_litellm") or {}).get("litellm_version") else "")
                  + ", one worker each, same instant OpenAI-compatible backend",
            figure=_versus(data.get("versus_litellm")), reproduce="same", sources=(path,)),
        Row(claim="proxy: tokens the tier generated after the client disconnected (client "
                  "reads 5 chunks, then closes)",
            figure=f"{cancel} (goal on HPC <= {goals['hpc_tokens_after_close']})",
            reproduce="same", sources=(path,)),
    ]
