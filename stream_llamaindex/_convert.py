"""LlamaIndex <-> LangChain conversions, shared by StreamLLM's sync and async paths.

Everything here is pure (except that an ``ImageBlock`` given by a local path is read):
messages in, messages out. ``StreamLLM`` only calls ChatStream and feeds what comes back to
:class:`StreamedTurn` / :func:`to_chat_response`.

Example:
    >>> from llama_index.core.llms import ChatMessage
    >>> to_langchain_messages([ChatMessage(role="user", content="hi")])
    [HumanMessage(content='hi', additional_kwargs={}, response_metadata={})]
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from io import IOBase
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlparse

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
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection

from stream_langchain.capabilities import check_image_bytes
from stream_langchain.record import HINT_KEY, RECORD_KEY, RouteHint, RouteRecord

__all__ = [
    "HINT_KEY",
    "RECORD_KEY",
    "StreamedTurn",
    "routing_record",
    "to_chat_message",
    "to_chat_response",
    "to_langchain_messages",
    "image_part",
    "tool_selections",
]

# RECORD_KEY: the routing record in ``ChatResponse.additional_kwargs`` (as in ChatStream's
# ``response_metadata``); HINT_KEY: the early hint ChatStream puts on the first streamed
# chunk, copied to the first streamed ``ChatResponse``. Both from stream_langchain.record.

_AI_ROLES = frozenset({MessageRole.ASSISTANT, MessageRole.MODEL, MessageRole.CHATBOT})
_SYSTEM_ROLES = frozenset({MessageRole.SYSTEM, MessageRole.DEVELOPER})
_TOOL_ROLES = frozenset({MessageRole.TOOL, MessageRole.FUNCTION})
_SKIPPED_BLOCKS = (CachePoint, ThinkingBlock, ToolCallBlock)


# ------------------------------------------------------------------ LlamaIndex -> LangChain


def _where(index: int, block: int) -> str:
    return f"message {index} block {block} (image)"


def _read(path: str | Path, where: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{where}: cannot read image file {str(path)!r}: "
                         f"{exc.strerror or exc}") from None


def _data_url(url: str, where: str) -> tuple[bytes, str | None]:
    """The bytes and declared media type of a ``data:`` URL."""
    head, sep, payload = url[5:].partition(",")
    if not sep:
        raise ValueError(f"{where}: a data URL needs a ',' before its data")
    mime, _, params = head.partition(";")
    if params.split(";")[-1] == "base64":
        try:
            raw = base64.b64decode(unquote(payload), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{where}: the data URL's image data is not valid base64 "
                             f"({exc})") from None
    else:
        raw = unquote_to_bytes(payload)
    return raw, mime or None


def _inline(raw: bytes, declared: str | None, where: str) -> tuple[str, str]:
    """``(base64, mime_type)`` for image bytes; the bytes decide the type when they can.

    Raises:
        ValueError: empty data, data of a known non-image type, or data of no known type
            without a declared ``image/*`` type.
    """
    mime = check_image_bytes(raw, where, declared=declared)
    return base64.b64encode(raw).decode("ascii"), mime


def image_part(block: ImageBlock, index: int, position: int = 0) -> dict[str, Any]:
    """The LangChain content part for a LlamaIndex ``ImageBlock`` (message ``index``, block
    ``position``, for error messages).

    Inline data (``image`` bytes, raw or already base64 as ``ImageBlock`` stores them; a local
    ``path``; a ``file:`` or ``data:`` URL) becomes LangChain's standard block
    ``{"type": "image", "base64": ..., "mime_type": ...}``, the type sniffed from the bytes
    (else ``image_mimetype``); an ``http(s)`` URL becomes ``{"type": "image", "url": ...}``
    and is not fetched here (ChatStream sends it only to a tier that takes image URLs). With
    ``detail`` set, the part is OpenAI's ``image_url`` form, which carries it.

    Raises:
        ValueError: naming the message and block: no source, an unreadable file, data that
            is not an image, or a URL scheme other than http(s), file and data.

    Example:
        >>> from llama_index.core.base.llms.types import ImageBlock
        >>> gif = b"GIF89a" + bytes(16)
        >>> image_part(ImageBlock(image=gif), 0)["mime_type"]
        'image/gif'
        >>> image_part(ImageBlock(url="https://example.com/cat.png"), 0)
        {'type': 'image', 'url': 'https://example.com/cat.png'}
        >>> image_part(ImageBlock(image=b"plain words, not pixels"), 2, 1)
        Traceback (most recent call last):
        ...
        stream_langchain.errors.ImageFileError: message 2 block 1 (image): the data is not a ...
    """
    where = _where(index, position)
    declared = block.image_mimetype
    url: str | None = None
    if block.image is not None:
        if isinstance(block.image, IOBase):
            block.image.seek(0)
            data = block.image.read()
            raw = data.encode() if isinstance(data, str) else bytes(data)
        else:
            raw = block.image
        try:  # ImageBlock keeps bytes base64-encoded; raw bytes that are not base64 stay
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            pass
    elif block.path is not None:
        raw = _read(block.path, where)
    elif block.url is not None:
        url = str(block.url)
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https"):
            raw = b""
        elif scheme == "data":
            raw, stated = _data_url(url, where)
            declared = stated or declared
            url = None
        elif scheme == "file":
            raw = _read(unquote(urlparse(url).path), where)
            url = None
        else:
            raise ValueError(f"{where}: image URL scheme {scheme!r} is not supported (use "
                             "http(s), file or data, or give the image as bytes or a path)")
    else:
        raise ValueError(f"{where}: the ImageBlock has no image, path or url")
    if url is not None:
        if block.detail:
            return {"type": "image_url", "image_url": {"url": url, "detail": block.detail}}
        return {"type": "image", "url": url}
    data64, mime = _inline(raw, declared, where)
    if block.detail:
        return {"type": "image_url", "image_url": {
            "url": f"data:{mime};base64,{data64}", "detail": block.detail}}
    return {"type": "image", "base64": data64, "mime_type": mime}


def _content(message: ChatMessage, index: int) -> str | list[str | dict[str, Any]]:
    """The LangChain content of a message: a string when it is all text (blocks joined by
    newlines), else text and image parts in block order (user messages only)."""
    parts: list[dict[str, Any]] = []
    has_image = False
    for position, block in enumerate(message.blocks):
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            if message.role != MessageRole.USER:
                raise ValueError(
                    f"message {index} ({message.role.value}) has an image block; images go "
                    "in user messages only (OpenAI-compatible tiers refuse them elsewhere)"
                )
            parts.append(image_part(block, index, position))
            has_image = True
        elif not isinstance(block, _SKIPPED_BLOCKS):
            raise ValueError(
                f"message {index} has a {block.block_type!r} block, which StreamLLM does not "
                "route (supported blocks: text, image, tool_call)"
            )
    if not has_image:
        return "\n".join(p["text"] for p in parts)
    return list(parts)


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
    whose ``additional_kwargs["tool_call_id"]`` names the call they answer. A user message
    with ``ImageBlock``s becomes a list of text and image parts (:func:`image_part`); every
    other message's content is a string.

    Raises:
        ValueError: an unsupported block (audio, video, document, ...), an image that cannot
            be converted or outside a user message, a tool result without ``tool_call_id``,
            or an unknown role.
        TypeError: an item is not a ``ChatMessage``.
    """
    out: list[BaseMessage] = []
    for i, m in enumerate(messages):
        if not isinstance(m, ChatMessage):
            raise TypeError(f"message {i} is {type(m).__name__}, not a LlamaIndex ChatMessage")
        text = _content(m, i)  # a string unless a user message carries images
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
    record = RouteRecord.from_metadata(message.response_metadata)
    return None if record is None else record.to_dict()


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
        hint = RouteHint.from_metadata(chunk.response_metadata)
        extra = {HINT_KEY: hint.to_dict()} if hint is not None else {}
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
