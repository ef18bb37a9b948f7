"""Sealing and verification: every interference gets its own error (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import (
    DroppedFrame,
    FrameError,
    IntegrityError,
    RemoteError,
    ReorderedFrame,
    ReplayedFrame,
    TamperedFrame,
    TruncatedStream,
    WrongKey,
)
from relay.frames import HEADER_SIZE, FrameType, encode_header, parse_frame
from relay.seal import Data, End, Sealer, Verifier, new_key

CHANNEL = "chan"


def _stream(n: int, key: bytes, channel: str = CHANNEL) -> list[bytes]:
    sealer = Sealer(key, channel)
    frames = [sealer.seal({"i": i}) for i in range(n)]
    frames.append(sealer.seal_end({"completion_tokens": n}))
    return frames


def _deliver(frames: list[bytes], key: bytes, channel: str = CHANNEL) -> list[object]:
    """Feed frames to a verifier, then close it; return the events."""
    verifier = Verifier(key, channel)
    events = []
    for frame in frames:
        event = verifier.feed(frame)
        if event is not None:
            events.append(event)
        if isinstance(event, End):
            return events
    verifier.close()
    return events


def test_intact_stream_yields_every_payload_then_end() -> None:
    """An untouched stream yields its payloads in order and the end with count and usage."""
    key = new_key()
    events = _deliver(_stream(3, key), key)
    assert events == [
        Data({"i": 0}),
        Data({"i": 1}),
        Data({"i": 2}),
        End(3, {"completion_tokens": 3}),
    ]


def test_frames_hide_the_plaintext_and_use_fresh_nonces() -> None:
    """Equal payloads seal to different bytes, and the plaintext does not appear."""
    sealer = Sealer(new_key(), CHANNEL)
    one, two = sealer.seal({"content": "secret-word"}), sealer.seal({"content": "secret-word"})
    assert b"secret-word" not in one
    assert one[HEADER_SIZE + 4 : HEADER_SIZE + 16] != two[HEADER_SIZE + 4 : HEADER_SIZE + 16]


def test_altered_ciphertext_is_tampered() -> None:
    """Flipping one ciphertext bit raises TamperedFrame."""
    key = new_key()
    frames = _stream(2, key)
    altered = bytearray(frames[1])
    altered[-20] ^= 1
    with pytest.raises(TamperedFrame, match="frame 1"):
        _deliver([frames[0], bytes(altered), frames[2]], key)


@pytest.mark.parametrize("field", ["seq", "type"])
def test_altered_header_is_tampered(field: str) -> None:
    """Rewriting a frame's sequence number or type fails authentication."""
    key = new_key()
    frames = _stream(2, key)
    header = parse_frame(frames[1])
    if field == "seq":
        new = encode_header(header.type, 0)
    else:
        new = encode_header(FrameType.END, header.seq)
    with pytest.raises(TamperedFrame):
        _deliver([frames[0], new + frames[1][HEADER_SIZE:]], key)


def test_dropped_frame_is_detected_at_the_next_frame() -> None:
    """A missing middle frame raises DroppedFrame."""
    key = new_key()
    frames = _stream(4, key)
    with pytest.raises(DroppedFrame, match="frames 1 to 1"):
        _deliver([frames[0], frames[2], frames[3], frames[4]], key)


def test_dropped_last_frame_before_end_is_dropped_not_truncated() -> None:
    """Losing the last data frame, then closing, raises DroppedFrame."""
    key = new_key()
    frames = _stream(3, key)
    with pytest.raises(DroppedFrame):
        _deliver([frames[0], frames[1], frames[3]], key)


def test_swapped_frames_are_reordered() -> None:
    """Two frames delivered in swapped order raise ReorderedFrame."""
    key = new_key()
    frames = _stream(4, key)
    with pytest.raises(ReorderedFrame, match="frame 1 arrived after frame 2"):
        _deliver([frames[0], frames[2], frames[1], frames[3], frames[4]], key)


def test_duplicated_frame_is_replayed() -> None:
    """A frame delivered twice raises ReplayedFrame."""
    key = new_key()
    frames = _stream(3, key)
    with pytest.raises(ReplayedFrame, match="frame 1 arrived twice"):
        _deliver([frames[0], frames[1], frames[1], frames[2]], key)


def test_stream_cut_before_end_is_truncated() -> None:
    """Closing before the end frame raises TruncatedStream, not a shorter answer."""
    key = new_key()
    frames = _stream(3, key)
    with pytest.raises(TruncatedStream, match="after 2 frames"):
        _deliver(frames[:2], key)


def test_wrong_key_is_named_as_such() -> None:
    """A consumer holding another key gets WrongKey on the first frame."""
    frames = _stream(1, new_key())
    with pytest.raises(WrongKey):
        _deliver(frames, new_key())


def test_frame_from_another_stream_mid_stream_is_tampered() -> None:
    """After the first authentic frame, a frame under another key is TamperedFrame."""
    key = new_key()
    frames = _stream(2, key)
    foreign = _stream(2, new_key())
    with pytest.raises(TamperedFrame, match="different key id"):
        _deliver([frames[0], foreign[1]], key)


def test_frames_are_bound_to_their_channel() -> None:
    """Frames sealed for another channel (same key) fail authentication."""
    key = new_key()
    with pytest.raises(TamperedFrame):
        _deliver(_stream(1, key, channel="other"), key, channel=CHANNEL)


def test_frames_are_bound_to_their_direction() -> None:
    """A frame sealed by the consumer side does not verify as a producer frame."""
    key = new_key()
    frame = Sealer(key, CHANNEL, direction="consumer").seal({"x": 1})
    with pytest.raises(TamperedFrame):
        Verifier(key, CHANNEL).feed(frame)


def test_authentic_error_frame_raises_remote_error() -> None:
    """A sealed error frame raises RemoteError with the producer's message."""
    key = new_key()
    sealer = Sealer(key, CHANNEL)
    verifier = Verifier(key, CHANNEL)
    verifier.feed(sealer.seal({"content": "a"}))
    with pytest.raises(RemoteError, match="backend exploded") as info:
        verifier.feed(sealer.seal_error("backend exploded"))
    assert info.value.message == "backend exploded"
    verifier.close()  # the stream did end (with an error): close raises nothing more


def test_short_sealed_payload_is_tampered_and_garbage_is_a_frame_error() -> None:
    """A frame too short to be sealed is TamperedFrame; non-frames are FrameError."""
    verifier = Verifier(new_key(), CHANNEL)
    with pytest.raises(TamperedFrame, match="too short"):
        verifier.feed(encode_header(FrameType.DATA, 0) + b"abc")
    with pytest.raises(FrameError):
        verifier.feed(b"\x00")


def test_frame_after_end_is_refused() -> None:
    """Once the stream ended, further frames raise (replay of an earlier frame)."""
    key = new_key()
    frames = _stream(1, key)
    verifier = Verifier(key, CHANNEL)
    for frame in frames:
        verifier.feed(frame)
    with pytest.raises(ReplayedFrame):
        verifier.feed(frames[0])


def test_sealer_refuses_to_seal_after_the_end_and_bad_payloads() -> None:
    """A closed sealer refuses more frames; a non-JSON payload raises TypeError."""
    sealer = Sealer(new_key(), CHANNEL)
    with pytest.raises(TypeError):
        sealer.seal({"x": object()})
    sealer.seal_end()
    with pytest.raises(ValueError, match="closed"):
        sealer.seal({"x": 1})


@pytest.mark.parametrize("key", [b"", b"short", bytes(31), bytes(33), "x" * 32])
def test_keys_must_be_32_bytes(key: bytes) -> None:
    """Sealer and Verifier refuse anything but a 32-byte key."""
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(key, CHANNEL)
    with pytest.raises(ValueError, match="32 bytes"):
        Verifier(key, CHANNEL)


_KEY = new_key()
_FRAMES = _stream(5, _KEY)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(_FRAMES) - 1), max_size=12))
def test_any_relay_behaviour_yields_the_exact_stream_or_an_integrity_error(
    order: list[int],
) -> None:
    """Whatever frames a relay delivers, in whatever order, the consumer either gets
    exactly the original payloads and end, or raises an IntegrityError."""
    try:
        events = _deliver([_FRAMES[i] for i in order], _KEY)
    except IntegrityError:
        return
    assert events == [Data({"i": i}) for i in range(5)] + [End(5, {"completion_tokens": 5})]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_FRAMES) - 1), st.integers(0, 200), st.integers(1, 255))
def test_any_single_byte_change_is_detected(index: int, position: int, flip: int) -> None:
    """Changing any byte of any frame never goes unnoticed."""
    frames = list(_FRAMES)
    altered = bytearray(frames[index])
    altered[position % len(altered)] ^= flip
    frames[index] = bytes(altered)
    with pytest.raises((IntegrityError, FrameError)):
        _deliver(frames, _KEY)


@given(st.lists(st.binary(max_size=80), max_size=5))
def test_fuzzed_messages_raise_only_relay_errors(messages: list[bytes]) -> None:
    """Random messages fed to a verifier raise only FrameError or IntegrityError."""
    verifier = Verifier(_KEY, CHANNEL)
    with pytest.raises((FrameError, IntegrityError)):
        for message in messages:
            verifier.feed(message)
        verifier.close()
