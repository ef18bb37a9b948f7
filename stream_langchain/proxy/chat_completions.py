"""OpenAI chat completions: the parser (body -> :class:`~.schema.ParsedRequest`) and the
encoder (engine chunks -> ``chat.completion.chunk`` events or one ``chat.completion``).

Pure functions and objects, no I/O. :func:`parse_chat_request` refuses what cannot be
honoured with an :class:`~stream_langchain.proxy.errors.APIError` naming the parameter
(``messages[1].role``), never a silent drop. User turns may carry ``image_url`` parts
(inline ``data:`` URLs or http(s) addresses), passed on as-is; ChatStream sends them only to
tiers that take images.

Example:
    >>> req = parse_chat_request(b'{"model": "stream", "messages": '
    ...                          b'[{"role": "user", "content": "hi"}], "max_tokens": 5}',
    ...                          limits=MessageLimits())
    >>> type(req.messages[0]).__name__, req.kwargs
    ('HumanMessage', {'max_tokens': 5})
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage, ToolCall
from pydantic import BaseModel, ConfigDict, Field

from stream_langchain.proxy.errors import APIError
from stream_langchain.proxy.schema import (
    ROLES,
    ChunkWriter,
    Delta,
    MessageLimits,
    ParsedRequest,
    check_count,
    check_role,
    content_error,
    function_tool,
    image_part,
    message,
    part_error,
    refuse_unsupported,
    refused,
    response_format,
    text_part,
    tool_call,
    tool_kwargs,
    validate_body,
)
from stream_langchain.proxy.sse import sse_data, sse_error

__all__ = [
    "ChatCompletionRequest",
    "ChatEncoder",
    "openapi_body",
    "parse_chat_request",
    "to_langchain",
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
_HONOURED = ("model, messages, stream, stream_options, temperature, top_p, max_tokens, "
             "max_completion_tokens, stop, tools, tool_choice, parallel_tool_calls, "
             "response_format, seed, frequency_penalty, presence_penalty; n=1 only")
_PASSED = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
_IMAGE_KEYS = frozenset({"url", "detail"})
_TOOL_SHAPE = "{'type': 'function', 'function': {'name': ..., 'parameters': ...}}"


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


# --------------------------------------------------------------------------- parser


def _image(part: dict[str, Any], at: str) -> dict[str, Any]:
    image = part.get("image_url")
    if not isinstance(image, dict):
        raise APIError(400, f"{at}.image_url must be an object {{'url': ..., "
                            "'detail': 'auto' | 'low' | 'high'}",
                       param=f"{at}.image_url", code="invalid_image")
    unknown = sorted(set(image) - _IMAGE_KEYS)
    if unknown:
        raise APIError(400, f"{at}.image_url has unsupported field(s) "
                            + ", ".join(map(repr, unknown)) + " (supported: url, detail)",
                       param=f"{at}.image_url.{unknown[0]}", code="invalid_image")
    return image_part(image.get("url"), image.get("detail"), url_param=f"{at}.image_url.url",
                      detail_param=f"{at}.image_url.detail")


def _content(content: Any, at: str, role: Any) -> str | list[dict[str, Any]]:
    """A message's content: a string, or text and (user turns) image parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise content_error(f"{at}.content", content)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        if not isinstance(part, dict):
            raise APIError(400, f"{where} must be an object with a 'type', not "
                                f"{type(part).__name__}", param=where, code="invalid_content")
        kind = part.get("type")
        if kind == "text":
            parts.append(text_part(part, where))
        elif kind == "image_url" and role == "user":
            parts.append(_image(part, where))
        else:
            raise part_error(where, kind, str(role),
                             "'text', 'image_url'" if role == "user" else "'text'")
    return parts


def _tool_calls(raw: Any, at: str, i: int) -> list[ToolCall]:
    if not isinstance(raw, list):
        raise APIError(400, f"{at}.tool_calls must be a list", param=f"{at}.tool_calls",
                       code="invalid_tool_calls")
    out = []
    for j, tc in enumerate(raw):
        where = f"{at}.tool_calls[{j}]"
        fn = tc.get("function") if isinstance(tc, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        out.append(tool_call(fn.get("name"), fn.get("arguments"),
                             tc.get("id") if isinstance(tc, dict) else None,
                             at=f"{where}.function.arguments", name_at=f"{where}.function",
                             default_id=f"call_{i}_{j}"))
    return out


def to_langchain(messages: list[dict[str, Any]], limits: MessageLimits) -> list[BaseMessage]:
    """OpenAI message dicts -> LangChain messages, within ``limits``.

    Raises:
        APIError: 400 naming the message and field at fault, 413 past a limit.
    """
    check_count(len(messages), limits, "messages")
    out: list[BaseMessage] = []
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        role = m.get("role")
        check_role(role, at)  # before the content, so a bad role is named first
        name = m.get("name") if isinstance(m.get("name"), str) else None
        calls = (_tool_calls(m["tool_calls"], at, i)
                 if role == "assistant" and m.get("tool_calls") else None)
        out.append(message(role, _content(m.get("content"), at, role), at=at, limits=limits,
                           name=name, tool_calls=calls, tool_call_id=m.get("tool_call_id")))
    return out


def parse_chat_request(body: bytes, *, limits: MessageLimits) -> ParsedRequest:
    """Validate a chat-completions body.

    Raises:
        APIError: 400 (not JSON, unsupported or conflicting parameters, bad messages),
            413 (a message limit), 422 (a field of the wrong type or out of range).
    """
    req = validate_body(body, ChatCompletionRequest)
    refuse_unsupported(refused({**(req.model_extra or {}), "n": req.n,
                                "logprobs": req.logprobs}, _NEUTRAL), _HONOURED)
    if (req.max_tokens is not None and req.max_completion_tokens is not None
            and req.max_tokens != req.max_completion_tokens):
        raise APIError(400, "max_tokens and max_completion_tokens disagree; send one",
                       param="max_tokens", code="conflicting_parameters")
    kwargs: dict[str, Any] = {name: getattr(req, name) for name in _PASSED
                              if getattr(req, name) is not None}
    limit = req.max_completion_tokens or req.max_tokens
    if limit is not None:
        kwargs["max_tokens"] = limit
    tools = [function_tool(t.get("type"), t.get("function"), at=f"tools[{j}]",
                           shape=_TOOL_SHAPE) for j, t in enumerate(req.tools or [])]
    kwargs.update(tool_kwargs(tools, req.tool_choice, req.parallel_tool_calls))
    if req.response_format is not None:
        fmt = response_format(req.response_format.get("type"),
                              req.response_format.get("json_schema"), at="response_format",
                              spec_at="response_format.json_schema")
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
    return ParsedRequest(model=req.model, messages=to_langchain(req.messages, limits),
                         kwargs=kwargs, stream=bool(req.stream),
                         include_usage=bool(opts.get("include_usage")), stop=stop)


_PART_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "object", "required": ["type", "text"],
     "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
    {"type": "object", "required": ["type", "image_url"],
     "properties": {"type": {"const": "image_url"},
                    "image_url": {"type": "object", "required": ["url"], "properties": {
                        "url": {"type": "string", "description": "data:image/<type>;base64,"
                                                                 "... or http(s)://..."},
                        "detail": {"enum": ["auto", "low", "high"]}}}}},
]}
"""Content parts: text, and images in user messages (they go only to tiers that take them)."""


def openapi_body(models: list[str]) -> dict[str, Any]:
    """The published request schema: the served models as an enum, no other parameters (the
    server answers any other one with a 400 naming it)."""
    schema = ChatCompletionRequest.model_json_schema()
    schema["properties"]["model"] = {"type": "string", "enum": models,
                                     "description": "see GET /v1/models"}
    schema["additionalProperties"] = False
    schema["properties"]["messages"]["items"] = {
        "type": "object", "required": ["role"],
        "properties": {"role": {"type": "string", "enum": list(ROLES)},
                       "content": {"anyOf": [{"type": "string"},
                                             {"type": "array", "items": _PART_SCHEMA}]},
                       "tool_call_id": {"type": "string"}}}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


# --------------------------------------------------------------------------- encoder


def usage_body(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


class ChatEncoder:
    """``chat.completion`` / ``chat.completion.chunk`` (OpenAI chat completions).

    Args:
        req: the parsed request (its model is echoed back; ``include_usage`` adds the
            usage chunk).
    """

    def __init__(self, req: ParsedRequest) -> None:
        self.req = req
        self.writer = ChunkWriter()
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self._role_sent = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.req.model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def delta(self, d: Delta) -> dict[str, Any]:
        """The chat ``delta`` for what one chunk added (the role on the first)."""
        out: dict[str, Any] = {}
        if not self._role_sent:
            self._role_sent = True
            out["role"] = "assistant"
            if not d.text and not d.calls:
                out["content"] = ""
        if d.text:
            out["content"] = d.text
        if d.calls:
            out["tool_calls"] = [_call_piece(p) for p in d.calls]
        return out

    def chunk(self, message: AIMessageChunk) -> list[bytes]:
        d = self.writer.feed(message)
        return [] if d is None else [sse_data(self._chunk(self.delta(d)))]

    def end(self, route: dict[str, Any] | None, inp: int, out: int) -> list[bytes]:
        events = [] if self._role_sent else [sse_data(self._chunk(self.delta(Delta("", []))))]
        final = self._chunk({}, self.writer.finish)
        final["stream"] = route
        events.append(sse_data(final))
        if self.req.include_usage:
            events.append(sse_data({"id": self.id, "object": "chat.completion.chunk",
                                    "created": self.created, "model": self.req.model,
                                    "system_fingerprint": None, "choices": [],
                                    "usage": usage_body(inp, out)}))
        events.append(b"data: [DONE]\n\n")
        return events

    def error(self, err: APIError) -> list[bytes]:
        return [sse_error(err.body())]

    def body(self, route: dict[str, Any] | None, inp: int, out: int) -> dict[str, Any]:
        w = self.writer
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(w.text) or None,
                               "refusal": None}
        if w.tool_calls:
            msg["tool_calls"] = [{"id": c["id"] or f"call_{i}", "type": "function",
                                  "function": {"name": c["name"] or "",
                                               "arguments": c["arguments"]}}
                                 for i, c in sorted(w.tool_calls.items())]
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.req.model, "system_fingerprint": None,
                "choices": [{"index": 0, "message": msg, "logprobs": None,
                             "finish_reason": w.finish}],
                "usage": usage_body(inp, out), "stream": route}


def _call_piece(p: dict[str, Any]) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": p["index"]}
    if "id" in p:
        piece["id"] = p["id"]
        piece["type"] = "function"
    fn = {k: p[k] for k in ("name", "arguments") if k in p}
    if fn:
        piece["function"] = fn
    return piece
