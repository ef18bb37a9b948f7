"""Sealing and verification of relay frames (pure, no I/O).

A :class:`Sealer` (producer side) turns payloads into AES-256-GCM sealed frames; a
:class:`Verifier` (consumer side) checks and opens them, one at a time, and raises a
specific error for every way an untrusted relay can interfere with the stream.

Sealed payload layout (the ``payload`` of a :class:`~relay.frames.Frame`)::

    key id (4 bytes) | nonce (12 bytes, fresh random per frame) | ciphertext + GCM tag (16)

The associated data binds the frame header (version, type, sequence number), the key
id, the direction and the channel id, so a frame cannot be moved to another position,
stream, channel or direction, and its type cannot be changed, without failing
authentication. The key id (a PRF of the key, not the key) lets the verifier tell a
wrong key apart from an altered frame.

Example:
    >>> from relay.seal import Data, End, Sealer, Verifier, new_key
    >>> key = new_key()
    >>> sealer, verifier = Sealer(key, "ch1"), Verifier(key, "ch1")
    >>> verifier.feed(sealer.seal({"content": "Hel"}))
    Data(payload={'content': 'Hel'})
    >>> verifier.feed(sealer.seal_end({"completion_tokens": 1}))
    End(frames=1, usage={'completion_tokens': 1})
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.errors import (
    DroppedFrame,
    RemoteError,
    ReorderedFrame,
    ReplayedFrame,
    TamperedFrame,
    TruncatedStream,
    WrongKey,
)
from relay.frames import HEADER_SIZE, MAX_SEQ, FrameType, encode_header, parse_frame

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "SEAL_OVERHEAD",
    "Data",
    "End",
    "Sealer",
    "Verifier",
    "key_id",
    "new_key",
]

#: AES-256 key size in bytes.
KEY_SIZE = 32
#: GCM nonce size in bytes (96 bits).
NONCE_SIZE = 12
_KEY_ID_SIZE = 4
_TAG_SIZE = 16
#: Bytes a sealed payload adds to its plaintext.
SEAL_OVERHEAD = _KEY_ID_SIZE + NONCE_SIZE + _TAG_SIZE
_AAD_PREFIX = b"stream-relay/v1\x00"
_DIRECTIONS = {"producer": b"P", "consumer": b"C"}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def new_key() -> bytes:
    """Return a fresh random AES-256 key; use one per request, never reuse it.

    Returns:
        32 random bytes from the operating system's CSPRNG.

    Example:
        >>> len(new_key()), new_key() != new_key()
        (32, True)
    """
    return os.urandom(KEY_SIZE)


def key_id(key: bytes) -> bytes:
    """Return the 4-byte identifier of a key (a PRF output that reveals nothing of the key).

    Args:
        key: An AES-256 key.

    Returns:
        Four bytes that differ, with overwhelming probability, between keys.

    Example:
        >>> key_id(bytes(32)) == key_id(bytes(32)), len(key_id(bytes(32)))
        (True, 4)
    """
    return hmac.new(key, b"stream-relay key id", hashlib.sha256).digest()[:_KEY_ID_SIZE]


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(f"the key must be {KEY_SIZE} bytes (use relay.new_key())")
    return bytes(key)


def _check_direction(direction: str) -> bytes:
    try:
        return _DIRECTIONS[direction]
    except KeyError:
        raise ValueError(f"direction must be 'producer' or 'consumer', not {direction!r}") from None


class Data(NamedTuple):
    """A verified data frame.

    Attributes:
        payload: The decoded JSON payload the producer sent.
    """

    payload: Any


class End(NamedTuple):
    """A verified end frame: the stream is complete.

    Attributes:
        frames: Number of data frames in the stream.
        usage: Usage the producer reported (may be empty).
    """

    frames: int
    usage: dict[str, Any]


class Sealer:
    """Producer-side: seals payloads into consecutive frames of one stream.

    Args:
        key: The stream's AES-256 key (32 bytes, fresh per request).
        channel: The channel id the frames are bound to.
        direction: Who sends: ``"producer"`` (the default) or ``"consumer"``.

    Example:
        >>> sealer = Sealer(new_key(), "ch")
        >>> frame = sealer.seal({"content": "x"})
        >>> sealer.frames, len(frame) > 42
        (1, True)
    """

    def __init__(self, key: bytes, channel: str, direction: str = "producer") -> None:
        """Create a sealer; see the class docstring for the arguments."""
        key = _check_key(key)
        self._aead = AESGCM(key)
        self._kid = key_id(key)
        self._aad_tail = self._kid + _check_direction(direction) + channel.encode()
        self._seq = 0
        self._closed = False

    @property
    def frames(self) -> int:
        """Number of data frames sealed so far."""
        return self._seq - 1 if self._closed else self._seq

    @property
    def closed(self) -> bool:
        """True once an end or error frame has been sealed."""
        return self._closed

    def _seal(self, type_: FrameType, plaintext: bytes) -> bytes:
        if self._closed:
            raise ValueError("the stream is already closed (end or error frame sealed)")
        if self._seq >= MAX_SEQ:
            raise ValueError("sequence number space exhausted")
        header = encode_header(type_, self._seq)
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, plaintext, _AAD_PREFIX + header + self._aad_tail)
        self._seq += 1
        return header + self._kid + nonce + sealed

    def seal(self, payload: Any) -> bytes:
        """Seal one data frame.

        Args:
            payload: A JSON-serialisable value, typically a dict such as
                ``{"content": "Hel"}``.

        Returns:
            The frame bytes to send as one binary WebSocket message.

        Raises:
            TypeError: If the payload is not JSON-serialisable.
            ValueError: If the stream was already closed.
        """
        return self._seal(FrameType.DATA, _dumps(payload).encode())

    def seal_end(self, usage: dict[str, Any] | None = None) -> bytes:
        """Seal the end frame, which carries the data-frame count and the usage.

        Args:
            usage: Usage to report (token counts, ...); ``None`` means ``{}``.

        Returns:
            The frame bytes.
        """
        body = _dumps({"frames": self._seq, "usage": usage or {}}).encode()
        frame = self._seal(FrameType.END, body)
        self._closed = True
        return frame

    def seal_error(self, message: str) -> bytes:
        """Seal a terminal error frame.

        Args:
            message: What went wrong on the producer side (no secrets).

        Returns:
            The frame bytes.
        """
        frame = self._seal(FrameType.ERROR, _dumps({"message": str(message)}).encode())
        self._closed = True
        return frame


class Verifier:
    """Consumer-side: checks and opens the frames of one stream, in arrival order.

    :meth:`feed` returns :class:`Data`, :class:`End`, or ``None`` while it holds a
    frame that arrived early (to tell a reordered frame from a dropped one); call
    :meth:`close` when the connection ends.

    Args:
        key: The stream's AES-256 key.
        channel: The channel id the frames must be bound to.
        direction: Who sealed the frames: ``"producer"`` (the default) or ``"consumer"``.

    Raises (from :meth:`feed` / :meth:`close`):
        FrameError: Bytes that are not a frame.
        WrongKey: The first frame was sealed under another key.
        TamperedFrame: A frame failed authentication (altered header, ciphertext or tag).
        ReplayedFrame: A frame arrived twice.
        ReorderedFrame: A frame arrived after a later one.
        DroppedFrame: A frame never arrived.
        TruncatedStream: The stream ended without a valid end frame.
        RemoteError: The producer sent an authentic error frame.

    Example:
        >>> key = new_key()
        >>> sealer, verifier = Sealer(key, "c"), Verifier(key, "c")
        >>> first, second = sealer.seal(1), sealer.seal(2)
        >>> verifier.feed(first)
        Data(payload=1)
        >>> verifier.feed(first)
        Traceback (most recent call last):
        ...
        relay.errors.ReplayedFrame: frame 0 arrived twice
    """

    def __init__(self, key: bytes, channel: str, direction: str = "producer") -> None:
        """Create a verifier; see the class docstring for the arguments."""
        key = _check_key(key)
        self._aead = AESGCM(key)
        self._kid = key_id(key)
        self._aad_tail = self._kid + _check_direction(direction) + channel.encode()
        self._expected = 0
        self._held: int | None = None
        self._authentic = 0
        self._finished = False

    @property
    def frames(self) -> int:
        """Number of frames accepted in order so far."""
        return self._expected

    @property
    def finished(self) -> bool:
        """True once an authentic end or error frame was accepted."""
        return self._finished

    def feed(self, data: bytes | bytearray | memoryview) -> Data | End | None:
        """Verify and open the next frame received.

        Args:
            data: One binary WebSocket message.

        Returns:
            The data or end event, or ``None`` if the frame is held back.

        Raises:
            RelayError: One of the subclasses listed in the class docstring.
        """
        frame = parse_frame(data)
        seq, payload = frame.seq, frame.payload
        if self._finished:
            if seq < self._expected:
                raise ReplayedFrame(f"frame {seq} arrived twice")
            raise TamperedFrame(f"frame {seq} arrived after the end of the stream")
        if len(payload) < SEAL_OVERHEAD:
            raise TamperedFrame(f"frame {seq} is too short to be sealed")
        if payload[:_KEY_ID_SIZE] != self._kid:
            if self._authentic == 0:
                raise WrongKey("the stream is sealed under a different key than this consumer's")
            raise TamperedFrame(f"frame {seq} carries a different key id than the stream")
        nonce = payload[_KEY_ID_SIZE : SEAL_OVERHEAD - _TAG_SIZE]
        aad = _AAD_PREFIX + bytes(data[:HEADER_SIZE]) + self._aad_tail
        try:
            plaintext = self._aead.decrypt(nonce, payload[SEAL_OVERHEAD - _TAG_SIZE :], aad)
        except InvalidTag:
            raise TamperedFrame(f"frame {seq} failed authentication (altered)") from None
        self._authentic += 1
        expected = self._expected
        if seq < expected:
            raise ReplayedFrame(f"frame {seq} arrived twice")
        held = self._held
        if held is not None:
            if seq == held:
                raise ReplayedFrame(f"frame {seq} arrived twice")
            if seq < held:
                raise ReorderedFrame(f"frame {seq} arrived after frame {held}")
            raise DroppedFrame(f"frames {expected} to {held - 1} never arrived")
        if seq > expected:
            self._held = seq
            return None
        self._expected = expected + 1
        return self._open(frame.type, seq, plaintext)

    def _open(self, type_: FrameType, seq: int, plaintext: bytes) -> Data | End:
        try:
            body = json.loads(plaintext)
        except ValueError:
            raise TamperedFrame(f"frame {seq} holds no valid JSON") from None
        if type_ is FrameType.DATA:
            return Data(body)
        self._finished = True
        if type_ is FrameType.ERROR:
            message = body.get("message") if isinstance(body, dict) else None
            raise RemoteError(str(message))
        if not isinstance(body, dict) or body.get("frames") != seq:
            raise TamperedFrame(f"end frame count does not match the {seq} frames received")
        usage = body.get("usage")
        return End(seq, usage if isinstance(usage, dict) else {})

    def close(self) -> None:
        """Declare the connection ended; raise unless the stream ended cleanly.

        Raises:
            DroppedFrame: A frame was held back waiting for a missing one.
            TruncatedStream: No authentic end or error frame arrived.
        """
        if self._finished:
            return
        if self._held is not None:
            raise DroppedFrame(f"frames {self._expected} to {self._held - 1} never arrived")
        raise TruncatedStream(
            f"the stream ended after {self._expected} frames without a valid end frame"
        )
