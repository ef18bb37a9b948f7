"""LlamaIndex <-> LangChain conversions (pure: no model), including tool calls both ways."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from llama_index.core.base.llms.types import ThinkingBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage, ChatResponse, TextBlock

from stream_llamaindex._convert import (
    StreamedTurn,
    to_chat_message,
    to_chat_response,
    to_langchain_messages,
    tool_selections,
)

RECORD = {"tier": "local", "model": "m", "complexity": "LOW"}


def test_roles_map_to_langchain_message_types() -> None:
    """system/developer, user, assistant/model and tool map to the LangChain classes."""
    out = to_langchain_messages([
        ChatMessage(role="system", content="s"),
        ChatMessage(role="developer", content="d"),
        ChatMessage(role="user", content="u"),
        ChatMessage(role="assistant", content="a"),
        ChatMessage(role="model", content="m"),
        ChatMessage(role="tool", content="5", additional_kwargs={"tool_call_id": "c1",
                                                                   "name": "add"}),
    ])
    assert [type(m) for m in out] == [SystemMessage, SystemMessage, HumanMessage, AIMessage,
                                      AIMessage, ToolMessage]
    assert [m.content for m in out] == ["s", "d", "u", "a", "m", "5"]
    assert out[-1].tool_call_id == "c1" and out[-1].name == "add"


def test_text_blocks_join_and_thinking_is_dropped() -> None:
    """Several text blocks join with newlines; thinking blocks are not sent back."""
    msg = ChatMessage(role="user", blocks=[TextBlock(text="a"), ThinkingBlock(content="hm"),
                                           TextBlock(text="b")])
    assert to_langchain_messages([msg])[0].content == "a\nb"


def test_assistant_tool_call_blocks_become_langchain_tool_calls() -> None:
    """ToolCallBlocks (dict or JSON-string kwargs) become AIMessage.tool_calls."""
    msg = ChatMessage(role="assistant", blocks=[
        ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 2, "b": 3}),
        ToolCallBlock(tool_call_id="c2", tool_name="neg", tool_kwargs='{"x": 1}'),
    ])
    (ai,) = to_langchain_messages([msg])
    assert isinstance(ai, AIMessage) and ai.content == ""
    assert [(c["id"], c["name"], c["args"]) for c in ai.tool_calls] == [
        ("c1", "add", {"a": 2, "b": 3}), ("c2", "neg", {"x": 1})]


def test_legacy_openai_tool_calls_in_additional_kwargs() -> None:
    """additional_kwargs['tool_calls'] in OpenAI's shape (older integrations) is read too."""
    msg = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [
        {"id": "c9", "type": "function",
         "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]})
    (ai,) = to_langchain_messages([msg])
    assert ai.tool_calls[0]["id"] == "c9" and ai.tool_calls[0]["args"] == {"a": 1, "b": 2}


def test_tool_result_without_call_id_is_refused() -> None:
    """A tool message that does not say which call it answers is a ValueError naming it."""
    with pytest.raises(ValueError, match="message 1 .*tool_call_id"):
        to_langchain_messages([ChatMessage(role="user", content="x"),
                               ChatMessage(role="tool", content="5")])


def test_non_chat_message_is_a_type_error() -> None:
    """Passing LangChain messages (or strings) to the LlamaIndex side is a TypeError."""
    with pytest.raises(TypeError, match="message 0 is HumanMessage"):
        to_langchain_messages([HumanMessage("hi")])  # type: ignore[list-item]


def test_caller_messages_are_not_modified() -> None:
    """Conversion leaves the LlamaIndex messages as they were."""
    msgs = [ChatMessage(role="user", blocks=[TextBlock(text="a"), TextBlock(text="b")])]
    before = [m.model_copy(deep=True) for m in msgs]
    to_langchain_messages(msgs)
    assert msgs == before


def test_answer_with_tool_calls_becomes_tool_call_blocks() -> None:
    """A LangChain answer's text and tool calls become TextBlock + ToolCallBlocks."""
    ai = AIMessage("thinking aloud", tool_calls=[{"name": "add", "args": {"a": 1},
                                                   "id": "c1"}])
    msg = to_chat_message(ai)
    assert msg.role == "assistant" and msg.content == "thinking aloud"
    (block,) = [b for b in msg.blocks if isinstance(b, ToolCallBlock)]
    assert (block.tool_call_id, block.tool_name, block.tool_kwargs) == ("c1", "add", {"a": 1})


def test_tool_calls_round_trip() -> None:
    """LangChain tool calls -> LlamaIndex message -> LangChain keeps names, ids and args."""
    ai = AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}])
    (back,) = to_langchain_messages([to_chat_message(ai)])
    assert back.tool_calls == ai.tool_calls


def test_tool_selections_from_a_response() -> None:
    """tool_selections() lists the calls as ToolSelections; none for a plain answer."""
    ai = AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}])
    (sel,) = tool_selections(to_chat_response(ai))
    assert (sel.tool_id, sel.tool_name, sel.tool_kwargs) == ("c1", "add", {"a": 1})
    assert tool_selections(ChatResponse(message=ChatMessage(role="assistant",
                                                            content="hi"))) == []


def test_chat_response_carries_record_usage_and_raw() -> None:
    """The record goes to additional_kwargs['stream'], usage to the token-count keys."""
    ai = AIMessage("hi", response_metadata={"stream": RECORD},
                   usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5})
    resp = to_chat_response(ai)
    assert resp.additional_kwargs == {"stream": RECORD, "prompt_tokens": 3,
                                      "completion_tokens": 2, "total_tokens": 5}
    assert resp.raw is ai
    assert resp.additional_kwargs["stream"] is not RECORD  # a copy, not the engine's dict


def test_streamed_turn_accumulates_text_and_tool_call_chunks() -> None:
    """StreamedTurn yields one response per output chunk, skips metadata-only chunks and
    ends with the whole answer and the record."""
    turn = StreamedTurn()
    first = turn.add(AIMessageChunk(content="Hel", response_metadata={
        "stream_route": {"tier": "local"}}))
    second = turn.add(AIMessageChunk(content="", tool_call_chunks=[
        {"name": "add", "args": '{"a": ', "id": "c1", "index": 0}]))
    third = turn.add(AIMessageChunk(content="lo", tool_call_chunks=[
        {"name": None, "args": "1}", "id": None, "index": 0}]))
    assert turn.add(AIMessageChunk(content="", response_metadata={"stream": RECORD})) is None
    assert first is not None and second is not None and third is not None
    assert first.additional_kwargs == {"stream_route": {"tier": "local"}}
    assert [first.delta, second.delta, third.delta] == ["Hel", "", "lo"]
    final = turn.final()
    assert final.delta == "" and final.message.content == "Hello"
    assert final.additional_kwargs["stream"] == RECORD
    (sel,) = tool_selections(final)
    assert (sel.tool_name, sel.tool_kwargs) == ("add", {"a": 1})


def test_empty_stream_final_is_an_empty_answer() -> None:
    """A stream that produced nothing ends with an empty assistant message, no record."""
    final = StreamedTurn().final()
    assert final.message.content == "" and "stream" not in final.additional_kwargs
