"""Server-sent events that stop the producer the moment the client leaves.

:class:`SSEResponse` sends the events of an async generator and, at the same time, waits for
the client's ``http.disconnect``; when it comes first, the sending task is cancelled, which
raises ``CancelledError`` inside whatever the generator awaits (the ChatStream, and under it
the tier: the HPC consumer closes its relay channel, llama.cpp stops after its current
token), and the generator's ``finally`` records the request as aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["SSEResponse", "sse_data", "sse_error"]


def sse_data(obj: Any) -> bytes:
    """One ``data:`` event."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def sse_error(body: Mapping[str, Any]) -> bytes:
    """An ``error`` event (the ``openai`` SDK raises ``APIError`` on it)."""
    return b"event: error\ndata: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class SSEResponse(StreamingResponse):
    """``text/event-stream`` response over an async generator of encoded events."""

    def __init__(self, events: AsyncGenerator[bytes, None], *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no",
                                  **(headers or {})})
        self._events = events

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for event in self._events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self._events.aclose()

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(self._watch(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                if not task.done():
                    task.cancel()  # the pump: the client left, or the server is stopping
            for task in (pump, watch):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
