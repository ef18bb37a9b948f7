"""Messages an intermediary splits into fragments (RFC 6455 section 5.4), through a real
re-fragmenting proxy on both legs: streams arrive whole and in order with either kind of
client, and fragmented messages meet the same size limits and protocol rules as whole ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from relay import AsyncProducer, ChannelClosed, Consumer, TruncatedStream
from relay.server import RelayThread
from tests.relay.conftest import (
    Stream,
    consume,
    consume_sync,
    produce,
    produce_sync,
    start_relay,
)
from tests.relay.proxy import Fault, FragmentingProxy

# Sealed messages of many sizes, so fragment boundaries fall everywhere in them; one
# is over 64 kB, so the relay forwards it, once joined, with the 8-byte length form.
PAYLOADS = [{"i": i, "content": f"{i}:" + "é€" * (i * 37 % 300)} for i in range(40)]
PAYLOADS.append({"i": 40, "content": "x" * 100_000})
LIMIT = 2048  # max_frame_bytes of the size-limit tests
FAULTS: list[Fault] = ["orphan", "interrupt"]

Consume = Callable[..., Awaitable[list[Any]]]


async def _consume_in_thread(url: str, stream: Stream, **options: Any) -> list[Any]:
    return await asyncio.to_thread(consume_sync, url, stream, **options)


CONSUMERS: dict[str, Consume] = {"async": consume, "sync": _consume_in_thread}


def _assert_fragmented_both_ways(proxy: FragmentingProxy, messages: int) -> None:
    """Every message was split on both legs, every interleaved ping answered."""
    assert proxy.split == {"upstream": messages, "downstream": messages}
    assert proxy.pongs == proxy.pings == 2 * messages
    assert proxy.errors == []


def test_sync_clients_get_a_fragmented_stream_whole_and_in_order(
    relay_server: RelayThread, stream: Stream
) -> None:
    """Producer and SyncConsumer get every payload intact and in order through the proxy."""
    with FragmentingProxy(relay_server.port) as proxy, ThreadPoolExecutor(1) as pool:
        received = pool.submit(consume_sync, proxy.url, stream)
        produce_sync(proxy.url, stream, PAYLOADS)
        assert received.result(30) == PAYLOADS
    _assert_fragmented_both_ways(proxy, len(PAYLOADS) + 1)


async def test_async_clients_get_a_fragmented_stream_whole_and_in_order(
    relay_server: RelayThread, stream: Stream
) -> None:
    """AsyncProducer and Consumer get every payload intact and in order through the proxy."""
    with FragmentingProxy(relay_server.port) as proxy:
        received, _ = await asyncio.gather(
            consume(proxy.url, stream), produce(proxy.url, stream, PAYLOADS)
        )
    assert received == PAYLOADS
    _assert_fragmented_both_ways(proxy, len(PAYLOADS) + 1)


@pytest.mark.parametrize("parts", [1, 4], ids=["whole", "fragmented"])
async def test_oversized_message_from_a_producer_is_refused_whole_or_fragmented(
    stream: Stream, parts: int
) -> None:
    """A producer's message over max_frame_bytes, whole or in fragments, is refused with 1009."""
    with (
        start_relay(max_frame_bytes=LIMIT) as relay,
        FragmentingProxy(relay.port, parts=parts) as proxy,
    ):
        consumer = Consumer(
            relay.url, stream.channel, stream.tokens.consumer, stream.key, idle_timeout=10
        )
        async with consumer:
            async with AsyncProducer(
                proxy.url, stream.channel, stream.tokens.producer, stream.key
            ) as producer:
                await producer.send({"content": "small"})
                await producer.send({"content": "x" * 2 * LIMIT})
                with pytest.raises(ChannelClosed, match="1009"):
                    for _ in range(200):
                        await producer.send({"content": "more"})
                        await asyncio.sleep(0.01)
            received = []
            with pytest.raises(TruncatedStream):
                async for payload in consumer:
                    received.append(payload)
            assert received == [{"content": "small"}]
    assert ("downstream", 1009) in proxy.closes
    if parts > 1:  # every fragment was under the limit, the message over it
        assert proxy.split["upstream"] >= 2 and 0 < proxy.largest_fragment["upstream"] < LIMIT


@pytest.mark.parametrize("client", list(CONSUMERS))
@pytest.mark.parametrize("parts", [1, 4], ids=["whole", "fragmented"])
async def test_oversized_message_to_a_consumer_is_refused_whole_or_fragmented(
    relay_server: RelayThread, stream: Stream, parts: int, client: str
) -> None:
    """A consumer refuses a message over its max_frame_bytes, whole or in fragments, with 1009."""
    payloads = [{"content": "small"}, {"content": "x" * 2 * LIMIT}, {"content": "after"}]
    await produce(relay_server.url, stream, payloads)
    with FragmentingProxy(relay_server.port, parts=parts) as proxy:
        with pytest.raises(TruncatedStream):
            await CONSUMERS[client](proxy.url, stream, max_frame_bytes=LIMIT)
    assert ("upstream", 1009) in proxy.closes
    if parts > 1:  # every fragment was under the limit, the message over it
        assert proxy.split["downstream"] >= 2 and 0 < proxy.largest_fragment["downstream"] < LIMIT


@pytest.mark.parametrize("fault", FAULTS)
async def test_protocol_violation_from_a_producer_is_refused_with_1002(
    relay_server: RelayThread, stream: Stream, fault: Fault
) -> None:
    """The relay closes a producer that breaks the fragmentation rules with 1002."""
    with FragmentingProxy(relay_server.port, fault=fault, fault_direction="upstream") as proxy:
        async with AsyncProducer(
            proxy.url, stream.channel, stream.tokens.producer, stream.key
        ) as producer:
            with pytest.raises(ChannelClosed, match="1002"):
                for i in range(200):
                    await producer.send({"i": i})
                    await asyncio.sleep(0.01)
        with pytest.raises(TruncatedStream):
            await consume(relay_server.url, stream)
    assert ("downstream", 1002) in proxy.closes


@pytest.mark.parametrize("client", list(CONSUMERS))
@pytest.mark.parametrize("fault", FAULTS)
async def test_protocol_violation_towards_a_consumer_is_refused_with_1002(
    relay_server: RelayThread, stream: Stream, fault: Fault, client: str
) -> None:
    """A consumer sent frames that break the fragmentation rules closes with 1002."""
    await produce(relay_server.url, stream, PAYLOADS[:3])
    with FragmentingProxy(relay_server.port, fault=fault, fault_direction="downstream") as proxy:
        with pytest.raises(TruncatedStream):
            await CONSUMERS[client](proxy.url, stream)
    assert ("upstream", 1002) in proxy.closes
