"""StreamLLM plans with ChatStream's own answers (window, answer limit, routable tiers)."""

from __future__ import annotations

from langchain_core.language_models import GenericFakeChatModel
from langchain_ollama import ChatOllama

from stream_langchain import ChatStream, KeywordJudge
from stream_llamaindex import StreamLLM

UNREACHABLE = "http://127.0.0.1:9"  # nothing is sent: metadata only


def test_the_window_of_a_chatollama_tier_is_the_one_chatstream_routes_with() -> None:
    """``ChatOllama(num_ctx=...)`` sets the window ChatStream fits to; StreamLLM used to
    read only ``context_windows`` and report LlamaIndex's default instead."""
    engine = ChatStream(local=ChatOllama(model="llama3.2:3b", num_ctx=8192,
                                         base_url=UNREACHABLE), judge=KeywordJudge())
    llm = StreamLLM(chat_stream=engine)
    assert engine.window("local") == 8192
    assert llm.metadata.context_window == 8192


def test_answer_limit_and_privacy_come_from_chatstream() -> None:
    small = GenericFakeChatModel(messages=iter([]), profile={"max_input_tokens": 4096})
    big = GenericFakeChatModel(messages=iter([]), profile={"max_input_tokens": 128000})
    engine = ChatStream(local=small, cloud=big, allow_cloud=False, max_tokens=300,
                        judge=KeywordJudge())
    llm = StreamLLM(chat_stream=engine)
    assert list(llm.routable_tiers()) == list(engine.routable_tiers()) == ["local"]
    assert engine.answer_limit() == 300
    meta = llm.metadata
    assert (meta.context_window, meta.num_output) == (4096, 300)
    assert meta.model_name.startswith("local:")
