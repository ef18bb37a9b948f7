"""The in-process llama.cpp tier honours what the proxy passes on: ``response_format`` (a
JSON-schema grammar: the answer is valid JSON for the schema on any CPU), ``json_object``,
``seed`` and penalties, ``parallel_tool_calls=False``; with tools and a schema the answer is a
tool call or that JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stream_langchain.tiers.llamacpp import ChatLlamaCpp, answer_schema

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["country", "capital"],
          "properties": {"country": {"type": "string"}, "capital": {"type": "string"}}}
FORMAT = {"type": "json_schema", "json_schema": {"name": "capital", "schema": SCHEMA,
                                                 "strict": True}}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def valid(text: str) -> None:
    """``text`` is JSON valid for SCHEMA."""
    value = json.loads(text)
    assert isinstance(value, dict) and set(value) == {"country", "capital"}
    assert all(isinstance(v, str) for v in value.values())


def test_answer_schema_refuses_unknown_types() -> None:
    """An unknown ``response_format`` type is an error, never plain text."""
    with pytest.raises(ValueError, match="not one of"):
        answer_schema({"type": "xml"})


@pytest.fixture(scope="module")
def qwen() -> Iterator[ChatLlamaCpp]:
    yield ChatLlamaCpp(max_tokens=64, temperature=0.0)


@pytest.mark.slow
def test_json_schema_answer_is_valid(qwen: ChatLlamaCpp) -> None:
    """``response_format: json_schema`` -> JSON valid against the schema, streamed or not,
    with seed and penalties taken."""
    msg = qwen.invoke("Which country has Paris as its capital?", response_format=FORMAT,
                      seed=5, frequency_penalty=0.2, presence_penalty=0.1)
    valid(str(msg.content))
    text = "".join(str(c.content) for c in qwen.stream("Name a capital city.",
                                                       response_format=FORMAT))
    valid(text)
    obj = qwen.invoke("Describe a colour.", response_format={"type": "json_object"})
    assert isinstance(json.loads(str(obj.content)), dict)


@pytest.mark.slow
def test_tools_with_a_schema_give_a_call_or_that_json(qwen: ChatLlamaCpp) -> None:
    """Tools offered and a schema asked: the answer is a parsed tool call or JSON valid for the
    schema, never free text; ``parallel_tool_calls=False`` keeps at most one call."""
    bound = qwen.bind_tools(TOOLS)
    for question in ("What is the weather in Paris and in Rome?",
                     "Which country has Paris as its capital?"):
        msg = bound.invoke(question, response_format=FORMAT, parallel_tool_calls=False)
        assert len(msg.tool_calls) <= 1  # type: ignore[attr-defined]
        if not msg.tool_calls:  # type: ignore[attr-defined]
            valid(str(msg.content))
