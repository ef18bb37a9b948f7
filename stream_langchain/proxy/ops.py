"""Operations: Prometheus metrics and structured access logs (never a key, never a body).

Each app owns its :class:`Metrics` (its own registry), so several proxies in one process
(tests, benchmarks) do not share counters. :class:`AccessLog` is plain ASGI middleware: one
JSON line per request after its response ends (streams included), with what the handler
put in ``scope["state"]["log"]`` (identity, model, tier, tokens).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "AccessLog", "Metrics"]

ACCESS_LOGGER = "stream_langchain.proxy.access"


class Metrics:
    """The proxy's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http = Counter("stream_proxy_http_responses_total", "HTTP responses",
                            ["path", "status"], registry=r)
        self.requests = Counter("stream_proxy_requests_total",
                                "Chat requests by model asked, tier used and outcome",
                                ["model", "tier", "status"], registry=r)
        self.tokens = Counter("stream_proxy_tokens_total", "Tokens by tier and direction",
                              ["tier", "direction"], registry=r)
        self.ttft = Histogram("stream_proxy_ttft_seconds", "Time to first token at the proxy",
                              ["tier"], registry=r,
                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.in_flight = Gauge("stream_proxy_in_flight", "Chat requests in progress",
                               registry=r)
        self.cancelled = Counter("stream_proxy_cancelled_total",
                                 "Streams cancelled because the client disconnected",
                                 registry=r)


_KNOWN_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/admin/usage", "/health",
                "/metrics", "/v1/responses")


class AccessLog:
    """ASGI middleware: one structured log line and one metric per HTTP response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        state = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            label = next((p for p in _KNOWN_PATHS if path.startswith(p)), "other")
            self.metrics.http.labels(label, str(status[0] or 500)).inc()
            if self.logger.isEnabledFor(logging.INFO):
                line: dict[str, Any] = {
                    "event": "access", "method": scope.get("method"), "path": path,
                    "status": status[0] or None,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "client": (scope.get("client") or (None,))[0],
                }
                line.update(state.get("log") or {})
                self.logger.info(json.dumps(line, separators=(",", ":"), default=str))
