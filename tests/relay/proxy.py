"""A re-fragmenting WebSocket proxy for the relay tests: real sockets on loopback.

:class:`FragmentingProxy` stands between clients and a relay, as an intermediary may
(RFC 6455 section 5.4). It passes the HTTP upgrade through unchanged, then parses every
WebSocket frame in both directions and sends each whole data message on as several
frames: a first frame (fin=False), then continuation frames, the last one final, with a
ping between the first two (control frames may be interleaved, section 5.5). Frames
towards the relay are masked with a fresh key, frames towards a client are not; frames
that break this rule are recorded in :attr:`FragmentingProxy.errors`. The pongs that
answer its own pings are counted, not forwarded.

A ``fault`` turns the proxy into a broken intermediary for the first data message of
each connection in one direction: ``"orphan"`` sends the message as a lone continuation
frame, ``"interrupt"`` sends a first fragment and then a new whole message.

With ``parts=1`` it forwards data messages unchanged: a frame-level observer, for
comparisons. It runs its own event loop in a thread, so sync clients can use it too.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from typing import Literal

from websockets.frames import Close, Frame, Opcode
from websockets.utils import apply_mask

__all__ = ["Direction", "Fault", "FragmentingProxy"]

#: ``"upstream"``: client to relay (masked); ``"downstream"``: relay to client (unmasked).
Direction = Literal["upstream", "downstream"]
#: ``"orphan"``: a continuation without a first frame; ``"interrupt"``: a new message
#: inside a fragmented one.
Fault = Literal["orphan", "interrupt"]

_DATA = (Opcode.TEXT, Opcode.BINARY)


class _MaskingError(Exception):
    """A frame was masked where it must not be, or the other way round."""


async def _read_frame(reader: asyncio.StreamReader, *, masked: bool) -> Frame:
    """Read one frame (RFC 6455 section 5.2), checking the masking rule."""
    head = await reader.readexactly(2)
    if bool(head[1] & 0x80) != masked:
        raise _MaskingError(f"frame {'not ' if masked else ''}masked: {head.hex()}")
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if masked else b""
    data = await reader.readexactly(length)
    fin, opcode = bool(head[0] & 0x80), Opcode(head[0] & 0x0F)
    return Frame(opcode, apply_mask(data, key) if masked else data, fin)


def _split(data: bytes, parts: int) -> list[bytes]:
    """``data`` cut into ``parts`` pieces of near-equal size (some empty if it is short)."""
    cuts = [len(data) * i // parts for i in range(parts + 1)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


class _Link:
    """One proxied connection: the pings sent on it and the faults still to inject."""

    def __init__(self, faults: set[Direction]) -> None:
        self.pings: set[bytes] = set()
        self.faults = set(faults)


class FragmentingProxy:
    """A TCP proxy in front of ``upstream_port`` that re-fragments every data message.

    Args:
        upstream_port: The relay's port on 127.0.0.1.
        parts: Frames each data message is split into; ``1`` forwards data messages
            unchanged (a plain proxy, for comparison).
        fault: ``"orphan"`` or ``"interrupt"`` (see the module docstring), or ``None``.
        fault_direction: The direction the fault is injected into.

    Attributes:
        split: Data messages sent on fragmented, by direction.
        largest_fragment: Longest fragment payload sent, by direction.
        closes: ``(direction, code)`` of every close frame seen.
        errors: Masking-rule violations seen.
        pings: Pings sent; ``pongs``: pongs received for them.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        parts: int = 4,
        fault: Fault | None = None,
        fault_direction: Direction = "upstream",
    ) -> None:
        """Configure the proxy; it listens once entered as a context manager."""
        self.upstream_port = upstream_port
        self.parts = parts
        self.fault = fault
        self.fault_direction = fault_direction
        self.port = 0
        self.split: Counter[str] = Counter()
        self.largest_fragment: Counter[str] = Counter()
        self.closes: list[tuple[Direction, int]] = []
        self.errors: list[str] = []
        self.pings = self.pongs = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base URL clients connect to instead of the relay's."""
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> FragmentingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        """Stop listening, and let the connections still open finish (5 s at most)."""
        assert self._server is not None
        self._server.close()
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=5)
            for task in pending:
                task.cancel()
        await self._server.wait_closed()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        writers = [client_writer]
        try:
            relay_reader, relay_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
            writers.append(relay_writer)
            relay_writer.write(await client_reader.readuntil(b"\r\n\r\n"))
            response = await relay_reader.readuntil(b"\r\n\r\n")
            client_writer.write(response)
            if response.startswith(b"HTTP/1.1 101 "):
                link = _Link({self.fault_direction} if self.fault else set())
                await asyncio.gather(
                    self._pump(client_reader, relay_writer, "upstream", link),
                    self._pump(relay_reader, client_writer, "downstream", link),
                )
            else:  # a refusal: its body, then the relay closes
                client_writer.write(await relay_reader.read())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for writer in writers:
                writer.close()
            self._handlers.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        link: _Link,
    ) -> None:
        """Forward frames one way until the sender's end of the connection closes."""
        mask = direction == "upstream"
        try:
            while True:
                frame = await _read_frame(reader, masked=mask)
                if frame.opcode in _DATA and frame.fin:
                    frames = self._refragment(frame, direction, link)
                elif frame.opcode is Opcode.PONG and frame.data in link.pings:
                    link.pings.discard(bytes(frame.data))
                    self.pongs += 1
                    continue
                else:
                    if frame.opcode is Opcode.CLOSE:
                        self.closes.append((direction, Close.parse(frame.data).code))
                    frames = [frame]
                writer.write(b"".join(f.serialize(mask=mask) for f in frames))
                await writer.drain()
        except _MaskingError as exc:
            self.errors.append(f"{direction}: {exc}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()  # the peer sees the connection end as the sender ended it

    def _refragment(self, frame: Frame, direction: Direction, link: _Link) -> list[Frame]:
        """The frames a whole data message is sent on as (or a fault in their place)."""
        data = bytes(frame.data)
        if direction in link.faults:
            link.faults.discard(direction)
            if self.fault == "orphan":
                return [Frame(Opcode.CONT, data)]
            return [Frame(frame.opcode, data[:1], fin=False), Frame(frame.opcode, data)]
        if self.parts == 1:
            return [frame]
        first, *rest = pieces = _split(data, self.parts)
        frames = [Frame(frame.opcode, first, fin=False)]
        self.pings += 1
        payload = b"proxy ping %d" % self.pings
        link.pings.add(payload)
        frames.append(Frame(Opcode.PING, payload))
        last = len(rest) - 1
        frames += [Frame(Opcode.CONT, piece, fin=i == last) for i, piece in enumerate(rest)]
        self.split[direction] += 1
        self.largest_fragment[direction] = max(
            self.largest_fragment[direction], *(len(piece) for piece in pieces)
        )
        return frames
