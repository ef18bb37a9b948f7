"""Every error the relay package raises, rooted at :class:`RelayError`.

The names say what went wrong so that callers can react precisely: a consumer that
sees :class:`DroppedFrame` knows the relay lost a frame, one that sees
:class:`RemoteError` knows the producer reported a failure. No message ever
contains a key, a token or the relay secret.

Example:
    >>> from relay.errors import AuthRejected, RelayError
    >>> err = AuthRejected("expired")
    >>> err.reason, isinstance(err, RelayError)
    ('expired', True)
"""

from __future__ import annotations

__all__ = [
    "AUTH_REASONS",
    "AuthRejected",
    "ChannelClosed",
    "ConnectTimeout",
    "DroppedFrame",
    "FirstFrameTimeout",
    "FrameError",
    "IdleTimeout",
    "IntegrityError",
    "RelayError",
    "RelayRefused",
    "RelayTimeout",
    "RelayUnreachable",
    "RemoteError",
    "ReorderedFrame",
    "ReplayedFrame",
    "TamperedFrame",
    "TruncatedStream",
    "WrongKey",
]

#: Every reason a capability token can be rejected for.
AUTH_REASONS: tuple[str, ...] = ("missing", "forged", "expired", "wrong-channel", "wrong-role")


class RelayError(Exception):
    """Base class of every error raised by the relay package."""


class FrameError(RelayError, ValueError):
    """Bytes that are not a well-formed relay frame (the parser's only error)."""


class IntegrityError(RelayError):
    """Base class of the stream-integrity failures detected by the consumer's verifier."""


class TamperedFrame(IntegrityError):
    """A frame failed authentication: its header, ciphertext or tag was altered."""


class DroppedFrame(IntegrityError):
    """One or more frames never arrived (a gap in the sequence numbers)."""


class ReorderedFrame(IntegrityError):
    """A frame arrived after a later one (sequence numbers out of order)."""


class ReplayedFrame(IntegrityError):
    """A frame arrived a second time (a sequence number already consumed)."""


class TruncatedStream(IntegrityError):
    """The connection ended before a valid end frame arrived."""


class WrongKey(IntegrityError):
    """The stream was sealed under a different key than the consumer holds."""


class AuthRejected(RelayError):
    """The relay refused a capability token.

    Attributes:
        reason: One of :data:`AUTH_REASONS` (``missing``, ``forged``, ``expired``,
            ``wrong-channel``, ``wrong-role``).
    """

    def __init__(self, reason: str) -> None:
        """Create the error.

        Args:
            reason: Why the token was refused; one of :data:`AUTH_REASONS`.
        """
        super().__init__(f"relay rejected the capability token: {reason}")
        self.reason = reason


class RelayRefused(RelayError):
    """The relay refused a connection for a reason other than authentication.

    Examples: the channel already has a producer (or consumer), the relay is at its
    channel limit, the path is not a relay endpoint.

    Attributes:
        status: The HTTP status of the refusal (409, 503, 404, ...).
    """

    def __init__(self, status: int, message: str) -> None:
        """Create the error.

        Args:
            status: HTTP status code the relay answered.
            message: The relay's explanation.
        """
        super().__init__(f"relay refused the connection (HTTP {status}): {message}")
        self.status = status


class RelayUnreachable(RelayError, ConnectionError):
    """The relay could not be reached (connection refused, name not resolved, ...)."""


class RelayTimeout(RelayError, TimeoutError):
    """Base class of the client-side timeouts."""


class ConnectTimeout(RelayTimeout):
    """The connection or opening handshake with the relay did not finish in time."""


class FirstFrameTimeout(RelayTimeout):
    """No frame arrived within the first-frame timeout after connecting."""


class IdleTimeout(RelayTimeout):
    """No frame arrived within the idle timeout after the previous one."""


class RemoteError(RelayError):
    """The producer reported an error in a sealed (authentic) error frame.

    Attributes:
        message: The producer's error message.
    """

    def __init__(self, message: str) -> None:
        """Create the error.

        Args:
            message: The producer's error message.
        """
        super().__init__(f"producer reported an error: {message}")
        self.message = message


class ChannelClosed(RelayError):
    """The relay closed the channel: the peer left, the channel was reaped, or the relay stopped.

    Attributes:
        code: The WebSocket close code, when one was received.
        reason: The close reason text the relay sent (informational, unauthenticated).
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        """Create the error.

        Args:
            message: What happened.
            code: WebSocket close code, if known.
            reason: WebSocket close reason, if any.
        """
        super().__init__(message)
        self.code = code
        self.reason = reason
