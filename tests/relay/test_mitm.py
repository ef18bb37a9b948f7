"""A man-in-the-middle between consumer and relay (real sockets) that tampers with the
stream: every kind of interference is detected, each with its own error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from relay import (
    DroppedFrame,
    IntegrityError,
    ReorderedFrame,
    ReplayedFrame,
    TamperedFrame,
    TruncatedStream,
    WrongKey,
    new_key,
)
from relay.server import RelayThread
from tests.relay.conftest import Stream, consume, produce

Attack = Callable[[list[bytes]], list[bytes]]
N = 6  # data frames; the end frame is message N
PAYLOADS = [{"i": i} for i in range(N)]


def _flip(messages: list[bytes]) -> list[bytes]:
    altered = bytearray(messages[2])
    altered[-3] ^= 0x40
    return messages[:2] + [bytes(altered)] + messages[3:]


ATTACKS: dict[str, tuple[Attack, type[IntegrityError]]] = {
    "alter": (_flip, TamperedFrame),
    "drop": (lambda m: m[:2] + m[3:], DroppedFrame),
    "reorder": (lambda m: m[:2] + [m[3], m[2]] + m[4:], ReorderedFrame),
    "duplicate": (lambda m: m[:3] + [m[2]] + m[3:], ReplayedFrame),
    "truncate": (lambda m: m[:4], TruncatedStream),
    "strip-end": (lambda m: m[:N], TruncatedStream),
}


class Mitm:
    """A WebSocket proxy that reads the whole stream from the relay, applies an attack,
    and delivers the result to the consumer, then closes normally (code 1000)."""

    def __init__(self, upstream: str, attack: Attack) -> None:
        self.upstream = upstream
        self.attack = attack
        self.url = ""

    async def handle(self, client: ServerConnection) -> None:
        headers = {"Authorization": client.request.headers["Authorization"]}
        async with connect(
            self.upstream + client.request.path, additional_headers=headers, proxy=None
        ) as relay:
            messages = [message async for message in relay]
        for message in self.attack([bytes(m) for m in messages]):  # type: ignore[arg-type]
            await client.send(message)
        await client.close()


@pytest.fixture
async def mitm_factory(relay_server: RelayThread) -> AsyncIterator[Callable[[Attack], Mitm]]:
    servers = []

    def make(attack: Attack) -> Mitm:
        return Mitm(relay_server.url, attack)

    async def start(mitm: Mitm) -> None:
        server = await serve(mitm.handle, "127.0.0.1", 0)
        servers.append(server)
        mitm.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    make.start = start  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_untouched_stream_through_the_proxy_is_complete(
    relay_server: RelayThread, mitm_factory: Callable[[Attack], Mitm], stream: Stream
) -> None:
    """Control: an honest proxy changes nothing, the consumer gets every frame."""
    mitm = mitm_factory(lambda m: m)
    await mitm_factory.start(mitm)  # type: ignore[attr-defined]
    await produce(relay_server.url, stream, PAYLOADS)
    assert await consume(mitm.url, stream) == PAYLOADS


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_each_attack_is_detected_with_its_own_error(
    relay_server: RelayThread, mitm_factory: Callable[[Attack], Mitm], stream: Stream, name: str
) -> None:
    """Altered, dropped, reordered, duplicated or truncated frames raise the matching error."""
    attack, error = ATTACKS[name]
    mitm = mitm_factory(attack)
    await mitm_factory.start(mitm)  # type: ignore[attr-defined]
    await produce(relay_server.url, stream, PAYLOADS)
    with pytest.raises(error) as info:
        await consume(mitm.url, stream)
    assert type(info.value) is error


async def test_consumer_with_the_wrong_key_gets_wrong_key(
    relay_server: RelayThread, stream: Stream
) -> None:
    """A consumer holding another key is told WrongKey, not shown garbage."""
    await produce(relay_server.url, stream, PAYLOADS)
    with pytest.raises(WrongKey):
        await consume(relay_server.url, stream, key=new_key())


async def test_frames_spliced_from_another_channel_are_tampered(
    relay_server: RelayThread, mitm_factory: Callable[[Attack], Mitm]
) -> None:
    """A relay that feeds a consumer another channel's frames is caught, even under the
    same key, because frames are bound to their channel."""
    victim, other = Stream(), Stream()
    other.key = victim.key
    await produce(relay_server.url, other, PAYLOADS)
    headers = {"Authorization": f"Bearer {other.tokens.consumer}"}
    async with connect(
        f"{relay_server.url}/consume/{other.channel}", proxy=None, additional_headers=headers
    ) as ws:
        stolen = [bytes(m) async for m in ws]  # type: ignore[arg-type]
    assert len(stolen) == N + 1
    mitm = mitm_factory(lambda m: stolen)
    await mitm_factory.start(mitm)  # type: ignore[attr-defined]
    await produce(relay_server.url, victim, PAYLOADS)
    with pytest.raises(TamperedFrame):
        await consume(mitm.url, victim)
