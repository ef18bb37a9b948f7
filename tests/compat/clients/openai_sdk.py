"""The openai SDK's structured-output helpers and its own pydantic types against the proxy:
one JSON line per case on stdout.

Runs in the ``openai3`` environment (no STREAM imports). ``chat.completions.parse`` and
``responses.parse`` with a pydantic model; every Responses object (plain, streamed, with a
function call, cut at ``max_output_tokens``) and every streaming event is validated with the
SDK's types (``Response``, ``ResponseStreamEvent``), strictly: a missing required field fails.
Environment as in ``agents_sdk.py``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

try:  # openai 3 ships httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai
    import httpx  # type: ignore[no-redef]

URL, KEY = os.environ["STREAM_URL"], os.environ["STREAM_KEY"]
TEXT, TOOL = os.environ["STREAM_MODEL"], os.environ["STREAM_TOOL_MODEL"]
CLIENT = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=600)
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
           "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


class Capital(BaseModel):
    country: str
    capital: str


def post(path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(URL + path, json=body, headers={"authorization": f"Bearer {KEY}"},
                      timeout=600)


def sse(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    with httpx.stream("POST", URL + path, json=body, timeout=600,
                      headers={"authorization": f"Bearer {KEY}"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def strict_response(data: dict[str, Any]) -> Response:
    """Validate, then validate the SDK's own dump again (what re-parsing clients do)."""
    resp = Response.model_validate(data)
    return Response.model_validate(resp.model_dump(mode="json", by_alias=True))


def chat_parse() -> dict[str, Any]:
    done = CLIENT.chat.completions.parse(
        model=TEXT, messages=[{"role": "user", "content": "Which country has Paris as its "
                                                          "capital?"}],
        response_format=Capital, max_tokens=64, temperature=0, seed=7,
        frequency_penalty=0.1, presence_penalty=0.1)
    ChatCompletion.model_validate(done.model_dump(mode="json", by_alias=True))
    parsed = done.choices[0].message.parsed
    return {"parsed": parsed.model_dump() if parsed else None,
            "finish_reason": done.choices[0].finish_reason}


def chat_json_object_stream() -> dict[str, Any]:
    chunks = sse("/chat/completions", {
        "model": TEXT, "stream": True, "max_tokens": 64, "seed": 3,
        "stream_options": {"include_usage": True}, "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "Give a JSON object with a key 'colour'."}]})
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    return {"json": json.loads(text)}


def responses_parse() -> dict[str, Any]:
    done = CLIENT.responses.parse(model=TEXT, input="Which country has Paris as its capital?",
                                  text_format=Capital, max_output_tokens=64, temperature=0)
    strict_response(done.model_dump(mode="json", by_alias=True))
    return {"parsed": done.output_parsed.model_dump() if done.output_parsed else None,
            "status": done.status}


NEUTRAL = {"include": [], "truncation": "disabled", "metadata": {"run": "compat"},
           "parallel_tool_calls": True, "store": False, "tool_choice": "auto", "tools": [],
           "text": {"format": {"type": "text"}, "verbosity": "medium"}, "top_logprobs": 0,
           "service_tier": "auto", "reasoning": {}, "prompt_cache_key": "compat",
           "safety_identifier": "user-1"}


def responses_objects() -> dict[str, Any]:
    """Plain response with the API's neutral defaults; its metadata echoed."""
    r = post("/responses", {"model": TEXT, "input": "Name a colour.", "max_output_tokens": 24,
                            **NEUTRAL})
    r.raise_for_status()
    resp = strict_response(r.json())
    return {"status": resp.status, "text": resp.output_text, "metadata": resp.metadata,
            "cache_write_tokens": resp.usage.input_tokens_details.cache_write_tokens
            if resp.usage else None}


def responses_incomplete() -> dict[str, Any]:
    body = {"model": TEXT, "max_output_tokens": 4,
            "input": "Write a long story about a lighthouse keeper."}
    plain = strict_response(post("/responses", body).json())
    events = [EVENTS.validate_python(e) for e in sse("/responses", {**body, "stream": True})]
    last = events[-1]
    return {"status": plain.status, "reason": plain.incomplete_details.reason
            if plain.incomplete_details else None, "last_event": last.type,
            "last_status": last.response.status if hasattr(last, "response") else None,
            "item_status": [o.status for o in plain.output]}


def responses_stream_tool() -> dict[str, Any]:
    """A forced strict function call, streamed and plain; every event typed."""
    body = {"model": TOOL, "input": "What is the weather in Oslo?", "tools": [WEATHER],
            "tool_choice": "required", "parallel_tool_calls": False, "max_output_tokens": 64,
            "include": [], "truncation": "disabled"}
    events = [EVENTS.validate_python(e) for e in sse("/responses", {**body, "stream": True})]
    final = events[-1].response  # type: ignore[union-attr]
    strict_response(final.model_dump(mode="json", by_alias=True))
    plain = strict_response(post("/responses", body).json())
    calls = [o for o in plain.output if o.type == "function_call"]
    return {"event_types": [e.type for e in events], "tools": [t.model_dump() for t in
                                                                plain.tools],
            "calls": [{"name": c.name, "arguments": json.loads(c.arguments)} for c in calls],
            "final_status": final.status, "parallel_tool_calls": plain.parallel_tool_calls}


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "chat-parse": chat_parse, "chat-json-object-stream": chat_json_object_stream,
    "responses-parse": responses_parse, "responses-objects": responses_objects,
    "responses-incomplete": responses_incomplete, "responses-tool": responses_stream_tool,
}

if __name__ == "__main__":
    only = set(sys.argv[1:])
    for name, fn in CASES.items():
        if only and name not in only:
            continue
        try:
            out = {"ok": True, **fn()}
        except Exception as exc:
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "trace": traceback.format_exc()[-3000:]}
        print(json.dumps({"case": name, **out}, default=str), flush=True)
