"""The relay server's configuration: its :class:`Timeouts` and :class:`Limits`, frozen.

Every limit has a default and none is unbounded (websockets' ``serve`` does the same). Build
them once and hand them to :class:`relay.RelayServer`; ``dataclasses.replace`` derives a
variant.

Example:
    >>> from relay.config import Limits, Timeouts
    >>> Timeouts(pair=30).pair, Limits().max_channels
    (30, 10000)
    >>> Limits(max_channels=0)
    Traceback (most recent call last):
    ...
    ValueError: max_channels must be positive, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["LEGACY_KEYWORDS", "Limits", "Timeouts"]


#: The keyword each :class:`Timeouts` field had on ``RelayServer`` (errors name it).
_TIMEOUT_KEYWORDS = {f: f"{f}_timeout" for f in ("open", "pair", "idle", "close", "shutdown")}


def _check_positive(
    obj: Any, *, names: dict[str, str] | None = None, allow_zero: tuple[str, ...] = ()
) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = (names or {}).get(f.name, f.name)
        if f.name in allow_zero:
            if not value >= 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")
        elif not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Timeouts:
    """How long the relay waits, in seconds.

    Args:
        open: A client has to complete its HTTP request (``open_timeout``).
        pair: A channel may stay one-sided (one peer waiting for the other, or frames
            waiting for a consumer) before it is reaped (``pair_timeout``).
        idle: A paired channel may go without a frame before it is reaped
            (``idle_timeout``).
        close: A peer has to finish a closing handshake (``close_timeout``).
        shutdown: :meth:`relay.RelayServer.close` lets streams in progress finish; ``0``
            closes them at once (``shutdown_timeout``).
        reap_interval: Between two passes of the reaper.
    """

    open: float = 10.0
    pair: float = 120.0
    idle: float = 300.0
    close: float = 5.0
    shutdown: float = 5.0
    reap_interval: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(self, names=_TIMEOUT_KEYWORDS, allow_zero=("shutdown",))


@dataclass(frozen=True)
class Limits:
    """How much the relay holds.

    Args:
        backlog: Pending TCP connections the listening socket queues.
        max_channels: Channels open at once; more are refused with HTTP 503.
        max_frame_bytes: Largest frame accepted from a producer; a larger one closes the
            producer's connection (WebSocket close code 1009).
        max_buffer_frames: Frames held for a consumer that has not joined yet; when
            reached, the producer is paused (never dropped).
        max_buffer_bytes: Bytes held for a consumer that has not joined yet.
        max_total_buffer_bytes: Bytes held for absent consumers over all channels; when
            reached, every producer still waiting for its consumer is paused.
        write_buffer_bytes: High-water mark of a consumer's send buffer; above it the
            producer's socket is no longer read (backpressure).
    """

    backlog: int = 1024
    max_channels: int = 10_000
    max_frame_bytes: int = 1 << 20
    max_buffer_frames: int = 4096
    max_buffer_bytes: int = 4 << 20
    max_total_buffer_bytes: int = 256 << 20
    write_buffer_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        _check_positive(self)


#: The flat keywords ``RelayServer`` took before :class:`Timeouts` and :class:`Limits`
#: (still accepted): keyword -> (``"timeouts"`` or ``"limits"``, field).
LEGACY_KEYWORDS: dict[str, tuple[str, str]] = {
    **{keyword: ("timeouts", f) for f, keyword in _TIMEOUT_KEYWORDS.items()},
    "reap_interval": ("timeouts", "reap_interval"),
    **{f.name: ("limits", f.name) for f in fields(Limits)},
}
