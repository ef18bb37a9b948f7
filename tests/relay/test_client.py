"""Producer and consumer clients against a real relay: timeouts, failures, both APIs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import (
    AsyncProducer,
    ChannelClosed,
    ConnectTimeout,
    Consumer,
    FirstFrameTimeout,
    IdleTimeout,
    Producer,
    RelayUnreachable,
    SyncConsumer,
    TruncatedStream,
)
from relay.server import RelayThread
from tests.relay.conftest import Stream

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sync_round_trip_with_usage(relay_server: RelayThread, stream: Stream) -> None:
    """Producer -> relay -> SyncConsumer delivers payloads, frame count and usage."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as p:
        for piece in ("Hel", "lo", " world"):
            p.send({"content": piece})
        p.close(usage={"prompt_tokens": 3, "completion_tokens": 3})
        assert p.frames == 3 and p.finished
    with SyncConsumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key) as c:
        assert "".join(x["content"] for x in c) == "Hello world"
    assert c.frames == 3 and c.usage == {"prompt_tokens": 3, "completion_tokens": 3}


async def test_async_consumer_without_context_manager(
    relay_server: RelayThread, stream: Stream
) -> None:
    """`async for` over a Consumer connects lazily and finishes after the end frame."""
    consumer = Consumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key)

    async def produce() -> None:
        async with AsyncProducer(
            relay_server.url, stream.channel, stream.tokens.producer, stream.key
        ) as producer:
            for i in range(5):
                await producer.send({"i": i})
                await asyncio.sleep(0)
            await producer.close()

    task = asyncio.create_task(produce())
    assert [p["i"] async for p in consumer] == list(range(5))
    await task
    assert [p async for p in consumer] == []  # a finished consumer stays finished


def test_sync_consumer_works_from_a_plain_thread(relay_server: RelayThread, stream: Stream) -> None:
    """SyncConsumer needs no event loop: it runs in a worker thread."""
    result: list[object] = []

    def consume() -> None:
        with SyncConsumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key
        ) as consumer:
            result.extend(consumer)

    thread = threading.Thread(target=consume)
    thread.start()
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as p:
        p.send({"a": 1})
        p.close()
    thread.join(10)
    assert result == [{"a": 1}]


def test_hex_key_is_accepted_and_bad_keys_are_refused(
    relay_server: RelayThread, stream: Stream
) -> None:
    """A key may be given as 64 hex characters; anything else is a clear ValueError."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key.hex()) as p:
        p.send({"a": 1})
        p.close()
    with SyncConsumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key) as c:
        assert list(c) == [{"a": 1}]
    with pytest.raises(ValueError, match="hex"):
        Producer(relay_server.url, stream.channel, "t", "not hex")
    with pytest.raises(ValueError, match="32 bytes"):
        Consumer(relay_server.url, stream.channel, "t", b"short")


def test_bad_urls_and_channels_are_refused() -> None:
    """Non-WebSocket URLs and invalid channel ids raise ValueError up front."""
    key = bytes(32)
    with pytest.raises(ValueError, match="ws://"):
        Producer("http://127.0.0.1:1", "ch", "t", key)
    with pytest.raises(ValueError, match="channel"):
        SyncConsumer("ws://127.0.0.1:1", "bad/channel", "t", key)


def test_connect_timeout_sync(silent_port: int, stream: Stream) -> None:
    """A relay that never answers the handshake gives ConnectTimeout (sync)."""
    with pytest.raises(ConnectTimeout):
        Producer(
            f"ws://127.0.0.1:{silent_port}",
            stream.channel,
            stream.tokens.producer,
            stream.key,
            open_timeout=0.2,
        ).connect()


async def test_connect_timeout_async(silent_port: int, stream: Stream) -> None:
    """A relay that never answers the handshake gives ConnectTimeout (async)."""
    with pytest.raises(ConnectTimeout):
        await Consumer(
            f"ws://127.0.0.1:{silent_port}",
            stream.channel,
            stream.tokens.consumer,
            stream.key,
            open_timeout=0.2,
        ).connect()


async def test_unreachable_relay(closed_port: int, stream: Stream) -> None:
    """Nothing listening gives RelayUnreachable, from both client kinds."""
    url = f"ws://127.0.0.1:{closed_port}"
    with pytest.raises(RelayUnreachable):
        Producer(url, stream.channel, stream.tokens.producer, stream.key).connect()
    with pytest.raises(RelayUnreachable):
        await AsyncProducer(url, stream.channel, stream.tokens.producer, stream.key).connect()


async def test_first_frame_timeout(relay_server: RelayThread, stream: Stream) -> None:
    """No producer at all: the consumer raises FirstFrameTimeout."""
    async with Consumer(
        relay_server.url,
        stream.channel,
        stream.tokens.consumer,
        stream.key,
        first_frame_timeout=0.2,
    ) as consumer:
        with pytest.raises(FirstFrameTimeout):
            await consumer.__anext__()


def test_idle_timeout_when_the_producer_goes_silent(
    relay_server: RelayThread, stream: Stream
) -> None:
    """A producer that stops sending (but stays connected) gives IdleTimeout."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as p:
        p.send({"a": 1})
        with SyncConsumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key, idle_timeout=0.2
        ) as consumer:
            assert next(consumer) == {"a": 1}
            with pytest.raises(IdleTimeout):
                next(consumer)


def test_killed_producer_process_gives_truncated_stream(
    relay_server: RelayThread, stream: Stream
) -> None:
    """A producer process killed mid-stream makes the consumer raise TruncatedStream
    (not a timeout, and not a shorter answer)."""
    script = textwrap.dedent("""
        import sys, relay
        url, channel, token, key = sys.argv[1:]
        producer = relay.Producer(url, channel, token, bytes.fromhex(key)).connect()
        for i in range(3):
            producer.send({"i": i})
        print("sent", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            relay_server.url,
            stream.channel,
            stream.tokens.producer,
            stream.key.hex(),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "sent"
        with SyncConsumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key, idle_timeout=30
        ) as consumer:
            assert [next(consumer) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
            child.kill()
            with pytest.raises(TruncatedStream, match="1011"):
                next(consumer)
    finally:
        child.kill()
        child.communicate()


async def test_async_producer_learns_the_consumer_left(
    relay_server: RelayThread, stream: Stream
) -> None:
    """AsyncProducer.send raises ChannelClosed once the consumer has gone."""
    async with AsyncProducer(
        relay_server.url, stream.channel, stream.tokens.producer, stream.key
    ) as producer:
        await producer.send({"i": 0})
        async with Consumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key
        ) as consumer:
            assert await consumer.__anext__() == {"i": 0}
        with pytest.raises(ChannelClosed):
            for _ in range(250):
                await producer.send({"i": 1})
                await asyncio.sleep(0.02)


async def test_async_producer_exit_without_close_truncates(
    relay_server: RelayThread, stream: Stream
) -> None:
    """Leaving `async with AsyncProducer` without close() sends no end frame."""
    with pytest.raises(RuntimeError):
        async with AsyncProducer(
            relay_server.url, stream.channel, stream.tokens.producer, stream.key
        ) as producer:
            await producer.send({"i": 0})
            raise RuntimeError("generation failed")
    async with Consumer(
        relay_server.url, stream.channel, stream.tokens.consumer, stream.key
    ) as consumer:
        with pytest.raises(TruncatedStream):
            async for _ in consumer:
                pass


def test_relay_and_clients_run_on_uvloop(stream: Stream) -> None:
    """The relay server and both async clients on uvloop (what uvicorn picks when it is
    installed, as with the proxy extra): its transports are not ``asyncio.Transport``
    subclasses, and nothing may assume they are."""
    uvloop = pytest.importorskip("uvloop")
    from relay.server import RelayServer
    from tests.relay.conftest import SECRET

    async def main() -> tuple[list[int], str]:
        async with RelayServer(port=0, secret=SECRET, close_timeout=2.0,
                               shutdown_timeout=1.0) as server:
            consumer = Consumer(server.url, stream.channel, stream.tokens.consumer, stream.key)

            async def produce() -> None:
                async with AsyncProducer(server.url, stream.channel, stream.tokens.producer,
                                         stream.key) as producer:
                    for i in range(5):
                        await producer.send({"i": i})
                    await producer.close()

            task = asyncio.create_task(produce())
            got = [p["i"] async for p in consumer]
            await task
            return got, type(asyncio.get_running_loop()).__module__

    got, loop_module = uvloop.run(main())
    assert loop_module.startswith("uvloop")
    assert got == list(range(5))
