"""Message checks and conversions shared by the sync and async paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

__all__ = ["CONTINUE_PROMPT", "check_messages", "continuation", "final_chunk",
           "latest_user_text", "to_openai_messages"]

from stream_langchain.capabilities import IMAGE_PART_TYPES, check_image_part

# Content part types ChatStream routes. Images go only to tiers that take them (routing);
# an assistant turn's tool calls may also appear as content blocks (LangChain v1 "tool_call",
# Anthropic-style "tool_use"): they duplicate ``AIMessage.tool_calls``, which tiers send.
_TEXT_PARTS = frozenset({"text"})
_TOOL_CALL_PARTS = frozenset({"tool_call", "tool_use"})
_SUPPORTED = "'text', 'image_url', 'image' (and 'tool_call' / 'tool_use' in assistant turns)"

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
        for j, part in enumerate(m.content):
            if isinstance(part, str):
                continue
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind in _TEXT_PARTS:
                continue
            if kind in IMAGE_PART_TYPES and isinstance(part, dict):
                check_image_part(part, f"message {i} content part {j} ({kind})")
            elif kind in _TOOL_CALL_PARTS and isinstance(m, AIMessage):
                continue
            else:
                raise ValueError(
                    f"message {i} ({m.type}) has a content part of type {kind!r}, which "
                    f"ChatStream does not route (supported: {_SUPPORTED})"
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
    """OpenAI chat-completions message dicts (for llama.cpp and HPC requests).

    Tool-call content blocks of assistant turns are dropped from ``content`` (their calls are
    in ``tool_calls``; OpenAI-compatible servers take no such part).

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> to_openai_messages([AIMessage(content=[
        ...     {"type": "text", "text": "calling"},
        ...     {"type": "tool_call", "id": "c1", "name": "add", "args": {"a": 1}}],
        ...     tool_calls=[{"id": "c1", "name": "add", "args": {"a": 1}}])])[0]["content"]
        [{'type': 'text', 'text': 'calling'}]
    """
    out = convert_to_openai_messages(list(messages))
    msgs = out if isinstance(out, list) else [out]
    for msg in msgs:
        content = msg.get("content")
        if msg.get("role") == "assistant" and isinstance(content, list):
            msg["content"] = [p for p in content
                              if not (isinstance(p, dict) and p.get("type") in _TOOL_CALL_PARTS)]
    return msgs



def final_chunk(*, usage: Mapping[str, int] | None = None, content: str = "",
                response_metadata: Mapping[str, Any] | None = None,
                **fields: Any) -> ChatGenerationChunk:
    """The last chunk of a stream (``chunk_position="last"``), with the usage the stream
    measured: ``input_tokens`` / ``output_tokens`` (``total_tokens`` is their sum); no
    ``usage_metadata`` when ``usage`` is ``None``. ``fields`` go to the ``AIMessageChunk``
    (``tool_call_chunks``, for example).

    Example:
        >>> last = final_chunk(usage={"input_tokens": 7, "output_tokens": 3},
        ...                    response_metadata={"finish_reason": "stop"})
        >>> last.message.usage_metadata["total_tokens"], last.message.chunk_position
        (10, 'last')
    """
    if usage is not None:
        n_in, n_out = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        fields["usage_metadata"] = UsageMetadata(input_tokens=n_in, output_tokens=n_out,
                                                 total_tokens=n_in + n_out)
    return ChatGenerationChunk(message=AIMessageChunk(
        content=content, response_metadata=dict(response_metadata or {}),
        chunk_position="last", **fields))
