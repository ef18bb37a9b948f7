"""The HPC tier's errors: every ChatHPC failure is an :class:`HPCError`.

``tokens`` says how far the answer got: 0 means before the first chunk (a router may try
another tier), more means mid-stream (a router may fail over).
"""

from __future__ import annotations

__all__ = [
    "HPCError",
    "HPCFirstTokenTimeout",
    "HPCIdleTimeout",
    "HPCQueueTimeout",
    "HPCRemoteError",
    "HPCTaskError",
]


class HPCError(RuntimeError):
    """Base class of every ChatHPC failure.

    Attributes:
        tokens: How many content/tool deltas had been yielded when it failed (0 means the
            failure happened before the first chunk).
    """

    def __init__(self, message: str, *, tokens: int = 0) -> None:
        super().__init__(message)
        self.tokens = tokens


class HPCQueueTimeout(HPCError, TimeoutError):
    """The task did not start (reach the relay) within ``queue_timeout``."""


class HPCFirstTokenTimeout(HPCError, TimeoutError):
    """The task started but produced no token within ``first_token_timeout``."""


class HPCIdleTimeout(HPCError, TimeoutError):
    """The stream went silent for longer than ``idle_timeout`` between tokens."""


class HPCRemoteError(HPCError):
    """The HPC node reported an error (backend down, bad request, ...) in an authentic frame."""


class HPCTaskError(HPCError):
    """The executor could not run the task, or the task itself raised."""
