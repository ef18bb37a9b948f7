"""LlamaIndex <-> LangChain conversions, shared by StreamLLM's sync and async paths.

Everything here is pure: messages in, messages out. ``StreamLLM`` only calls ChatStream and
feeds what comes back to :class:`StreamedTurn` / :func:`to_chat_response`.

Example:
    >>> from llama_index.core.llms import ChatMessage
    >>> to_langchain_messages([ChatMessage(role="user", content="hi")])
    [HumanMessage(content='hi', additional_kwargs={}, response_metadata={})]
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection

__all__ = [
    "HINT_KEY",
    "RECORD_KEY",
    "StreamedTurn",
    "routing_record",
    "to_chat_message",
    "to_chat_response",
    "to_langchain_messages",
    "tool_selections",
]

RECORD_KEY = "stream"
"""Key of the routing record in ``ChatResponse.additional_kwargs`` (as in ChatStream's
``response_metadata``)."""

HINT_KEY = "stream_route"
"""Key of the early routing hint (tier, model, complexity) that ChatStream puts on the first
streamed chunk; copied to the first streamed ``ChatResponse``."""

_AI_ROLES = frozenset({MessageRole.ASSISTANT, MessageRole.MODEL, MessageRole.CHATBOT})
_SYSTEM_ROLES = frozenset({MessageRole.SYSTEM, MessageRole.DEVELOPER})
_TOOL_ROLES = frozenset({MessageRole.TOOL, MessageRole.FUNCTION})
_SKIPPED_BLOCKS = (CachePoint, ThinkingBlock, ToolCallBlock)


# ------------------------------------------------------------------ LlamaIndex -> LangChain


def _text(message: ChatMessage, index: int) -> str:
    parts: list[str] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif not isinstance(block, _SKIPPED_BLOCKS):
            raise ValueError(
                f"message {index} has a {block.block_type!r} block; StreamLLM routes text "
                "only (supported blocks: text, tool_call)"
            )
    return "\n".join(parts)


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _legacy_tool_call(call: Any) -> dict[str, Any]:
    """A tool call in OpenAI's shape (dict or SDK object) as a LangChain ``ToolCall``."""
    if not isinstance(call, Mapping):
        call = call.model_dump() if hasattr(call, "model_dump") else vars(call)
    function = call.get("function") or {}
    return {"name": function.get("name") or "", "args": _args(function.get("arguments")),
            "id": call.get("id") or str(uuid.uuid4()), "type": "tool_call"}


def _tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    calls = [
        {"name": b.tool_name, "args": _args(b.tool_kwargs),
         "id": b.tool_call_id or str(uuid.uuid4()), "type": "tool_call"}
        for b in message.blocks if isinstance(b, ToolCallBlock)
    ]
    if not calls:
        calls = [_legacy_tool_call(c) for c in message.additional_kwargs.get("tool_calls") or []]
    return calls


def to_langchain_messages(messages: Sequence[ChatMessage]) -> list[BaseMessage]:
    """LangChain messages for a LlamaIndex conversation (the caller's list is not modified).

    Assistant tool calls come from ``ToolCallBlock`` blocks (or, for older code, from
    ``additional_kwargs["tool_calls"]`` in OpenAI's shape); tool results are ``tool`` messages
    whose ``additional_kwargs["tool_call_id"]`` names the call they answer.

    Raises:
        ValueError: a non-text block, a tool result without ``tool_call_id``, or an unknown role.
        TypeError: an item is not a ``ChatMessage``.
    """
    out: list[BaseMessage] = []
    for i, m in enumerate(messages):
        if not isinstance(m, ChatMessage):
            raise TypeError(f"message {i} is {type(m).__name__}, not a LlamaIndex ChatMessage")
        text = _text(m, i)
        if m.role == MessageRole.USER:
            out.append(HumanMessage(text))
        elif m.role in _SYSTEM_ROLES:
            out.append(SystemMessage(text))
        elif m.role in _AI_ROLES:
            out.append(AIMessage(text, tool_calls=_tool_calls(m)))
        elif m.role in _TOOL_ROLES:
            call_id = m.additional_kwargs.get("tool_call_id")
            if not call_id:
                raise ValueError(
                    f"message {i} is a {m.role.value!r} result without "
                    "additional_kwargs['tool_call_id']; StreamLLM needs it to pair the result "
                    "with its call"
                )
            name = m.additional_kwargs.get("name")
            out.append(ToolMessage(text, tool_call_id=str(call_id),
                                   **({"name": name} if name else {})))
        else:  # pragma: no cover - MessageRole is closed; kept for future roles
            raise ValueError(f"message {i} has role {m.role.value!r}, which StreamLLM cannot map")
    return out


# ------------------------------------------------------------------ LangChain -> LlamaIndex


def to_chat_message(message: BaseMessage) -> ChatMessage:
    """The assistant ``ChatMessage`` for a LangChain answer: its text, then one
    ``ToolCallBlock`` per tool call."""
    blocks: list[Any] = []
    text = str(message.text)
    if text:
        blocks.append(TextBlock(text=text))
    for call in getattr(message, "tool_calls", None) or []:
        blocks.append(ToolCallBlock(tool_call_id=call.get("id") or None,
                                    tool_name=call["name"], tool_kwargs=dict(call["args"])))
    if not blocks:
        blocks.append(TextBlock(text=""))
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)


def routing_record(message: BaseMessage) -> dict[str, Any] | None:
    """ChatStream's routing record on ``message``, if it carries one."""
    record = message.response_metadata.get(RECORD_KEY)
    return dict(record) if isinstance(record, Mapping) else None


def to_chat_response(message: BaseMessage, *, delta: str | None = None) -> ChatResponse:
    """A complete ``ChatResponse`` for a LangChain answer.

    ``additional_kwargs`` carries the routing record under ``"stream"`` and the token counts
    as ``prompt_tokens`` / ``completion_tokens`` / ``total_tokens``; ``raw`` is the LangChain
    message itself.
    """
    extra: dict[str, Any] = {}
    record = routing_record(message)
    if record is not None:
        extra[RECORD_KEY] = record
    usage = getattr(message, "usage_metadata", None)
    if usage:
        extra["prompt_tokens"] = usage.get("input_tokens", 0)
        extra["completion_tokens"] = usage.get("output_tokens", 0)
        extra["total_tokens"] = usage.get("total_tokens", 0)
    return ChatResponse(message=to_chat_message(message), delta=delta, raw=message,
                        additional_kwargs=extra)


class StreamedTurn:
    """Accumulates one streamed answer and turns LangChain chunks into ``ChatResponse``s.

    Every chunk with text or tool-call output becomes a response whose ``message`` is the
    answer so far and whose ``delta`` is the new text (the first one also carries ChatStream's
    early ``"stream_route"`` hint when there is one); :meth:`final` is the last response, with
    an empty delta, the whole answer and the routing record.

    Example:
        >>> from langchain_core.messages import AIMessageChunk
        >>> turn = StreamedTurn()
        >>> turn.add(AIMessageChunk(content="Hel")).delta
        'Hel'
        >>> turn.add(AIMessageChunk(content="lo")).message.content
        'Hello'
        >>> turn.final().delta
        ''
    """

    def __init__(self) -> None:
        self._message: AIMessageChunk | None = None

    def add(self, chunk: AIMessageChunk) -> ChatResponse | None:
        """Take the next chunk; return the response to yield, or ``None`` for a chunk that
        carries only metadata."""
        self._message = chunk if self._message is None else self._message + chunk
        delta = str(chunk.text)
        if not delta and not chunk.tool_call_chunks:
            return None
        hint = chunk.response_metadata.get(HINT_KEY)
        extra = {HINT_KEY: dict(hint)} if isinstance(hint, Mapping) else {}
        return ChatResponse(message=to_chat_message(self._message), delta=delta, raw=chunk,
                            additional_kwargs=extra)

    @property
    def message(self) -> AIMessageChunk:
        """The answer so far."""
        return self._message if self._message is not None else AIMessageChunk(content="")

    def final(self) -> ChatResponse:
        """The closing response: the whole answer, the routing record, an empty delta."""
        return to_chat_response(self.message, delta="")


# ------------------------------------------------------------------ tool calls


def tool_selections(response: ChatResponse) -> list[ToolSelection]:
    """The tool calls in a ``ChatResponse`` (``ToolCallBlock`` blocks, or
    ``additional_kwargs["tool_calls"]`` in OpenAI's shape) as LlamaIndex ``ToolSelection``s."""
    return [
        ToolSelection(tool_id=call["id"], tool_name=call["name"], tool_kwargs=call["args"])
        for call in _tool_calls(response.message)
    ]
