"""Frame format: encoding, parsing, and a fuzz test of the parser (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import FrameError
from relay.frames import (
    HEADER_SIZE,
    MAX_SEQ,
    VERSION,
    Frame,
    FrameType,
    encode_frame,
    encode_header,
    parse_frame,
)


def test_header_layout_is_version_type_seq_big_endian() -> None:
    """The header is version, type and a big-endian 64-bit sequence number."""
    assert encode_header(FrameType.DATA, 258) == bytes([VERSION, 1, 0, 0, 0, 0, 0, 0, 1, 2])
    assert HEADER_SIZE == 10


@given(
    type_=st.sampled_from(list(FrameType)),
    seq=st.integers(0, MAX_SEQ),
    payload=st.binary(max_size=256),
)
def test_encode_then_parse_round_trips(type_: FrameType, seq: int, payload: bytes) -> None:
    """Any frame survives encoding and parsing unchanged."""
    frame = Frame(type_, seq, payload)
    assert parse_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (bytes([VERSION, 1, 0, 0]), "too short"),
        (bytes([2, 1]) + bytes(8), "unsupported frame version 2"),
        (bytes([VERSION, 9]) + bytes(8), "unknown frame type 9"),
    ],
)
def test_malformed_frames_raise_frame_error_naming_the_problem(data: bytes, message: str) -> None:
    """Short, wrong-version and unknown-type frames raise FrameError saying which."""
    with pytest.raises(FrameError, match=message):
        parse_frame(data)


def test_non_bytes_input_raises_frame_error() -> None:
    """A text message (str) is not a frame."""
    with pytest.raises(FrameError, match="must be bytes"):
        parse_frame("hello")  # type: ignore[arg-type]


def test_out_of_range_sequence_numbers_are_refused() -> None:
    """Sequence numbers outside 0..2**64-1 cannot be encoded."""
    with pytest.raises(FrameError):
        encode_header(FrameType.DATA, -1)
    with pytest.raises(FrameError):
        encode_header(FrameType.DATA, MAX_SEQ + 1)


@given(st.binary(max_size=64) | st.binary(min_size=10, max_size=10).map(lambda b: b"\x01" + b))
def test_fuzzed_input_raises_only_frame_error(data: bytes) -> None:
    """Whatever the bytes, the parser returns a frame or raises FrameError, nothing else."""
    try:
        frame = parse_frame(data)
    except FrameError:
        return
    assert encode_frame(frame) == data


@given(st.binary(max_size=64).map(bytearray) | st.binary(max_size=64).map(memoryview))
def test_fuzzed_buffer_types_raise_only_frame_error(data: bytearray | memoryview) -> None:
    """bytearray and memoryview inputs are parsed like bytes."""
    try:
        frame = parse_frame(data)
    except FrameError:
        return
    assert encode_frame(frame) == bytes(data)
