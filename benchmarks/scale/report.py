"""README rows of the scale-out benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def readme_rows(results_dir: Path) -> list[Row]:
    """Redis-backed limits' added latency; relay and endpoint failover's added TTFT; one vs
    two replicas' requests/s."""
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
        *_throughput_rows(data, path),
    ]


def _throughput_rows(data: dict[str, Any], path: Path) -> list[Row]:
    tp = data.get("throughput")
    if tp is None:
        return []
    return [Row(
        claim=f"proxy throughput on this machine ({tp['cores']} cores): replica processes over "
              f"an instant tier, {tp['clients']} concurrent clients, {tp['requests']} "
              "non-streamed requests",
        figure=f"one replica without Redis {tp['one_no_redis']['requests_per_s']:.0f}/s; with "
               f"Redis one {tp['one']['requests_per_s']:.0f}/s, two "
               f"{tp['two']['requests_per_s']:.0f}/s (x{tp['two_over_one']:.2f}); errors "
               f"{tp['one_no_redis']['errors'] + tp['one']['errors'] + tp['two']['errors']}",
        reproduce="same", sources=(path,))]
