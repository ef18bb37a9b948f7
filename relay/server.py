"""The relay server: pairs one producer with one consumer per channel and forwards frames.

The server is an :class:`asyncio.Protocol` around the websockets library's Sans-I/O
:class:`~websockets.server.ServerProtocol`: a producer's frames are forwarded to the
consumer's transport inside the same ``data_received`` call (no task switch, no copy
into a queue), and TCP flow control gives end-to-end backpressure: when the consumer's
transport buffer passes its high-water mark the producer's socket stops being read.

It never sees a key: frames are opaque. It authorizes every WebSocket connection by a
capability token in the ``Authorization: Bearer`` header before the upgrade, so nothing
is forwarded to or from an unauthorized peer.

Endpoints: ``/produce/<channel>``, ``/consume/<channel>`` (WebSocket), ``/health``
(JSON) and ``/metrics`` (Prometheus text) over plain HTTP GET.

Example:
    >>> from relay import Producer, SyncConsumer, mint_tokens, new_channel, new_key
    >>> from relay.server import run_in_thread
    >>> with run_in_thread(secret="s3cret") as relay:
    ...     channel, key = new_channel(), new_key()
    ...     tokens = mint_tokens("s3cret", channel, ttl=60)
    ...     with Producer(relay.url, channel, tokens.producer, key) as producer:
    ...         producer.send({"content": "Hel"})
    ...         producer.close(usage={"completion_tokens": 1})
    ...     with SyncConsumer(relay.url, channel, tokens.consumer, key) as consumer:
    ...         print(list(consumer), consumer.usage)
    [{'content': 'Hel'}] {'completion_tokens': 1}
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
import time
from typing import Any

from websockets.http11 import Request

from relay._conn import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_PEER_LEFT,
    CLOSE_PRODUCER_LOST,
    CLOSE_TIMED_OUT,
    CLOSE_UNSUPPORTED,
    Channel,
    Conn,
    ws_header,
)
from relay.config import LEGACY_KEYWORDS, Limits, Timeouts
from relay.errors import AuthRejected
from relay.metrics import Metrics
from relay.tokens import verify_token

__all__ = ["Limits", "RelayServer", "RelayThread", "Timeouts", "run_in_thread"]

logger = logging.getLogger("relay.server")

_PATH_RE = re.compile(r"/(produce|consume)/([A-Za-z0-9_-]{1,128})")
_ROLES = {"produce": "producer", "consume": "consumer"}


def _configure(
    timeouts: Timeouts, limits: Limits, legacy: dict[str, Any]
) -> tuple[Timeouts, Limits]:
    """Apply the flat keywords ``RelayServer`` took before :class:`Timeouts` and :class:`Limits`."""
    unknown = sorted(set(legacy) - LEGACY_KEYWORDS.keys())
    if unknown:
        raise TypeError(f"RelayServer() got unexpected keyword arguments: {', '.join(unknown)}")
    changes: dict[str, dict[str, Any]] = {"timeouts": {}, "limits": {}}
    for keyword, value in legacy.items():
        group, name = LEGACY_KEYWORDS[keyword]
        changes[group][name] = value
    return (
        dataclasses.replace(timeouts, **changes["timeouts"]),
        dataclasses.replace(limits, **changes["limits"]),
    )


class RelayServer:
    """WebSocket relay for sealed token streams.

    Args:
        secret: The relay secret that capability tokens are signed with (see
            :func:`relay.mint_tokens`). ``None`` disables authorization, which is
            only allowed with ``insecure=True`` (local development).
        host: Interface to listen on.
        port: TCP port; ``0`` picks a free one (read it back from :attr:`port`).
        insecure: Allow ``secret=None``.
        timeouts: How long the relay waits (:class:`relay.config.Timeouts`).
        limits: How much the relay holds (:class:`relay.config.Limits`).
        **legacy: The flat keywords of earlier versions (``pair_timeout=``,
            ``max_channels=``, ... : :data:`relay.config.LEGACY_KEYWORDS`), applied on top
            of ``timeouts`` and ``limits``.

    Example:
        >>> import asyncio
        >>> async def main() -> str:
        ...     async with RelayServer(secret="s3cret") as server:
        ...         return server.url.split(":")[0]
        >>> asyncio.run(main())
        'ws'
    """

    def __init__(
        self,
        secret: bytes | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        insecure: bool = False,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        **legacy: float,
    ) -> None:
        """Configure the server; see the class docstring for the arguments."""
        if secret is None or secret in (b"", ""):
            if not insecure:
                raise ValueError("a relay secret is required (or pass insecure=True)")
            self._secret: bytes | None = None
        else:
            self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        self.host = host
        self._port = port
        self.timeouts, self.limits = _configure(timeouts or Timeouts(), limits or Limits(), legacy)
        self.metrics = Metrics()
        self._channels: dict[str, Channel] = {}
        # Channels that ended recently (id -> when): their tokens may still be valid,
        # but they are not reopened. Kept for pair_timeout seconds.
        self._ended: dict[str, float] = {}
        # Producers paused because the relay-wide buffer budget is spent.
        self._starved: set[Channel] = set()
        self._conns: set[Conn] = set()
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        self._started = 0.0

    def __repr__(self) -> str:
        return f"RelayServer(url={self.url!r}, channels={len(self._channels)})"

    # lifecycle

    @property
    def port(self) -> int:
        """The TCP port listened on (the real one once started with ``port=0``)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL clients connect to, ``ws://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self._port}"

    @property
    def channels(self) -> int:
        """Channels open now."""
        return len(self._channels)

    async def start(self) -> None:
        """Start listening and reaping."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Conn(self), self.host, self._port, backlog=self.limits.backlog
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        self._reaper = loop.create_task(self._reap_forever())
        logger.info("relay listening on %s", self.url)

    async def close(self) -> None:
        """Shut down gracefully.

        Stop accepting connections, let streams in progress finish for up to
        ``shutdown_timeout`` seconds, then close every connection with code 1001.
        """
        if self._server is None or self._closing:
            return
        self._closing = True
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.shutdown
        while loop.time() < deadline and any(
            ch.producer is not None for ch in self._channels.values()
        ):
            await asyncio.sleep(0.02)
        for conn in list(self._conns):
            if conn.role is None:
                if conn.transport is not None:
                    conn.transport.abort()
            else:
                conn.close(CLOSE_GOING_AWAY, "relay shutting down")
        deadline = loop.time() + self.timeouts.close
        while self._conns and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        await self._server.wait_closed()
        self._channels.clear()
        self._ended.clear()
        self._starved.clear()
        logger.info("relay stopped")

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Start, then run until cancelled; close gracefully on the way out."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    def health(self) -> dict[str, Any]:
        """The ``/health`` document."""
        return {
            "status": "closing" if self._closing else "ok",
            "channels": len(self._channels),
            "connections": len(self._conns),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

    def render_metrics(self) -> str:
        """The ``/metrics`` document (Prometheus text format)."""
        return self.metrics.render(channels=len(self._channels), connections=len(self._conns))

    # handshake

    def _on_request(self, conn: Conn, request: Request) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/health":
            conn.respond(200, json.dumps(self.health()), "application/json")
            return
        if path == "/metrics":
            conn.respond(200, self.render_metrics(), "text/plain; version=0.0.4; charset=utf-8")
            return
        match = _PATH_RE.fullmatch(path)
        if match is None:
            self._refuse(conn, 404, "not-found", "use /produce/<channel> or /consume/<channel>")
            return
        role, channel_id = _ROLES[match[1]], match[2]
        response = conn.proto.accept(request)
        if response.status_code != 101:
            self.metrics.reject("bad-handshake")
            conn._cancel_timer()
            conn.proto.send_response(response)
            conn.flush()
            return
        if self._closing:
            self._refuse(conn, 503, "shutting-down", "relay is shutting down")
            return
        if self._secret is not None:
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header[:7].lower() == "bearer " else None
            try:
                verify_token(self._secret, token, channel_id, role)
            except AuthRejected as exc:
                status = 401 if exc.reason == "missing" else 403
                self._refuse(conn, status, exc.reason, f"token rejected: {exc.reason}")
                return
        channel = self._channels.get(channel_id)
        now = time.monotonic()
        if channel is None and channel_id in self._ended:
            self._refuse(conn, 410, "channel-ended", "this channel has already ended")
            return
        if channel is None:
            if len(self._channels) >= self.limits.max_channels:
                self._refuse(conn, 503, "capacity", "relay is at its channel limit")
                return
            channel = self._channels[channel_id] = Channel(channel_id, now)
            self.metrics.channels_opened_total += 1
        if channel.producer_joined if role == "producer" else channel.consumer_joined:
            self._refuse(conn, 409, "channel-busy", f"channel already has a {role}")
            return
        conn.accept(response)
        conn.role, conn.channel = role, channel
        channel.last = now
        if role == "producer":
            channel.producer, channel.producer_joined = conn, True
        else:
            channel.consumer, channel.consumer_joined = conn, True
            self._attach_consumer(channel, conn)

    def _refuse(self, conn: Conn, status: int, reason: str, message: str) -> None:
        self.metrics.reject(reason)
        conn.respond(status, message + "\n", "text/plain; charset=utf-8", reject=reason)

    # forwarding

    def _attach_consumer(self, channel: Channel, conn: Conn) -> None:
        if channel.buffer:
            conn.out.extend(channel.buffer)
            self._release(channel)
        conn.flush()
        if channel.producer_done:
            conn.close(channel.end_code, channel.end_reason)
        else:
            self._update_reading(channel)

    def _on_frame(self, conn: Conn, data: bytes | bytearray | memoryview) -> None:
        channel = conn.channel
        if conn.role != "producer":
            conn.close(CLOSE_UNSUPPORTED, "consumers do not send frames")
            return
        if channel is None:  # the consumer left; the producer is being closed
            return
        size = len(data)
        metrics = self.metrics
        metrics.frames_total += 1
        metrics.bytes_total += size
        channel.last = time.monotonic()
        consumer = channel.consumer
        if consumer is not None:
            consumer.out.append(ws_header(size))
            consumer.out.append(data if type(data) is bytes else bytes(data))
            return
        if channel.consumer_joined:  # consumer came and went: nowhere to deliver
            return
        framed = ws_header(size) + bytes(data)
        channel.buffer.append(framed)
        channel.buffered += len(framed)
        metrics.buffered_bytes += len(framed)
        if (
            len(channel.buffer) >= self.limits.max_buffer_frames
            or channel.buffered >= self.limits.max_buffer_bytes
            or metrics.buffered_bytes >= self.limits.max_total_buffer_bytes
        ):
            self._update_reading(channel)

    def _update_reading(self, channel: Channel) -> None:
        """Pause or resume reading the producer's socket (backpressure)."""
        producer = channel.producer
        if producer is None or producer.transport is None or producer.closed:
            return
        full = channel.consumer is None and (
            len(channel.buffer) >= self.limits.max_buffer_frames
            or channel.buffered >= self.limits.max_buffer_bytes
            or self.metrics.buffered_bytes >= self.limits.max_total_buffer_bytes
        )
        if full:
            self._starved.add(channel)
        else:
            self._starved.discard(channel)
        pause = full or channel.consumer_slow
        if pause and not channel.reading_paused:
            producer.transport.pause_reading()
            channel.reading_paused = True
        elif not pause and channel.reading_paused:
            producer.transport.resume_reading()
            channel.reading_paused = False

    def _on_leave(self, conn: Conn, close: Any) -> None:
        """A peer sent a close frame or its connection was lost."""
        channel = conn.channel
        if channel is None:
            return
        conn.channel = None
        if conn.role == "producer" and channel.producer is conn:
            channel.producer = None
            channel.producer_done = True
            if close is not None and close.code == CLOSE_NORMAL:
                channel.end_code, channel.end_reason = CLOSE_NORMAL, ""
            else:
                channel.end_code = CLOSE_PRODUCER_LOST
                channel.end_reason = "producer connection lost"
            consumer = channel.consumer
            if consumer is not None:
                consumer.close(channel.end_code, channel.end_reason)
            elif channel.consumer_joined:
                self._drop(channel)
        elif conn.role == "consumer" and channel.consumer is conn:
            channel.consumer = None
            producer = channel.producer
            if producer is not None:
                producer.channel = None
                producer.close(CLOSE_PEER_LEFT, "consumer disconnected")
            self._drop(channel)

    def _drop(self, channel: Channel) -> None:
        if self._channels.get(channel.id) is channel:
            del self._channels[channel.id]
            self._ended[channel.id] = time.monotonic()
        self._starved.discard(channel)
        if channel.buffer:
            self._release(channel)

    def _release(self, channel: Channel) -> None:
        """Forget a channel's buffer and let producers starved by the relay-wide budget
        read again."""
        self.metrics.buffered_bytes -= channel.buffered
        channel.buffer.clear()
        channel.buffered = 0
        if self._starved:
            for starved in list(self._starved):
                self._update_reading(starved)

    # reaping

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.reap_interval)
            self.reap()

    def reap(self) -> int:
        """Close one-sided channels older than ``pair_timeout`` and paired channels idle
        longer than ``idle_timeout``; called periodically by the server.

        Returns:
            The number of channels reaped.
        """
        now = time.monotonic()
        ended = self._ended
        while ended:
            channel_id, when = next(iter(ended.items()))
            if now - when <= self.timeouts.pair and len(ended) <= 4 * self.limits.max_channels:
                break
            del ended[channel_id]
        reaped = 0
        for channel in list(self._channels.values()):
            paired = channel.producer_joined and channel.consumer_joined
            if not paired and now - channel.created > self.timeouts.pair:
                why, message = "one-sided", "the other peer did not join in time"
            elif paired and now - channel.last > self.timeouts.idle:
                why, message = "idle", "channel idle for too long"
            else:
                continue
            reaped += 1
            self.metrics.reaped[why] += 1
            for conn in (channel.producer, channel.consumer):
                if conn is not None:
                    conn.channel = None
                    conn.close(CLOSE_TIMED_OUT, message)
            channel.producer = channel.consumer = None
            self._drop(channel)
        return reaped


class RelayThread:
    """A :class:`RelayServer` running on its own event loop in a background thread.

    Made by :func:`run_in_thread`; use it as a context manager or call :meth:`stop`.

    Attributes:
        server: The running server (read it only from the relay's thread, or for
            counters such as ``server.metrics``).
    """

    def __init__(self, server: RelayServer) -> None:
        """Wrap a not-yet-started server; :func:`run_in_thread` starts it."""
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="relay-server", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"RelayThread(url={self.url!r})"

    @property
    def url(self) -> str:
        """Base URL of the relay, ``ws://host:port``."""
        return self.server.url

    @property
    def port(self) -> int:
        """TCP port of the relay."""
        return self.server.port

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def start(self, timeout: float = 10.0) -> RelayThread:
        """Start the thread and wait until the server listens.

        Args:
            timeout: Seconds to wait for the server to start.

        Returns:
            ``self``.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the relay server did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the relay's loop and return its result (thread-safe).

        Args:
            fn: A plain function, for example ``server.reap``.
            *args: Its arguments.

        Returns:
            What ``fn`` returned.
        """

        async def _call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_call(), self._loop).result(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Close the server gracefully and join the thread (idempotent).

        Args:
            timeout: Seconds to wait for the graceful close.
        """
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.close(), self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> RelayThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_in_thread(**kwargs: Any) -> RelayThread:
    """Start a :class:`RelayServer` in a background thread (for sync programs and tests).

    Args:
        **kwargs: Arguments of :class:`RelayServer` (``secret``, ``host``, ``port``,
            timeouts, limits).

    Returns:
        A started :class:`RelayThread` with ``.url``, ``.port`` and ``.stop()``; it is
        also a context manager.

    Example:
        >>> with run_in_thread(secret="s3cret") as relay:
        ...     relay.url.startswith("ws://127.0.0.1:")
        True
    """
    return RelayThread(RelayServer(**kwargs)).start()
