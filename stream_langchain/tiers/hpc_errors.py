"""The HPC tier's errors: every ChatHPC failure is an :class:`HPCError`.

``tokens`` says how far the answer got: 0 means before the first chunk (a router may try
another tier), more means mid-stream (a router may fail over).
"""

from __future__ import annotations

from stream_langchain.errors import (
    ExecutorRefused,
    HPCError,
    HPCFirstTokenTimeout,
    HPCIdleTimeout,
    HPCQueueTimeout,
    HPCRemoteError,
    HPCTaskError,
)

__all__ = [
    "ExecutorRefused",
    "HPCError",
    "HPCFirstTokenTimeout",
    "HPCIdleTimeout",
    "HPCQueueTimeout",
    "HPCRemoteError",
    "HPCTaskError",
]
