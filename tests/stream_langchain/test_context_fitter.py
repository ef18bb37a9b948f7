"""SummarizingFitter on its own: what it keeps, what it summarizes, what it caches, how it fails.

The summarizer here is deterministic (``CountingSummarizer``) so the tests can count calls and
input tokens; tests/stream_langchain/test_context_llama.py runs the same paths on the real
llama.cpp model.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from stream_langchain.context import (
    SUMMARIZER_KEY,
    SUMMARY_HEADER,
    LRUSummaryCache,
    SQLiteSummaryCache,
    SummarizingFitter,
    cl100k_counter,
    count_tokens,
    prefix_hashes,
)
from stream_langchain.routing import CircuitBreaker
from tests.stream_langchain.context_helpers import (
    ANSWER,
    FILLER,
    CountingSummarizer,
    chat,
    tool_exchange,
)

BUDGET = 1500


def fitter(model: CountingSummarizer, **kwargs: object) -> SummarizingFitter:
    return SummarizingFitter(model, **kwargs)  # type: ignore[arg-type]


def test_short_conversation_is_sent_as_it_is() -> None:
    """Under the trigger nothing changes and no summarizer is called."""
    model = CountingSummarizer()
    msgs = chat(2)
    fitted = fitter(model).fit_detailed(msgs, budget_tokens=BUDGET, tier="local")
    assert fitted.messages == msgs and not fitted.changed and fitted.fits
    assert model.calls == 0 and fitted.record()["summarized"] is False


def test_long_conversation_keeps_system_recent_turns_and_the_latest_user_turn() -> None:
    """Over the trigger: system messages first, one summary SystemMessage after them, the
    last keep_turns turns and the latest user turn verbatim; the caller's list untouched."""
    model = CountingSummarizer()
    msgs = chat(30, latest="Exactly   this question?\n  ")
    original = list(msgs)
    fitted = fitter(model, keep_turns=2).fit_detailed(msgs, budget_tokens=BUDGET, tier="local")
    assert msgs == original
    out = fitted.messages
    assert fitted.summarized and fitted.fits and fitted.tokens_after <= BUDGET
    assert out[0] is msgs[0]
    assert isinstance(out[1], SystemMessage) and str(out[1].content).startswith(SUMMARY_HEADER)
    assert out[-1] is msgs[-1] and out[-1].content == "Exactly   this question?\n  "
    assert out[2:] == msgs[-5:]  # two earlier turns (4 messages) + the latest
    rec = fitted.record()
    assert rec["summarizer"] == "counting-summarizer" and rec["fallback_truncated"] is False
    assert rec["context_tokens_before"] > BUDGET * 0.8 > rec["context_tokens_after"]


def test_each_tier_keeps_its_own_number_of_turns() -> None:
    """keep_turns per tier: the HPC budget keeps more recent turns than local."""
    f = fitter(CountingSummarizer(), keep_turns={"local": 1, "hpc": 4})
    msgs = chat(40)
    local = f.fit_detailed(msgs, budget_tokens=BUDGET, tier="local").messages
    hpc = f.fit_detailed(msgs, budget_tokens=BUDGET, tier="hpc").messages
    assert local[2:] == msgs[-3:] and hpc[2:] == msgs[-9:]


def test_incremental_work_per_turn_stays_flat() -> None:
    """A client resending the whole history each turn: calls and summarizer input tokens per
    turn do not grow with the history (turns 31-40 cost at most 1.5x turns 11-20)."""
    model = CountingSummarizer()
    f = fitter(model)
    history: list[BaseMessage] = [SystemMessage("Be brief.")]
    per_turn: list[tuple[int, int]] = []
    for turn in range(1, 41):
        history = [*history, HumanMessage(f"({turn}) {FILLER}")]
        before = (model.calls, sum(model.input_tokens))
        fitted = f.fit_detailed(history, budget_tokens=BUDGET, tier="local")
        assert fitted.fits
        per_turn.append((model.calls - before[0], sum(model.input_tokens) - before[1]))
        history = [*history, AIMessage(f"({turn}) {ANSWER}")]
    early = sum(t for _, t in per_turn[10:20])
    late = sum(t for _, t in per_turn[30:40])
    assert early > 0 and late <= 1.5 * early
    assert max(c for c, _ in per_turn) == 1  # never more than one call in a turn
    assert sum(c for c, _ in per_turn[30:40]) <= sum(c for c, _ in per_turn[10:20]) + 1


def test_a_cached_summary_is_reused_without_calling_the_summarizer() -> None:
    """The same conversation again (a stateless client) is fitted from the cache."""
    model = CountingSummarizer()
    f = fitter(model)
    msgs = chat(30)
    first = f.fit_detailed(msgs, budget_tokens=BUDGET, tier="local")
    again = f.fit_detailed(list(msgs), budget_tokens=BUDGET, tier="local")
    assert model.calls == first.summarizer_calls >= 1
    assert again.summary_cached and again.summarizer_calls == 0
    assert again.messages == first.messages


def test_a_changed_early_message_is_a_different_prefix() -> None:
    """The cache key covers the exact prefix: editing an old turn means a new summary."""
    model = CountingSummarizer()
    f = fitter(model)
    msgs = chat(30)
    first = f.fit_detailed(msgs, budget_tokens=BUDGET, tier="local").summarizer_calls
    edited = [msgs[0], HumanMessage("(0) something else entirely"), *msgs[2:]]
    fitted = f.fit_detailed(edited, budget_tokens=BUDGET, tier="local")
    assert not fitted.summary_cached and fitted.summarizer_calls == first
    assert model.calls == 2 * first


def test_prefix_hashes_cover_roles_and_tool_ids() -> None:
    """Same text, different role or tool call id: different prefixes."""
    base = prefix_hashes([HumanMessage("x")])[1]
    assert prefix_hashes([AIMessage("x")])[1] != base
    a = prefix_hashes([ToolMessage("r", tool_call_id="1")])[1]
    b = prefix_hashes([ToolMessage("r", tool_call_id="2")])[1]
    assert a != b


def test_sqlite_cache_is_shared_between_processes(tmp_path: Path) -> None:
    """A summary written by another process is found through the SQLite file."""
    path = tmp_path / "summaries.sqlite"
    script = textwrap.dedent(f"""
        from stream_langchain.context import SQLiteSummaryCache, SummarizingFitter
        from tests.stream_langchain.context_helpers import CountingSummarizer, chat
        model = CountingSummarizer()
        f = SummarizingFitter(model, cache=SQLiteSummaryCache({str(path)!r}))
        fitted = f.fit_detailed(chat(30), budget_tokens={BUDGET}, tier="local")
        assert fitted.summarized and model.calls >= 1
    """)
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, timeout=120)
    model = CountingSummarizer()
    fitted = fitter(model, cache=SQLiteSummaryCache(path)).fit_detailed(
        chat(30), budget_tokens=BUDGET, tier="local")
    assert fitted.summary_cached and model.calls == 0


def test_sqlite_cache_keeps_at_most_max_entries(tmp_path: Path) -> None:
    """Past max_entries the least recently used summaries go."""
    cache = SQLiteSummaryCache(tmp_path / "c.sqlite", max_entries=2)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") is None and cache.get("c") == "C"


@pytest.mark.parametrize(("mode", "error"), [
    ("raise", "ConnectionError: summarizer backend unreachable"),
    ("empty", "summarizer returned an empty summary"),
    ("long", "exceeds its cap of 256"),
])
def test_a_failed_summary_is_not_used_and_the_context_is_truncated(
        mode: str, error: str) -> None:
    """Failing, empty or oversized summaries: nothing cached, the oldest turns dropped
    instead, the result still fits, and the record says so."""
    model = CountingSummarizer(mode=mode)
    cache = LRUSummaryCache()
    f = fitter(model, cache=cache)
    msgs = chat(30)
    fitted = f.fit_detailed(msgs, budget_tokens=BUDGET, tier="local")
    assert len(cache) == 0
    assert fitted.fallback_truncated and not fitted.summarized and fitted.fits
    assert error in (fitted.error or "")
    assert fitted.tokens_after <= BUDGET and fitted.messages[-1] is msgs[-1]
    assert fitted.messages[0] is msgs[0]
    assert not any(str(m.content).startswith(SUMMARY_HEADER) for m in fitted.messages)
    rec = fitted.record()
    assert rec["fallback_truncated"] is True and rec["summarized"] is False


def test_a_slow_summarizer_times_out_into_truncation() -> None:
    """A summarizer slower than timeout_s counts as failed."""
    model = CountingSummarizer(mode="slow", delay_s=2.0)
    fitted = fitter(model, timeout_s=0.2).fit_detailed(chat(30), budget_tokens=BUDGET,
                                                      tier="local")
    assert fitted.fallback_truncated and "TimeoutError" in (fitted.error or "")


def test_a_dead_summarizer_opens_its_breaker_and_is_not_retried() -> None:
    """After threshold failures the breaker opens; later turns truncate without a call."""
    model = CountingSummarizer(mode="raise")
    breaker = CircuitBreaker(threshold=2, window=60, cooldown=60)
    f = fitter(model, breaker=breaker)
    for turn in (30, 31):
        f.fit_detailed(chat(turn), budget_tokens=BUDGET, tier="local")
    assert breaker.state(SUMMARIZER_KEY) == "open" and model.calls == 2
    fitted = f.fit_detailed(chat(32), budget_tokens=BUDGET, tier="local")
    assert model.calls == 2
    assert fitted.fallback_truncated and "circuit open" in (fitted.error or "")


def test_a_conversation_that_cannot_fit_says_so() -> None:
    """A latest user turn larger than the budget: not fittable, the messages unchanged."""
    msgs = chat(3, latest="word " * 3000)
    fitted = fitter(CountingSummarizer()).fit_detailed(msgs, budget_tokens=BUDGET,
                                                      tier="local")
    assert not fitted.fits and fitted.messages == msgs


def test_estimate_matches_the_budget_decision() -> None:
    """estimate() calls no model and says whether the tier can fit the conversation."""
    model = CountingSummarizer()
    f = fitter(model)
    assert f.estimate(chat(30), budget_tokens=BUDGET, tier="local") <= BUDGET
    assert f.estimate(chat(1, latest="word " * 3000), budget_tokens=BUDGET,
                      tier="local") > BUDGET
    assert model.calls == 0


def test_images_in_the_summarized_span_are_described() -> None:
    """An image part in an old turn reaches the summarizer as a description, not nothing."""
    model = CountingSummarizer()
    msgs = chat(30)
    msgs[3] = HumanMessage(content=[
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
    ])
    fitter(model).fit_detailed(msgs, budget_tokens=BUDGET, tier="local")
    assert "[image: https://example.org/cat.png]" in model.prompts[0]


def test_images_are_counted_by_estimate() -> None:
    """An image part costs IMAGE_TOKENS, not zero."""
    text = HumanMessage("look")
    image = HumanMessage(content=[{"type": "text", "text": "look"}, {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    assert count_tokens([image]) - count_tokens([text]) == 765


def test_bad_settings_are_refused_with_the_value() -> None:
    """Out-of-range trigger or caps are named."""
    with pytest.raises(ValueError, match=r"trigger must be in \(0, 1\], got 1.5"):
        SummarizingFitter(CountingSummarizer(), trigger=1.5)
    with pytest.raises(ValueError, match="margin must be >= 1.0"):
        cl100k_counter(0.5)


# ---------------------------------------------------------------------------- properties


@st.composite
def conversations(draw: st.DrawFn) -> list[BaseMessage]:
    msgs: list[BaseMessage] = [SystemMessage("You help with lookups.")]
    n = draw(st.integers(min_value=1, max_value=25))
    for i in range(n):
        if draw(st.booleans()):
            msgs += tool_exchange(i, draw(st.integers(min_value=1, max_value=3)))
        else:
            msgs += chat(1)[1:3]
        if draw(st.integers(0, 9)) == 0:
            msgs.append(SystemMessage(f"Note {i}: stay polite."))
    last = draw(st.sampled_from(["plain", "tool"]))
    if last == "tool":  # the latest user turn is being answered through tools
        msgs += tool_exchange(n, 2)[:-1]
    else:
        msgs.append(HumanMessage("And now?"))
    return msgs


def _pairs_intact(out: list[BaseMessage]) -> bool:
    for i, m in enumerate(out):
        if isinstance(m, AIMessage) and m.tool_calls:
            ids = {c["id"] for c in m.tool_calls}
            following = set()
            for n in out[i + 1:]:
                if not isinstance(n, ToolMessage):
                    break
                following.add(n.tool_call_id)
            if following != ids:
                return False
        if isinstance(m, ToolMessage):
            j = i
            while j > 0 and isinstance(out[j - 1], ToolMessage):
                j -= 1
            prev = out[j - 1] if j > 0 else None
            if not (isinstance(prev, AIMessage)
                    and m.tool_call_id in {c["id"] for c in prev.tool_calls}):
                return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=conversations(), budget=st.integers(min_value=300, max_value=3000),
       keep=st.integers(min_value=0, max_value=4), mode=st.sampled_from(["ok", "raise"]))
def test_fitting_never_splits_a_tool_call_from_its_results(
        msgs: list[BaseMessage], budget: int, keep: int, mode: str) -> None:
    """Whatever the conversation, budget and outcome: tool calls stay with their results,
    system messages and the latest user turn survive unchanged, and a fit fits."""
    model = CountingSummarizer(mode=mode)
    fitted = fitter(model, keep_turns=keep, summary_tokens=64).fit_detailed(
        msgs, budget_tokens=budget, tier="local")
    out = fitted.messages
    assert _pairs_intact(out)
    last_human = max(i for i, m in enumerate(msgs) if isinstance(m, HumanMessage))
    assert out[len(out) - (len(msgs) - last_human):] == msgs[last_human:]
    originals = [m for m in msgs if isinstance(m, SystemMessage)]
    assert [m for m in out if isinstance(m, SystemMessage) and m.id != "stream-summary"] \
        == originals
    if fitted.fits:
        assert cl100k_counter()(out) <= budget
