"""Counters of a relay server and their Prometheus text rendering (pure, no I/O).

Example:
    >>> from relay.metrics import Metrics
    >>> metrics = Metrics()
    >>> metrics.reject("expired")
    >>> 'relay_rejects_total{reason="expired"} 1' in metrics.render(channels=0, connections=0)
    True
"""

from __future__ import annotations

import dataclasses

from relay.errors import AUTH_REASONS

__all__ = ["REFUSAL_REASONS", "Metrics"]

#: Reasons, besides the token ones, for which the relay refuses a connection.
REFUSAL_REASONS: tuple[str, ...] = (
    "not-found",
    "bad-handshake",
    "channel-busy",
    "channel-ended",
    "capacity",
    "shutting-down",
    "handshake-timeout",
)


@dataclasses.dataclass
class Metrics:
    """Counters kept by :class:`relay.server.RelayServer`.

    Attributes:
        frames_total: Frames received from producers.
        bytes_total: Payload bytes received from producers.
        channels_opened_total: Channels created.
        reaped: Channels reaped, by cause (``idle``, ``one-sided``).
        rejects: Refused connections, by reason (token reasons and
            :data:`REFUSAL_REASONS`).
        buffered_bytes: Bytes currently held for consumers that have not joined.
    """

    frames_total: int = 0
    bytes_total: int = 0
    channels_opened_total: int = 0
    buffered_bytes: int = 0
    reaped: dict[str, int] = dataclasses.field(default_factory=lambda: {"idle": 0, "one-sided": 0})
    rejects: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(AUTH_REASONS + REFUSAL_REASONS, 0)
    )

    def reject(self, reason: str) -> None:
        """Count one refused connection.

        Args:
            reason: Why it was refused.
        """
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def render(self, *, channels: int, connections: int) -> str:
        """Render the Prometheus text exposition format.

        Args:
            channels: Channels open now.
            connections: WebSocket and HTTP connections open now.

        Returns:
            The ``/metrics`` body.
        """
        lines = [
            "# HELP relay_channels Channels open now.",
            "# TYPE relay_channels gauge",
            f"relay_channels {channels}",
            "# HELP relay_connections Connections open now.",
            "# TYPE relay_connections gauge",
            f"relay_connections {connections}",
            "# HELP relay_buffered_bytes Bytes held for consumers that have not joined.",
            "# TYPE relay_buffered_bytes gauge",
            f"relay_buffered_bytes {self.buffered_bytes}",
            "# HELP relay_frames_total Frames received from producers.",
            "# TYPE relay_frames_total counter",
            f"relay_frames_total {self.frames_total}",
            "# HELP relay_bytes_total Frame bytes received from producers.",
            "# TYPE relay_bytes_total counter",
            f"relay_bytes_total {self.bytes_total}",
            "# HELP relay_channels_opened_total Channels created.",
            "# TYPE relay_channels_opened_total counter",
            f"relay_channels_opened_total {self.channels_opened_total}",
            "# HELP relay_channels_reaped_total Channels closed by the reaper, by cause.",
            "# TYPE relay_channels_reaped_total counter",
        ]
        lines += [f'relay_channels_reaped_total{{why="{k}"}} {v}' for k, v in self.reaped.items()]
        lines += [
            "# HELP relay_rejects_total Refused connections, by reason.",
            "# TYPE relay_rejects_total counter",
        ]
        lines += [f'relay_rejects_total{{reason="{k}"}} {v}' for k, v in self.rejects.items()]
        return "\n".join(lines) + "\n"
