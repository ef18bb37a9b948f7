"""Fixtures for the relay tests: a real relay server on loopback port 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from relay import Tokens, mint_tokens, new_channel, new_key
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
