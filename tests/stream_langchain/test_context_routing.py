"""ChatStream with context fitting: routing sees the size after fitting, the record says what
happened, progress is reported, and nothing is sent to a tier it cannot fit.

Real tiers (llama.cpp in-process, llama.cpp's OpenAI-compatible server); the summarizer is the
deterministic ``CountingSummarizer`` so these tests check plumbing, not a model's prose
(test_context_llama.py uses the real model as summarizer). The default fitter is the
MemoryFitter (background summaries); the previous SummarizingFitter is checked where named.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage

from stream_langchain import AllTiersFailed, ChatStream
from stream_langchain.context import SUMMARIZER_KEY, MemoryFitter, SummarizingFitter
from stream_langchain.routing import CircuitBreaker
from tests.stream_langchain.conftest import FixedJudge
from tests.stream_langchain.context_helpers import CountingSummarizer, chat

pytestmark = pytest.mark.slow

RECORD_KEYS = {"context_tokens_before", "context_tokens_after", "summary_cached",
               "summarizer_ms", "summarizer", "fallback_truncated", "summarized",
               "summary_pending", "recalled_turns"}


def test_low_with_a_long_history_stays_local_after_fitting(
        local_model: BaseChatModel, hpc_model: BaseChatModel) -> None:
    """A history over the local window: fitted for local (recall, no summarizer on the
    request path) and answered there; the summary prepared after the answer is used by the
    next request; without fitting the local tier is skipped for its window and HPC answers."""
    summarizer = CountingSummarizer()
    msgs = chat(20)
    windows = {"local": 1024}  # the HPC stand-in's server has 2048: it fits there
    llm = ChatStream(local=local_model, hpc=hpc_model, judge=FixedJudge("LOW"),
                     summarizer_model=summarizer, context_windows=windows)
    assert isinstance(llm.fitter, MemoryFitter)
    res = llm.invoke(msgs)
    rec = res.response_metadata["stream"]
    assert rec["tier"] == "local" and RECORD_KEYS <= rec.keys()
    assert rec["context_tokens_before"] > 1024 > rec["context_tokens_after"]
    assert rec["recalled_turns"] > 0 and rec["fallback_truncated"] is False
    assert "summarizer_calls" not in rec  # nothing was summarized on the request path

    assert llm.fitter.wait_idle(60) and summarizer.calls >= 1  # prepared after the answer
    nxt = [*msgs, res, HumanMessage("And 3 + 3?")]
    again = llm.invoke(nxt).response_metadata["stream"]
    assert again["tier"] == "local" and again["summary_cached"] is True
    assert again["summarized"] is True and again["summarizer"] == "counting-summarizer"

    plain = ChatStream(local=local_model, hpc=hpc_model, judge=FixedJudge("LOW"),
                       summarize=False, context_windows=windows)
    rec = plain.invoke(msgs).response_metadata["stream"]
    assert rec["tier"] == "hpc" and rec["summarized"] is False
    assert any(s["tier"] == "local" and "> window" in s["reason"] for s in rec["skipped"])


def test_a_context_no_summary_can_fit_escalates_with_the_reason(
        local_model: BaseChatModel, hpc_model: BaseChatModel) -> None:
    """The latest user turn alone exceeds the local budget: local is skipped (reason says
    'after fitting'), no summarizer is called, HPC answers."""
    summarizer = CountingSummarizer()
    llm = ChatStream(local=local_model, hpc=hpc_model, judge=FixedJudge("LOW"),
                     summarizer_model=summarizer, context_windows={"local": 400})
    msgs = chat(2, latest="Please read this: " + "lorem ipsum dolor " * 150 + " Done?")
    rec = llm.invoke(msgs).response_metadata["stream"]
    assert rec["tier"] == "hpc" and summarizer.calls == 0
    (local,) = [s for s in rec["skipped"] if s["tier"] == "local"]
    assert "after fitting > budget" in local["reason"]


def test_a_context_that_fits_no_tier_is_never_sent(local_model: BaseChatModel) -> None:
    """Too long for every tier, even after fitting: AllTiersFailed says why, and llama.cpp
    is never asked (no 'exceed context window' failure inside it)."""
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"),
                     summarizer_model=CountingSummarizer())
    msgs = chat(2, latest="word " * 3000)
    with pytest.raises(AllTiersFailed, match="after fitting > budget") as info:
        llm.invoke(msgs)
    assert info.value.errors == []
    with pytest.raises(AllTiersFailed, match="does not fit budget") as forced:
        llm.invoke(msgs, tier="local")
    assert forced.value.errors == []


def test_a_failing_summarizer_truncates_records_and_opens_its_breaker(
        local_model: BaseChatModel) -> None:
    """The answer still comes (truncated context), the record says fallback_truncated with
    the error, and after the threshold the summarizer is no longer called."""
    summarizer = CountingSummarizer(mode="raise")
    breaker = CircuitBreaker(threshold=2, window=60, cooldown=60)
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"), circuit_breaker=breaker,
                     summarizer=SummarizingFitter(summarizer, breaker=breaker))
    for turns in (40, 41):
        rec = llm.invoke(chat(turns)).response_metadata["stream"]
        assert rec["tier"] == "local" and rec["fallback_truncated"] is True
        assert rec["summarized"] is False and "ConnectionError" in rec["summarizer_error"]
        assert rec["context_tokens_after"] <= 2048
    assert breaker.state(SUMMARIZER_KEY) == "open" and breaker.state("local") == "closed"
    rec = llm.invoke(chat(42)).response_metadata["stream"]
    assert summarizer.calls == 2 and "circuit open" in rec["summarizer_error"]


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.names.append(name)


async def test_progress_reaches_the_hook_and_callback_handlers(
        local_model: BaseChatModel) -> None:
    """With the previous fitter (summaries on the request path), on_context_event and
    LangChain custom events see summarize_start then _end (sync and async); a request that
    needs no summary emits nothing."""
    seen: list[tuple[str, str]] = []
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"),
                     summarizer=SummarizingFitter(CountingSummarizer()),
                     on_context_event=lambda name, data: seen.append((name, data["tier"])))
    handler = Events()
    llm.invoke(chat(40), config={"callbacks": [handler]})
    assert seen == [("summarize_start", "local"), ("summarize_end", "local")]
    assert handler.names == ["stream_summarize_start", "stream_summarize_end"]

    handler = Events()
    await llm.ainvoke(chat(40, system="Be terse."), config={"callbacks": [handler]})
    assert handler.names == ["stream_summarize_start", "stream_summarize_end"]

    seen.clear()
    list(llm.stream([HumanMessage("Hi")]))
    assert seen == []


def test_a_configured_fitter_is_used_and_the_default_needs_a_local_tier(
        hpc_model: BaseChatModel) -> None:
    """summarizer= wins; with no local tier and no summarizer_model there is no fitter."""
    fitter = SummarizingFitter(CountingSummarizer())
    assert ChatStream(hpc=hpc_model, judge=FixedJudge("LOW"), summarizer=fitter).fitter \
        is fitter
    assert ChatStream(hpc=hpc_model, judge=FixedJudge("LOW")).fitter is None
