"""RequestRun on its own: attempts, the fit made once, counting once, failover, the record.

No model runs here: RequestRun is the request's state, fed what the shell would feed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from stream_langchain._run import RequestRun
from stream_langchain.context import Fitted, _count, cl100k_counter
from stream_langchain.context._fitter import _DetailedFitter
from stream_langchain.errors import TierFailure
from stream_langchain.judges import Complexity, Judgement
from stream_langchain.record import RouteHint, RouteRecord
from stream_langchain.routing import RoutePlan

NAMES = {"local": "small", "hpc": "big", "cloud": "frontier"}


class SizeFitter(_DetailedFitter):
    """Fits nothing; counts in cl100k x 1.15 per tier and says how often it was asked."""

    def __init__(self) -> None:
        self.counters = {}
        self._fallback = cl100k_counter()
        self.estimates = 0
        self.fits = 0

    def estimate(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                 tier: str) -> int:
        self.estimates += 1
        n = self.counter(tier)(messages)
        return n if n <= budget_tokens else budget_tokens

    def fit_detailed(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                     tier: str, **_: Any) -> Fitted:
        self.fits += 1
        n = self.counter(tier)(messages)
        return Fitted(list(messages), False, n, n, budget_tokens, n <= budget_tokens)


def _run(*, order: list[str], budgets: dict[str, int] | None = None,
         fitter: _DetailedFitter | None = None, failover: bool = True,
         messages: list[BaseMessage] | None = None) -> RequestRun:
    run = RequestRun(messages=messages or [HumanMessage("What is a monad?")],
                     judgement=Judgement(Complexity.LOW, 0.9, "keyword"),
                     complexity=Complexity.LOW, model_names=NAMES, budgets=budgets,
                     fitter=fitter, failover=failover, needs={"images": 0})
    run.route(RoutePlan(Complexity.LOW, order))
    return run


def _bind(tier: str) -> tuple[Any, dict[str, Any]]:
    return tier, {"temperature": 0}


def test_attempts_follow_the_plan_and_pass_over_a_capability_gap() -> None:
    run = _run(order=["local", "hpc"])

    def bind(tier: str) -> tuple[Any, dict[str, Any]]:
        if tier == "local":
            raise NotImplementedError("no tool calling")
        return _bind(tier)

    attempts = list(run.attempts(bind, stop=["\n"]))
    assert [a.tier for a in attempts] == ["hpc"]
    assert attempts[0].kwargs == {"stop": ["\n"], "temperature": 0}
    assert [f["tier"] for f in run.fallbacks] == ["local"]
    assert "no tool calling" in run.fallbacks[0]["error"]


def test_a_conversation_that_fits_as_it_is_is_fitted_once_for_routing_and_sending() -> None:
    fitter = SizeFitter()
    run = _run(order=["local", "hpc"], budgets={"local": 500, "hpc": 900}, fitter=fitter)
    sizes = run.fitted_sizes()
    assert sizes is not None and set(sizes) == {"local", "hpc"}
    attempt = next(run.attempts(_bind))
    assert not attempt.fit_needed and attempt.messages == run.messages
    assert fitter.estimates == 2 and fitter.fits == 0


def test_a_forced_tier_the_conversation_fits_needs_no_fit_from_the_shell() -> None:
    """Routing made no fits (a forced tier skips ``fitted_sizes``): the attempt settles the
    fit itself when the conversation goes as it is, so the shell's fitter call (a thread
    hop for MemoryFitter) is not made."""
    fitter = SizeFitter()
    run = _run(order=["hpc"], budgets={"local": 500, "hpc": 900}, fitter=fitter)
    attempt = next(run.attempts(_bind))
    assert attempt.tier == "hpc" and not attempt.fit_needed
    assert attempt.messages == run.messages and run.fitted is not None
    assert fitter.estimates == 1 and fitter.fits == 0


def test_a_tier_over_budget_is_fitted_by_the_shell_and_skipped_when_it_still_does_not_fit(
) -> None:
    fitter = SizeFitter()
    run = _run(order=["local", "hpc"], budgets={"local": 3, "hpc": 900}, fitter=fitter)
    run.fitted_sizes()
    attempts = run.attempts(_bind)
    first = next(attempts)
    assert first.tier == "local" and first.fit_needed and first.budget == 3
    fitted = fitter.fit_detailed(first.messages, budget_tokens=first.budget, tier="local")
    assert run.use_fit(first, fitted) is False
    second = next(attempts)
    assert second.tier == "hpc" and not second.fit_needed
    assert "does not fit budget 3" in run.plan.skipped[0]["reason"]


def test_the_conversation_is_tokenized_once_per_tokenizer_per_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    real = _count.count_text_tokens

    def counting(text: str) -> int:
        encoded.append(text)
        return real(text)

    monkeypatch.setattr(_count, "count_text_tokens", counting)
    history: list[BaseMessage] = [HumanMessage("first question"), AIMessage("first answer"),
                                  HumanMessage("second question")]
    fitter = SizeFitter()
    run = _run(order=["local", "hpc", "cloud"],
               budgets={"local": 500, "hpc": 900, "cloud": 9000}, fitter=fitter,
               messages=history)
    run.fitted_sizes()
    with run.counting():
        fitter.fit_detailed(run.messages, budget_tokens=500, tier="local")
    assert sorted(encoded) == sorted(m.text for m in history)


def test_a_failure_after_the_first_token_continues_on_the_next_tier() -> None:
    run = _run(order=["local", "hpc"])
    attempts = run.attempts(_bind)
    first = next(attempts)
    chunk = run.on_chunk(first.tier, AIMessageChunk(content="Half an ans", id="x"))
    hint = RouteHint.from_metadata(chunk.message.response_metadata)
    assert hint is not None and hint.tier == "local" and chunk.message.id is None
    run.on_error("local", ConnectionResetError("backend reset"))
    second = next(attempts)
    assert second.tier == "hpc"
    assert second.messages[-2].content == "Half an ans"  # the continuation prompt
    run.on_chunk("hpc", AIMessageChunk(content="wer."))
    rec = RouteRecord.from_metadata(run.finish("hpc").message.response_metadata)
    assert rec is not None
    assert (rec.tier, rec.failover, rec.tiers) == ("hpc", True, ["local", "hpc"])
    assert rec.fallbacks == [{"tier": "local", "error": "ConnectionResetError: backend reset"}]


def test_the_route_is_announced_on_a_tiers_first_chunk_even_before_its_first_token() -> None:
    """The hint rides on the first chunk of a tier's stream (an OpenAI-style role chunk has
    no content); it is said once while that tier answers, and again by the next tier when
    the first began and failed before any output."""
    run = _run(order=["local", "hpc"])
    attempts = run.attempts(_bind)
    next(attempts)
    empty = run.on_chunk("local", AIMessageChunk(content=""))
    hint = RouteHint.from_metadata(empty.message.response_metadata)
    assert hint is not None and hint.tier == "local" and run.ttft_ms is None
    run.on_error("local", ConnectionResetError("backend reset"))
    next(attempts)
    again = RouteHint.from_metadata(run.on_chunk("hpc", AIMessageChunk(content="")).message
                                    .response_metadata)
    assert again is not None and again.tier == "hpc"
    assert again.fallbacks == [{"tier": "local", "error": "ConnectionResetError: backend reset"}]
    first_token = run.on_chunk("hpc", AIMessageChunk(content="Hi"))
    assert RouteHint.from_metadata(first_token.message.response_metadata) is None
    assert run.ttft_ms is not None and not run.failover


def test_without_failover_a_failure_after_the_first_token_raises() -> None:
    run = _run(order=["local", "hpc"], failover=False)
    next(run.attempts(_bind))
    run.on_chunk("local", AIMessageChunk(content="partial"))
    with pytest.raises(TierFailure):
        run.on_error("local", RuntimeError("died"))


def test_usage_the_tier_did_not_report_is_counted_and_reported_once() -> None:
    run = _run(order=["local"])
    next(run.attempts(_bind))
    run.on_chunk("local", AIMessageChunk(content="Hello there"))
    last = run.finish("local").message
    rec = last.response_metadata["stream"]
    assert rec["usage_estimated"] is True and rec["usage"]["input_tokens"] == run.context_tokens
    assert last.usage_metadata is not None
    assert last.usage_metadata["total_tokens"] == sum(rec["usage"].values())


def test_usage_the_tier_reported_is_taken_as_it_is() -> None:
    run = _run(order=["local"])
    next(run.attempts(_bind))
    run.on_chunk("local", AIMessageChunk(content="Hi", usage_metadata={
        "input_tokens": 40, "output_tokens": 2, "total_tokens": 42}))
    last = run.finish("local", high_threshold=0.7).message
    rec = RouteRecord.from_metadata(last.response_metadata)
    assert rec is not None and rec.usage == {"input_tokens": 40, "output_tokens": 2}
    assert not rec.usage_estimated and rec.high_threshold == 0.7
    assert last.usage_metadata is None  # the tier's chunk already reported it


def test_tier_metadata_reaches_the_record_as_it_came() -> None:
    run = _run(order=["hpc"])
    next(run.attempts(_bind))
    run.on_chunk("hpc", AIMessageChunk(content="x", response_metadata={
        "hpc_mode": "stream", "hpc_queue_ms": None, "usage_estimated": True, "other": 1,
        "hpc_total_ms": 812.5}))
    rec = run.finish("hpc").message.response_metadata["stream"]
    assert rec["hpc_mode"] == "stream" and rec["hpc_queue_ms"] is None
    assert RouteRecord.from_dict(rec).tier_value("hpc_total_ms") == 812.5  # usage rows' HPC s
    assert "other" not in rec and rec["usage_estimated"] is True


def test_all_failed_lists_every_fallback_and_skip() -> None:
    run = _run(order=["local"])
    run.plan.skipped.append({"tier": "cloud", "reason": "allow_cloud is False"})
    next(run.attempts(_bind))
    run.on_error("local", OSError("refused"))
    err = run.all_failed()
    assert err.errors == [{"tier": "local", "error": "OSError: refused"}]
    assert err.skipped == [{"tier": "cloud", "reason": "allow_cloud is False"}]
