"""The OpenAI Responses API over the same engine: text and images in, text out, streaming
events, function tools.

A Responses request is translated to the chat-completions form (``instructions`` -> a system
message, ``input`` items -> messages, ``input_image`` parts -> ``image_url`` parts,
``function_call`` / ``function_call_output`` items -> assistant tool calls and tool messages,
function tools -> chat tools) and validated by the same rules; the answer is sent as a
``response`` object or as the typed event stream (``response.created``,
``response.output_item.added``, ``response.output_text.delta``, ..., ``response.completed``,
or ``response.incomplete`` with ``incomplete_details.reason: "max_output_tokens"`` when the
answer hit the limit). ``text.format`` (``json_schema``, ``json_object``) becomes the chat
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

from langchain_core.messages import AIMessageChunk
from pydantic import BaseModel, ConfigDict, Field

from stream_langchain.proxy.errors import APIError
from stream_langchain.proxy.schema import (
    ChatRequest,
    ChunkWriter,
    MessageLimits,
    image_part,
    parse_chat_request,
    part_error,
    refused,
    validate_body,
)

__all__ = ["ResponsesEncoder", "ResponsesRequest", "parse_responses_request"]

_PASS = ("temperature", "top_p", "parallel_tool_calls")
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
_IGNORED = frozenset({"user", "safety_identifier", "prompt_cache_key"})
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


def _parts(content: Any, i: int, role: Any) -> Any:
    """A message item's content in chat-completions form: text parts, and (user turns)
    ``input_image`` parts as ``image_url`` parts."""
    if isinstance(content, str) or content is None:
        return content or ""
    if not isinstance(content, list):
        raise APIError(400, f"input[{i}].content must be a string or a list of parts",
                       param=f"input[{i}].content", code="invalid_content")
    out = []
    for j, part in enumerate(content):
        at = f"input[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and role == "user":
            if part.get("file_id") is not None:
                raise APIError(400, f"{at}.file_id: STREAM keeps no files; send the image "
                                    "inline as image_url 'data:image/<type>;base64,...' or "
                                    "by http(s) URL", param=f"{at}.file_id",
                               code="unsupported_content")
            out.append(image_part(part.get("image_url"), part.get("detail"),
                                  url_param=f"{at}.image_url", detail_param=f"{at}.detail"))
        else:
            raise part_error(at, kind, role, "input_text, input_image" if role == "user"
                             else "input_text, output_text")
    return out


def _messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if req.instructions:
        msgs.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        msgs.append({"role": "user", "content": req.input})
        return msgs
    for i, item in enumerate(req.input):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            msgs.append({"role": role, "content": _parts(item.get("content"), i, role)})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if msgs and msgs[-1]["role"] == "assistant" and msgs[-1].get("tool_calls"):
                msgs[-1]["tool_calls"].append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            msgs.append({"role": "tool", "tool_call_id": item.get("call_id"),
                         "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise APIError(400, f"input[{i}] has type {kind!r}; supported: message, "
                                "function_call, function_call_output", param=f"input[{i}].type",
                           code="unsupported_input")
    return msgs


def parse_responses_request(body: bytes, *, limits: MessageLimits) -> ChatRequest:
    """Validate a Responses body and translate it to a :class:`ChatRequest`.

    Raises:
        APIError: 400 (not JSON, unsupported parameters or items), 413, 422.
    """
    req = validate_body(body, ResponsesRequest)
    values = {**(req.model_extra or {}), "store": req.store, "truncation": req.truncation}
    unsupported = refused(values, _NEUTRAL, _IGNORED)
    text = req.text or {}
    unsupported += sorted(f"text.{k}" for k in set(text) - _TEXT_KEYS)
    if text.get("verbosity") not in (None, "medium"):
        unsupported.append(f"text.verbosity={text['verbosity']!r}")
    if unsupported:
        raise APIError(400, "unsupported parameter(s): " + ", ".join(unsupported)
                       + " (STREAM honours model, input, instructions, stream, tools, "
                         "tool_choice, parallel_tool_calls, temperature, top_p, "
                         "max_output_tokens, text.format, metadata; it keeps no responses: "
                         "store=false only)",
                       param=unsupported[0].split("=")[0], code="unsupported_parameter")
    chat: dict[str, Any] = {"model": req.model, "messages": _messages(req),
                            "stream": bool(req.stream)}
    for name in _PASS:
        if getattr(req, name) is not None:
            chat[name] = getattr(req, name)
    if req.max_output_tokens is not None:
        chat["max_tokens"] = req.max_output_tokens
    if req.tools:
        chat["tools"] = [_chat_tool(tool, j) for j, tool in enumerate(req.tools)]
    if req.tool_choice is not None:
        choice = req.tool_choice
        if isinstance(choice, dict) and choice.get("type") == "function":
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        chat["tool_choice"] = choice
    fmt = text.get("format")
    if fmt is not None:
        chat["response_format"] = _chat_format(fmt)
    try:
        out = parse_chat_request(json.dumps(chat).encode(), limits=limits)
    except APIError as exc:  # name the Responses field, not its chat-completions twin
        if exc.param and exc.param.startswith("response_format"):
            exc.param = "text.format"
            exc.message = exc.message.replace("response_format.json_schema.", "text.format.")
            exc.message = exc.message.replace("response_format", "text.format")
        raise
    out.extra = {"instructions": req.instructions, "tools": req.tools or [],
                 "tool_choice": req.tool_choice or "auto",
                 "parallel_tool_calls": req.parallel_tool_calls is not False,
                 "metadata": req.metadata or {}, "truncation": req.truncation or "disabled",
                 "text": {"format": fmt or {"type": "text"}, "verbosity": "medium"}}
    return out


def _chat_tool(tool: dict[str, Any], j: int) -> dict[str, Any]:
    """A Responses function tool in chat-completions form (``strict`` kept)."""
    if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        raise APIError(400, f"tools[{j}]: only function tools ({{'type': 'function', "
                            "'name': ..., 'parameters': ...}) are supported",
                       param=f"tools[{j}]", code="invalid_tools")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict")
          if tool.get(k) is not None}
    return {"type": "function", "function": fn}


def _chat_format(fmt: Any) -> dict[str, Any]:
    """``text.format`` as a chat-completions ``response_format``."""
    if not isinstance(fmt, dict):
        raise APIError(400, "text.format must be an object with a 'type'",
                       param="text.format", code="invalid_response_format")
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type")}


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    body = json.dumps({"type": kind, "sequence_number": seq, **fields}, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n".encode()


class ResponsesEncoder:
    """``response`` objects and Responses streaming events from engine chunks."""

    def __init__(self, req: ChatRequest) -> None:
        self.req = req
        self.writer = ChunkWriter(req.model)
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
        delta = self.writer.feed(message)
        if delta is None:
            return []
        events: list[bytes] = []
        if not self._started:
            self._started = True
            events.append(self._next("response.created", response=self.response("in_progress")))
            events.append(self._next("response.in_progress",
                                     response=self.response("in_progress")))
        d = delta["choices"][0]["delta"]
        if d.get("content"):
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
                                     content_index=0, delta=d["content"], logprobs=[]))
        for piece in d.get("tool_calls") or []:
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
            args = (piece.get("function") or {}).get("arguments")
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
