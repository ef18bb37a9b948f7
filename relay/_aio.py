"""A lean asyncio WebSocket client connection on websockets' Sans-I/O protocol.

Used by :class:`relay.AsyncProducer` and :class:`relay.Consumer`. Incoming binary
messages are queued as they are parsed (no per-message task), outgoing ones are
written straight to the transport, and flow control works both ways: the socket
stops being read when the application falls behind, and ``send`` waits when the
transport's buffer is full. A message that an intermediary split into fragments
(RFC 6455 section 5.4) is joined before it is queued.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from relay._common import handshake_error, wire_logger
from relay.errors import ChannelClosed, ConnectTimeout, RelayUnreachable

__all__ = ["WSClient", "ws_connect"]

_BINARY, _TEXT, _CONT, _CLOSE = Opcode.BINARY, Opcode.TEXT, Opcode.CONT, Opcode.CLOSE
_CORK_LIMIT = 64


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class WSClient(asyncio.Protocol):
    """One client WebSocket connection (see :func:`ws_connect`)."""

    def __init__(self, uri: str, *, max_size: int, close_timeout: float, max_queue: int) -> None:
        self.proto = ClientProtocol(parse_uri(uri), max_size=max_size, logger=wire_logger)
        self.proto.debug = False  # never log handshake headers (they carry tokens)
        self.close_timeout = close_timeout
        self.transport: asyncio.Transport | None = None
        self.messages: deque[bytes | bytearray | memoryview] = deque()
        # The message being reassembled from fragments, if any. The protocol object
        # refuses continuations out of sequence (1002) and counts every fragment against
        # max_size (1009), so this never holds more than max_size bytes.
        self._partial: bytearray | None = None
        self.max_queue = max_queue
        self.lost = False
        self.close_code: int | None = None
        self.close_reason = ""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._handshake: asyncio.Future[Response] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not necessarily an ``asyncio.Transport`` subclass (uvloop's
        # TCPTransport is not), so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _BINARY or opcode is _TEXT:
                    if event.fin:
                        self.messages.append(event.data)
                    else:
                        self._partial = bytearray(event.data)
                elif opcode is _CONT:
                    partial = self._partial
                    assert partial is not None  # the protocol checked the sequence
                    partial += event.data
                    if event.fin:
                        self.messages.append(partial)
                        self._partial = None
                elif opcode is _CLOSE and proto.close_rcvd is not None:
                    self.close_code = proto.close_rcvd.code
                    self.close_reason = proto.close_rcvd.reason
            elif isinstance(event, Response) and not self._handshake.done():
                self._handshake.set_result(event)
        self._flush()
        waiter = self._waiter
        if waiter is not None and self.messages and not waiter.done():
            waiter.set_result(None)
        if len(self.messages) >= self.max_queue and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        self.proto.receive_eof()
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionError("connection closed during handshake"))
        if not self._closed.done():
            self._closed.set_result(None)
        for fut in (self._waiter, self._drain):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # I/O

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or self.lost:
            self.proto.data_to_send()
            return
        chunks = self.proto.data_to_send()
        if not chunks:
            return
        if len(chunks) > 1 and all(chunks):
            transport.write(b"".join(chunks))
        else:
            for data in chunks:
                if data:
                    transport.write(data)
                elif transport.can_write_eof():
                    transport.write_eof()
        if self.proto.close_expected() and self._abort_timer is None:
            self._abort_timer = self._loop.call_later(self.close_timeout, transport.abort)

    @property
    def open(self) -> bool:
        """True while messages can be sent."""
        return self.proto.state is State.OPEN and not self.lost

    def closed_error(self, what: str) -> ChannelClosed:
        """The error describing why the connection is no longer open."""
        code, reason = self.close_code, self.close_reason
        detail = f" ({code}{': ' + reason if reason else ''})" if code is not None else ""
        return ChannelClosed(f"{what}: the relay closed the channel{detail}", code, reason)

    async def send(self, data: bytes) -> None:
        """Send one binary message, waiting if the transport's buffer is full.

        The first message of an event-loop iteration is written at once; later ones in
        the same iteration are written together when it ends (one system call instead
        of one per message), at most ``_CORK_LIMIT`` at a time.

        Raises:
            ChannelClosed: If the connection is no longer open.
        """
        proto = self.proto
        if proto.state is not State.OPEN or self.lost:
            raise self.closed_error("cannot send")
        proto.send_binary(data)
        if not self._flush_scheduled:
            # First message of this loop iteration: write it now (lowest latency) and
            # cork the rest of the iteration's messages into one write.
            self._flush()
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        elif len(proto.writes) >= _CORK_LIMIT:
            self._flush()
            self._flush_scheduled = True
        if self._write_paused:
            self._drain = self._loop.create_future()
            await self._drain
            if self.lost:
                raise self.closed_error("cannot send")

    async def recv(self, timeout: float) -> bytes | bytearray | memoryview | None:
        """Next message, or ``None`` once the connection has ended.

        Raises:
            TimeoutError: If nothing arrives within ``timeout`` seconds.
        """
        messages = self.messages
        if not messages:
            if self.lost or self.proto.state is State.CLOSED:
                return None
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not messages:
                return None
        data = messages.popleft()
        if self._read_paused and len(messages) <= self.max_queue // 4:
            self._read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (closing handshake, bounded by ``close_timeout``)."""
        if self.transport is None:
            return
        if self.proto.state is State.OPEN and not self.lost:
            self.proto.send_close(code, reason)
        self._flush()
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), self.close_timeout)
        except TimeoutError:
            self.transport.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self.transport is not None:
            self.transport.abort()


async def ws_connect(
    url: str,
    token: str | None,
    *,
    open_timeout: float,
    close_timeout: float,
    max_size: int,
    max_queue: int = 1024,
) -> WSClient:
    """Open a WebSocket connection, sending ``token`` as a bearer token in a header.

    Raises:
        ConnectTimeout: The TCP connection or handshake took longer than ``open_timeout``.
        RelayUnreachable: The relay could not be reached.
        AuthRejected: The relay refused the token.
        RelayRefused: The relay refused the connection for another reason.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"invalid relay URL: {exc}") from None
    loop = asyncio.get_running_loop()
    client = WSClient(url, max_size=max_size, close_timeout=close_timeout, max_queue=max_queue)
    ssl = ssl_module.create_default_context() if uri.secure else None
    try:
        async with asyncio.timeout(open_timeout):
            await loop.create_connection(lambda: client, uri.host, uri.port, ssl=ssl)
            request = client.proto.connect()
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
            client.proto.send_request(request)
            client._flush()
            await client._handshake
    except TimeoutError:
        client.abort()
        raise ConnectTimeout(
            f"no connection to the relay at {uri.host}:{uri.port} within {open_timeout}s"
        ) from None
    except OSError as exc:
        client.abort()
        raise RelayUnreachable(f"cannot reach the relay at {uri.host}:{uri.port}: {exc}") from None
    if client.proto.handshake_exc is not None:
        client.abort()
        raise handshake_error(client.proto.handshake_exc)
    return client
