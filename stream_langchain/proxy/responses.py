"""The OpenAI Responses API over the same engine: text and images in, text out, streaming
events, function tools.

A Responses body is parsed by its own rules into the format-neutral
:class:`~stream_langchain.proxy.schema.ParsedRequest` (``instructions`` -> a system message,
``input`` items -> messages, ``input_image`` parts -> ``image_url`` parts, ``function_call`` /
``function_call_output`` items -> assistant tool calls and tool messages), every error naming
the Responses field (``input[0].role``, ``text.format.type``); the answer is sent as a
``response`` object or as the typed event stream (``response.created``,
``response.output_item.added``, ``response.output_text.delta``, ..., ``response.completed``,
or ``response.incomplete`` with ``incomplete_details.reason: "max_output_tokens"`` when the
answer hit the limit). ``text.format`` (``json_schema``, ``json_object``) becomes the
``response_format`` the tiers enforce; function tools keep ``strict``. The API's neutral
values (``include: []``, ``truncation: "disabled"``, ``store: false``, ...) are accepted and
``metadata`` is echoed back. Nothing is stored: ``previous_response_id`` and ``store: true``
are refused with a 400 that says so.

Example:
    >>> req = parse_responses_request(b'{"model": "stream", "input": "hi", '
    ...                               b'"instructions": "Be brief."}', limits=MessageLimits())
    >>> [type(m).__name__ for m in req.messages]
    ['SystemMessage', 'HumanMessage']
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from pydantic import BaseModel, ConfigDict, Field

from stream_langchain.proxy.errors import APIError
from stream_langchain.proxy.schema import (
    ChunkWriter,
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

__all__ = ["ResponsesEncoder", "ResponsesRequest", "openapi_body", "parse_responses_request"]

_PASS = ("temperature", "top_p")
_ROLES = ("system", "developer", "user", "assistant")
_HONOURED = ("model, input, instructions, stream, tools, tool_choice, parallel_tool_calls, "
             "temperature, top_p, max_output_tokens, text.format, metadata; it keeps no "
             "responses: store=false only")
_TOOL_SHAPE = "{'type': 'function', 'name': ..., 'parameters': ...}"
# Fields accepted at the value that means the API's default behaviour (the Agents SDK sends
# ``include: []``; the proxy's own responses carry ``truncation: "disabled"``): any other
# value is a 400 naming it. ``truncation: "auto"`` is what STREAM does anyway (it fits a long
# conversation to the tier's window).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "include": ([],),
    "truncation": ("disabled", "auto"),
    "store": (False,),
    "background": (False,),
    "top_logprobs": (0,),
    "service_tier": ("auto", "default"),
    "reasoning": ({},),
    "stream_options": ({}, {"include_obfuscation": False}),
}
_TEXT_KEYS = frozenset({"format", "verbosity"})


class ResponsesRequest(BaseModel):
    """The body of ``POST /v1/responses`` (the fields STREAM honours)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool | None = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_output_tokens: int | None = Field(None, ge=1)
    store: bool | None = None
    text: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    truncation: str | None = None
    user: str | None = None


def _parts(content: Any, at: str, role: Any) -> str | list[dict[str, Any]]:
    """A message item's content: text parts, and (user turns) ``input_image`` parts as
    ``image_url`` parts."""
    if isinstance(content, str) or content is None:
        return content or ""
    if not isinstance(content, list):
        raise content_error(f"{at}.content", content)
    out = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            out.append(text_part(part, where))
        elif kind == "input_image" and role == "user":
            if part.get("file_id") is not None:
                raise APIError(400, f"{where}.file_id: STREAM keeps no files; send the image "
                                    "inline as image_url 'data:image/<type>;base64,...' or "
                                    "by http(s) URL", param=f"{where}.file_id",
                               code="unsupported_content")
            out.append(image_part(part.get("image_url"), part.get("detail"),
                                  url_param=f"{where}.image_url",
                                  detail_param=f"{where}.detail"))
        else:
            raise part_error(where, kind, str(role), "input_text, input_image"
                             if role == "user" else "input_text, output_text")
    return out


def _item(item: dict[str, Any], i: int, out: list[BaseMessage],
          limits: MessageLimits) -> None:
    """Append what one ``input`` item says to ``out`` (consecutive function calls are one
    assistant turn)."""
    at = f"input[{i}]"
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        check_role(role, at, _ROLES)
        out.append(message(role, _parts(item.get("content"), at, role), at=at, limits=limits,
                           roles=_ROLES))
    elif kind == "function_call":
        call = tool_call(item.get("name"), item.get("arguments"), item.get("call_id"),
                         at=f"{at}.arguments", name_at=f"{at}.name", default_id=f"call_{i}")
        last = out[-1] if out else None
        if isinstance(last, AIMessage) and last.tool_calls:
            last.tool_calls.append(call)
        else:
            out.append(AIMessage("", tool_calls=[call]))
    elif kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise APIError(400, f"{at} (function_call_output) needs call_id",
                           param=f"{at}.call_id", code="missing_tool_call_id")
        out.append(message("tool", output if isinstance(output, str) else json.dumps(output),
                           at=at, limits=limits, tool_call_id=call_id))
    else:
        raise APIError(400, f"{at} has type {kind!r}; supported: message, function_call, "
                            "function_call_output", param=f"{at}.type",
                       code="unsupported_input")


def _messages(req: ResponsesRequest, limits: MessageLimits) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    if req.instructions:
        out.append(message("system", req.instructions, at="instructions", limits=limits))
    if isinstance(req.input, str):
        out.append(message("user", req.input, at="input", limits=limits))
        return out
    check_count(len(out) + len(req.input), limits, "input")
    for i, item in enumerate(req.input):
        _item(item, i, out, limits)
    return out


def _unsupported(req: ResponsesRequest) -> list[str]:
    values = {**(req.model_extra or {}), "store": req.store, "truncation": req.truncation}
    out = refused(values, _NEUTRAL)
    text = req.text or {}
    out += sorted(f"text.{k}" for k in set(text) - _TEXT_KEYS)
    if text.get("verbosity") not in (None, "medium"):
        out.append(f"text.verbosity={text['verbosity']!r}")
    return out


def _format(fmt: Any) -> dict[str, Any] | None:
    """``text.format`` as the ``response_format`` the tiers take."""
    if not isinstance(fmt, dict):
        raise APIError(400, "text.format must be an object with a 'type'",
                       param="text.format", code="invalid_response_format")
    return response_format(fmt.get("type"), fmt, at="text.format", spec_at="text.format")


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def parse_responses_request(body: bytes, *, limits: MessageLimits) -> ParsedRequest:
    """Validate a Responses body into a :class:`~stream_langchain.proxy.schema.ParsedRequest`.

    Raises:
        APIError: 400 (not JSON, unsupported parameters or items), 413, 422; each names the
            Responses field at fault.
    """
    req = validate_body(body, ResponsesRequest)
    refuse_unsupported(_unsupported(req), _HONOURED)
    messages = _messages(req, limits)
    kwargs: dict[str, Any] = {n: getattr(req, n) for n in _PASS if getattr(req, n) is not None}
    if req.max_output_tokens is not None:
        kwargs["max_tokens"] = req.max_output_tokens
    tools = [function_tool(t.get("type"), t, at=f"tools[{j}]", shape=_TOOL_SHAPE)
             for j, t in enumerate(req.tools or [])]
    kwargs.update(tool_kwargs(tools, _tool_choice(req.tool_choice), req.parallel_tool_calls))
    fmt = (req.text or {}).get("format")
    if fmt is not None and (checked := _format(fmt)) is not None:
        kwargs["response_format"] = checked
    extra = {"instructions": req.instructions, "tools": req.tools or [],
             "tool_choice": req.tool_choice or "auto",
             "parallel_tool_calls": req.parallel_tool_calls is not False,
             "metadata": req.metadata or {}, "truncation": req.truncation or "disabled",
             "text": {"format": fmt or {"type": "text"}, "verbosity": "medium"}}
    return ParsedRequest(model=req.model, messages=messages, kwargs=kwargs,
                         stream=bool(req.stream), extra=extra)


def openapi_body(models: list[str]) -> dict[str, Any]:
    """The published request schema, the served models as an enum."""
    schema = ResponsesRequest.model_json_schema()
    schema["properties"]["model"] = {"type": "string", "enum": models}
    schema["additionalProperties"] = False
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    body = json.dumps({"type": kind, "sequence_number": seq, **fields}, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n".encode()


class ResponsesEncoder:
    """``response`` objects and Responses streaming events from engine chunks."""

    def __init__(self, req: ParsedRequest) -> None:
        self.req = req
        self.writer = ChunkWriter()
        self.id = "resp_" + uuid.uuid4().hex
        self.created = int(time.time())
        self.seq = 0
        self.items: list[dict[str, Any]] = []  # output items in order of first appearance
        self._msg: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self._started = False

    def _next(self, kind: str, **fields: Any) -> bytes:
        ev = _event(kind, self.seq, **fields)
        self.seq += 1
        return ev

    def response(self, status: str, route: dict[str, Any] | None = None,
                 usage: tuple[int, int] | None = None,
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
        extra = self.req.extra
        out: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.req.model, "output": [dict(i) for i in self.items],
            "instructions": extra.get("instructions"), "tools": extra.get("tools", []),
            "tool_choice": extra.get("tool_choice", "auto"),
            "parallel_tool_calls": extra.get("parallel_tool_calls", True), "error": error,
            "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete"
                                   else None),
            "metadata": extra.get("metadata", {}), "text": extra.get("text"),
            "truncation": extra.get("truncation", "disabled"), "store": False,
            "background": False, "previous_response_id": None, "reasoning": None,
            "temperature": self.req.kwargs.get("temperature"),
            "top_p": self.req.kwargs.get("top_p"),
            "max_output_tokens": self.req.kwargs.get("max_tokens"), "usage": None,
            "stream": route,
        }
        if status in ("completed", "incomplete"):
            out["completed_at"] = int(time.time())
        if usage is not None:
            out["usage"] = {"input_tokens": usage[0], "output_tokens": usage[1],
                            "total_tokens": usage[0] + usage[1],
                            "input_tokens_details": {"cached_tokens": 0,
                                                     "cache_write_tokens": 0},
                            "output_tokens_details": {"reasoning_tokens": 0}}
        return out

    @property
    def status(self) -> str:
        """``incomplete`` when the answer stopped at ``max_output_tokens``, else
        ``completed``."""
        return "incomplete" if self.writer.finish == "length" else "completed"

    def chunk(self, message: AIMessageChunk) -> list[bytes]:
        d = self.writer.feed(message)
        if d is None:
            return []
        events: list[bytes] = []
        if not self._started:
            self._started = True
            events.append(self._next("response.created", response=self.response("in_progress")))
            events.append(self._next("response.in_progress",
                                     response=self.response("in_progress")))
        if d.text:
            if self._msg is None:
                self._msg = {"type": "message", "id": "msg_" + uuid.uuid4().hex,
                             "status": "in_progress", "role": "assistant", "content": []}
                self.items.append(self._msg)
                events.append(self._next("response.output_item.added",
                                         output_index=len(self.items) - 1,
                                         item=dict(self._msg, content=[])))
                events.append(self._next("response.content_part.added",
                                         item_id=self._msg["id"],
                                         output_index=len(self.items) - 1, content_index=0,
                                         part={"type": "output_text", "text": "",
                                               "annotations": []}))
            events.append(self._next("response.output_text.delta", item_id=self._msg["id"],
                                     output_index=self.items.index(self._msg),
                                     content_index=0, delta=d.text, logprobs=[]))
        for piece in d.calls:
            index = piece["index"]
            item = self._calls.get(index)
            if item is None:
                seen = self.writer.tool_calls[index]
                item = {"type": "function_call", "id": "fc_" + uuid.uuid4().hex,
                        "call_id": seen["id"] or f"call_{index}", "name": seen["name"] or "",
                        "arguments": "", "status": "in_progress"}
                self._calls[index] = item
                self.items.append(item)
                events.append(self._next("response.output_item.added",
                                         output_index=len(self.items) - 1, item=dict(item)))
            args = piece.get("arguments")
            if args:
                item["arguments"] += args
                events.append(self._next("response.function_call_arguments.delta",
                                         item_id=item["id"],
                                         output_index=self.items.index(item), delta=args))
        return events

    def _close_items(self) -> list[bytes]:
        events = []
        for i, item in enumerate(self.items):
            if item["type"] == "message":
                text = "".join(self.writer.text)
                part = {"type": "output_text", "text": text, "annotations": []}
                item["content"] = [part]
                events.append(self._next("response.output_text.done", item_id=item["id"],
                                         output_index=i, content_index=0, text=text,
                                         logprobs=[]))
                events.append(self._next("response.content_part.done", item_id=item["id"],
                                         output_index=i, content_index=0, part=part))
            else:
                events.append(self._next("response.function_call_arguments.done",
                                         item_id=item["id"], output_index=i,
                                         arguments=item["arguments"]))
            item["status"] = self.status if item["type"] == "message" else "completed"
            events.append(self._next("response.output_item.done", output_index=i,
                                     item=dict(item)))
        return events

    def end(self, route: dict[str, Any] | None, inp: int, out: int) -> list[bytes]:
        events = []
        if not self._started:
            self._started = True
            events.append(self._next("response.created", response=self.response("in_progress")))
        events.extend(self._close_items())
        status = self.status
        events.append(self._next(f"response.{status}",
                                 response=self.response(status, route, (inp, out))))
        return events

    def error(self, err: APIError) -> list[bytes]:
        return [self._next("error", code=err.code, message=err.message, param=err.param),
                self._next("response.failed", response=self.response(
                    "failed", error={"code": err.code or "server_error",
                                     "message": err.message}))]

    def body(self, route: dict[str, Any] | None, inp: int, out: int) -> dict[str, Any]:
        # Non-streaming: the output items are built from what the writer accumulated.
        text = "".join(self.writer.text)
        self.items = []
        if text:
            self.items.append({"type": "message", "id": "msg_" + uuid.uuid4().hex,
                               "status": self.status, "role": "assistant",
                               "content": [{"type": "output_text", "text": text,
                                            "annotations": []}]})
        for index, seen in sorted(self.writer.tool_calls.items()):
            self.items.append({"type": "function_call", "id": "fc_" + uuid.uuid4().hex,
                               "call_id": seen["id"] or f"call_{index}",
                               "name": seen["name"] or "", "arguments": seen["arguments"],
                               "status": "completed"})
        return self.response(self.status, route, (inp, out))
