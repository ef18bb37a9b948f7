"""Message checks and conversions shared by the sync and async paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    convert_to_openai_messages,
)

__all__ = ["CONTINUE_PROMPT", "check_messages", "continuation", "latest_user_text",
           "to_openai_messages"]

# Content part types every tier accepts. Image parts ("image_url", "image") are where
# vision routing will plug in: today they are refused with a clear error.
_TEXT_PARTS = frozenset({"text"})

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without "
    "repeating anything already written and without any preamble."
)


def check_messages(messages: Sequence[BaseMessage]) -> None:
    """Raise ``ValueError`` naming the problem if ``messages`` cannot be routed."""
    if not messages:
        raise ValueError("ChatStream needs at least one message; got an empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, BaseMessage):
            raise TypeError(f"message {i} is {type(m).__name__}, not a LangChain message")
        if isinstance(m.content, str):
            continue
        for part in m.content:
            if isinstance(part, str):
                continue
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind not in _TEXT_PARTS:
                raise ValueError(
                    f"message {i} has a content part of type {kind!r}; ChatStream routes "
                    "text only (supported part types: 'text')"
                )


def latest_user_text(messages: Sequence[BaseMessage]) -> str:
    """The text the judge looks at: the last human turn, else the last message."""
    from stream_langchain.context import message_text

    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            return message_text(m)
    return message_text(messages[-1])


def continuation(messages: Sequence[BaseMessage], partial: str) -> list[BaseMessage]:
    """The conversation for a tier that must continue ``partial`` (mid-stream failover).

    The caller's list is not modified.
    """
    return [*messages, AIMessage(partial), HumanMessage(CONTINUE_PROMPT)]


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI chat-completions message dicts (for llama.cpp and HPC requests)."""
    out = convert_to_openai_messages(list(messages))
    return out if isinstance(out, list) else [out]

