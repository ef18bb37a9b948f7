"""The proxy speaks OpenAI chat completions to the official ``openai`` client and to
``ChatOpenAI``, over real uvicorn on loopback (instant scripted tier: this is about the
protocol)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from stream_langchain.proxy import ProxyServer, Store

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat, wait_for

MSG = [{"role": "user", "content": "What is the capital of France?"}]
# A tool call whose JSON arguments arrive in four pieces, as OpenAI and vLLM stream them.
TOOL_SCRIPT = [
    {"index": 0, "id": "call_abc", "name": "get_weather", "args": ""},
    {"index": 0, "args": '{"city": '},
    {"index": 0, "args": '"Paris", "unit"'},
    {"index": 0, "args": ': "celsius"}'},
]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string"}},
                   "required": ["city"]}}}]


def client(server: ProxyServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_models_lists_router_and_configured_tiers_only(serve: ServeFn, keys: dict[str, str]
                                                       ) -> None:
    """GET /v1/models names 'stream' plus one model per configured tier, no others."""
    chat = make_chat(ScriptedModel(script=WORDS), hpc=ScriptedModel(script=WORDS, name_="h"))
    server = serve(chat)
    ids = [m.id for m in client(server, keys["user"]).models.list()]
    assert ids == ["stream", "stream-local", "stream-hpc"]
    one = client(server, keys["user"]).models.retrieve("stream-hpc")
    assert one.model_extra and one.model_extra["stream"]["model"] == "h"


def test_non_streaming_completion_with_route_header(serve: ServeFn, keys: dict[str, str]
                                                    ) -> None:
    """A plain completion has the whole answer, usage, finish_reason 'stop', the routing
    record in the body's 'stream' field and in x-stream-route."""
    server = serve(make_chat())
    raw = client(server, keys["user"]).chat.completions.with_raw_response.create(
        model="stream", messages=MSG)
    resp = raw.parse()
    assert resp.choices[0].message.content == "".join(WORDS)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (11, len(WORDS))
    route = json.loads(raw.headers["x-stream-route"])
    assert route["tier"] == "local" and route["model"] == "scripted-1"
    assert resp.model_extra and resp.model_extra["stream"]["tier"] == "local"
    assert raw.headers["x-ratelimit-limit-requests"] == "60"


def test_streaming_chunks_usage_and_done(serve: ServeFn, keys: dict[str, str]) -> None:
    """Streaming sends role then content deltas, a finish chunk with the record, a usage
    chunk when asked, then [DONE]."""
    server = serve(make_chat())
    chunks = list(client(server, keys["user"]).chat.completions.create(
        model="stream-local", messages=MSG, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(WORDS)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert finish[0].model_extra and finish[0].model_extra["stream"]["override"] == "local"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(WORDS)


def test_raw_sse_ends_with_done(serve: ServeFn, keys: dict[str, str]) -> None:
    """On the wire: data: lines, x-stream-route header at once, last event data: [DONE]."""
    server = serve(make_chat())
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "messages": MSG, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert json.loads(r.headers["x-stream-route"])["tier"] == "local"
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


async def test_async_client_stream_and_create(serve: ServeFn, keys: dict[str, str]) -> None:
    """The async openai client streams and completes too."""
    server = serve(make_chat())
    ac = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    resp = await ac.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    assert resp.choices[0].message.content == "".join(WORDS)
    parts = []
    stream = await ac.chat.completions.create(model="stream", messages=MSG,  # type: ignore[arg-type]
                                              stream=True)
    async for c in stream:
        if c.choices and c.choices[0].delta.content:
            parts.append(c.choices[0].delta.content)
    assert "".join(parts) == "".join(WORDS)
    await ac.close()


def test_parameters_reach_the_tier(serve: ServeFn, keys: dict[str, str]) -> None:
    """temperature, max_completion_tokens, stop and response_format are passed to the tier;
    system/assistant/tool roles arrive as LangChain messages."""
    model = ScriptedModel(script=WORDS)
    server = serve(make_chat(model))
    client(server, keys["user"]).chat.completions.create(
        model="stream", temperature=0.3, max_completion_tokens=7, stop=["\n\n"],
        response_format={"type": "json_object"},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [{
                      "id": "c1", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "3 C"},
                  {"role": "user", "content": "And tomorrow?"}])
    call = model.calls[-1]
    assert call["temperature"] == 0.3 and call["max_tokens"] == 7
    assert call["stop"] == ["\n\n"] and call["response_format"] == {"type": "json_object"}
    kinds = [type(m).__name__ for m in call["messages"]]
    assert kinds == ["SystemMessage", "HumanMessage", "AIMessage", "ToolMessage", "HumanMessage"]
    assert call["messages"][2].tool_calls[0]["args"] == {"city": "Oslo"}


def test_tool_call_arguments_intact_when_streamed(serve: ServeFn, keys: dict[str, str]) -> None:
    """A tool call streamed in pieces reaches the client whole: id, name and the joined
    arguments parse as the JSON the tier produced; finish_reason is tool_calls."""
    model = ScriptedModel(script=TOOL_SCRIPT)
    server = serve(make_chat(model))
    chunks = list(client(server, keys["user"]).chat.completions.create(
        model="stream", messages=MSG, tools=TOOLS, tool_choice="auto",  # type: ignore[arg-type]
        stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_abc" and calls[0].function
    assert calls[0].function.name == "get_weather"
    args = "".join((tc.function.arguments or "") for tc in calls if tc.function)
    assert json.loads(args) == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert model.calls[-1]["tools"][0]["function"]["name"] == "get_weather"
    assert model.calls[-1]["tool_choice"] == "auto"


def test_tool_call_non_streaming(serve: ServeFn, keys: dict[str, str]) -> None:
    """Non-streaming, the message carries tool_calls with complete arguments."""
    server = serve(make_chat(ScriptedModel(script=TOOL_SCRIPT)))
    resp = client(server, keys["user"]).chat.completions.create(
        model="stream", messages=MSG, tools=TOOLS)  # type: ignore[arg-type]
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(msg.tool_calls[0].function.arguments) == {  # type: ignore[union-attr]
        "city": "Paris", "unit": "celsius"}


def test_chat_openai_against_the_proxy(serve: ServeFn, keys: dict[str, str]) -> None:
    """LangChain's ChatOpenAI works unchanged against the proxy: invoke, stream, tool calls."""
    server = serve(make_chat())
    llm = ChatOpenAI(base_url=server.url + "/v1", api_key=keys["user"],  # type: ignore[arg-type]
                     model="stream", max_retries=0, stream_usage=True)
    msg = llm.invoke([HumanMessage("hi")])
    assert msg.content == "".join(WORDS)
    assert msg.response_metadata["model_name"] == "stream"
    chunks = list(llm.stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "".join(WORDS)
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == len(WORDS)

    tool_server = serve(make_chat(ScriptedModel(script=TOOL_SCRIPT)))
    tllm = ChatOpenAI(base_url=tool_server.url + "/v1", api_key=keys["user"],  # type: ignore[arg-type]
                      model="stream", max_retries=0).bind_tools(TOOLS)
    call = tllm.invoke("weather in Paris?").tool_calls[0]  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris", "unit": "celsius"}
    streamed: Any = None
    for c in tllm.stream("weather in Paris?"):
        streamed = c if streamed is None else streamed + c
    assert streamed.tool_calls[0]["args"] == {"city": "Paris", "unit": "celsius"}


def test_failover_mid_stream_is_visible(serve: ServeFn, keys: dict[str, str]) -> None:
    """A tier dying after its first tokens fails over; the last chunk's record says so."""
    dying = ScriptedModel(script=WORDS, fail_after=2, name_="dying")
    chat = make_chat(dying, hpc=ScriptedModel(script=[" rest"], name_="backup"))
    server = serve(chat)
    chunks = list(client(server, keys["user"]).chat.completions.create(
        model="stream", messages=MSG, stream=True))
    rec = chunks[-1].model_extra["stream"]  # type: ignore[index]
    assert rec["failover"] is True and rec["tiers"] == ["local", "hpc"]
    assert rec["fallbacks"][0]["tier"] == "local"


def test_store_is_not_in_the_route(serve: ServeFn, keys: dict[str, str], store: Store) -> None:
    """No key or database URL ever appears in a response header or body."""
    server = serve(make_chat())
    with httpx.Client() as h:
        r = h.post(server.url + "/v1/chat/completions", json={"model": "stream", "messages": MSG},
                   headers={"authorization": f"Bearer {keys['user']}"})
    blob = r.text + json.dumps(dict(r.headers))
    assert keys["user"] not in blob and keys["user"][-20:] not in blob
    assert store.url_safe not in blob


@pytest.mark.parametrize("n", [1])
def test_n_equal_one_is_accepted(serve: ServeFn, keys: dict[str, str], n: int) -> None:
    """n=1 (what many clients send) is the default behaviour and accepted."""
    server = serve(make_chat())
    resp = client(server, keys["user"]).chat.completions.create(model="stream", messages=MSG,  # type: ignore[arg-type]
                                                                n=n)
    assert len(resp.choices) == 1


class GatedModel(ScriptedModel):
    """Opens its stream with an OpenAI-style role chunk (no content) at once, then holds the
    first token until ``gate`` is set."""

    gate: Any = None

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> Any:
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        yield ChatGenerationChunk(message=AIMessageChunk(content=""))
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk


def test_headers_go_out_when_the_tiers_stream_begins_not_at_its_first_token(
        serve: ServeFn, keys: dict[str, str], store: Store) -> None:
    """The response (200, ``x-stream-route``, a role-only delta) starts as soon as the tier's
    stream has begun, while its first token is still held back; the usage row's TTFT is the
    first token's, not the headers'."""
    gate = threading.Event()
    server = serve(make_chat(GatedModel(script=WORDS, gate=gate)))
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream-local", "messages": MSG, "stream": True}) as r:
        headers_at = time.perf_counter()
        assert r.status_code == 200 and not gate.is_set()
        assert json.loads(r.headers["x-stream-route"])["tier"] == "local"
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        assert json.loads(first[6:])["choices"][0]["delta"] == {"role": "assistant",
                                                                "content": ""}
        gate_at = time.perf_counter()
        gate.set()
        text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                       for line in lines if line.startswith("data: {")
                       and json.loads(line[6:])["choices"])
    assert text == "".join(WORDS)
    wait_for(lambda: len(store.rows()) == 1)
    (row,) = store.rows()
    assert row["ttft_ms"] >= (gate_at - headers_at) * 1000.0
