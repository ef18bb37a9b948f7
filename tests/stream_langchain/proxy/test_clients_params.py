"""What real clients send by default is accepted, and what the tiers can honour reaches them:
neutral values (``include: []``, ``truncation: "disabled"``, ...), ``seed``, penalties,
``parallel_tool_calls``, ``response_format`` / ``text.format``, a tool's ``strict``; Responses
objects are complete (``incomplete`` at ``max_output_tokens``, every usage field); the access
log names the code and parameter of every 4xx. (The real clients: ``tests/compat``.)"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from openai.types.responses import Response

from stream_langchain.proxy.ops import ACCESS_LOGGER

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat, wait_for

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
TOOL = {"type": "function", "name": "get_weather", "strict": True, "parameters": SCHEMA}


class CutModel(ScriptedModel):
    """A ScriptedModel whose answer stops at the token limit (``finish_reason: length``)."""

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            if chunk.message.response_metadata.get("finish_reason"):
                chunk = ChatGenerationChunk(message=AIMessageChunk(
                    content="", usage_metadata=chunk.message.usage_metadata,  # type: ignore[attr-defined]
                    response_metadata={"finish_reason": "length"}))
            yield chunk


def post(url: str, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1" + path, json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"} if key else {})


def test_responses_neutral_defaults_accepted_and_echoed(serve: ServeFn,
                                                        keys: dict[str, str]) -> None:
    """The Agents SDK's ``include: []`` and the API's own defaults are a 200; the response
    validates against the SDK's ``Response`` (twice: its dump too) and echoes metadata,
    truncation, text.format and parallel_tool_calls."""
    server = serve(make_chat())
    body = {"model": "stream", "input": "hi", "include": [], "truncation": "disabled",
            "metadata": {"k": "v"}, "store": False, "parallel_tool_calls": False,
            "text": {"format": {"type": "text"}, "verbosity": "medium"}, "top_logprobs": 0,
            "service_tier": "auto", "reasoning": {}, "user": "u", "prompt_cache_key": "p",
            "safety_identifier": "s", "stream_options": None}
    r = post(server.url, keys["user"], "/responses", body)
    assert r.status_code == 200, r.text
    resp = Response.model_validate(Response.model_validate(r.json()).model_dump(mode="json"))
    assert resp.metadata == {"k": "v"} and resp.truncation == "disabled"
    assert resp.parallel_tool_calls is False and resp.text and resp.text.format
    assert resp.usage and resp.usage.input_tokens_details.cache_write_tokens == 0
    assert resp.status == "completed" and resp.incomplete_details is None


@pytest.mark.parametrize(("extra", "param"), [
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"text": {"verbosity": "high"}}, "text.verbosity"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"background": True}, "background"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
])
def test_responses_non_default_values_refused(serve: ServeFn, keys: dict[str, str],
                                              extra: dict[str, Any], param: str) -> None:
    """A value the proxy would not honour is a 400 naming the field."""
    server = serve(make_chat())
    r = post(server.url, keys["user"], "/responses", {"model": "stream", "input": "hi", **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_responses_incomplete_at_the_token_limit(serve: ServeFn, keys: dict[str, str]) -> None:
    """``finish_reason: length`` -> ``status: incomplete``, ``incomplete_details.reason:
    max_output_tokens``, the message item incomplete, the stream's last event
    ``response.incomplete``."""
    server = serve(make_chat(CutModel(script=WORDS)))
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    resp = c.responses.create(model="stream", input="hi", max_output_tokens=6)
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert [o.status for o in resp.output] == ["incomplete"]  # type: ignore[union-attr]
    events = list(c.responses.create(model="stream", input="hi", max_output_tokens=6,
                                     stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "incomplete"  # type: ignore[union-attr]


def test_structured_output_and_sampling_reach_the_tier(serve: ServeFn,
                                                       keys: dict[str, str]) -> None:
    """``response_format``, ``seed``, penalties and ``parallel_tool_calls`` arrive at the tier
    (chat completions), and ``text.format`` arrives as a chat ``response_format`` with a
    strict tool kept (Responses)."""
    model = ScriptedModel(script=WORDS)
    server = serve(make_chat(model))
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA,
                                                  "strict": True}}
    r = post(server.url, keys["user"], "/chat/completions", {
        "model": "stream", "messages": [{"role": "user", "content": "hi"}], "seed": 7,
        "frequency_penalty": 0.5, "presence_penalty": -0.5, "response_format": fmt,
        "logprobs": False, "n": 1, "store": False, "metadata": {}, "service_tier": "auto",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA,
                                                    "strict": True}}],
        "parallel_tool_calls": False})
    assert r.status_code == 200, r.text
    call = model.calls[-1]
    assert call["response_format"] == fmt and call["seed"] == 7
    assert (call["frequency_penalty"], call["presence_penalty"]) == (0.5, -0.5)
    assert call["parallel_tool_calls"] is False
    r = post(server.url, keys["user"], "/responses", {
        "model": "stream", "input": "hi", "tools": [TOOL], "tool_choice": "auto",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": SCHEMA,
                            "strict": True}}})
    assert r.status_code == 200, r.text
    call = model.calls[-1]
    assert call["response_format"]["json_schema"] == {"name": "w", "schema": SCHEMA,
                                                      "strict": True}
    assert call["tools"][0]["function"]["strict"] is True
    assert r.json()["tools"][0]["strict"] is True


def test_access_log_names_the_error_code_and_param(serve: ServeFn, keys: dict[str, str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Every 4xx's access-log line carries ``error_code`` and ``error_param``: a refused
    parameter, a validation error, an unknown model, a missing key, an unknown route."""
    server = serve(make_chat())
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        post(server.url, keys["user"], "/responses", {"model": "stream", "input": "hi",
                                                      "include": ["x"]})
        post(server.url, keys["user"], "/chat/completions",
             {"model": "stream", "messages": [{"role": "user", "content": "hi"}],
              "temperature": 9})
        post(server.url, keys["user"], "/chat/completions",
             {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})
        post(server.url, "", "/chat/completions", {})
        post(server.url, keys["user"], "/nowhere", {})
        wait_for(lambda: len([r for r in caplog.records if r.name == ACCESS_LOGGER]) >= 5)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    got = [(line["status"], line.get("error_code"), line.get("error_param")) for line in lines]
    assert got == [(400, "unsupported_parameter", "include"),
                   (422, "invalid_value", "temperature"),
                   (404, "model_not_found", "model"),
                   (401, "missing_api_key", None),
                   (404, "not_found", None)]
