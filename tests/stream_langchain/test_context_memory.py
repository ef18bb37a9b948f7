"""MemoryFitter: the budget is filled, evicted turns are recalled, summaries are written in
the background and no request waits for one beyond the bound, tool pairs stay together, and a
stateless client (or a second process on the SQLite store) reuses the index and the summary.

The summarizers are scripted (``CountingSummarizer``, ``GatedSummarizer``): these tests check
the mechanism, not what a model writes. Token counts are cl100k (no tier tokenizer).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from stream_langchain.context import (
    RECALL_HEADER,
    SUMMARY_HEADER,
    MemoryFitter,
    SQLiteSummaryCache,
    identifiers,
    terms,
)
from tests.stream_langchain.context_helpers import (
    ANSWER,
    FILLER,
    CountingSummarizer,
    chat,
    tool_exchange,
)

PLANTED = "By the way, our storage bucket is named gs-kestrel-42, please keep that in mind."


class GatedSummarizer(BaseChatModel):
    """Answers only once ``gate`` is set: a summarizer that is still writing."""

    gate: Any = Field(default_factory=threading.Event)
    started: Any = Field(default_factory=threading.Event)

    @property
    def _llm_type(self) -> str:
        return "gated-summarizer"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        self.started.set()
        if not self.gate.wait(timeout=60):
            raise TimeoutError("gate never opened")
        return ChatResult(generations=[ChatGeneration(message=AIMessage("Gated summary."))])


def planted_chat(turns: int, *, at: int = 1, latest: str) -> list[BaseMessage]:
    msgs: list[BaseMessage] = [SystemMessage("You are a helpful assistant.")]
    for i in range(turns):
        user = PLANTED if i == at else f"({i}) {FILLER}"
        msgs += [HumanMessage(user), AIMessage(f"({i}) {ANSWER}")]
    return [*msgs, HumanMessage(latest)]


def fitter(**kw: Any) -> MemoryFitter:
    kw.setdefault("background", False)
    return MemoryFitter(kw.pop("model", None) or CountingSummarizer(), **kw)


def recall_block(messages: list[BaseMessage]) -> str:
    found = [str(m.content) for m in messages
             if isinstance(m, SystemMessage) and str(m.content).startswith(RECALL_HEADER)]
    return found[0] if found else ""


def test_a_conversation_that_fits_is_sent_as_it_is() -> None:
    """Under the budget nothing changes and nothing is scheduled."""
    summarizer = CountingSummarizer()
    f = fitter(model=summarizer)
    msgs = chat(3)
    fitted = f.fit_detailed(msgs, budget_tokens=2000, tier="local")
    assert fitted.messages == msgs and not fitted.changed and summarizer.calls == 0


def test_the_budget_is_filled_not_compressed_to_a_fraction() -> None:
    """A long history is fitted to between 85% and 100% of the budget: system first, the
    latest turn last, recent turns verbatim, earlier turns quoted."""
    msgs = chat(60)
    budget = 1500
    fitted = fitter().fit_detailed(msgs, budget_tokens=budget, tier="local")
    assert fitted.fits and 0.85 * budget <= fitted.tokens_after <= budget
    out = fitted.messages
    assert out[0] == msgs[0] and out[-1] == msgs[-1]
    assert recall_block(out) and fitted.recalled_turns > 0
    assert out[-3:] == msgs[-3:]  # the most recent turns are verbatim


def test_recall_picks_the_evicted_turn_holding_the_asked_for_identifier() -> None:
    """A question phrased unlike the statement ('Which bucket ...') brings back the turn that
    named the bucket, verbatim, although recall has room for only a few turns."""
    msgs = planted_chat(50, at=2, latest="Which bucket do we keep the data in?")
    f = fitter(recall_share=0.1)
    fitted = f.fit_detailed(msgs, budget_tokens=900, tier="local")
    block = recall_block(fitted.messages)
    assert "gs-kestrel-42" in block
    assert PLANTED not in [m.content for m in fitted.messages if isinstance(m, HumanMessage)]
    assert block.count("User:") < 5  # picked, not everything


def test_recall_by_the_identifier_itself() -> None:
    """Asking with the identifier finds the statement too (it is indexed as a whole and by
    its parts)."""
    assert "gs-kestrel-42" in terms(PLANTED) and "kestrel" in terms(PLANTED)
    msgs = planted_chat(50, at=5, latest="What did we store in gs-kestrel-42?")
    fitted = fitter(recall_share=0.1).fit_detailed(msgs, budget_tokens=900, tier="local")
    assert "gs-kestrel-42" in recall_block(fitted.messages)


def test_the_summary_is_prepared_and_the_next_request_finds_it_cached() -> None:
    """The first fit evicts turns with no summary yet (recall only) and starts one; the next
    request of the same conversation uses it from the cache, without a summarizer call on
    its path."""
    summarizer = CountingSummarizer()
    f = fitter(model=summarizer, background=True, min_span_tokens=64)
    msgs = chat(40)
    first = f.fit_detailed(msgs, budget_tokens=1200, tier="local")
    assert first.fits and first.summary_cached is False and first.summarized is False
    assert f.wait_idle(60) and summarizer.calls >= 1
    calls = summarizer.calls
    nxt = [*msgs, AIMessage("4"), HumanMessage("And 3 + 3?")]
    second = f.fit_detailed(nxt, budget_tokens=1200, tier="local")
    assert second.summary_cached and second.summarized and second.fits
    assert any(str(m.content).startswith(SUMMARY_HEADER) and "Summary #" in str(m.content)
               for m in second.messages)
    assert second.record()["summary_cached"] is True
    assert second.summarizer_calls == 0 and summarizer.calls >= calls  # none on its path


def test_prepare_after_an_answer_starts_past_the_watermark_only() -> None:
    """prepare() summarizes ahead once the history passes the watermark, not before."""
    summarizer = CountingSummarizer()
    f = fitter(model=summarizer, watermark=0.5, min_span_tokens=32)
    assert f.prepare(chat(2), budget_tokens=2000, tier="local") is False
    assert summarizer.calls == 0
    assert f.prepare(chat(25), budget_tokens=2000, tier="local") is True
    assert summarizer.calls >= 1


def test_no_request_waits_for_a_summary_beyond_the_bound() -> None:
    """While the summarizer is still writing (it never answers until released), a request
    returns anyway, says the summary is pending, and uses recall."""
    gated = GatedSummarizer()
    f = MemoryFitter(gated, wait_s=0.05, min_span_tokens=32)
    msgs = chat(40)
    try:
        first = f.fit_detailed(msgs, budget_tokens=1200, tier="local")
        assert gated.started.wait(30)
        again = f.fit_detailed(msgs, budget_tokens=1200, tier="local")
        assert not gated.gate.is_set()  # the summarizer is still blocked: nobody waited on it
        assert again.summary_pending and not again.summary_cached and again.fits
        assert again.recalled_turns > 0 and first.fits
        assert again.record()["summary_pending"] is True
    finally:
        gated.gate.set()
        assert f.wait_idle(30)
        f.close()


def test_a_failing_summarizer_leaves_recall_working_and_opens_its_breaker() -> None:
    """A dead summarizer never fails a request: fits still fill the budget with recall."""
    summarizer = CountingSummarizer(mode="raise")
    f = fitter(model=summarizer, min_span_tokens=32)
    for turns in (40, 45, 50, 55):
        fitted = f.fit_detailed(chat(turns), budget_tokens=1200, tier="local")
        assert fitted.fits and fitted.recalled_turns > 0
    assert f.breaker.state("summarizer") == "open"
    assert summarizer.calls == f.breaker.threshold
    assert all("ConnectionError" in e["error"] for e in f.log)


def test_tool_calls_and_their_results_are_never_split() -> None:
    """At every budget, each ToolMessage sent follows the AIMessage that called it, and each
    call sent has all its results; recalled tool exchanges are quoted whole."""
    msgs: list[BaseMessage] = [SystemMessage("Use tools.")]
    for i in range(12):
        msgs += tool_exchange(i, n_calls=3)
    msgs.append(HumanMessage("Which item did you look up first?"))
    f = fitter()
    for budget in range(400, 2400, 97):
        out = f.fit_detailed(msgs, budget_tokens=budget, tier="local").messages
        ids: set[str] = set()
        for m in out:
            if isinstance(m, AIMessage) and m.tool_calls:
                ids = {str(c["id"]) for c in m.tool_calls}
                results = [x for x in out if isinstance(x, ToolMessage)
                           and x.tool_call_id in ids]
                assert len(results) == len(ids), budget
            if isinstance(m, ToolMessage):
                assert m.tool_call_id in ids, budget
        block = recall_block(out)
        for line in block.splitlines():
            if "[called lookup" in line:
                call = line.split("'q': '")[1].split("'")[0]  # item i.k
                i = call.split()[1].split(".")[0]
                assert all(f"result {i}.{k}" in block for k in range(3)), budget


def test_a_stateless_client_replay_indexes_each_turn_once_and_reuses_the_summary() -> None:
    """Replaying 50 turns as fresh message lists (what an OpenAI client resends): every
    message is tokenized for recall at most once, and summaries are extended, not rewritten
    from the start (each call's input stays bounded)."""
    summarizer = CountingSummarizer()
    f = fitter(model=summarizer, min_span_tokens=200)
    history: list[tuple[str, str]] = []
    for turn in range(50):
        msgs: list[BaseMessage] = [SystemMessage("You are a helpful assistant.")]
        for u, a in history:
            msgs += [HumanMessage(u), AIMessage(a)]
        msgs.append(HumanMessage(f"({turn}) {FILLER}"))
        fitted = f.fit_detailed(msgs, budget_tokens=1000, tier="local")
        assert fitted.fits
        history.append((f"({turn}) {FILLER}", f"({turn}) {ANSWER}"))
    distinct = 2 * len(history)
    assert f.index.indexed <= distinct
    assert summarizer.calls >= 2
    assert max(summarizer.input_tokens) < 1000  # never the whole history
    assert sum(1 for p in summarizer.prompts if "Notes so far:" in p) == summarizer.calls - 1


def test_a_second_process_on_the_sqlite_store_reuses_index_and_summary(tmp_path: Path) -> None:
    """A fitter opened on the same SQLite file (another process, in production) finds the
    summary and the indexed turns: it calls no summarizer and indexes nothing again."""
    path = tmp_path / "memory.sqlite"
    msgs = planted_chat(40, at=1, latest="Which bucket do we keep the data in?")
    first = fitter(cache=SQLiteSummaryCache(path), min_span_tokens=32)
    first.fit_detailed(msgs, budget_tokens=1200, tier="local")  # indexes; writes a summary
    first.fit_detailed(msgs, budget_tokens=1200, tier="local")  # with the summary: its layout
    writer = CountingSummarizer()
    second = fitter(model=writer, cache=SQLiteSummaryCache(path), min_span_tokens=10_000)
    fitted = second.fit_detailed(msgs, budget_tokens=1200, tier="local")
    assert fitted.summary_cached and writer.calls == 0
    assert second.index.indexed == 0 and "gs-kestrel-42" in recall_block(fitted.messages)


def test_a_summary_that_drops_identifiers_is_supplemented_with_the_users_words() -> None:
    """The scripted summary names none of the facts; the cached summary quotes the user's
    sentences that held them."""
    msgs: list[BaseMessage] = [SystemMessage("Be brief.")]
    facts = ["My manager is Marta Kowalski.", "The batch size is 384.", PLANTED]
    for i, fact in enumerate(facts):
        msgs += [HumanMessage(fact), AIMessage("Noted.")]
        msgs += [HumanMessage(f"({i}) {FILLER}"), AIMessage(f"({i}) {ANSWER}")]
    for i in range(30):
        msgs += [HumanMessage(f"({i}) {FILLER}"), AIMessage(f"({i}) {ANSWER}")]
    msgs.append(HumanMessage("What is 2 + 2?"))
    f = fitter(min_span_tokens=32)
    f.fit_detailed(msgs, budget_tokens=900, tier="local")
    nxt = f.fit_detailed(msgs, budget_tokens=900, tier="local")
    summary = next(str(m.content) for m in nxt.messages
                   if str(m.content).startswith(SUMMARY_HEADER))
    for needle in ("Marta Kowalski", "384", "gs-kestrel-42"):
        assert needle in summary
    assert f.log and f.log[0]["supplemented"] >= 3


def test_identifiers_are_names_numbers_codes_and_addresses() -> None:
    """What validation looks for in a span."""
    found = identifiers("Write to ops@example.org. Our code is BLUEFIN and the room is 318; "
                        "ask Tomas Varga on Friday.")
    for item in ("ops@example.org", "BLUEFIN", "318", "Tomas Varga", "Friday"):
        assert item in found, found
    assert "Write" not in found and "Our" not in found


def test_nothing_fits_when_the_latest_turn_alone_is_over_the_budget() -> None:
    """The fitter says so (routing then skips the tier); estimate agrees."""
    msgs = chat(2, latest="word " * 600)
    f = fitter()
    fitted = f.fit_detailed(msgs, budget_tokens=300, tier="local")
    assert not fitted.fits and fitted.error
    assert f.estimate(msgs, budget_tokens=300, tier="local") > 300
    assert f.estimate(chat(60), budget_tokens=1500, tier="local") <= 1500


def test_bad_limits_are_refused_with_the_value() -> None:
    """Out-of-range settings raise ValueError naming the value."""
    with pytest.raises(ValueError, match="1.5"):
        MemoryFitter(CountingSummarizer(), recall_share=1.5)
    with pytest.raises(ValueError, match="-1"):
        MemoryFitter(CountingSummarizer(), wait_s=-1)


def test_settings_choose_the_fitter_and_the_model_that_writes_summaries() -> None:
    """[context] fitter = "memory" (default) or "summarize" (the previous one);
    summarizer = "hpc" lets the HPC tier's model write summaries; "none" turns fitting off."""
    from stream_langchain._factory import build_summarizer
    from stream_langchain.settings import Settings

    local, hpc = CountingSummarizer(), CountingSummarizer(max_tokens=99)
    tiers = {"local": local, "hpc": hpc}
    default = build_summarizer(Settings(), tiers)
    assert isinstance(default, MemoryFitter) and default.model is local
    assert default.wait_s == 0.25
    s = Settings.model_validate({"context": {"summarizer": "hpc", "wait_s": 0.1}})
    by_hpc = build_summarizer(s, tiers)
    assert isinstance(by_hpc, MemoryFitter) and by_hpc.model is hpc and by_hpc.wait_s == 0.1
    old = build_summarizer(Settings.model_validate({"context": {"fitter": "summarize"}}), tiers)
    assert type(old).__name__ == "SummarizingFitter"
    assert build_summarizer(Settings.model_validate({"context": {"summarizer": "none"}}),
                            tiers) is None
    fallback = build_summarizer(s, {"local": local})  # no HPC tier: the local one writes
    assert isinstance(fallback, MemoryFitter) and fallback.model is local


class TopicEmbedder:
    """A scripted embedding model: one axis for storage words, one for everything else;
    counts the texts it embeds."""

    STORAGE = ("bucket", "storage", "stored", "kept", "keep", "upload")

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def _vec(self, text: str) -> list[float]:
        hit = any(w in text.lower() for w in self.STORAGE)
        return [1.0, 0.0] if hit else [0.0, 1.0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += texts
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


def test_embeddings_recall_what_shares_no_word_and_each_turn_is_embedded_once() -> None:
    """With an embedder, a question sharing no indexed word with the statement ('Where is our
    stuff kept?') still brings it back; a second fit embeds nothing again (cached by hash)."""
    question = "Where is our stuff kept?"
    msgs = planted_chat(50, at=2, latest=question)
    statement = "our storage lives in the basement archive, next to the old tape drives."
    msgs[5] = HumanMessage("By the way, " + statement)  # the planted turn, reworded: no
    # identifier and no word shared with the question
    plain = fitter(recall_share=0.1).fit_detailed(msgs, budget_tokens=900, tier="local")
    assert statement not in recall_block(plain.messages)  # BM25 alone misses it
    embedder = TopicEmbedder()
    f = fitter(recall_share=0.1, embedder=embedder, write=False)
    fitted = f.fit_detailed(msgs, budget_tokens=900, tier="local")
    assert statement in recall_block(fitted.messages)
    n = len(embedder.embedded)
    f.fit_detailed(msgs, budget_tokens=900, tier="local")
    assert n > 0 and len(embedder.embedded) == n


def test_a_stated_fact_outranks_assistant_turns_that_share_the_questions_words() -> None:
    """The question shares no word with the statement ('support email' for 'write to
    ops-desk@...'), while many assistant answers share its words: with room for a few
    excerpts, the user's statement holding an address is recalled before them."""
    msgs: list[BaseMessage] = [SystemMessage("You are a helpful assistant.")]
    for i in range(40):
        user = ("What should I read first? If something breaks, write to ops-desk@nordlab.io."
                if i == 1 else f"Tell me more about topic number {i} please.")
        msgs += [HumanMessage(user),
                 AIMessage(f"Cluster support matters here: email support about cluster {i}. "
                           + ANSWER)]
    msgs.append(HumanMessage("What's the support email for the cluster?"))
    fitted = fitter(recall_share=0.15).fit_detailed(msgs, budget_tokens=900, tier="local")
    block = recall_block(fitted.messages)
    assert "ops-desk@nordlab.io" in block
    assert block.count("Assistant:") < 3
