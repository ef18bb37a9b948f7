"""README rows of the scale-out benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def readme_rows(results_dir: Path) -> list[Row]:
    """Redis-backed limits' added latency; relay and endpoint failover's added TTFT."""
    path = results_dir / "scale.json"
    data = load_results(path)
    lim, req, fo = data["limits"], data["requests"], data["failover"]
    reproduce = "`python -m benchmarks.scale` (Redis: `--redis URL`)"
    return [
        Row(claim="proxy replicas sharing Redis (loopback): one admission (Lua script) and "
                  "the per-request revocation + breaker read, against in-process limits; "
                  "whole non-streamed requests through the ASGI app, alternated with and "
                  "without Redis",
            figure=f"admission p50 {lim['redis_admit']['p50_ms']:.2f} ms / p95 "
                   f"{lim['redis_admit']['p95_ms']:.2f} ms (in process "
                   f"{lim['in_process']['p50_ms'] * 1000:.0f} us); revocation + breaker read "
                   f"p50 {lim['redis_revocation_breaker_read']['p50_ms']:.2f} ms; added per "
                   f"request p50 {lim['added_p50_ms']:.2f} ms (goal <= "
                   f"{lim['goal_p50_ms']:.0f} ms); whole requests p50 "
                   f"{req['in_process']['p50_ms']:.2f} -> {req['redis']['p50_ms']:.2f} ms, p95 "
                   f"{req['in_process']['p95_ms']:.2f} -> {req['redis']['p95_ms']:.2f} ms",
            reproduce=reproduce, sources=(path,)),
        Row(claim="HPC failover before the first token (loopback relays, thread-pool "
                  "endpoints, paced backend): added TTFT when the first relay refuses, when it "
                  "hangs, and when the first endpoint never starts the task",
            figure=f"relay refused {fo['relay_failover']['added_ttft_p50_ms']:+.1f} ms; relay "
                   f"hung {fo['relay_hung_failover']['added_ttft_p50_ms']:+.0f} ms "
                   f"(relay_open_timeout {fo['relay_hung_failover']['relay_open_timeout_s']} "
                   f"s); endpoint {fo['endpoint_failover']['added_ttft_p50_ms']:+.0f} ms "
                   f"(queue_timeout {fo['endpoint_failover']['queue_timeout_s']} s); every "
                   f"request streamed (p50 TTFT healthy {fo['healthy']['p50_ms']:.1f} ms)",
            reproduce="same", sources=(path,)),
    ]
