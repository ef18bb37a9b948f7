"""Binary frame format of the relay protocol (pure functions, no I/O).

Every WebSocket binary message between producer and consumer is one frame::

    offset  size  field
    0       1     version   (currently 1)
    1       1     type      (1 = data, 2 = end, 3 = error)
    2       8     seq       (unsigned, big-endian; 0 for the first frame of a stream)
    10      ...   payload   (opaque to the relay; sealed ciphertext, see relay.seal)

The relay never needs to parse frames; the consumer does, and :func:`parse_frame`
raises nothing but :class:`~relay.errors.FrameError` on any input.

Example:
    >>> from relay.frames import Frame, FrameType, encode_frame, parse_frame
    >>> data = encode_frame(Frame(FrameType.DATA, 7, b"payload"))
    >>> len(data), parse_frame(data).seq
    (17, 7)
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from relay.errors import FrameError

__all__ = [
    "HEADER_SIZE",
    "MAX_SEQ",
    "VERSION",
    "Frame",
    "FrameType",
    "encode_frame",
    "encode_header",
    "parse_frame",
]

#: Protocol version written into (and required in) every frame.
VERSION = 1
_HEADER = struct.Struct(">BBQ")
#: Size in bytes of the fixed frame header.
HEADER_SIZE = _HEADER.size
#: Largest sequence number a frame can carry.
MAX_SEQ = 2**64 - 1


class FrameType(enum.IntEnum):
    """The kind of a frame."""

    DATA = 1
    """One payload (for example one token delta)."""
    END = 2
    """The clean end of a stream; carries the frame count and usage."""
    ERROR = 3
    """The producer failed; carries its message. Terminal."""


_TYPES = {int(t): t for t in FrameType}


class Frame(NamedTuple):
    """One decoded frame.

    Attributes:
        type: The frame type.
        seq: Sequence number within the stream.
        payload: The (sealed) payload bytes.
        version: Protocol version.
    """

    type: FrameType
    seq: int
    payload: bytes
    version: int = VERSION


def encode_header(type_: FrameType, seq: int, version: int = VERSION) -> bytes:
    """Encode the fixed header of a frame.

    Args:
        type_: Frame type.
        seq: Sequence number, ``0 <= seq <= MAX_SEQ``.
        version: Protocol version.

    Returns:
        The ``HEADER_SIZE`` header bytes.

    Raises:
        FrameError: If ``seq`` or ``version`` is out of range.

    Example:
        >>> encode_header(FrameType.END, 1).hex()
        '01020000000000000001'
    """
    if not 0 <= seq <= MAX_SEQ:
        raise FrameError(f"sequence number out of range: {seq}")
    if not 0 <= version <= 255:
        raise FrameError(f"version out of range: {version}")
    return _HEADER.pack(version, type_, seq)


def encode_frame(frame: Frame) -> bytes:
    """Encode a frame to the bytes of one WebSocket binary message.

    Args:
        frame: The frame.

    Returns:
        Header followed by payload.

    Example:
        >>> encode_frame(Frame(FrameType.DATA, 0, b"x"))[-1:]
        b'x'
    """
    return encode_header(frame.type, frame.seq, frame.version) + bytes(frame.payload)


def parse_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Decode one frame.

    Args:
        data: One WebSocket binary message.

    Returns:
        The frame.

    Raises:
        FrameError: If the data is too short, of an unknown version or of an unknown
            type; nothing else escapes, whatever the input.

    Example:
        >>> parse_frame(b"\\x09" + bytes(9))
        Traceback (most recent call last):
        ...
        relay.errors.FrameError: unsupported frame version 9 (expected 1)
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError(f"a frame must be bytes, not {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        raise FrameError(f"frame too short: {len(data)} bytes, header needs {HEADER_SIZE}")
    version, type_code, seq = _HEADER.unpack_from(data)
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (expected {VERSION})")
    type_ = _TYPES.get(type_code)
    if type_ is None:
        raise FrameError(f"unknown frame type {type_code}")
    return Frame(type_, seq, bytes(data[HEADER_SIZE:]), version)
