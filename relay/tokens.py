"""Capability tokens: per-channel, per-role, expiring HMAC tokens (pure, no I/O).

The relay holds a secret; whoever sets up a stream mints one producer token and one
consumer token for a fresh channel and hands the producer token (never the secret)
to the HPC node. A token is ``v1.<role>.<channel>.<expiry ms>.<base64url HMAC-SHA256>``;
the channel and role are readable, but nothing can be changed without the secret.

Tokens travel in the ``Authorization: Bearer`` header of the WebSocket handshake,
never in the URL.

Example:
    >>> from relay.tokens import mint_tokens, new_channel, verify_token
    >>> channel = new_channel()
    >>> tokens = mint_tokens(b"relay secret", channel, ttl=60)
    >>> verify_token(b"relay secret", tokens.producer, channel, "producer")
    >>> verify_token(b"relay secret", tokens.producer, channel, "consumer")
    Traceback (most recent call last):
    ...
    relay.errors.AuthRejected: relay rejected the capability token: wrong-role
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from typing import NamedTuple

from relay.errors import AuthRejected

__all__ = [
    "ROLES",
    "Tokens",
    "check_channel",
    "mint_token",
    "mint_tokens",
    "new_channel",
    "verify_token",
]

#: The two roles a token can grant.
ROLES: tuple[str, str] = ("producer", "consumer")
_CHANNEL_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_VERSION = "v1"
_DOMAIN = b"stream-relay token v1\x00"
_MAC_LEN = 32


class Tokens(NamedTuple):
    """The two capability tokens of one channel.

    Attributes:
        producer: Lets its holder connect to ``/produce/<channel>``.
        consumer: Lets its holder connect to ``/consume/<channel>``.
    """

    producer: str
    consumer: str


def new_channel() -> str:
    """Return a fresh, unguessable, URL-safe channel id (128 random bits).

    Returns:
        22 characters from ``[A-Za-z0-9_-]``.

    Example:
        >>> channel = new_channel()
        >>> len(channel), check_channel(channel) == channel
        (22, True)
    """
    return secrets.token_urlsafe(16)


def check_channel(channel: str) -> str:
    """Validate a channel id (1-128 characters from ``[A-Za-z0-9_-]``).

    Args:
        channel: The channel id.

    Returns:
        The channel id, unchanged.

    Raises:
        ValueError: If the id is empty, too long or has other characters.

    Example:
        >>> check_channel("a/b")
        Traceback (most recent call last):
        ...
        ValueError: invalid channel id: use 1-128 characters from [A-Za-z0-9_-]
    """
    if not isinstance(channel, str) or not _CHANNEL_RE.fullmatch(channel):
        raise ValueError("invalid channel id: use 1-128 characters from [A-Za-z0-9_-]")
    return channel


def _secret_bytes(secret: bytes | str) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("the relay secret must not be empty")
    return raw


def _mac(secret: bytes, role: str, channel: str, expiry_ms: int) -> bytes:
    message = _DOMAIN + f"{role}\x00{channel}\x00{expiry_ms}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def mint_token(
    secret: bytes | str, channel: str, role: str, ttl: float, *, now: float | None = None
) -> str:
    """Mint one capability token.

    Args:
        secret: The relay's secret.
        channel: The channel the token is valid for.
        role: ``"producer"`` or ``"consumer"``.
        ttl: Seconds until the token expires (must be positive).
        now: Current Unix time; defaults to :func:`time.time` (for tests).

    Returns:
        The token string.

    Raises:
        ValueError: On an empty secret, an invalid channel or role, or ``ttl <= 0``.

    Example:
        >>> mint_token("s", "ch", "consumer", 30, now=0).startswith("v1.consumer.ch.30000.")
        True
    """
    if role not in ROLES:
        raise ValueError(f"role must be 'producer' or 'consumer', not {role!r}")
    if not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    check_channel(channel)
    expiry_ms = int(((time.time() if now is None else now) + ttl) * 1000)
    mac = _mac(_secret_bytes(secret), role, channel, expiry_ms)
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    return f"{_VERSION}.{role}.{channel}.{expiry_ms}.{signature}"


def mint_tokens(secret: bytes | str, channel: str, ttl: float) -> Tokens:
    """Mint the producer and consumer tokens of one channel.

    Args:
        secret: The relay's secret.
        channel: The channel (see :func:`new_channel`).
        ttl: Seconds until both tokens expire. A token is checked when its holder
            connects, so the ttl must cover the time until the producer connects.

    Returns:
        ``Tokens(producer, consumer)``.

    Example:
        >>> tokens = mint_tokens("secret", "ch", 60)
        >>> tokens.producer != tokens.consumer
        True
    """
    now = time.time()
    return Tokens(
        mint_token(secret, channel, "producer", ttl, now=now),
        mint_token(secret, channel, "consumer", ttl, now=now),
    )


def verify_token(
    secret: bytes | str,
    token: str | None,
    channel: str,
    role: str,
    *,
    now: float | None = None,
) -> None:
    """Check that a token grants ``role`` on ``channel`` right now.

    Args:
        secret: The relay's secret.
        token: The presented token, or ``None``/empty if none was presented.
        channel: The channel being joined.
        role: The role being taken (``"producer"`` or ``"consumer"``).
        now: Current Unix time; defaults to :func:`time.time`.

    Raises:
        AuthRejected: With ``reason`` ``missing``, ``forged`` (malformed or bad
            signature), ``expired``, ``wrong-channel`` or ``wrong-role``.

    Example:
        >>> token = mint_token("s", "ch", "producer", 1, now=0)
        >>> verify_token("s", token, "ch", "producer", now=5)
        Traceback (most recent call last):
        ...
        relay.errors.AuthRejected: relay rejected the capability token: expired
    """
    if not token:
        raise AuthRejected("missing")
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != _VERSION or not parts[3].isdigit():
        raise AuthRejected("forged")
    _, token_role, token_channel, expiry, signature = parts
    try:
        presented = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        raise AuthRejected("forged") from None
    expiry_ms = int(expiry)
    expected = _mac(_secret_bytes(secret), token_role, token_channel, expiry_ms)
    if len(presented) != _MAC_LEN or not hmac.compare_digest(presented, expected):
        raise AuthRejected("forged")
    if not hmac.compare_digest(token_channel.encode(), channel.encode()):
        raise AuthRejected("wrong-channel")
    if token_role != role:
        raise AuthRejected("wrong-role")
    if expiry_ms <= int((time.time() if now is None else now) * 1000):
        raise AuthRejected("expired")
