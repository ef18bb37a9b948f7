"""The two wire formats parse into one request and name the client's own parameters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage

from stream_langchain.proxy import MessageLimits
from stream_langchain.proxy.chat_completions import ChatEncoder, parse_chat_request
from stream_langchain.proxy.errors import APIError
from stream_langchain.proxy.responses import ResponsesEncoder, parse_responses_request


def _responses(body: dict[str, Any], limits: MessageLimits | None = None) -> APIError:
    with pytest.raises(APIError) as info:
        parse_responses_request(json.dumps({"model": "stream", **body}).encode(),
                                limits=limits or MessageLimits())
    return info.value


def _chat(body: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as info:
        parse_chat_request(json.dumps({"model": "stream", **body}).encode(),
                           limits=MessageLimits())
    return info.value


def test_responses_bad_role_names_the_input_item_not_a_shifted_message() -> None:
    """A bad role in input[0] is input[0].role even with instructions before it."""
    err = _responses({"instructions": "Be brief.",
                      "input": [{"role": "robot", "content": "hi"}]})
    assert (err.status, err.param, err.code) == (400, "input[0].role", "invalid_role")
    assert err.message.startswith("input[0].role is 'robot'")


def test_chat_bad_role_names_the_message() -> None:
    """A bad role in messages[1] is messages[1].role."""
    err = _chat({"messages": [{"role": "user", "content": "a"},
                              {"role": "robot", "content": "b"}]})
    assert (err.param, err.code) == ("messages[1].role", "invalid_role")


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "a",
                                         "schema": "no"}}}, "text.format.schema"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
     "input[0].name"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f",
                 "arguments": "{oops"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "output": "18 C"}]}, "input[0].call_id"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0]"),
    ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
])
def test_responses_errors_name_responses_fields(body: dict[str, Any], param: str) -> None:
    """Each refusal names the Responses field, never its chat-completions twin."""
    err = _responses(body)
    assert err.status == 400 and err.param == param, err.body()
    assert "response_format" not in err.message and "messages[" not in err.message


def test_responses_message_limits_name_the_input() -> None:
    """Limits are checked on the Responses items and name them."""
    too_long = _responses({"instructions": "x", "input": [{"role": "user", "content": "y" * 11}]},
                          MessageLimits(max_message_chars=10))
    assert (too_long.status, too_long.param) == (413, "input[0].content")
    too_many = _responses({"input": [{"role": "user", "content": "y"}] * 3},
                          MessageLimits(max_messages=2))
    assert (too_many.status, too_many.param) == (413, "input")


def test_unsupported_parameter_message_is_the_same_shape_in_both_formats() -> None:
    """One refusal for parameters STREAM does not honour: same code, same wording."""
    chat = _chat({"messages": [{"role": "user", "content": "a"}], "best_of": 2})
    resp = _responses({"input": "a", "best_of": 2})
    assert chat.code == resp.code == "unsupported_parameter"
    assert chat.param == resp.param == "best_of"
    for err in (chat, resp):
        assert err.message.startswith("unsupported parameter(s): best_of (STREAM honours ")


def test_tool_validation_is_the_same_in_both_formats() -> None:
    """A non-function tool is the same 400 in both formats, at tools[j]."""
    chat = _chat({"messages": [{"role": "user", "content": "a"}],
                  "tools": [{"type": "web_search"}]})
    resp = _responses({"input": "a", "tools": [{"type": "web_search"}]})
    assert chat.code == resp.code == "invalid_tools" and chat.param == resp.param == "tools[0]"
    assert "only function tools" in chat.message and "only function tools" in resp.message


def test_both_formats_parse_to_the_same_request() -> None:
    """The same conversation in either format is the same messages and keyword arguments."""
    tool = {"name": "get", "description": "d", "parameters": {"type": "object"}}
    chat = parse_chat_request(json.dumps({
        "model": "stream", "max_tokens": 7, "temperature": 0.5,
        "tools": [{"type": "function", "function": tool}],
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c1", "type": "function",
                          "function": {"name": "get", "arguments": "{\"a\": 1}"}}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "42"}]}).encode(),
        limits=MessageLimits())
    resp = parse_responses_request(json.dumps({
        "model": "stream", "max_output_tokens": 7, "temperature": 0.5,
        "tools": [{"type": "function", **tool}], "instructions": "Be brief.",
        "input": [{"role": "user", "content": "hi"},
                  {"type": "function_call", "call_id": "c1", "name": "get",
                   "arguments": "{\"a\": 1}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "42"}]}).encode(),
        limits=MessageLimits())
    assert chat.kwargs == resp.kwargs
    assert [type(m) for m in chat.messages] == [type(m) for m in resp.messages]
    assert [m.content for m in chat.messages] == [m.content for m in resp.messages]
    assert isinstance(resp.messages[0], SystemMessage)
    assert isinstance(resp.messages[1], HumanMessage)
    assert isinstance(resp.messages[2], AIMessage)
    assert resp.messages[2].tool_calls == chat.messages[2].tool_calls  # type: ignore[attr-defined]


def test_encoders_share_the_chunk_accounting() -> None:
    """Both encoders account text and tool calls through the same writer."""
    req = parse_chat_request(b'{"model": "stream", "messages": [{"role": "user", '
                             b'"content": "hi"}]}', limits=MessageLimits())
    for enc in (ChatEncoder(req), ResponsesEncoder(req)):
        enc.chunk(AIMessageChunk(content="a"))
        enc.chunk(AIMessageChunk(content="", tool_call_chunks=[
            {"index": 0, "id": "c", "name": "f", "args": "{}", "type": "tool_call_chunk"}]))
        assert enc.writer.text == ["a"] and enc.writer.finish == "tool_calls"
        assert enc.writer.tool_calls[0] == {"id": "c", "name": "f", "arguments": "{}"}
