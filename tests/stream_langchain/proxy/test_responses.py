"""The Responses API over the same engine: the official openai client's ``responses``
(plain, streamed events, function tools in both directions), and its refusals."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat

TOOL_SCRIPT = [
    {"index": 0, "id": "call_abc", "name": "get_weather", "args": ""},
    {"index": 0, "args": '{"city": '},
    {"index": 0, "args": '"Paris"}'},
]
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_plain_response(serve: ServeFn, keys: dict[str, str]) -> None:
    """A text input gets a completed response whose output_text is the tier's answer, with
    usage and the routing record; instructions arrive as a system message."""
    model = ScriptedModel(script=WORDS)
    server = serve(make_chat(model))
    resp = client(server.url, keys["user"]).responses.create(
        model="stream", input="What is a river?", instructions="Be brief.",
        max_output_tokens=16, temperature=0.2)
    assert resp.status == "completed" and resp.output_text == "".join(WORDS)
    assert resp.usage is not None and resp.usage.output_tokens == len(WORDS)
    assert resp.model_extra and resp.model_extra["stream"]["tier"] == "local"
    call = model.calls[-1]
    assert [type(m).__name__ for m in call["messages"]] == ["SystemMessage", "HumanMessage"]
    assert call["max_tokens"] == 16 and call["temperature"] == 0.2


def test_streamed_events(serve: ServeFn, keys: dict[str, str]) -> None:
    """Streaming sends created, item/part added, text deltas, done events and completed, in
    sequence order; the deltas join to the answer."""
    server = serve(make_chat())
    events = list(client(server.url, keys["user"]).responses.create(
        model="stream", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == "".join(WORDS)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == "".join(WORDS) and done.usage.output_tokens == len(WORDS)


def test_function_tools_round_trip(serve: ServeFn, keys: dict[str, str]) -> None:
    """A function tool call comes back whole (streamed arguments joined), and its output
    goes back in as function_call / function_call_output items."""
    model = ScriptedModel(script=TOOL_SCRIPT)
    server = serve(make_chat(model))
    c = client(server.url, keys["user"])
    resp = c.responses.create(model="stream", input="Weather in Paris?", tools=TOOLS)  # type: ignore[arg-type]
    (call,) = [o for o in resp.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    events = list(c.responses.create(model="stream", input="Weather in Paris?",
                                     tools=TOOLS, stream=True))  # type: ignore[arg-type]
    args = "".join(e.delta for e in events  # type: ignore[union-attr]
                   if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    c.responses.create(model="stream", tools=TOOLS, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_abc", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_abc", "output": "18 C"}])
    msgs = model.calls[-1]["messages"]
    assert [type(m).__name__ for m in msgs] == ["HumanMessage", "AIMessage", "ToolMessage"]
    assert msgs[1].tool_calls[0]["args"] == {"city": "Paris"} and msgs[2].content == "18 C"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "stream", "input": "hi", "previous_response_id": "resp_1"},
     "previous_response_id"),
    ({"model": "stream", "input": "hi", "store": True}, "store"),
    ({"model": "stream", "input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"model": "stream", "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0]"),
])
def test_unsupported_is_refused(serve: ServeFn, keys: dict[str, str], body: dict[str, object],
                                param: str) -> None:
    """What the proxy cannot honour is a 400 naming it."""
    server = serve(make_chat())
    r = httpx.post(server.url + "/v1/responses", json=body,
                   headers={"authorization": f"Bearer {keys['user']}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_failure_mid_stream_is_a_failed_event(serve: ServeFn, keys: dict[str, str]) -> None:
    """A tier dying after its first tokens ends the event stream with error and
    response.failed, never response.completed."""
    server = serve(make_chat(ScriptedModel(script=WORDS, fail_after=2), failover=False))
    events = list(client(server.url, keys["user"]).responses.create(
        model="stream", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
