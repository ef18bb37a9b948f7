"""What the HPC node says to the client: the relay payload kinds and the task summary.

This module is the one definition both sides read. The client
(:mod:`stream_langchain.tiers.hpc`) imports it; :func:`hpc_functions.stream_chat` cannot (it
is shipped by source to a node that has only ``relay`` and ``httpx``), so it writes the same
literals and ``tests/hpc_functions/test_protocol.py`` checks that it writes exactly these.

Payloads pushed through the relay, in order (all dicts with a ``type``):

- :data:`START` ``{"type": "start", "node_time": float}``: the task started and reached the
  relay.
- :data:`DELTA` ``{"type": "delta", "content": str, "tool_calls": [...], "finish_reason": str,
  "model": str, "role": str}``: one streamed chunk; only the keys present upstream.
- :data:`USAGE` ``{"type": "usage", "usage": {...}, "backend_ttft_s": float}``: token usage,
  just before the end frame (whose usage field carries the same dict).

The task returns a :class:`NodeSummary`.

Example:
    >>> sorted(PAYLOAD_KINDS)
    ['delta', 'start', 'usage']
    >>> "ok" in SUMMARY_KEYS and "completion" in BATCH_SUMMARY_KEYS
    True
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypedDict

__all__ = [
    "BATCH_SUMMARY_KEYS",
    "DELTA",
    "ERROR_KINDS",
    "PAYLOAD_KINDS",
    "START",
    "SUMMARY_KEYS",
    "USAGE",
    "BatchSummary",
    "NodeSummary",
]

START: Final = "start"
"""The task started and reached the relay (the queue phase ends)."""
DELTA: Final = "delta"
"""One streamed chunk of the backend's answer."""
USAGE: Final = "usage"
"""The backend's token usage and TTFT, just before the end frame."""
PAYLOAD_KINDS: Final = frozenset({START, DELTA, USAGE})
"""Every payload ``type`` the node sends."""

ERROR_KINDS: Final = frozenset({"backend", "relay", "request"})
"""Where a failed task's error came from (the summary's ``error_kind``)."""


class NodeSummary(TypedDict):
    """What :func:`hpc_functions.stream_chat` returns (its Globus Compute task result)."""

    ok: bool
    mode: Literal["stream", "batch"]
    error: str | None
    error_kind: Literal["backend", "relay", "request"] | None
    cancelled: bool
    """The consumer left early."""
    frames: int
    """Payloads sent."""
    completion_tokens: int
    prompt_tokens: int
    backend_ttft_s: float | None
    """From sending the HTTP request to the backend until its first token arrived."""
    duration_s: float


class BatchSummary(NodeSummary, total=False):
    """The summary when the node could not reach the relay and answered in batch mode."""

    completion: dict[str, Any]
    """The whole OpenAI chat-completions response."""
    relay_error: str
    """Why the node could not reach the relay."""


SUMMARY_KEYS: Final = frozenset(NodeSummary.__annotations__)
"""The keys of every summary."""
BATCH_SUMMARY_KEYS: Final = frozenset(BatchSummary.__annotations__) | SUMMARY_KEYS
"""The keys a batch-mode summary may add."""
