"""One relay, 1,000 concurrent channels: every frame delivered exactly once, in order."""

from __future__ import annotations

import asyncio
import resource

import pytest

from relay import AsyncProducer, Consumer
from relay.server import RelayServer
from tests.relay.conftest import SECRET, Stream

CHANNELS = 1000
FRAMES = 10


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    """4,000 sockets are needed (both ends of 2,000 connections in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * CHANNELS + 256
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_thousand_concurrent_channels_deliver_every_frame_once_in_order() -> None:
    """1,000 channels open at once through one relay; each consumer gets exactly its own
    frames, each once, in order, and the relay counts every frame."""
    async with RelayServer(secret=SECRET, backlog=2048) as server:
        connected = 0
        all_connected = asyncio.Event()
        handshakes = asyncio.Semaphore(100)
        peak_channels = 0

        async def one_channel(index: int) -> list[tuple[int, int]]:
            nonlocal connected, peak_channels
            stream = Stream()
            async with handshakes:
                consumer = await Consumer(
                    server.url,
                    stream.channel,
                    stream.tokens.consumer,
                    stream.key,
                    first_frame_timeout=60,
                ).connect()
                producer = await AsyncProducer(
                    server.url, stream.channel, stream.tokens.producer, stream.key
                ).connect()
            connected += 1
            if connected == CHANNELS:
                peak_channels = server.channels
                all_connected.set()
            await all_connected.wait()
            for k in range(FRAMES):
                await producer.send({"c": index, "k": k})
            await producer.close()
            received = [(p["c"], p["k"]) async for p in consumer]
            assert consumer.frames == FRAMES
            return received

        results = await asyncio.wait_for(
            asyncio.gather(*(one_channel(i) for i in range(CHANNELS))), timeout=120
        )
        assert peak_channels == CHANNELS
        for index, received in enumerate(results):
            assert received == [(index, k) for k in range(FRAMES)]
        assert server.metrics.frames_total == CHANNELS * (FRAMES + 1)
