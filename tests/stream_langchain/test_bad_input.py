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
                                {"type": "input_audio", "input_audio": {"data": "AAAA"}}])
    with pytest.raises(ValueError, match="content part of type 'input_audio'.*supported"):
        llm.invoke([msg])


@pytest.mark.parametrize(("part", "problem"), [
    ({"type": "image_url", "image_url": {"url": "data:,x"}}, "must be a data URL"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, "not valid base64"),
    ({"type": "image_url", "image_url": {}}, "image URL is missing"),
    ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, "not 'file'"),
    ({"type": "image", "mime_type": "image/png"}, "no 'base64', 'url' or 'data'"),
    ({"type": "image", "base64": "", "mime_type": "image/png"}, "image data is empty"),
    ({"type": "image", "file_id": "file-123"}, "file_id is provider-specific"),
])
def test_malformed_image_part(llm: ChatStream, part: dict[str, object], problem: str) -> None:
    """A broken image is refused before routing, naming the message, the part and why."""
    msg = HumanMessage(content=[{"type": "text", "text": "what is this?"}, part])
    with pytest.raises(ValueError, match=f"message 0 content part 1 .*{problem}"):
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
