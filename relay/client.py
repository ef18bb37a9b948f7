"""Producer and consumer clients of the relay.

- :class:`Producer` (sync, for code on the HPC node) and :class:`AsyncProducer` seal
  payloads and send them to ``/produce/<channel>``.
- :class:`Consumer` (async iterator) and :class:`SyncConsumer` (plain iterator, for
  threads) receive from ``/consume/<channel>``, verify every frame and yield the
  payloads in order. Iteration ends cleanly only after an authentic end frame; every
  other ending raises a specific :class:`~relay.errors.RelayError`.

Capability tokens travel in the ``Authorization`` header, never in the URL.

Example:
    >>> import asyncio
    >>> from relay import AsyncProducer, Consumer, mint_tokens, new_channel, new_key
    >>> from relay.server import RelayServer
    >>> async def main() -> list[str]:
    ...     async with RelayServer(secret="s3cret") as server:
    ...         channel, key = new_channel(), new_key()
    ...         tokens = mint_tokens("s3cret", channel, ttl=60)
    ...         async with AsyncProducer(server.url, channel, tokens.producer, key) as p:
    ...             for piece in ("Hel", "lo"):
    ...                 await p.send({"content": piece})
    ...             await p.close(usage={"completion_tokens": 2})
    ...         async with Consumer(server.url, channel, tokens.consumer, key) as c:
    ...             return [payload["content"] async for payload in c]
    >>> asyncio.run(main())
    ['Hel', 'lo']
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

from relay._aio import WSClient, ws_connect
from relay._common import (
    END,
    HOLD,
    ConsumerCore,
    endpoint,
    handshake_error,
    normalize_key,
    wire_logger,
)
from relay.errors import (
    ChannelClosed,
    ConnectTimeout,
    FirstFrameTimeout,
    IdleTimeout,
    RelayError,
    RelayUnreachable,
    TruncatedStream,
)
from relay.seal import Sealer

__all__ = ["AsyncProducer", "Consumer", "Producer", "SyncConsumer"]

_ABANDONED = 1011  # close code of a producer that leaves without an end or error frame
_LEFT = 1001  # close code of a consumer that leaves before the end frame


def _sync_open(
    url: str, token: str, *, open_timeout: float, close_timeout: float, max_size: int
) -> ClientConnection:
    """Open a websockets sync connection with the token in the Authorization header."""
    try:
        return sync_connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            compression=None,
            proxy=None,
            logger=wire_logger,
        )
    except TimeoutError:
        raise ConnectTimeout(f"no connection to the relay within {open_timeout}s") from None
    except InvalidHandshake as exc:
        raise handshake_error(exc) from None
    except OSError as exc:
        raise RelayUnreachable(f"cannot reach the relay: {exc}") from None


def _closed(exc: ConnectionClosed, what: str) -> ChannelClosed:
    close = exc.rcvd
    code, reason = (close.code, close.reason) if close is not None else (None, "")
    detail = f" ({code}{': ' + reason if reason else ''})" if code is not None else ""
    return ChannelClosed(f"{what}: the relay closed the channel{detail}", code, reason)


class _ProducerBase:
    def __init__(
        self,
        url: str,
        channel: str,
        token: str,
        key: bytes | str,
        *,
        open_timeout: float,
        close_timeout: float,
        max_frame_bytes: int,
    ) -> None:
        self.url = endpoint(url, "producer", channel)
        self.channel = channel
        self._token = token
        self._sealer = Sealer(normalize_key(key), channel)
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.max_frame_bytes = max_frame_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, frames={self.frames})"

    @property
    def frames(self) -> int:
        """Data frames sent so far."""
        return self._sealer.frames

    @property
    def finished(self) -> bool:
        """True once the end or error frame was sealed."""
        return self._sealer.closed


class Producer(_ProducerBase):
    """Synchronous producer: seals payloads and sends them to the relay.

    Use it as a context manager. Call :meth:`close` (with the usage) after the last
    payload, or :meth:`error` on failure; leaving the ``with`` block without either
    sends no end frame, so the consumer sees a :class:`~relay.errors.TruncatedStream`.

    Args:
        url: Base URL of the relay, ``ws://host:port``.
        channel: Channel id.
        token: The channel's producer token.
        key: The request's AES-256 key (32 bytes, or 64 hex characters).
        open_timeout: Seconds to connect and complete the handshake.
        close_timeout: Seconds to wait for the closing handshake.
        max_frame_bytes: Largest message accepted from the relay.

    Raises:
        ChannelClosed: From :meth:`send` once the consumer has gone (stop generating).

    Example:
        >>> from relay import Producer, SyncConsumer, mint_tokens, new_channel, new_key
        >>> from relay.server import run_in_thread
        >>> with run_in_thread(secret="s3cret") as relay:
        ...     channel, key = new_channel(), new_key()
        ...     tokens = mint_tokens("s3cret", channel, ttl=60)
        ...     with Producer(relay.url, channel, tokens.producer, key) as producer:
        ...         producer.send({"content": "Hi"})
        ...         producer.close()
        ...     with SyncConsumer(relay.url, channel, tokens.consumer, key) as consumer:
        ...         list(consumer)
        [{'content': 'Hi'}]
    """

    def __init__(
        self,
        url: str,
        channel: str,
        token: str,
        key: bytes | str,
        *,
        # Timeouts
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
        # Limits
        max_frame_bytes: int = 1 << 20,
    ) -> None:
        """Configure the producer (it connects on ``__enter__`` or :meth:`connect`)."""
        super().__init__(
            url,
            channel,
            token,
            key,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            max_frame_bytes=max_frame_bytes,
        )
        self._ws: ClientConnection | None = None

    def connect(self) -> Producer:
        """Connect to the relay (done by ``__enter__``).

        Returns:
            ``self``.

        Raises:
            AuthRejected: The relay refused the token.
            RelayRefused: The channel already has a producer, or the relay is full.
            ConnectTimeout: The relay did not answer within ``open_timeout``.
            RelayUnreachable: The relay could not be reached.
        """
        if self._ws is None:
            self._ws = _sync_open(
                self.url,
                self._token,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                max_size=self.max_frame_bytes,
            )
        return self

    def _send(self, frame: bytes) -> None:
        if self._ws is None:
            raise RelayError("the producer is not connected (use it in a with block)")
        try:
            self._ws.send(frame)
        except ConnectionClosed as exc:
            raise _closed(exc, "cannot send") from None

    def send(self, payload: Any) -> None:
        """Seal and send one data frame.

        Args:
            payload: A JSON-serialisable value, e.g. ``{"content": "Hel"}``.

        Raises:
            ChannelClosed: The relay closed the channel (the consumer left).
            TypeError: The payload is not JSON-serialisable.
        """
        self._send(self._sealer.seal(payload))

    def error(self, message: str) -> None:
        """Send a sealed error frame (the consumer raises ``RemoteError``) and close.

        Args:
            message: What went wrong (it reaches the consumer; no secrets).
        """
        try:
            self._send(self._sealer.seal_error(message))
        finally:
            self._disconnect(1000)

    def close(self, usage: dict[str, Any] | None = None) -> None:
        """Send the sealed end frame (frame count and usage) and close the connection.

        Args:
            usage: Usage to report, e.g. ``{"completion_tokens": 12}``.

        Raises:
            ChannelClosed: The end frame could not be sent (the consumer left).
        """
        if self.finished:
            self._disconnect(1000)
            return
        try:
            self._send(self._sealer.seal_end(usage))
        finally:
            self._disconnect(1000)

    def _disconnect(self, code: int) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            reason = "" if code == 1000 else "producer left without an end frame"
            ws.close(code, reason)

    def __enter__(self) -> Producer:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._disconnect(1000 if self.finished else _ABANDONED)


class AsyncProducer(_ProducerBase):
    """Asynchronous producer; the same API as :class:`Producer`, awaited.

    Args:
        url: Base URL of the relay, ``ws://host:port``.
        channel: Channel id.
        token: The channel's producer token.
        key: The request's AES-256 key (32 bytes, or 64 hex characters).
        open_timeout: Seconds to connect and complete the handshake.
        close_timeout: Seconds to wait for the closing handshake.
        max_frame_bytes: Largest message accepted from the relay.

    Example:
        See the module docstring of :mod:`relay.client`.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        token: str,
        key: bytes | str,
        *,
        # Timeouts
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
        # Limits
        max_frame_bytes: int = 1 << 20,
    ) -> None:
        """Configure the producer (it connects on ``__aenter__`` or :meth:`connect`)."""
        super().__init__(
            url,
            channel,
            token,
            key,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            max_frame_bytes=max_frame_bytes,
        )
        self._conn: WSClient | None = None

    async def connect(self) -> AsyncProducer:
        """Connect to the relay (done by ``__aenter__``); raises like :meth:`Producer.connect`.

        Returns:
            ``self``.
        """
        if self._conn is None:
            self._conn = await ws_connect(
                self.url,
                self._token,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                max_size=self.max_frame_bytes,
            )
        return self

    async def _send(self, frame: bytes) -> None:
        if self._conn is None:
            raise RelayError("the producer is not connected (use it in an async with block)")
        await self._conn.send(frame)

    async def send(self, payload: Any) -> None:
        """Seal and send one data frame; see :meth:`Producer.send`."""
        await self._send(self._sealer.seal(payload))

    async def error(self, message: str) -> None:
        """Send a sealed error frame and close; see :meth:`Producer.error`."""
        try:
            await self._send(self._sealer.seal_error(message))
        finally:
            await self._disconnect(1000)

    async def close(self, usage: dict[str, Any] | None = None) -> None:
        """Send the sealed end frame and close; see :meth:`Producer.close`."""
        if self.finished:
            await self._disconnect(1000)
            return
        try:
            await self._send(self._sealer.seal_end(usage))
        finally:
            await self._disconnect(1000)

    async def _disconnect(self, code: int) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            reason = "" if code == 1000 else "producer left without an end frame"
            await conn.close(code, reason)

    async def __aenter__(self) -> AsyncProducer:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._disconnect(1000 if self.finished else _ABANDONED)


class _ConsumerBase:
    def __init__(
        self,
        url: str,
        channel: str,
        token: str,
        key: bytes | str,
        *,
        open_timeout: float,
        first_frame_timeout: float,
        idle_timeout: float,
        close_timeout: float,
        max_frame_bytes: int,
    ) -> None:
        for name, value in (
            ("open_timeout", open_timeout),
            ("first_frame_timeout", first_frame_timeout),
            ("idle_timeout", idle_timeout),
            ("close_timeout", close_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.url = endpoint(url, "consumer", channel)
        self.channel = channel
        self._token = token
        self._core = ConsumerCore(normalize_key(key), channel)
        self.open_timeout = open_timeout
        self.first_frame_timeout = first_frame_timeout
        self.idle_timeout = idle_timeout
        self.close_timeout = close_timeout
        self.max_frame_bytes = max_frame_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, done={self._core.done})"

    @property
    def usage(self) -> dict[str, Any] | None:
        """Usage from the end frame; ``None`` until the stream ended cleanly."""
        return self._core.usage

    @property
    def frames(self) -> int | None:
        """Data-frame count from the end frame; ``None`` until the stream ended cleanly."""
        return self._core.frames

    def _timeout(self) -> tuple[float, type[FirstFrameTimeout] | type[IdleTimeout]]:
        if self._core.received:
            return self.idle_timeout, IdleTimeout
        return self.first_frame_timeout, FirstFrameTimeout


class Consumer(_ConsumerBase):
    """Asynchronous consumer: an async iterator over the verified payloads, in order.

    Iteration stops only after an authentic end frame (then :attr:`usage` and
    :attr:`frames` are set). An authentic error frame raises
    :class:`~relay.errors.RemoteError`; any interference by the relay raises the
    matching :class:`~relay.errors.IntegrityError`. For threads without an event loop
    use :class:`SyncConsumer`.

    Args:
        url: Base URL of the relay, ``ws://host:port``.
        channel: Channel id.
        token: The channel's consumer token.
        key: The request's AES-256 key (32 bytes, or 64 hex characters).
        open_timeout: Seconds to connect and complete the handshake.
        first_frame_timeout: Seconds to wait for the first frame.
        idle_timeout: Seconds to wait for each later frame.
        close_timeout: Seconds to wait for the closing handshake.
        max_frame_bytes: Largest frame accepted.
        max_queue: Frames queued before the socket stops being read (backpressure).

    Example:
        See the module docstring of :mod:`relay.client`.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        token: str,
        key: bytes | str,
        *,
        # Timeouts
        open_timeout: float = 10.0,
        first_frame_timeout: float = 120.0,
        idle_timeout: float = 60.0,
        close_timeout: float = 5.0,
        # Limits
        max_frame_bytes: int = 1 << 20,
        max_queue: int = 1024,
    ) -> None:
        """Configure the consumer (it connects on ``__aenter__`` or first iteration)."""
        super().__init__(
            url,
            channel,
            token,
            key,
            open_timeout=open_timeout,
            first_frame_timeout=first_frame_timeout,
            idle_timeout=idle_timeout,
            close_timeout=close_timeout,
            max_frame_bytes=max_frame_bytes,
        )
        self.max_queue = max_queue
        self._conn: WSClient | None = None

    async def connect(self) -> Consumer:
        """Connect to the relay (done by ``__aenter__``).

        Returns:
            ``self``.

        Raises:
            AuthRejected: The relay refused the token.
            RelayRefused: The channel already has a consumer, or the relay is full.
            ConnectTimeout: The relay did not answer within ``open_timeout``.
            RelayUnreachable: The relay could not be reached.
        """
        if self._conn is None:
            self._conn = await ws_connect(
                self.url,
                self._token,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                max_size=self.max_frame_bytes,
                max_queue=self.max_queue,
            )
        return self

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Any:
        core = self._core
        if core.done:
            raise StopAsyncIteration
        conn = self._conn or (await self.connect())._conn
        assert conn is not None
        try:
            while True:
                timeout, timeout_error = self._timeout()
                try:
                    data = await conn.recv(timeout)
                except TimeoutError:
                    raise timeout_error(f"no frame from the producer within {timeout}s") from None
                if data is None:
                    core.on_closed(conn.close_code, conn.close_reason)
                    raise TruncatedStream("the stream ended without a valid end frame")
                result = core.on_message(data)
                if result is HOLD:
                    continue
                if result is END:
                    await self.aclose()
                    raise StopAsyncIteration
                return result
        except (StopAsyncIteration, GeneratorExit):
            raise
        except BaseException:
            self._conn = None
            conn.abort()
            raise

    async def aclose(self) -> None:
        """Close the connection; before the end frame this tells the relay to close the
        producer's side (its next send raises ``ChannelClosed``)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(1000 if self._core.done else _LEFT)

    async def __aenter__(self) -> Consumer:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SyncConsumer(_ConsumerBase):
    """Synchronous consumer for plain threads: iterate it like :class:`Consumer`.

    It uses the websockets library's threaded client and shares :class:`Consumer`'s
    verification logic; arguments and errors are the same (``max_queue`` aside).

    Example:
        See :class:`Producer`.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        token: str,
        key: bytes | str,
        *,
        # Timeouts
        open_timeout: float = 10.0,
        first_frame_timeout: float = 120.0,
        idle_timeout: float = 60.0,
        close_timeout: float = 5.0,
        # Limits
        max_frame_bytes: int = 1 << 20,
    ) -> None:
        """Configure the consumer (it connects on ``__enter__`` or first iteration)."""
        super().__init__(
            url,
            channel,
            token,
            key,
            open_timeout=open_timeout,
            first_frame_timeout=first_frame_timeout,
            idle_timeout=idle_timeout,
            close_timeout=close_timeout,
            max_frame_bytes=max_frame_bytes,
        )
        self._ws: ClientConnection | None = None

    def connect(self) -> SyncConsumer:
        """Connect to the relay (done by ``__enter__``); raises like :meth:`Consumer.connect`.

        Returns:
            ``self``.
        """
        if self._ws is None:
            self._ws = _sync_open(
                self.url,
                self._token,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                max_size=self.max_frame_bytes,
            )
        return self

    def __iter__(self) -> SyncConsumer:
        return self

    def __next__(self) -> Any:
        core = self._core
        if core.done:
            raise StopIteration
        ws = self._ws or self.connect()._ws
        assert ws is not None
        try:
            while True:
                timeout, timeout_error = self._timeout()
                try:
                    data = ws.recv(timeout=timeout)
                except TimeoutError:
                    raise timeout_error(f"no frame from the producer within {timeout}s") from None
                except ConnectionClosed as exc:
                    close = exc.rcvd
                    code, reason = (close.code, close.reason) if close else (None, "")
                    core.on_closed(code, reason)
                    raise TruncatedStream("the stream ended without a valid end frame") from None
                result = core.on_message(data)
                if result is HOLD:
                    continue
                if result is END:
                    self.close()
                    raise StopIteration
                return result
        except StopIteration:
            raise
        except BaseException:
            self._ws = None
            ws.close(_LEFT)
            raise

    def close(self) -> None:
        """Close the connection (see :meth:`Consumer.aclose`)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close(1000 if self._core.done else _LEFT)

    def __enter__(self) -> SyncConsumer:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
