"""Tool calling and structured output of in-process llama.cpp models (ChatLlamaCpp).

Parsing is checked on the shapes the Qwen models really write; the slow tests run the real
0.5B instruct model (and the Gemma base model, which cannot call tools).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from stream_langchain.tiers._llama_tools import (
    coerce_args,
    forced_tools,
    parse_tool_calls,
    prepare_messages,
    tool_call_schema,
)

ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                    "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}


def _names(calls: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(c["name"], c["args"]) for c in calls]


def test_tagged_fenced_and_bare_calls_are_parsed() -> None:
    """<tool_call> tags (Qwen's documented form), a ```json fence and a bare object (what the
    models write in practice) all give the call; the tags leave the text around them."""
    tagged = 'Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    calls, rest = parse_tool_calls(tagged, {"add"})
    assert _names(calls) == [("add", {"a": 1, "b": 2})] and rest == "Sure."
    fenced = '```json\n{\n  "name": "add",\n  "arguments": {\n    "a": 3, "b": 4\n  }\n}\n```'
    assert _names(parse_tool_calls(fenced, {"add"})[0]) == [("add", {"a": 3, "b": 4})]
    bare = '{"name": "add", "arguments": "{\\"a\\": 5, \\"b\\": 6}"}'
    assert _names(parse_tool_calls(bare, {"add"})[0]) == [("add", {"a": 5, "b": 6})]
    lines = '{"name": "add", "arguments": {"a": 1}}\n{"name": "add", "arguments": {"a": 2}}'
    assert [c["args"] for c in parse_tool_calls(lines, {"add"})[0]] == [{"a": 1}, {"a": 2}]


def test_text_and_calls_to_unbound_tools_stay_text() -> None:
    """Prose, JSON naming a tool that is not bound, arguments that are not an object, and a
    call cut short are text, not calls."""
    for text in ("The answer is 3.", '{"name": "rm_rf", "arguments": {}}',
                 '{"name": "add", "arguments": [1, 2]}', '{"name": "add", "arguments": {"a":'):
        assert parse_tool_calls(text, {"add"}) == ([], text)


def test_arguments_written_as_strings_are_coerced_to_the_schema() -> None:
    """"12" for an integer becomes 12; what does not parse is left for the tool to refuse."""
    params = ADD["function"]["parameters"]  # type: ignore[index]
    assert coerce_args({"a": "12", "b": "x"}, params) == {"a": 12, "b": "x"}
    assert coerce_args({"on": "true"}, {"properties": {"on": {"type": "boolean"}}}) == {
        "on": True}


def test_forced_choices() -> None:
    """auto/none force nothing; any/required/True force the bound tools; a name forces that
    tool, and an unknown name is a ValueError naming the bound ones."""
    assert forced_tools([ADD], "auto") is None and forced_tools([ADD], "none") is None
    assert forced_tools([ADD], "any") == [ADD] == forced_tools([ADD], True)
    assert forced_tools([ADD], {"type": "function", "function": {"name": "add"}}) == [ADD]
    with pytest.raises(ValueError, match=r"'mul', which is not a bound tool \(add\)"):
        forced_tools([ADD], "mul")
    schema = tool_call_schema([ADD])
    assert schema["properties"]["name"] == {"const": "add"}


def test_history_tool_calls_carry_argument_objects() -> None:
    """Assistant tool calls in the history reach the template with their arguments as an
    object (Qwen's template serializes them itself)."""
    msgs = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}]
    out = prepare_messages(msgs)
    assert out[0]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert out[0]["content"] == "" and msgs[0]["content"] is None  # the input is untouched


# --------------------------------------------------------------------------- real models


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return "sunny"


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


@pytest.fixture(scope="module")
def qwen() -> Any:
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    return ChatLlamaCpp(max_tokens=96, temperature=0)


@pytest.mark.slow
def test_the_instruct_model_calls_a_tool_when_asked(qwen: Any) -> None:
    """tool_choice auto: the 0.5B calls get_weather with the city from the question."""
    msg = qwen.bind_tools([get_weather]).invoke("What's the weather in Paris?")
    assert _names(msg.tool_calls) == [("get_weather", {"city": "Paris"})]
    assert msg.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.slow
def test_a_forced_choice_always_gives_a_valid_call(qwen: Any) -> None:
    """tool_choice='any' forces a call (grammar-constrained) even for a question that does
    not need one."""
    msg = qwen.bind_tools([get_weather], tool_choice="any").invoke("Write a haiku.")
    assert [c["name"] for c in msg.tool_calls] == ["get_weather"]
    assert isinstance(msg.tool_calls[0]["args"]["city"], str)


@pytest.mark.slow
def test_structured_output_returns_the_schema(qwen: Any) -> None:
    """with_structured_output(Joke) returns a Joke with both fields filled."""
    joke = qwen.with_structured_output(Joke).invoke("Tell me a joke about cats.")
    assert isinstance(joke, Joke) and joke.setup and joke.punchline


@pytest.mark.slow
def test_a_model_without_a_tool_template_refuses_tools() -> None:
    """The Gemma base model (no chat template of its own): bind_tools raises
    NotImplementedError naming the model, and its profile says it cannot call tools."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    gemma = ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=4)
    assert gemma.profile is not None and gemma.profile["tool_calling"] is False
    with pytest.raises(NotImplementedError, match="gemma-3-270m-q4_k_m.gguf"):
        gemma.bind_tools([get_weather])
