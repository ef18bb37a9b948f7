"""The format-neutral wire layer: one parsed request, one chunk accounting, shared checks.

Both wire formats (:mod:`.chat_completions`, :mod:`.responses`) parse their own body into a
:class:`ParsedRequest` (LangChain messages and the keyword arguments ``ChatStream.astream``
takes) and answer through an :class:`Encoder` over the same :class:`ChunkWriter`. What both
need is here, written once: body validation (:func:`validate_body`), the "unsupported
parameter" refusal (:func:`refuse_unsupported`), content parts and images (:func:`text_part`,
:func:`image_part`, :func:`part_error`), messages within :class:`MessageLimits`
(:func:`message`), tool calls and function tools (:func:`tool_call`, :func:`function_tool`,
:func:`tool_kwargs`) and structured output (:func:`response_format`). Every check takes the
client's own parameter path (``messages[1].role``, ``input[0].role``) and names it in the
:class:`~stream_langchain.proxy.errors.APIError`.

Example:
    >>> message("user", "hi", at="input[0]", limits=MessageLimits())
    HumanMessage(content='hi', additional_kwargs={}, response_metadata={})
    >>> message("robot", "hi", at="input[0]", limits=MessageLimits())
    Traceback (most recent call last):
    ...
    stream_langchain.proxy.errors.APIError: input[0].role is 'robot'; expected one of ...
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from pydantic import BaseModel, ValidationError

from stream_langchain.capabilities import check_image_part
from stream_langchain.proxy.errors import APIError
from stream_langchain.record import RouteHint, RouteRecord

__all__ = [
    "ChunkWriter",
    "Delta",
    "Encoder",
    "MessageLimits",
    "ParsedRequest",
    "function_tool",
    "image_part",
    "message",
    "part_error",
    "refuse_unsupported",
    "refused",
    "response_format",
    "text_part",
    "tool_call",
    "tool_kwargs",
    "validate_body",
]

ROLES = ("system", "developer", "user", "assistant", "tool")
IGNORED = frozenset({"user", "safety_identifier", "prompt_cache_key"})
"""Parameters accepted and not used for generation (identifiers for the caller's own
bookkeeping, a cache-routing hint with no effect on the answer), in both formats."""


@dataclass(frozen=True)
class MessageLimits:
    """Bounds on one request's conversation (the seed proxy's: 500 messages of 100K chars)."""

    max_messages: int = 500
    max_message_chars: int = 100_000


@dataclass
class ParsedRequest:
    """A validated request, whichever wire format it came in: the LangChain view of it plus
    what the response needs (``extra``: format-specific fields echoed back)."""

    model: str
    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    stream: bool
    include_usage: bool = False
    stop: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_Body = TypeVar("_Body", bound=BaseModel)


def validate_body(body: bytes, model: type[_Body]) -> _Body:
    """Parse a JSON object body into ``model``.

    Raises:
        APIError: 400 when the body is not a JSON object, 422 naming the first bad field.
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = _param_of(tuple(err["loc"]))
        raise APIError(422, f"{param}: {err['msg']}", param=param or None,
                       code="invalid_value") from None


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|tuple)\b|[\[\]-]")
"""Parts of a pydantic error location that name a union member, not a field (``stop: 5``
fails as ``("stop", "str")`` and ``("stop", "list[str]")``: the parameter is ``stop``)."""


def _param_of(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and out and _UNION_TAG.search(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def refused(values: dict[str, Any], neutral: dict[str, tuple[Any, ...]],
            ignored: frozenset[str] = IGNORED) -> list[str]:
    """The parameters in ``values`` to refuse: any not ``None``, not ``ignored`` and not at a
    ``neutral`` value.

    Example:
        >>> refused({"n": 1, "store": True, "user": "u", "x": None, "logit_bias": {"1": 2}},
        ...         {"n": (1,), "store": (False,), "logit_bias": ({},)}, frozenset({"user"}))
        ["logit_bias={'1': 2}", 'store=True']
    """
    out = []
    for name, value in sorted(values.items()):
        if value is None or name in ignored:
            continue
        if name not in neutral:
            out.append(name)
        elif not any(value == v and isinstance(value, bool) == isinstance(v, bool)
                     for v in neutral[name]):
            out.append(f"{name}={value!r}")
    return out


def refuse_unsupported(unsupported: list[str], honoured: str) -> None:
    """The one 400 for parameters STREAM does not honour, naming the first.

    Args:
        unsupported: ``name`` or ``name=value`` entries (:func:`refused`).
        honoured: what the format honours, for the message.

    Raises:
        APIError: 400 ``unsupported_parameter`` when ``unsupported`` is not empty.
    """
    if unsupported:
        raise APIError(400, "unsupported parameter(s): " + ", ".join(unsupported)
                       + f" (STREAM honours {honoured})",
                       param=unsupported[0].split("=")[0], code="unsupported_parameter")


# --------------------------------------------------------------------------- content

_DETAILS = ("auto", "low", "high")


def text_part(part: dict[str, Any], at: str) -> dict[str, Any]:
    """A text part (``{"type": "text", "text": ...}``) from a part whose ``text`` must be a
    string."""
    if not isinstance(part.get("text"), str):
        raise APIError(400, f"{at}.text must be a string", param=f"{at}.text",
                       code="invalid_content")
    return {"type": "text", "text": part["text"]}


def image_part(url: Any, detail: Any, *, url_param: str,
               detail_param: str) -> dict[str, Any]:
    """One validated image as the OpenAI ``image_url`` content part ChatStream takes as-is.

    ``url`` is a ``data:image/<type>;base64,...`` URL or an ``http(s)://`` address (checked by
    :func:`stream_langchain.capabilities.check_image_part`, the one image validator);
    ``detail`` is ``None`` or one of ``auto``, ``low``, ``high``. ``url_param`` and
    ``detail_param`` name those fields in the request, for the error.

    Raises:
        APIError: 400 ``invalid_image`` naming the field and what is wrong.

    Example:
        >>> image_part("https://example.com/cat.png", "low", url_param="u", detail_param="d")
        {'type': 'image_url', 'image_url': {'url': 'https://example.com/cat.png', 'detail': 'low'}}
        >>> image_part("data:image/png;base64,!!", None,
        ...            url_param="messages[0].content[1].image_url.url", detail_param="d")
        Traceback (most recent call last):
        ...
        stream_langchain.proxy.errors.APIError: messages[0].content[1].image_url.url: image data
        is not valid base64 ...
    """
    try:
        check_image_part({"type": "image_url", "image_url": {"url": url}}, url_param)
    except ValueError as exc:
        raise APIError(400, str(exc), param=url_param, code="invalid_image") from None
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        if detail not in _DETAILS:
            raise APIError(400, f"{detail_param} is {detail!r}; expected one of "
                                + ", ".join(_DETAILS), param=detail_param,
                           code="invalid_image")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def part_error(at: str, kind: Any, role: str, supported: str) -> APIError:
    """The 400 for a content part at ``at`` that cannot be taken: an image outside a user turn,
    or a part type outside ``supported``."""
    if kind in ("image_url", "input_image"):
        return APIError(400, f"{at} is an image in a {role!r} message; images are accepted in "
                             "'user' messages only", param=f"{at}.type",
                        code="unsupported_content")
    return APIError(400, f"{at} has type {kind!r}, which STREAM does not support in {role!r} "
                         f"messages (supported content part types: {supported})",
                    param=f"{at}.type", code="unsupported_content")


def content_error(at: str, got: Any) -> APIError:
    """The 400 for content that is neither a string nor a list of parts."""
    return APIError(400, f"{at} must be a string or a list of content parts, not "
                         f"{type(got).__name__}", param=at, code="invalid_content")


# --------------------------------------------------------------------------- messages


def message(role: Any, content: str | list[Any], *, at: str,
            limits: MessageLimits, roles: tuple[str, ...] = ROLES, name: str | None = None,
            tool_calls: list[ToolCall] | None = None,
            tool_call_id: Any = None) -> BaseMessage:
    """One LangChain message from checked content, within ``limits``.

    Args:
        role: the client's role; checked against ``roles``.
        content: a string or neutral parts (:func:`text_part`, :func:`image_part`); joined
            to a string for system and tool turns.
        at: the client's path of the message (``messages[2]``, ``input[0]``).
        limits: the per-message character limit (text only; images count in the body size).
        roles: the roles this format accepts.
        name: the participant's name, if any.
        tool_calls: an assistant turn's calls (:func:`tool_call`).
        tool_call_id: a tool turn's call id.

    Raises:
        APIError: 400 naming ``at.role`` or ``at.tool_call_id``, 413 past the limit.
    """
    check_role(role, at, roles)
    if not isinstance(content, str) and role not in ("user", "assistant"):
        content = "".join(p["text"] for p in content)
    size = len(content) if isinstance(content, str) else sum(
        len(p["text"]) for p in content if p["type"] == "text")
    if size > limits.max_message_chars:
        raise APIError(413, f"{at} has {size} characters; the limit is "
                            f"{limits.max_message_chars}", param=f"{at}.content",
                       code="message_too_long")
    if role in ("system", "developer"):
        return SystemMessage(content, name=name)
    if role == "user":
        return HumanMessage(content, name=name)
    if role == "assistant":
        return AIMessage(content, tool_calls=tool_calls or [], name=name)
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise APIError(400, f"{at} (role 'tool') needs tool_call_id",
                       param=f"{at}.tool_call_id", code="missing_tool_call_id")
    return ToolMessage(content, tool_call_id=tool_call_id)


def check_role(role: Any, at: str, roles: tuple[str, ...] = ROLES) -> None:
    """400 ``invalid_role`` naming ``at.role`` unless ``role`` is one of ``roles``."""
    if role not in roles:
        raise APIError(400, f"{at}.role is {role!r}; expected one of " + ", ".join(roles),
                       param=f"{at}.role", code="invalid_role")


def check_count(n: int, limits: MessageLimits, param: str) -> None:
    """413 when a conversation has more turns than ``limits`` allows."""
    if n > limits.max_messages:
        raise APIError(413, f"{n} messages; the limit is {limits.max_messages}",
                       param=param, code="too_many_messages")


def tool_call(name: Any, arguments: Any, call_id: Any, *, at: str, name_at: str,
              default_id: str) -> ToolCall:
    """A LangChain tool call from a past call in the conversation.

    Args:
        name: the function's name (must be a string).
        arguments: a JSON object as text (or already an object); empty means ``{}``.
        call_id: the call's id; ``default_id`` when missing.
        at: the client's path of the arguments field, for the error.
        name_at: the client's path to name when the name is missing.
        default_id: the id to use when the client sent none.

    Raises:
        APIError: 400 ``invalid_tool_calls`` naming the field at fault.
    """
    if not isinstance(name, str):
        raise APIError(400, f"{name_at} needs a string 'name'", param=name_at,
                       code="invalid_tool_calls")
    text = arguments or "{}"
    try:
        args = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        raise APIError(400, f"{at} is not valid JSON", param=at,
                       code="invalid_tool_calls") from None
    if not isinstance(args, dict):
        raise APIError(400, f"{at} must be a JSON object", param=at, code="invalid_tool_calls")
    return ToolCall(name=name, args=args, id=call_id or default_id, type="tool_call")


def function_tool(kind: Any, fn: Any, *, at: str, shape: str) -> dict[str, Any]:
    """A function tool in the form the tiers take (``{"type": "function", "function":
    {name, description, parameters, strict}}``), from either format's fields.

    Raises:
        APIError: 400 ``invalid_tools`` at ``at`` unless ``kind`` is ``function`` and ``fn``
            has a string ``name``; ``shape`` is the format's own spelling, for the message.
    """
    if kind != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise APIError(400, f"{at}: only function tools ({shape}) are supported",
                       param=at, code="invalid_tools")
    return {"type": "function", "function": {
        k: fn[k] for k in ("name", "description", "parameters", "strict")
        if fn.get(k) is not None}}


def tool_kwargs(tools: list[dict[str, Any]], choice: Any,
                parallel: bool | None) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as ChatStream takes them
    (``tools`` already through :func:`function_tool`).

    Raises:
        APIError: 400 when ``tool_choice`` asks for a tool and there are none.
    """
    if not tools:
        if choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice",
                           code="invalid_tool_choice")
        return {}
    out: dict[str, Any] = {"tools": tools}
    if choice is not None:
        out["tool_choice"] = choice
    if parallel is not None:
        out["parallel_tool_calls"] = parallel
    return out


def response_format(kind: Any, spec: Any, *, at: str, spec_at: str) -> dict[str, Any] | None:
    """Checked structured output: ``None`` for ``text`` (the default), else the chat
    ``response_format`` the tiers take.

    Args:
        kind: ``text``, ``json_object`` or ``json_schema``.
        spec: for ``json_schema``, ``{name, schema, strict?, description?}``.
        at: the client's path of the format (``response_format``, ``text.format``).
        spec_at: the client's path of ``spec`` (``response_format.json_schema``,
            ``text.format``).

    Raises:
        APIError: 400 ``invalid_response_format`` naming the field at fault.

    Example:
        >>> response_format("json_schema", {"name": "a", "schema": {"type": "object"}},
        ...                 at="text.format", spec_at="text.format")["json_schema"]["name"]
        'a'
        >>> response_format("text", None, at="response_format", spec_at="") is None
        True
    """
    if kind not in ("text", "json_object", "json_schema"):
        raise APIError(400, f"{at}.type {kind!r} is not one of text, json_object, "
                            "json_schema", param=f"{at}.type", code="invalid_response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise APIError(400, f"{spec_at} must be an object with a 'name' and a 'schema'",
                       param=spec_at, code="invalid_response_format")
    if not isinstance(spec.get("schema", {}), dict):
        raise APIError(400, f"{spec_at}.schema must be a JSON schema object",
                       param=f"{spec_at}.schema", code="invalid_response_format")
    return {"type": "json_schema", "json_schema": {
        k: spec[k] for k in ("name", "schema", "strict", "description") if k in spec}}


# --------------------------------------------------------------------------- answers


class Delta(NamedTuple):
    """What one engine chunk added: text and tool-call pieces (``index``, and ``id``,
    ``name``, ``arguments`` when new)."""

    text: str
    calls: list[dict[str, Any]]


def _text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)


class ChunkWriter:
    """Accounts for a ChatStream's chunks, whichever format they go out in: the text, the
    tool calls, the finish reason and the routing record (read through
    :class:`~stream_langchain.record.RouteRecord` and its first-token
    :class:`~stream_langchain.record.RouteHint`)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.content_chunks = 0
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.record: RouteRecord | None = None
        self.hint: RouteHint | None = None
        self.first_output_at: float | None = None
        """``time.perf_counter()`` when the first text or tool call came (time to first
        token)."""

    def feed(self, message: AIMessageChunk) -> Delta | None:
        """Take one engine chunk; return what it added, or ``None`` (nothing new). The chunk
        that announces the route (a tier's stream began) adds an empty delta: the answer
        has started, even before its first token."""
        had_hint = self.hint is not None
        meta = message.response_metadata
        if meta:
            self._meta(meta)
        text = _text(message.content)
        if text:
            self.text.append(text)
            self.content_chunks += 1
        calls = [self._call(tc) for tc in message.tool_call_chunks]
        if not text and not calls:
            return Delta("", []) if not had_hint and self.hint is not None else None
        if self.first_output_at is None:
            self.first_output_at = time.perf_counter()
        return Delta(text, calls)

    def _meta(self, meta: dict[str, Any]) -> None:
        record = RouteRecord.from_metadata(meta)
        if record is not None:
            self.record = record
        if self.hint is None:
            self.hint = RouteHint.from_metadata(meta)
        if meta.get("finish_reason"):
            self.finish_reason = str(meta["finish_reason"])

    def _call(self, tc: Any) -> dict[str, Any]:
        index = tc.get("index")
        index = len(self.tool_calls) if index is None else int(index)
        seen = self.tool_calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
        piece: dict[str, Any] = {"index": index}
        if tc.get("id") and not seen["id"]:
            seen["id"] = piece["id"] = tc["id"]
        if tc.get("name") and not seen["name"]:
            seen["name"] = piece["name"] = tc["name"]
        if tc.get("args"):
            seen["arguments"] += tc["args"]
            piece["arguments"] = tc["args"]
        return piece

    @property
    def tier(self) -> str | None:
        """The tier answering: the record's, else the route hint's."""
        route = self.record or self.hint
        return route.tier if route is not None and route.tier else None

    @property
    def finish(self) -> str:
        """``tool_calls`` when the answer called tools, else the tier's reason (``stop``)."""
        if self.tool_calls:
            return "tool_calls"
        return self.finish_reason if self.finish_reason in ("stop", "length",
                                                            "content_filter") else "stop"

    def output_text(self) -> str:
        """All the text and tool arguments generated (for estimating output tokens)."""
        return "".join(self.text) + "".join(c["arguments"] for c in self.tool_calls.values())


class Encoder(Protocol):
    """One wire format over the shared :class:`ChunkWriter`."""

    writer: ChunkWriter

    def chunk(self, message: AIMessageChunk) -> list[bytes]:
        """SSE events for one engine chunk (empty: nothing to send yet)."""
        ...

    def end(self, route: dict[str, Any] | None, inp: int, out: int) -> list[bytes]:
        """The closing events of a stream that finished."""
        ...

    def error(self, err: APIError) -> list[bytes]:
        """The events that report a failure after streaming began."""
        ...

    def body(self, route: dict[str, Any] | None, inp: int, out: int) -> dict[str, Any]:
        """The non-streaming response."""
        ...

