"""Bad input to ChatStream: each a clear error that names the problem, before any tier runs."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langchain_ollama import ChatOllama

from stream_langchain import ChatStream
from stream_langchain.judges import KeywordJudge


@pytest.fixture
def llm() -> ChatStream:
    # A local tier nobody listens to: these errors must come before any network call.
    return ChatStream(local=ChatOllama(model="never-called", base_url="http://127.0.0.1:9"),
                      judge=KeywordJudge())


def test_empty_message_list(llm: ChatStream) -> None:
    with pytest.raises(ValueError, match="at least one message"):
        llm.invoke([])


async def test_empty_message_list_async(llm: ChatStream) -> None:
    with pytest.raises(ValueError, match="at least one message"):
        await llm.ainvoke([])


def test_unsupported_content_part(llm: ChatStream) -> None:
    msg = HumanMessage(content=[{"type": "text", "text": "what is this?"},
                                {"type": "image_url", "image_url": {"url": "data:,x"}}])
    with pytest.raises(ValueError, match="content part of type 'image_url'"):
        llm.invoke([msg])


def test_unknown_tier_kwarg_and_config(llm: ChatStream) -> None:
    with pytest.raises(ValueError, match="unknown tier 'gpu'"):
        llm.invoke("hi", tier="gpu")
    with pytest.raises(ValueError, match="unknown tier 'edge'"):
        list(llm.stream("hi", config={"configurable": {"stream_tier": "edge"}}))


def test_unconfigured_tier_override(llm: ChatStream) -> None:
    with pytest.raises(ValueError, match="'cloud': that tier is not configured"):
        llm.invoke("hi", tier="cloud")


def test_unknown_context_window_tier() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gpu'"):
        ChatStream(local=ChatOllama(model="x"), context_windows={"gpu": 10})
