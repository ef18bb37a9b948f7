"""Fixtures for the relay tests: a real relay server on loopback port 0, and helpers that
run a whole stream through it with either kind of client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from relay import (
    AsyncProducer,
    Consumer,
    Producer,
    SyncConsumer,
    Tokens,
    mint_tokens,
    new_channel,
    new_key,
)
from relay.server import RelayThread, run_in_thread

SECRET = b"test relay secret, 32 bytes long"


class Stream:
    """Everything one request needs: a channel, its tokens and a fresh key."""

    def __init__(self, secret: bytes = SECRET, ttl: float = 60.0) -> None:
        self.channel = new_channel()
        self.key = new_key()
        self.tokens: Tokens = mint_tokens(secret, self.channel, ttl)


@pytest.fixture
def stream() -> Stream:
    """A fresh channel, key and token pair."""
    return Stream()


def start_relay(**overrides: Any) -> RelayThread:
    """Start a relay in a background thread with short test-friendly timeouts."""
    kwargs: dict[str, Any] = {
        "secret": SECRET,
        "close_timeout": 2.0,
        "shutdown_timeout": 1.0,
        "reap_interval": 0.05,
    }
    kwargs.update(overrides)
    return run_in_thread(**kwargs)


@pytest.fixture
def relay_server() -> Iterator[RelayThread]:
    """A relay server running in a background thread; always stopped."""
    handle = start_relay()
    try:
        yield handle
    finally:
        handle.stop()


async def produce(url: str, stream: Stream, payloads: Sequence[Any], **options: Any) -> None:
    """Send ``payloads`` and the end frame with an :class:`AsyncProducer`."""
    async with AsyncProducer(
        url, stream.channel, stream.tokens.producer, stream.key, **options
    ) as producer:
        for payload in payloads:
            await producer.send(payload)
        await producer.close(usage={"completion_tokens": len(payloads)})


async def consume(url: str, stream: Stream, key: bytes | None = None, **options: Any) -> list[Any]:
    """Every payload a :class:`Consumer` yields (5 s timeouts unless given)."""
    options = {"first_frame_timeout": 5, "idle_timeout": 5, **options}
    consumer = Consumer(url, stream.channel, stream.tokens.consumer, key or stream.key, **options)
    async with consumer:
        return [payload async for payload in consumer]


def produce_sync(url: str, stream: Stream, payloads: Sequence[Any], **options: Any) -> None:
    """Send ``payloads`` and the end frame with a :class:`Producer`."""
    with Producer(url, stream.channel, stream.tokens.producer, stream.key, **options) as producer:
        for payload in payloads:
            producer.send(payload)
        producer.close(usage={"completion_tokens": len(payloads)})


def consume_sync(url: str, stream: Stream, **options: Any) -> list[Any]:
    """Every payload a :class:`SyncConsumer` yields (5 s timeouts unless given)."""
    options = {"first_frame_timeout": 5, "idle_timeout": 5, **options}
    with SyncConsumer(url, stream.channel, stream.tokens.consumer, stream.key, **options) as c:
        return list(c)
