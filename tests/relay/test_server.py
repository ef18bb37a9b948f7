"""The relay server on loopback: HTTP endpoints, authorization, limits, reaping, lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from relay import (
    AsyncProducer,
    AuthRejected,
    ChannelClosed,
    Consumer,
    Limits,
    Producer,
    RelayRefused,
    RemoteError,
    SyncConsumer,
    Timeouts,
    TruncatedStream,
    mint_tokens,
)
from relay.server import RelayServer, RelayThread
from relay.tokens import mint_token
from tests.relay.conftest import SECRET, Stream, start_relay

# Enough 16 kB frames (16 MB) that loopback socket buffers cannot absorb them all, so a
# paused producer really is held back.
FRAMES = 1000


def _get(url: str) -> tuple[int, str, str]:
    http = url.replace("ws://", "http://")
    try:
        with urllib.request.urlopen(http, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _until(cond: Any, timeout: float = 10.0) -> None:
    """Poll ``cond()`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


async def _eventually(cond: Any, timeout: float = 10.0) -> None:
    """:func:`_until` for async tests: the caller's event loop keeps running while it polls."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _paused(relay: RelayThread) -> int:
    """How many producers the relay has stopped reading (backpressure)."""
    return int(relay.call(lambda: sum(ch.reading_paused for ch in relay.server._channels.values())))


def _metric(relay: RelayThread, line_start: str) -> float:
    _, _, body = _get(relay.url + "/metrics")
    for line in body.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def test_health_answers_200_json(relay_server: RelayThread) -> None:
    """GET /health answers 200 with a JSON status document."""
    status, content_type, body = _get(relay_server.url + "/health")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body)["status"] == "ok"


def test_metrics_expose_channels_frames_bytes_and_rejects(
    relay_server: RelayThread, stream: Stream
) -> None:
    """GET /metrics is Prometheus text that counts frames, bytes and channels."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as p:
        p.send({"content": "x"})
        p.close()
    assert _metric(relay_server, "relay_channels") == 1  # waiting for its consumer
    assert _metric(relay_server, "relay_frames_total") == 2
    assert _metric(relay_server, "relay_bytes_total") > 2 * 42
    assert _metric(relay_server, 'relay_rejects_total{reason="forged"}') == 0
    status, content_type, _ = _get(relay_server.url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")


def test_unknown_path_is_404(relay_server: RelayThread) -> None:
    """Paths other than the endpoints answer 404."""
    assert _get(relay_server.url + "/produce")[0] == 404
    assert _get(relay_server.url + "/nothing/here")[0] == 404


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda s: "", "missing"),
        (lambda s: mint_token(b"not the relay secret", s.channel, "producer", 60), "forged"),
        (
            lambda s: mint_token(SECRET, s.channel, "producer", 0.001, now=time.time() - 5),
            "expired",
        ),
        (lambda s: mint_token(SECRET, "another-channel", "producer", 60), "wrong-channel"),
        (lambda s: s.tokens.consumer, "wrong-role"),
    ],
)
def test_every_bad_token_is_rejected_before_anything_is_forwarded(
    relay_server: RelayThread, stream: Stream, make_token: Any, reason: str
) -> None:
    """Each kind of bad token is refused at the handshake, counted, and opens no channel."""
    with pytest.raises(AuthRejected) as info:
        Producer(relay_server.url, stream.channel, make_token(stream), stream.key).connect()
    assert info.value.reason == reason
    assert _metric(relay_server, f'relay_rejects_total{{reason="{reason}"}}') == 1
    assert _metric(relay_server, "relay_channels") == 0


async def test_async_clients_report_rejections_too(
    relay_server: RelayThread, stream: Stream
) -> None:
    """The asyncio clients raise AuthRejected with the reason as well."""
    with pytest.raises(AuthRejected) as info:
        await Consumer(
            relay_server.url, stream.channel, stream.tokens.producer, stream.key
        ).connect()
    assert info.value.reason == "wrong-role"
    with pytest.raises(AuthRejected) as info:
        await AsyncProducer(relay_server.url, stream.channel, "", stream.key).connect()
    assert info.value.reason == "missing"


def test_token_in_the_url_is_not_accepted(relay_server: RelayThread, stream: Stream) -> None:
    """A token passed in the query string is ignored: only the header counts."""
    import websockets.sync.client

    url = f"{relay_server.url}/produce/{stream.channel}?token={stream.tokens.producer}"
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        websockets.sync.client.connect(url, proxy=None, open_timeout=5)
    assert info.value.response.status_code == 401


def test_second_producer_on_a_channel_is_refused(relay_server: RelayThread, stream: Stream) -> None:
    """One producer per channel: a second one gets RelayRefused(409)."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key):
        with pytest.raises(RelayRefused) as info:
            Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key).connect()
    assert info.value.status == 409


def test_channel_limit_is_enforced() -> None:
    """Beyond max_channels, new channels are refused with 503 and counted."""
    with start_relay(max_channels=2) as relay:
        streams = [Stream() for _ in range(3)]
        producers = [Producer(relay.url, s.channel, s.tokens.producer, s.key) for s in streams]
        producers[0].connect(), producers[1].connect()
        with pytest.raises(RelayRefused) as info:
            producers[2].connect()
        assert info.value.status == 503
        assert _metric(relay, 'relay_rejects_total{reason="capacity"}') == 1
        for producer in producers[:2]:
            producer.close()


async def test_oversized_frame_closes_the_producer_and_truncates_the_stream(stream: Stream) -> None:
    """A frame over max_frame_bytes ends the producer's connection; the consumer sees truncation."""
    with start_relay(max_frame_bytes=2048) as relay:
        consumer = Consumer(
            relay.url, stream.channel, stream.tokens.consumer, stream.key, idle_timeout=10
        )
        async with consumer:
            async with AsyncProducer(
                relay.url, stream.channel, stream.tokens.producer, stream.key
            ) as producer:
                await producer.send({"content": "small"})
                await producer.send({"content": "x" * 4096})
                with pytest.raises(ChannelClosed, match="1009"):
                    for _ in range(200):
                        await producer.send({"content": "more"})
                        await asyncio.sleep(0.01)
            received = []
            with pytest.raises(TruncatedStream):
                async for payload in consumer:
                    received.append(payload)
            assert received == [{"content": "small"}]


async def test_late_consumer_receives_everything(relay_server: RelayThread, stream: Stream) -> None:
    """A consumer that joins after the producer finished still gets every frame and the end."""
    async with AsyncProducer(
        relay_server.url, stream.channel, stream.tokens.producer, stream.key
    ) as producer:
        for i in range(100):
            await producer.send({"i": i})
        await producer.close(usage={"completion_tokens": 100})
    async with Consumer(
        relay_server.url, stream.channel, stream.tokens.consumer, stream.key
    ) as consumer:
        received = [payload["i"] async for payload in consumer]
    assert received == list(range(100))
    assert consumer.usage == {"completion_tokens": 100} and consumer.frames == 100


async def test_buffer_before_the_consumer_joins_is_bounded_and_lossless(stream: Stream) -> None:
    """With no consumer yet, the relay holds at most its byte budget (plus one socket read),
    pauses the producer instead of dropping, and later delivers every frame in order."""
    limit = 64 * 1024
    with start_relay(max_buffer_bytes=limit, max_buffer_frames=10_000) as relay:
        async with AsyncProducer(
            relay.url, stream.channel, stream.tokens.producer, stream.key
        ) as producer:

            async def produce() -> None:
                for i in range(FRAMES):
                    await producer.send({"i": i, "pad": "x" * 16_000})
                await producer.close()

            task = asyncio.create_task(produce())
            await _eventually(lambda: _paused(relay) == 1)  # the buffer filled: paused
            peak = relay.server.metrics.buffered_bytes
            assert 0 < peak <= limit + 256 * 1024 + 17_000
            assert not task.done()  # held back, not dropped
            async with Consumer(
                relay.url, stream.channel, stream.tokens.consumer, stream.key
            ) as consumer:
                received = [payload["i"] async for payload in consumer]
            await task
    assert received == list(range(FRAMES))


async def test_slow_consumer_gets_backpressure_not_unbounded_buffers(stream: Stream) -> None:
    """While the consumer does not read, the relay's send buffer stays near its high-water
    mark; when it reads again, every frame arrives in order."""
    high = 128 * 1024
    with start_relay(write_buffer_bytes=high) as relay:
        async with Consumer(
            relay.url, stream.channel, stream.tokens.consumer, stream.key, max_queue=4
        ) as consumer:
            async with AsyncProducer(
                relay.url, stream.channel, stream.tokens.producer, stream.key
            ) as producer:

                async def produce() -> None:
                    for i in range(FRAMES):
                        await producer.send({"i": i, "pad": "x" * 16_000})
                    await producer.close()

                task = asyncio.create_task(produce())
                await _eventually(lambda: _paused(relay) == 1)  # the consumer is slow: paused

                def buffered() -> int:
                    return sum(
                        c.transport.get_write_buffer_size()
                        for c in relay.server._conns
                        if c.transport is not None
                    )

                assert relay.call(buffered) <= high + 256 * 1024 + 17_000
                assert not task.done()
                received = [payload["i"] async for payload in consumer]
                await task
    assert received == list(range(FRAMES))


def test_one_sided_channel_is_reaped(stream: Stream) -> None:
    """A consumer whose producer never comes is closed after pair_timeout."""
    with start_relay(pair_timeout=0.3) as relay:
        consumer = SyncConsumer(
            relay.url, stream.channel, stream.tokens.consumer, stream.key, first_frame_timeout=10
        )
        with consumer, pytest.raises(TruncatedStream, match="did not join"):
            list(consumer)
        assert _metric(relay, 'relay_channels_reaped_total{why="one-sided"}') == 1
        assert _metric(relay, "relay_channels") == 0


def test_idle_channel_is_reaped_and_both_sides_learn(stream: Stream) -> None:
    """A paired channel with no frames for idle_timeout is closed on both sides."""
    with start_relay(idle_timeout=0.3) as relay:
        with Producer(relay.url, stream.channel, stream.tokens.producer, stream.key) as producer:
            producer.send({"content": "a"})
            consumer = SyncConsumer(
                relay.url, stream.channel, stream.tokens.consumer, stream.key, idle_timeout=10
            )
            with consumer, pytest.raises(TruncatedStream, match="idle"):
                list(consumer)
            with pytest.raises(ChannelClosed, match="idle"):
                for _ in range(100):
                    producer.send({"content": "late"})
                    time.sleep(0.02)
        assert _metric(relay, 'relay_channels_reaped_total{why="idle"}') == 1


def test_consumer_leaving_closes_the_producer_side(
    relay_server: RelayThread, stream: Stream
) -> None:
    """When the consumer disconnects, the producer's next sends raise ChannelClosed."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as producer:
        producer.send({"content": "first"})
        with SyncConsumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key
        ) as consumer:
            assert next(consumer) == {"content": "first"}
        with pytest.raises(ChannelClosed, match="consumer disconnected"):
            for _ in range(250):
                producer.send({"content": "more"})
                time.sleep(0.02)


def test_producer_leaving_without_close_truncates(
    relay_server: RelayThread, stream: Stream
) -> None:
    """Leaving the producer's with block without close() gives the consumer TruncatedStream."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as producer:
        producer.send({"content": "partial"})
    received = []
    with (
        SyncConsumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key
        ) as consumer,
        pytest.raises(TruncatedStream),
    ):
        for payload in consumer:
            received.append(payload)
    assert received == [{"content": "partial"}]


def test_producer_error_reaches_the_consumer(relay_server: RelayThread, stream: Stream) -> None:
    """Producer.error() makes the consumer raise RemoteError with the message."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as producer:
        producer.send({"content": "a"})
        producer.error("backend returned HTTP 500")
    with (
        SyncConsumer(
            relay_server.url, stream.channel, stream.tokens.consumer, stream.key
        ) as consumer,
        pytest.raises(RemoteError, match="HTTP 500"),
    ):
        list(consumer)


def test_silent_connection_is_dropped_after_open_timeout() -> None:
    """A TCP client that never sends its HTTP request is cut off and counted."""
    with start_relay(open_timeout=0.2) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
            assert sock.recv(1) == b""  # the relay closed the connection
        assert _metric(relay, 'relay_rejects_total{reason="handshake-timeout"}') == 1


def test_graceful_shutdown_lets_a_stream_in_progress_finish(stream: Stream) -> None:
    """stop() waits for an active producer to finish before closing connections."""
    relay = start_relay(shutdown_timeout=5.0)
    try:
        producer = Producer(relay.url, stream.channel, stream.tokens.producer, stream.key).connect()
        consumer = SyncConsumer(relay.url, stream.channel, stream.tokens.consumer, stream.key)
        consumer.connect()
        producer.send({"i": 0})
        assert next(consumer) == {"i": 0}
        stopper = threading.Thread(target=relay.stop)
        stopper.start()
        _until(lambda: relay.call(relay.server.health)["status"] == "closing")
        producer.send({"i": 1})
        producer.close()
        assert list(consumer) == [{"i": 1}]
        assert consumer.frames == 2
        stopper.join(10)
        assert not stopper.is_alive()
    finally:
        relay.stop()


async def test_server_runs_in_an_existing_event_loop(stream: Stream) -> None:
    """RelayServer works as an async context manager on the caller's loop, on port 0."""
    async with RelayServer(secret=SECRET) as server:
        assert server.port > 0 and server.url == f"ws://127.0.0.1:{server.port}"
        async with AsyncProducer(
            server.url, stream.channel, stream.tokens.producer, stream.key
        ) as producer:
            await producer.send({"x": 1})
            await producer.close()
        async with Consumer(
            server.url, stream.channel, stream.tokens.consumer, stream.key
        ) as consumer:
            assert [p async for p in consumer] == [{"x": 1}]


def test_server_refuses_to_run_without_a_secret_unless_insecure() -> None:
    """No secret is an error unless insecure=True; limits must be positive."""
    with pytest.raises(ValueError, match="secret"):
        RelayServer()
    RelayServer(insecure=True)
    with pytest.raises(ValueError, match="max_channels"):
        RelayServer(secret=SECRET, max_channels=0)


def test_configuration_is_frozen_timeouts_and_limits_and_old_keywords_map_onto_them() -> None:
    """timeouts=/limits= configure the server; the flat keywords override their fields."""
    server = RelayServer(secret=SECRET, timeouts=Timeouts(pair=7.0), limits=Limits(backlog=9),
                         idle_timeout=3.0, max_channels=5)
    assert server.timeouts == Timeouts(pair=7.0, idle=3.0)
    assert server.limits == Limits(backlog=9, max_channels=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        server.limits.max_channels = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="pair_timeout"):
        RelayServer(secret=SECRET, timeouts=Timeouts(pair=0))
    with pytest.raises(TypeError, match="max_chanels"):
        RelayServer(secret=SECRET, max_chanels=5)


def test_channel_limit_from_limits_is_enforced() -> None:
    """A Limits object reaches the running server: a third channel is refused with 503."""
    with start_relay(limits=Limits(max_channels=1)) as relay:
        first, second = Stream(), Stream()
        producer = Producer(relay.url, first.channel, first.tokens.producer, first.key)
        producer.connect()
        with pytest.raises(RelayRefused) as info:
            Producer(relay.url, second.channel, second.tokens.producer, second.key).connect()
        assert info.value.status == 503
        producer.close()


def test_insecure_relay_accepts_any_token(stream: Stream) -> None:
    """In insecure (development) mode tokens are not checked."""
    with start_relay(secret=None, insecure=True) as relay:
        with Producer(relay.url, stream.channel, "anything", stream.key) as producer:
            producer.send({"x": 1})
            producer.close()
        with SyncConsumer(relay.url, stream.channel, "", stream.key) as consumer:
            assert list(consumer) == [{"x": 1}]


def test_repr_and_errors_never_show_secrets_or_tokens(
    relay_server: RelayThread, stream: Stream
) -> None:
    """Reprs of clients and server, and auth errors, contain no token, key or secret."""
    producer = Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key)
    consumer = SyncConsumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key)
    texts = [repr(producer), repr(consumer), repr(relay_server), repr(relay_server.server)]
    bad = mint_tokens(b"wrong secret", stream.channel, 60)
    with pytest.raises(AuthRejected) as info:
        Producer(relay_server.url, stream.channel, bad.producer, stream.key).connect()
    texts.append(str(info.value))
    for text in texts:
        for secret in (
            stream.tokens.producer,
            stream.tokens.consumer,
            bad.producer,
            SECRET.decode(),
            stream.key.hex(),
        ):
            assert secret not in text


def test_ended_channel_cannot_be_reopened_with_its_tokens(
    relay_server: RelayThread, stream: Stream
) -> None:
    """Once a channel has ended, its still-valid tokens do not open it again."""
    with Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key) as p:
        p.send({"i": 0})
        p.close()
    with SyncConsumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key) as c:
        assert list(c) == [{"i": 0}]
    with pytest.raises(ChannelClosed, match="already ended"):
        Producer(relay_server.url, stream.channel, stream.tokens.producer, stream.key).connect()
    with pytest.raises(ChannelClosed):
        SyncConsumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key).connect()
    assert _metric(relay_server, 'relay_rejects_total{reason="channel-ended"}') == 2


async def test_producer_arriving_after_the_consumer_gave_up_learns_at_once(
    relay_server: RelayThread, stream: Stream
) -> None:
    """If the consumer left before the producer connected, the producer's connect raises
    ChannelClosed instead of buffering into a channel nobody will read."""
    async with Consumer(relay_server.url, stream.channel, stream.tokens.consumer, stream.key):
        pass
    ended = relay_server.server._ended
    await _eventually(lambda: relay_server.call(lambda: stream.channel in ended))
    with pytest.raises(ChannelClosed):
        await AsyncProducer(
            relay_server.url, stream.channel, stream.tokens.producer, stream.key
        ).connect()


async def test_relay_wide_buffer_budget_pauses_every_waiting_producer() -> None:
    """Over all channels, frames held for absent consumers stay within the relay-wide
    budget (plus one socket read per producer); nothing is dropped."""
    budget = 100_000
    streams = [Stream(), Stream()]
    with start_relay(max_total_buffer_bytes=budget) as relay:

        async def produce(stream: Stream) -> None:
            async with AsyncProducer(
                relay.url, stream.channel, stream.tokens.producer, stream.key
            ) as producer:
                for i in range(FRAMES):
                    await producer.send({"i": i, "pad": "x" * 16_000})
                await producer.close()

        tasks = [asyncio.create_task(produce(s)) for s in streams]
        await _eventually(lambda: _paused(relay) == 2)  # the budget is spent: both paused
        assert relay.server.metrics.buffered_bytes <= budget + 2 * (256 * 1024 + 17_000)
        assert not any(task.done() for task in tasks)
        for stream in streams:
            async with Consumer(
                relay.url, stream.channel, stream.tokens.consumer, stream.key
            ) as consumer:
                assert [p["i"] async for p in consumer] == list(range(FRAMES))
        await asyncio.gather(*tasks)
