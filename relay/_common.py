"""Helpers shared by the sync and async clients (no I/O of their own)."""

from __future__ import annotations

import logging
from typing import Any

from websockets.exceptions import InvalidStatus

from relay.errors import (
    AUTH_REASONS,
    AuthRejected,
    ChannelClosed,
    RelayError,
    RelayRefused,
    TruncatedStream,
)
from relay.seal import KEY_SIZE, Data, Verifier
from relay.tokens import check_channel

__all__ = [
    "END",
    "HOLD",
    "ConsumerCore",
    "endpoint",
    "handshake_error",
    "normalize_key",
    "wire_logger",
]

#: Logger handed to the websockets protocol objects. Its level is pinned above DEBUG so
#: that handshake headers (which carry capability tokens) are never logged.
wire_logger = logging.getLogger("relay.wire")
if wire_logger.level == logging.NOTSET:
    wire_logger.setLevel(logging.WARNING)

#: Sentinels returned by :meth:`ConsumerCore.on_message`.
HOLD: Any = object()
END: Any = object()


def normalize_key(key: bytes | str) -> bytes:
    """Accept a 32-byte key, or its 64-character hex form."""
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            raise ValueError("a key given as text must be 64 hex characters") from None
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(f"the key must be {KEY_SIZE} bytes (use relay.new_key())")
    return bytes(key)


def endpoint(url: str, role: str, channel: str) -> str:
    """The WebSocket URL of one side of a channel (the token never goes in it)."""
    if not url.startswith(("ws://", "wss://")):
        raise ValueError("the relay URL must start with ws:// or wss://")
    check_channel(channel)
    return f"{url.rstrip('/')}/{'produce' if role == 'producer' else 'consume'}/{channel}"


def handshake_error(exc: BaseException) -> RelayError:
    """Translate a refused WebSocket handshake into the relay's error."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = response.status_code
        reason = response.headers.get("X-Relay-Reject", "")
        body = (response.body or b"").decode("utf-8", "replace").strip()[:200]
        if status in (401, 403):
            return AuthRejected(reason if reason in AUTH_REASONS else "forged")
        if status == 410:
            return ChannelClosed("the channel has already ended (its consumer left)", None, body)
        return RelayRefused(status, body or reason or "no explanation")
    return RelayRefused(0, f"invalid handshake: {exc}")


class ConsumerCore:
    """Consumer state shared by :class:`relay.Consumer` and :class:`relay.SyncConsumer`."""

    def __init__(self, key: bytes, channel: str) -> None:
        self.verifier = Verifier(key, channel)
        self.usage: dict[str, Any] | None = None
        self.frames: int | None = None
        self.done = False
        self.received = 0

    def on_message(self, data: Any) -> Any:
        """Verify one message: returns the payload, :data:`HOLD` or :data:`END`."""
        if isinstance(data, str):
            data = data.encode()
        self.received += 1
        event = self.verifier.feed(data)
        if event is None:
            return HOLD
        if isinstance(event, Data):
            return event.payload
        self.usage, self.frames, self.done = event.usage, event.frames, True
        return END

    def on_closed(self, code: int | None, reason: str) -> None:
        """The connection ended: raise the integrity error that explains it."""
        try:
            self.verifier.close()
        except TruncatedStream as exc:
            detail = f": {reason}" if reason else ""
            said = f" (relay closed the connection with {code}{detail})" if code else ""
            raise TruncatedStream(f"{exc}{said}") from None
