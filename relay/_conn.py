"""Connection-level state of the relay server (private): one channel, one connection.

:class:`Conn` is an :class:`asyncio.Protocol` around websockets' Sans-I/O
:class:`~websockets.server.ServerProtocol`; :class:`Channel` pairs a producer's
connection with a consumer's. The policy (authorization, limits, reaping) lives in
:class:`relay.server.RelayServer`, which these objects call back through the
:class:`Policy` interface (so this module does not import the server). A message that an
intermediary split into fragments (RFC 6455 section 5.4) is joined before the server
sees it, so every frame it forwards is whole.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Protocol, cast

from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from relay._common import wire_logger
from relay.config import Limits, Timeouts
from relay.metrics import Metrics

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_PEER_LEFT",
    "CLOSE_PRODUCER_LOST",
    "CLOSE_TIMED_OUT",
    "CLOSE_UNSUPPORTED",
    "Channel",
    "Conn",
    "Policy",
    "ws_header",
]

_BINARY, _TEXT, _CONT, _CLOSE = Opcode.BINARY, Opcode.TEXT, Opcode.CONT, Opcode.CLOSE
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")

#: Close codes the relay sends.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_PRODUCER_LOST = 1011
CLOSE_PEER_LEFT = 4000
CLOSE_TIMED_OUT = 4408


def ws_header(length: int) -> bytes:
    """Header of an unmasked, final, binary WebSocket frame of ``length`` bytes."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return _SHORT.pack(0x82, 126, length)
    return _LONG.pack(0x82, 127, length)


class Channel:
    """State of one channel: at most one producer and one consumer."""

    __slots__ = (
        "id",
        "producer",
        "consumer",
        "buffer",
        "buffered",
        "producer_joined",
        "consumer_joined",
        "producer_done",
        "end_code",
        "end_reason",
        "created",
        "last",
        "reading_paused",
        "consumer_slow",
    )

    def __init__(self, channel_id: str, now: float) -> None:
        self.id = channel_id
        self.producer: Conn | None = None
        self.consumer: Conn | None = None
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.producer_joined = False
        self.consumer_joined = False
        self.producer_done = False
        self.end_code = CLOSE_NORMAL
        self.end_reason = ""
        self.created = now
        self.last = now
        self.reading_paused = False
        self.consumer_slow = False


class Policy(Protocol):
    """What a :class:`Conn` needs from the server that accepted it; implemented by
    :class:`relay.server.RelayServer`."""

    timeouts: Timeouts
    limits: Limits

    metrics: Metrics
    _conns: set[Conn]

    def _on_request(self, conn: Conn, request: Request) -> None: ...

    def _on_frame(self, conn: Conn, data: bytes | bytearray | memoryview) -> None: ...

    def _on_leave(self, conn: Conn, close: Close | None) -> None: ...

    def _update_reading(self, channel: Channel) -> None: ...


class Conn(asyncio.Protocol):
    """One TCP connection: an HTTP request, then (maybe) a WebSocket."""

    def __init__(self, server: Policy) -> None:
        self.server = server
        self.proto = ServerProtocol(max_size=server.limits.max_frame_bytes, logger=wire_logger)
        self.proto.debug = False  # never log handshake headers (they carry tokens)
        self.transport: asyncio.Transport | None = None
        self.role: str | None = None
        self.channel: Channel | None = None
        self.out: list[bytes] = []
        # The binary message being reassembled from fragments, if any. The protocol
        # object refuses continuations out of sequence (1002) and counts every fragment
        # against max_frame_bytes (1009), so this never holds more than that.
        self.partial: bytearray | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not necessarily an ``asyncio.Transport`` subclass (uvloop's
        # TCPTransport is not), so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=self.server.limits.write_buffer_bytes)
        self.server._conns.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.server.timeouts.open, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        server = self.server
        for event in proto.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _BINARY:
                    if event.fin:
                        server._on_frame(self, event.data)
                    else:
                        self.partial = bytearray(event.data)
                elif opcode is _CONT:
                    partial = self.partial
                    if partial is not None:  # None: the rest of a refused text message
                        partial += event.data
                        if event.fin:
                            self.partial = None
                            server._on_frame(self, partial)
                elif opcode is _TEXT:
                    self.close(CLOSE_UNSUPPORTED, "relay frames are binary")
                elif opcode is _CLOSE:
                    server._on_leave(self, proto.close_rcvd)
            elif type(event) is Request:
                server._on_request(self, event)
        channel = self.channel
        if channel is not None and channel.consumer is not None and channel.consumer.out:
            channel.consumer.flush()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.proto.receive_eof()
        self.server._conns.discard(self)
        self.server._on_leave(self, None)

    def pause_writing(self) -> None:
        channel = self.channel
        if channel is not None and channel.consumer is self:
            channel.consumer_slow = True
            self.server._update_reading(channel)

    def resume_writing(self) -> None:
        channel = self.channel
        if channel is not None and channel.consumer is self:
            channel.consumer_slow = False
            self.server._update_reading(channel)

    # helpers

    def flush(self) -> None:
        """Write forwarded frames, then whatever the protocol has to send."""
        transport = self.transport
        if transport is None or self.closed:
            self.out.clear()
            return
        out = self.out
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        for data in self.proto.data_to_send():
            if data:
                transport.write(data)
            else:  # the protocol wants the TCP connection closed (server side)
                transport.close()
        if self.proto.close_expected() and self._timer is None and not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.server.timeouts.close, transport.abort)

    def respond(self, status: int, body: str, content_type: str, reject: str = "") -> None:
        """Send a plain HTTP response (and close)."""
        self._cancel_timer()
        response = self.proto.reject(status, body)
        del response.headers["Content-Type"]  # websockets' Headers appends on assignment
        response.headers["Content-Type"] = content_type
        if reject:
            response.headers["X-Relay-Reject"] = reject
        self.proto.send_response(response)
        self.flush()

    def accept(self, response: Response) -> None:
        self._cancel_timer()
        self.proto.send_response(response)
        self.flush()

    def close(self, code: int, reason: str) -> None:
        """Start the WebSocket closing handshake (after flushing forwarded frames)."""
        if self.closed or self.transport is None:
            return
        if self.proto.state is not State.OPEN:
            if self.proto.state is State.CONNECTING:
                self.transport.abort()
            return
        self.flush()
        self.proto.send_close(code, reason)
        self.flush()

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.transport is not None and self.role is None:
            self.server.metrics.reject("handshake-timeout")
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
