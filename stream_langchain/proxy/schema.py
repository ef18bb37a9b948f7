"""OpenAI chat-completions <-> LangChain: request validation in, responses and chunks out.

Pure functions, no I/O. :func:`parse_chat_request` turns a JSON body into LangChain messages
and the keyword arguments ``ChatStream.astream`` takes, refusing what cannot be honoured with
an :class:`~stream_langchain.proxy.errors.APIError` that names the parameter (never a silent
drop). User turns may carry ``image_url`` parts (inline ``data:`` URLs or http(s) addresses),
checked by :func:`image_part` and passed on as-is; ChatStream sends them only to tiers that
take images. :class:`ChunkWriter` turns ``AIMessageChunk``s into ``chat.completion.chunk``
dicts and remembers what it emitted for the final response and the usage record.

Example:
    >>> req = parse_chat_request(b'{"model": "stream", "messages": '
    ...                          b'[{"role": "user", "content": "hi"}], "max_tokens": 5}',
    ...                          limits=MessageLimits())
    >>> type(req.messages[0]).__name__, req.kwargs
    ('HumanMessage', {'max_tokens': 5})
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream_langchain.capabilities import check_image_part
from stream_langchain.proxy.errors import APIError

__all__ = [
    "ChatCompletionRequest",
    "ChatRequest",
    "ChunkWriter",
    "MessageLimits",
    "completion_body",
    "image_part",
    "parse_chat_request",
    "part_error",
    "refused",
    "response_format",
    "usage_body",
]

# Parameters accepted only at the value that means "the default behaviour" (what clients send
# unasked); any other value is a 400 naming it.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "store": (False,),
    "metadata": ({},),
    "logit_bias": ({},),
    "service_tier": ("auto", "default"),
    "modalities": (["text"],),
    "verbosity": ("medium",),
}
# Parameters accepted and not used for generation (identifiers for the caller's own
# bookkeeping, a cache-routing hint with no effect on the answer).
_IGNORED = frozenset({"user", "safety_identifier", "prompt_cache_key"})
_ROLES = ("system", "developer", "user", "assistant", "tool")


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` (the fields STREAM honours)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="stream, stream-local, stream-hpc or "
                                                  "stream-cloud (see GET /v1/models)")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    user: str | None = None


@dataclass(frozen=True)
class MessageLimits:
    """Bounds on one request's conversation (the seed proxy's: 500 messages of 100K chars)."""

    max_messages: int = 500
    max_message_chars: int = 100_000


@dataclass
class ChatRequest:
    """A validated request: the LangChain view of it plus what the response needs."""

    model: str
    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    stream: bool
    include_usage: bool
    stop: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_Body = TypeVar("_Body", bound=BaseModel)


def validate_body(body: bytes, model: type[_Body]) -> _Body:
    """Parse a JSON object body into ``model`` (shared by both wire formats).

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


_DETAILS = ("auto", "low", "high")
_IMAGE_KEYS = frozenset({"url", "detail"})


def image_part(url: Any, detail: Any, *, url_param: str,
               detail_param: str) -> dict[str, Any]:
    """One validated image as the OpenAI ``image_url`` content part ChatStream takes as-is.

    ``url`` is a ``data:image/<type>;base64,...`` URL or an ``http(s)://`` address; ``detail``
    is ``None`` or one of ``auto``, ``low``, ``high``. ``url_param`` and ``detail_param`` name
    those fields in the request, for the error (``messages[0].content[1].image_url.url``).

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
    or a part type outside ``supported`` (shared by chat completions and Responses)."""
    if kind in ("image_url", "input_image"):
        return APIError(400, f"{at} is an image in a {role!r} message; images are accepted in "
                             "'user' messages only", param=f"{at}.type",
                        code="unsupported_content")
    return APIError(400, f"{at} has type {kind!r}, which STREAM does not support in {role!r} "
                         f"messages (supported content part types: {supported})",
                    param=f"{at}.type", code="unsupported_content")


def _content(content: Any, i: int, role: str) -> Any:
    """A message's content as ChatStream takes it: a string, or (user and assistant turns)
    text and, in user turns, image parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"messages[{i}].content must be a string or a list of content "
                            f"parts, not {type(content).__name__}",
                       param=f"messages[{i}].content", code="invalid_content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict):
            raise APIError(400, f"{at} must be an object with a 'type', not "
                                f"{type(part).__name__}", param=at, code="invalid_content")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise APIError(400, f"{at}.text must be a string", param=f"{at}.text",
                               code="invalid_content")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and role == "user":
            image = part.get("image_url")
            if not isinstance(image, dict):
                raise APIError(400, f"{at}.image_url must be an object {{'url': ..., "
                                    "'detail': 'auto' | 'low' | 'high'}",
                               param=f"{at}.image_url", code="invalid_image")
            unknown = sorted(set(image) - _IMAGE_KEYS)
            if unknown:
                raise APIError(400, f"{at}.image_url has unsupported field(s) "
                                    + ", ".join(map(repr, unknown)) + " (supported: url, "
                                    "detail)", param=f"{at}.image_url.{unknown[0]}",
                               code="invalid_image")
            parts.append(image_part(image.get("url"), image.get("detail"),
                                    url_param=f"{at}.image_url.url",
                                    detail_param=f"{at}.image_url.detail"))
        else:
            raise part_error(at, kind, role,
                             "'text', 'image_url'" if role == "user" else "'text'")
    if role != "assistant" and role != "user":
        return "".join(p["text"] for p in parts)
    return parts


def _tool_calls(raw: Any, i: int) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise APIError(400, f"messages[{i}].tool_calls must be a list",
                       param=f"messages[{i}].tool_calls", code="invalid_tool_calls")
    out = []
    for j, tc in enumerate(raw):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise APIError(400, f"messages[{i}].tool_calls[{j}] needs function.name",
                           param=f"messages[{i}].tool_calls[{j}].function",
                           code="invalid_tool_calls")
        args_text = fn.get("arguments") or "{}"
        try:
            args = json.loads(args_text) if isinstance(args_text, str) else args_text
        except json.JSONDecodeError:
            raise APIError(400, f"messages[{i}].tool_calls[{j}].function.arguments is not "
                                "valid JSON", param=f"messages[{i}].tool_calls[{j}]"
                                ".function.arguments", code="invalid_tool_calls") from None
        if not isinstance(args, dict):
            raise APIError(400, f"messages[{i}].tool_calls[{j}].function.arguments must be "
                                "a JSON object", param=f"messages[{i}].tool_calls[{j}]"
                                ".function.arguments", code="invalid_tool_calls")
        out.append({"name": fn["name"], "args": args, "id": tc.get("id") or f"call_{i}_{j}",
                    "type": "tool_call"})
    return out


def to_langchain(messages: list[dict[str, Any]], limits: MessageLimits) -> list[BaseMessage]:
    """OpenAI message dicts -> LangChain messages, within ``limits``.

    Raises:
        APIError: 400 naming the message and field at fault, 413 past a limit.
    """
    if len(messages) > limits.max_messages:
        raise APIError(413, f"{len(messages)} messages; the limit is {limits.max_messages}",
                       param="messages", code="too_many_messages")
    out: list[BaseMessage] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in _ROLES:
            raise APIError(400, f"messages[{i}].role is {role!r}; expected one of "
                                + ", ".join(_ROLES), param=f"messages[{i}].role",
                           code="invalid_role")
        content = _content(m.get("content"), i, role)
        size = len(content) if isinstance(content, str) else sum(
            len(p["text"]) for p in content if p["type"] == "text")
        if size > limits.max_message_chars:
            raise APIError(413, f"messages[{i}] has {size} characters; the limit is "
                                f"{limits.max_message_chars}", param=f"messages[{i}].content",
                           code="message_too_long")
        name = m.get("name") if isinstance(m.get("name"), str) else None
        if role in ("system", "developer"):
            out.append(SystemMessage(content, name=name))
        elif role == "user":
            out.append(HumanMessage(content, name=name))
        elif role == "assistant":
            calls = _tool_calls(m["tool_calls"], i) if m.get("tool_calls") else []
            out.append(AIMessage(content, tool_calls=calls, name=name))
        else:
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise APIError(400, f"messages[{i}] (role 'tool') needs tool_call_id",
                               param=f"messages[{i}].tool_call_id", code="missing_tool_call_id")
            out.append(ToolMessage(content, tool_call_id=call_id))
    return out


def refused(values: dict[str, Any], neutral: dict[str, tuple[Any, ...]],
            ignored: frozenset[str]) -> list[str]:
    """The parameters in ``values`` to refuse: any not ``None``, not ``ignored`` and not at a
    ``neutral`` value (shared by both wire formats).

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


_PASSED = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")


def _tools(req: ChatCompletionRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as the tiers take them."""
    for j, tool in enumerate(req.tools or []):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str):
            raise APIError(400, f"tools[{j}] must be {{'type': 'function', 'function': "
                                "{'name': ..., 'parameters': ...}}",
                           param=f"tools[{j}]", code="invalid_tools")
    out: dict[str, Any] = {"tools": list(req.tools or [])}
    if req.tool_choice is not None:
        out["tool_choice"] = req.tool_choice
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls
    return out


def response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """A checked ``response_format``: ``None`` for ``text`` (the default), else the dict the
    tiers take (``json_object``, or ``json_schema`` with an object ``json_schema.schema``).

    Raises:
        APIError: 400 naming the field at fault.

    Example:
        >>> response_format({"type": "json_schema", "json_schema": {"name": "a",
        ...                  "schema": {"type": "object"}}})["json_schema"]["name"]
        'a'
        >>> response_format({"type": "text"}) is None
        True
    """
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise APIError(400, f"response_format.type {kind!r} is not one of text, "
                            "json_object, json_schema", param="response_format.type",
                       code="invalid_response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise APIError(400, "response_format.json_schema must be an object with a 'name' and "
                            "a 'schema'", param="response_format.json_schema",
                       code="invalid_response_format")
    if not isinstance(spec.get("schema", {}), dict):
        raise APIError(400, "response_format.json_schema.schema must be a JSON schema object",
                       param="response_format.json_schema.schema",
                       code="invalid_response_format")
    return {"type": "json_schema", "json_schema": dict(spec)}


def parse_chat_request(body: bytes, *, limits: MessageLimits) -> ChatRequest:
    """Validate a chat-completions body.

    Raises:
        APIError: 400 (not JSON, unsupported or conflicting parameters, bad messages),
            413 (a message limit), 422 (a field of the wrong type or out of range).
    """
    req = validate_body(body, ChatCompletionRequest)
    values = {**(req.model_extra or {}), "n": req.n, "logprobs": req.logprobs}
    unsupported = refused(values, _NEUTRAL, _IGNORED)
    if unsupported:
        raise APIError(400, "unsupported parameter(s): " + ", ".join(unsupported)
                       + " (STREAM honours model, messages, stream, stream_options, "
                         "temperature, top_p, max_tokens, max_completion_tokens, stop, tools, "
                         "tool_choice, parallel_tool_calls, response_format, seed, "
                         "frequency_penalty, presence_penalty; n=1 only)",
                       param=unsupported[0].split("=")[0], code="unsupported_parameter")
    if (req.max_tokens is not None and req.max_completion_tokens is not None
            and req.max_tokens != req.max_completion_tokens):
        raise APIError(400, "max_tokens and max_completion_tokens disagree; send one",
                       param="max_tokens", code="conflicting_parameters")
    kwargs: dict[str, Any] = {name: getattr(req, name) for name in _PASSED
                              if getattr(req, name) is not None}
    limit = req.max_completion_tokens or req.max_tokens
    if limit is not None:
        kwargs["max_tokens"] = limit
    if req.tools:
        kwargs.update(_tools(req))
    elif req.tool_choice not in (None, "none", "auto"):
        raise APIError(400, "tool_choice needs tools", param="tool_choice",
                       code="invalid_tool_choice")
    if req.response_format is not None:
        fmt = response_format(req.response_format)
        if fmt is not None:
            kwargs["response_format"] = fmt
    stop = [req.stop] if isinstance(req.stop, str) else (list(req.stop) if req.stop else None)
    opts = req.stream_options or {}
    if opts and not req.stream:
        raise APIError(400, "stream_options is only allowed with stream=true",
                       param="stream_options", code="invalid_stream_options")
    unknown = sorted(set(opts) - {"include_usage"})
    if unknown:
        raise APIError(400, "unsupported stream_options: " + ", ".join(unknown),
                       param="stream_options", code="unsupported_parameter")
    return ChatRequest(model=req.model, messages=to_langchain(req.messages, limits),
                       kwargs=kwargs, stream=bool(req.stream),
                       include_usage=bool(opts.get("include_usage")), stop=stop)


# --------------------------------------------------------------------------- responses


def usage_body(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


class ChunkWriter:
    """Turns a ChatStream's chunks into ``chat.completion.chunk`` dicts, keeping the totals.

    Args:
        model: The model name the client asked for (echoed back).
    """

    def __init__(self, model: str) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.text: list[str] = []
        self.content_chunks = 0
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.record: dict[str, Any] | None = None
        self.hint: dict[str, Any] | None = None
        self._role_sent = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def feed(self, message: AIMessageChunk) -> dict[str, Any] | None:
        """Take one engine chunk; return the SSE chunk to send, or ``None`` (nothing new)."""
        meta = message.response_metadata
        if "stream" in meta:
            self.record = meta["stream"]
        if "stream_route" in meta and self.hint is None:
            self.hint = meta["stream_route"]
        if meta.get("finish_reason"):
            self.finish_reason = str(meta["finish_reason"])
        delta: dict[str, Any] = {}
        text = message.content if isinstance(message.content, str) else "".join(
            p.get("text", "") if isinstance(p, dict) else str(p) for p in message.content)
        if text:
            delta["content"] = text
            self.text.append(text)
            self.content_chunks += 1
        calls = []
        for tc in message.tool_call_chunks:
            index = tc.get("index")
            index = len(self.tool_calls) if index is None else int(index)
            seen = self.tool_calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
            piece: dict[str, Any] = {"index": index}
            if tc.get("id") and not seen["id"]:
                seen["id"] = tc["id"]
                piece["id"] = tc["id"]
                piece["type"] = "function"
            fn: dict[str, Any] = {}
            if tc.get("name") and not seen["name"]:
                seen["name"] = tc["name"]
                fn["name"] = tc["name"]
            if tc.get("args"):
                seen["arguments"] += tc["args"]
                fn["arguments"] = tc["args"]
            if fn:
                piece["function"] = fn
            calls.append(piece)
        if calls:
            delta["tool_calls"] = calls
        if not delta:
            return None
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **({"content": ""} if "content" not in delta
                                              and not calls else {}), **delta}
        return self._chunk(delta)

    def opening(self) -> dict[str, Any] | None:
        """The role-only chunk, when no content came before the end."""
        if self._role_sent:
            return None
        self._role_sent = True
        return self._chunk({"role": "assistant", "content": ""})

    @property
    def finish(self) -> str:
        """``tool_calls`` when the answer called tools, else the tier's reason (``stop``)."""
        if self.tool_calls:
            return "tool_calls"
        return self.finish_reason if self.finish_reason in ("stop", "length",
                                                            "content_filter") else "stop"

    def final(self, route: dict[str, Any] | None) -> dict[str, Any]:
        """The chunk carrying ``finish_reason`` and the routing record."""
        out = self._chunk({}, self.finish)
        out["stream"] = route
        return out

    def usage_chunk(self, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        """The ``stream_options.include_usage`` chunk (empty ``choices``)."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": [],
                "usage": usage_body(input_tokens, output_tokens)}

    def tool_calls_body(self) -> list[dict[str, Any]]:
        return [{"id": c["id"] or f"call_{i}", "type": "function",
                 "function": {"name": c["name"] or "", "arguments": c["arguments"]}}
                for i, c in sorted(self.tool_calls.items())]


def completion_body(writer: ChunkWriter, route: dict[str, Any] | None, input_tokens: int,
                    output_tokens: int) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` response."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(writer.text) or None,
                               "refusal": None}
    if writer.tool_calls:
        message["tool_calls"] = writer.tool_calls_body()
    return {"id": writer.id, "object": "chat.completion", "created": writer.created,
            "model": writer.model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": writer.finish}],
            "usage": usage_body(input_tokens, output_tokens), "stream": route}

