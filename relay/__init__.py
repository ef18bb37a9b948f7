"""relay: the encrypted WebSocket data plane of STREAM's HPC tier.

A producer on the HPC node seals each token delta with AES-256-GCM under a fresh
per-request key and sends it through an untrusted relay to the consumer, which
verifies order, completeness and integrity. The relay authorizes both ends with
per-channel, per-role, expiring capability tokens and never sees a key.

Layers (like the websockets library): :mod:`relay.frames`, :mod:`relay.seal` and
:mod:`relay.tokens` are pure (no I/O); :mod:`relay.server` and :mod:`relay.client`
are thin asyncio/threaded front-ends; :mod:`relay.cli` runs a server.

Example:
    >>> import relay
    >>> channel, key = relay.new_channel(), relay.new_key()
    >>> tokens = relay.mint_tokens("relay secret", channel, ttl=60)
    >>> with relay.run_in_thread(secret="relay secret") as server:
    ...     with relay.Producer(server.url, channel, tokens.producer, key) as producer:
    ...         producer.send({"content": "Hel"})
    ...         producer.send({"content": "lo"})
    ...         producer.close(usage={"completion_tokens": 2})
    ...     with relay.SyncConsumer(server.url, channel, tokens.consumer, key) as consumer:
    ...         text = "".join(payload["content"] for payload in consumer)
    >>> text, consumer.usage
    ('Hello', {'completion_tokens': 2})
"""

from __future__ import annotations

from relay.client import AsyncProducer, Consumer, Producer, SyncConsumer
from relay.config import Limits, Timeouts
from relay.errors import (
    AUTH_REASONS,
    AuthRejected,
    ChannelClosed,
    ConnectTimeout,
    DroppedFrame,
    FirstFrameTimeout,
    FrameError,
    IdleTimeout,
    IntegrityError,
    RelayError,
    RelayRefused,
    RelayTimeout,
    RelayUnreachable,
    RemoteError,
    ReorderedFrame,
    ReplayedFrame,
    TamperedFrame,
    TruncatedStream,
    WrongKey,
)
from relay.frames import Frame, FrameType, encode_frame, parse_frame
from relay.seal import Data, End, Sealer, Verifier, new_key
from relay.server import RelayServer, RelayThread, run_in_thread
from relay.tokens import Tokens, mint_tokens, new_channel, verify_token

__all__ = [
    "AUTH_REASONS",
    "AsyncProducer",
    "AuthRejected",
    "ChannelClosed",
    "ConnectTimeout",
    "Consumer",
    "Data",
    "DroppedFrame",
    "End",
    "FirstFrameTimeout",
    "Frame",
    "FrameError",
    "FrameType",
    "IdleTimeout",
    "IntegrityError",
    "Limits",
    "Producer",
    "RelayError",
    "RelayRefused",
    "RelayServer",
    "RelayThread",
    "RelayTimeout",
    "RelayUnreachable",
    "RemoteError",
    "ReorderedFrame",
    "ReplayedFrame",
    "Sealer",
    "SyncConsumer",
    "TamperedFrame",
    "Timeouts",
    "Tokens",
    "TruncatedStream",
    "Verifier",
    "WrongKey",
    "encode_frame",
    "mint_tokens",
    "new_channel",
    "new_key",
    "parse_frame",
    "run_in_thread",
    "verify_token",
]
