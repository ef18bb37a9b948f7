"""The summarizing fitter: older turns condensed, incrementally, so a conversation fits a tier.

For one tier with a prompt budget ``B`` (its window minus the answer's reserve):

1. A conversation of at most ``trigger * B`` tokens is sent as it is.
2. Otherwise the latest summary cached for a prefix of this conversation is tried: leading
   system messages, the summary as one ``SystemMessage``, then every message after the prefix.
   If that fits under the trigger, no model is called.
3. Otherwise the cut moves forward so that only the last ``keep_turns`` turns (and the latest
   user turn, never altered) stay verbatim; the span between the cached prefix and the cut is
   summarized together with the cached summary ("extend this summary"), in chunks of at most
   ``chunk_tokens``, and each new summary is cached under the hash of the prefix it covers.
   The work per turn is bounded by the chunk size and the summary cap, not by the history.
4. A summary is used and cached only if it is non-empty and within its token cap. A failing,
   slow or invalid summarizer counts against its circuit breaker, and the conversation is
   truncated instead (oldest turns dropped), still within the budget, and the result says so.

Cuts never fall before a ``ToolMessage``, so an ``AIMessage`` with ``tool_calls`` and the tool
results answering it stay together, on one side of the cut.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from stream_langchain.capabilities import model_name
from stream_langchain.context._cache import LRUSummaryCache, SummaryCache, prefix_hashes
from stream_langchain.context._count import (
    IMAGE_TOKENS,
    TokenCounter,
    cl100k_counter,
    count_tokens,
    describe_part,
    model_counter,
)
from stream_langchain.record import RouteRecord
from stream_langchain.routing import CircuitBreaker

__all__ = [
    "DEFAULT_KEEP_TURNS",
    "SUMMARIZER_KEY",
    "SUMMARY_HEADER",
    "Fitted",
    "SummarizingFitter",
]

DEFAULT_KEEP_TURNS: dict[str, int] = {"local": 3, "hpc": 6, "cloud": 6}
"""Earlier turns kept verbatim per tier (the paper's 3 local / 6 HPC), besides the latest."""

SUMMARY_HEADER = "Summary of the earlier conversation:\n"
"""Starts the summary's ``SystemMessage``."""

SUMMARIZER_KEY = "summarizer"
"""The summarizer's name in the circuit breaker (next to the tiers')."""

_SUMMARY_ID = "stream-summary"

_INSTRUCTIONS = (
    "You condense conversations. Write a short summary of the conversation below as plain "
    "sentences. Keep every name, number, date, decision and preference exactly as written. "
    "Leave out greetings and filler. Do not answer questions and do not add anything new."
)
_EXTEND = (
    "Summary so far:\n{previous}\n\nNew messages:\n{span}\n\nWrite the updated summary: keep "
    "every fact from the summary so far and add the facts from the new messages."
)
_FIRST = "Conversation:\n{span}\n\nWrite the summary."


@dataclass
class Fitted:
    """What fitting a conversation to one tier did (the routing record's context fields)."""

    messages: list[BaseMessage]
    """The messages to send."""
    changed: bool
    """Whether they differ from the conversation given."""
    tokens_before: int
    """The conversation's tokens, in the tier's tokenizer."""
    tokens_after: int
    """The tokens of :attr:`messages`."""
    budget: int
    """The tier's prompt budget (window minus output reserve)."""
    fits: bool
    """``tokens_after <= budget``; when ``False`` the tier must not be sent this."""
    summary_cached: bool = False
    """The summary came from the cache (no summarizer call this request)."""
    summarizer_ms: float | None = None
    """Time spent in summarizer calls this request."""
    summarizer: str | None = None
    """The summarizer model's name, when a summary was used or attempted."""
    summarizer_calls: int = 0
    summarizer_input_tokens: int = 0
    fallback_truncated: bool = False
    """The summarizer failed or was skipped, so the oldest turns were dropped instead."""
    error: str | None = None
    """Why the summarizer was not used, when it was not."""
    summary_used: bool | None = None
    """Whether a summary is in :attr:`messages` (``None``: changed and not truncated)."""
    summary_pending: bool = False
    """A summary for this conversation was still being written when the request went on."""
    recalled_turns: int = 0
    """Evicted turns quoted back into the prompt (recall)."""
    summary_wait_ms: float = 0.0
    """Time the request waited for a summary being written (bounded)."""

    @property
    def summarized(self) -> bool:
        if self.summary_used is not None:
            return self.summary_used
        return self.changed and not self.fallback_truncated

    def apply(self, record: RouteRecord) -> None:
        """Write this fit's fields into the routing record."""
        record.summarized = self.summarized
        record.context_tokens_before = self.tokens_before
        record.context_tokens_after = self.tokens_after
        record.summary_cached = self.summary_cached
        record.summarizer_ms = (None if self.summarizer_ms is None
                                else round(self.summarizer_ms, 3))
        record.summarizer = self.summarizer
        record.fallback_truncated = self.fallback_truncated
        record.summary_pending = self.summary_pending
        record.recalled_turns = self.recalled_turns
        record.context_fitted = self.changed
        record.summary_wait_ms = round(self.summary_wait_ms, 3)
        record.summarizer_calls = self.summarizer_calls
        record.summarizer_input_tokens = self.summarizer_input_tokens
        record.summarizer_error = self.error or None

    def record(self) -> dict[str, Any]:
        """The routing record's fields for this fit (as :meth:`apply` writes them)."""
        rec = RouteRecord(tier="", model="", complexity="", judged_complexity="",
                          confidence=0.0, judge="", judge_ms=0.0)
        self.apply(rec)
        full = rec.to_dict()
        keys = ("summarized", "context_tokens_before", "context_tokens_after",
                "summary_cached", "summarizer_ms", "summarizer", "fallback_truncated",
                "summary_pending", "recalled_turns", "context_fitted", "summary_wait_ms",
                "summarizer_calls", "summarizer_input_tokens", "summarizer_error")
        return {k: full[k] for k in keys if k in full}


@dataclass
class _Call:
    """One summarizer request: the prompt, and its input size for the accounting."""

    prompt: list[BaseMessage]
    input_tokens: int


@dataclass
class _Plan:
    """How a conversation will be fitted to one tier, decided without calling any model."""

    kind: str  # "asis" | "cached" | "summarize" | "truncate" | "nofit"
    tokens: int  # tokens after fitting (an upper bound for "summarize")
    before: int
    cut: int = 0
    base: int = 0  # where the cached summary ends (== lead when none)
    previous: str | None = None
    error: str | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)


_name = model_name  # the one naming rule (capabilities.model_name), as MemoryFitter imports it


def _limited(model: BaseChatModel, max_tokens: int) -> BaseChatModel:
    """A copy of ``model`` that answers in at most ``max_tokens``, greedily where it can."""
    fields = type(model).model_fields
    update: dict[str, Any] = {}
    for name in ("max_tokens", "num_predict", "max_output_tokens"):
        if name in fields:
            update[name] = max_tokens
            break
    if "temperature" in fields:
        update["temperature"] = 0.0
    return model.model_copy(update=update) if update else model


def _render(message: BaseMessage, limit_chars: int) -> str:
    """One message as a line of the summarizer's transcript; images described, not dropped."""
    content = message.content
    if isinstance(content, str):
        text = content
    else:
        bits = []
        for part in content:
            if isinstance(part, str):
                bits.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                bits.append(str(part.get("text", "")))
            else:
                bits.append(describe_part(part))
        text = " ".join(b for b in bits if b)
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = "; ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
        text = f"{text} [called {calls}]".strip()
    if len(text) > limit_chars:
        half = limit_chars // 2
        text = text[:half] + " [...] " + text[-half:]
    role = {"human": "User", "ai": "Assistant", "tool": "Tool result",
            "system": "System"}.get(message.type, message.type)
    return f"{role}: {text}"


class _DetailedFitter:
    """What both fitters share: per-tier counters, and ``fit`` / ``afit`` (the
    :class:`~stream_langchain.context.ContextFitter` protocol) over ``fit_detailed``."""

    counters: dict[str, TokenCounter]
    _fallback: TokenCounter

    def fit_detailed(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                     tier: str) -> Fitted:
        raise NotImplementedError

    async def afit_detailed(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                            tier: str) -> Fitted:
        raise NotImplementedError

    def counter(self, tier: str) -> TokenCounter:
        """The token counter used for ``tier``."""
        return self.counters.get(tier, self._fallback)

    def estimate(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                 tier: str) -> int:
        """Tokens after fitting to ``tier``, no model called: the conversation's own size
        when it is sent as it is, never less than ``budget_tokens`` when it must change."""
        raise NotImplementedError

    def settle(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
               tier: str) -> Fitted | int:
        """The fit itself when the conversation goes to ``tier`` unchanged (so routing's
        look is the fit, not a plan made twice); else the estimate (:meth:`estimate`)."""
        n = self.estimate(messages, budget_tokens=budget_tokens, tier=tier)
        if n < budget_tokens:
            return Fitted(list(messages), False, n, n, budget_tokens, True, summary_used=False)
        return n

    def fit(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
            tier: str) -> tuple[list[BaseMessage], bool]:
        """:class:`~stream_langchain.context.ContextFitter`'s form of :meth:`fit_detailed`."""
        fitted = self.fit_detailed(messages, budget_tokens=budget_tokens, tier=tier)
        return fitted.messages, fitted.changed

    async def afit(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                   tier: str) -> tuple[list[BaseMessage], bool]:
        """Async form of :meth:`fit`."""
        fitted = await self.afit_detailed(messages, budget_tokens=budget_tokens, tier=tier)
        return fitted.messages, fitted.changed


class SummarizingFitter(_DetailedFitter):
    """A :class:`~stream_langchain.context.ContextFitter` that summarizes older turns.

    Args:
        model: the chat model that writes summaries (``ChatStream`` uses its local tier).
        counters: per tier, a token counter in that tier's tokenizer
            (:func:`~stream_langchain.context.model_counter`); others count cl100k x ``margin``.
        keep_turns: earlier turns kept verbatim, per tier or one number for all.
        trigger: summarize once the conversation passes this fraction of the budget.
        summary_tokens: a summary's cap (the summarizer's ``max_tokens``).
        chunk_tokens: most conversation tokens in one summarizer call (less when the
            summarizer's ``n_ctx`` requires it).
        cache: where summaries live between requests (default: in-process LRU).
        breaker: the summarizer's health (key :data:`SUMMARIZER_KEY`).
        timeout_s: a summarizer call slower than this counts as failed.
        margin: safety factor for cl100k counts of tiers without a tokenizer.
        image_tokens: tokens counted per image part (an estimate; images are not tokenized).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> from langchain_core.messages import AIMessage, HumanMessage
        >>> fitter = SummarizingFitter(FakeListChatModel(responses=["They talked."]),
        ...                            keep_turns=1)
        >>> history = []
        >>> for i in range(8):
        ...     history += [HumanMessage(f"question {i} " * 10), AIMessage(f"answer {i} " * 10)]
        >>> fitted = fitter.fit_detailed([*history, HumanMessage("last?")],
        ...                              budget_tokens=300, tier="local")
        >>> fitted.summarized, fitted.tokens_after < 300, fitted.messages[-1].content
        (True, True, 'last?')
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        counters: Mapping[str, TokenCounter] | None = None,
        keep_turns: Mapping[str, int] | int | None = None,
        # Limits
        trigger: float = 0.8,
        summary_tokens: int = 256,
        chunk_tokens: int = 4096,
        margin: float = 1.15,
        image_tokens: int = IMAGE_TOKENS,
        # Timeouts
        timeout_s: float = 120.0,
        cache: SummaryCache | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not 0.0 < trigger <= 1.0:
            raise ValueError(f"summarization trigger must be in (0, 1], got {trigger}")
        if summary_tokens < 16 or chunk_tokens < 64:
            raise ValueError("summary_tokens must be >= 16 and chunk_tokens >= 64, got "
                             f"{summary_tokens} and {chunk_tokens}")
        if timeout_s <= 0:
            raise ValueError(f"summarizer timeout must be > 0 seconds, got {timeout_s}")
        if isinstance(keep_turns, int) or keep_turns is None:
            n = 3 if keep_turns is None else keep_turns
            self.keep_turns = dict(DEFAULT_KEEP_TURNS) if keep_turns is None else {}
            self._keep_default = n
        else:
            self.keep_turns = dict(keep_turns)
            self._keep_default = 3
        if any(v < 0 for v in self.keep_turns.values()) or self._keep_default < 0:
            raise ValueError("keep_turns must be >= 0")
        self.model = model
        self.model_name = model_name(model)
        self._summarizer = _limited(model, summary_tokens)
        self.trigger = trigger
        self.summary_tokens = summary_tokens
        window = getattr(model, "n_ctx", None)
        if isinstance(window, int) and window > 0:
            # The summarizer's own prompt must fit its window: instructions, the previous
            # summary, the chunk, and room for the new summary (llama.cpp fails otherwise).
            room = int((window - 2 * summary_tokens - 160) / margin)
            if room < 64:
                raise ValueError(f"summarizer window {window} is too small for summaries of "
                                 f"{summary_tokens} tokens")
            chunk_tokens = min(chunk_tokens, room)
        self.chunk_tokens = chunk_tokens
        self.timeout_s = timeout_s
        self.cache: SummaryCache = cache if cache is not None else LRUSummaryCache()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        if image_tokens < 0:
            raise ValueError(f"image_tokens must be >= 0, got {image_tokens}")
        self.image_tokens = image_tokens
        self._fallback = cl100k_counter(margin, image_tokens=image_tokens)
        self.counters = dict(counters or {})
        self._own = model_counter(model, margin=margin, image_tokens=image_tokens)
        self._namespace = f"{self.model_name}|{summary_tokens}|{_INSTRUCTIONS}"

    # ------------------------------------------------------------------ public

    def estimate(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                 tier: str) -> int:
        """Tokens after fitting to ``tier`` if the summarizer works (no model is called);
        more than ``budget_tokens`` when nothing can make the conversation fit."""
        return self._plan(list(messages), budget_tokens, tier).tokens

    def settle(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
               tier: str) -> Fitted | int:
        """The fit when the conversation goes as it is, else the estimate (a summary that
        replaces turns can be smaller than the budget: the plan's kind tells)."""
        msgs = list(messages)
        plan = self._plan(msgs, budget_tokens, tier)
        if plan.kind == "asis":
            return Fitted(msgs, False, plan.before, plan.before, budget_tokens,
                          plan.before <= budget_tokens)
        return plan.tokens

    def fit_detailed(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str,
        on_event: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> Fitted:
        """Fit ``messages`` (not modified) to ``tier``'s budget; see the module docs.

        ``on_event(name, data)`` is called with ``"summarize_start"`` before the first
        summarizer call and ``"summarize_end"`` after the last.
        """
        steps = self._steps(list(messages), budget_tokens, tier)
        started: float | None = None
        try:
            call = next(steps)
            started = time.perf_counter()
            if on_event:
                on_event("summarize_start", self._start_data(tier, call))
            while True:
                call = steps.send(self._invoke(call))
        except StopIteration as stop:
            fitted: Fitted = stop.value
        if started is not None and on_event:
            on_event("summarize_end", {"tier": tier, **fitted.record()})
        return fitted

    async def afit_detailed(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str,
        on_event: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> Fitted:
        """Async form of :meth:`fit_detailed`; ``on_event`` may be a coroutine function."""
        steps = self._steps(list(messages), budget_tokens, tier)
        started: float | None = None

        async def emit(name: str, data: dict[str, Any]) -> None:
            if on_event:
                out = on_event(name, data)
                if inspect.isawaitable(out):
                    await out

        try:
            call = next(steps)
            started = time.perf_counter()
            await emit("summarize_start", self._start_data(tier, call))
            while True:
                call = steps.send(await self._ainvoke(call))
        except StopIteration as stop:
            fitted: Fitted = stop.value
        if started is not None:
            await emit("summarize_end", {"tier": tier, **fitted.record()})
        return fitted

    # ------------------------------------------------------------------ model calls

    def _start_data(self, tier: str, call: _Call) -> dict[str, Any]:
        return {"tier": tier, "summarizer": self.model_name, "input_tokens": call.input_tokens}

    def _invoke(self, call: _Call) -> str | BaseException:
        pool = _pool()
        future = pool.submit(self._summarizer.invoke, call.prompt)
        try:
            return str(future.result(timeout=self.timeout_s).content)
        except concurrent.futures.TimeoutError:
            return TimeoutError(f"summarizer took longer than {self.timeout_s:g} s")
        except Exception as exc:
            return exc

    async def _ainvoke(self, call: _Call) -> str | BaseException:
        try:
            msg = await asyncio.wait_for(self._summarizer.ainvoke(call.prompt), self.timeout_s)
            return str(msg.content)
        except TimeoutError:
            return TimeoutError(f"summarizer took longer than {self.timeout_s:g} s")
        except Exception as exc:
            return exc

    # ------------------------------------------------------------------ planning (pure)

    def _keep(self, tier: str) -> int:
        return self.keep_turns.get(tier, self._keep_default)

    def _plan(self, msgs: list[BaseMessage], budget: int, tier: str,
              hashes: list[str] | None = None) -> _Plan:
        trigger = int(budget * self.trigger)
        quick = count_tokens(msgs, image_tokens=self.image_tokens)
        if quick * 1.5 + 16 <= trigger:  # far below: no need for the tier's own tokenizer
            return _Plan("asis", quick, quick)
        count = self.counter(tier)
        per = [count([m]) for m in msgs]
        before = sum(per)
        if before <= trigger:
            return _Plan("asis", before, before)
        lead = _leading_system(msgs)
        tail = _tail_start(msgs, lead)
        cuts = _safe_cuts(msgs, lead, tail)
        system_at = [i for i in range(lead, tail) if isinstance(msgs[i], SystemMessage)]

        def size(cut: int, summary_tokens: int | None) -> int:
            kept = sum(per[:lead]) + sum(per[i] for i in system_at if i < cut)
            extra = 0 if summary_tokens is None else summary_tokens
            return kept + extra + sum(per[cut:])

        cap = self.summary_tokens + count([SystemMessage(SUMMARY_HEADER)])
        hashes = hashes if hashes is not None else prefix_hashes(msgs, f"{self._namespace}|{tier}")
        base, previous = lead, None
        for j in reversed(cuts):
            if j > lead and (hit := self.cache.get(hashes[j])) is not None:
                base, previous = j, hit
                break
        if previous is not None:
            cached_size = size(base, count([SystemMessage(SUMMARY_HEADER + previous)]))
            if cached_size <= trigger:
                return _Plan("cached", cached_size, before, cut=base, base=base,
                             previous=previous)
        humans = [i for i in range(lead, tail + 1) if isinstance(msgs[i], HumanMessage)]
        keep = self._keep(tier)
        target = humans[-(keep + 1)] if len(humans) > keep else lead
        later = [c for c in cuts if c >= max(target, base)]
        if previous is not None:
            cached_size = size(base, count([SystemMessage(SUMMARY_HEADER + previous)]))
            if cached_size <= budget and not any(size(c, cap) <= trigger
                                                 for c in later if c > base):
                return _Plan("cached", cached_size, before, cut=base, base=base,
                             previous=previous)
        cut = next((c for c in later if c > base and size(c, cap) <= trigger), None)
        if cut is None:
            cut = next((c for c in later if c > base and size(c, cap) <= budget), None)
        if cut is None:
            return self._truncation(before, budget, trigger, cuts,
                                    lambda c: size(c, None), "no room for a summary")
        if not self.breaker.allow(SUMMARIZER_KEY):
            return self._truncation(before, budget, trigger, cuts,
                                    lambda c: size(c, None),
                                    "summarizer circuit open after repeated failures")
        spans = self._spans(msgs, base, cut, cuts, previous)
        return _Plan("summarize", size(cut, cap), before, cut=cut, base=base,
                     previous=previous, spans=spans)

    @staticmethod
    def _truncation(before: int, budget: int, trigger: int, cuts: list[int],
                    size: Callable[[int], int], why: str) -> _Plan:
        """Drop the oldest turns: the earliest safe cut under the trigger, else the budget."""
        for limit in (trigger, budget):
            cut = next((c for c in cuts if size(c) <= limit), None)
            if cut is not None:
                return _Plan("truncate", size(cut), before, cut=cut, error=why)
        return _Plan("nofit", size(cuts[-1]) if cuts else before, before, error=why)

    def _spans(self, msgs: list[BaseMessage], base: int, cut: int, cuts: list[int],
               previous: str | None) -> list[tuple[int, int]]:
        """Split ``msgs[base:cut]`` at safe cuts into chunks of at most ``chunk_tokens``."""
        room = self.chunk_tokens
        ends = [c for c in cuts if base < c <= cut]
        spans: list[tuple[int, int]] = []
        start, used = base, 0
        prev_end = base
        for end in ends:
            t = count_tokens(msgs[prev_end:end], image_tokens=self.image_tokens)
            if used and used + t > room:
                spans.append((start, prev_end))
                start, used = prev_end, 0
            used += t
            prev_end = end
        if prev_end > start:
            spans.append((start, prev_end))
        return spans

    # ------------------------------------------------------------------ the steps

    def _prompt(self, msgs: list[BaseMessage], previous: str | None) -> list[BaseMessage]:
        limit = self.chunk_tokens * 3
        lines = [_render(m, limit) for m in msgs if not isinstance(m, SystemMessage)]
        span = "\n".join(lines)
        text = (_EXTEND.format(previous=previous, span=span) if previous
                else _FIRST.format(span=span))
        return [SystemMessage(_INSTRUCTIONS), HumanMessage(text)]

    def _assemble(self, msgs: list[BaseMessage], cut: int, summary: str | None,
                  ) -> list[BaseMessage]:
        lead = _leading_system(msgs)
        kept_system = [m for m in msgs[lead:cut] if isinstance(m, SystemMessage)]
        note = [SystemMessage(SUMMARY_HEADER + summary, id=_SUMMARY_ID)] if summary else []
        return [*msgs[:lead], *kept_system, *note, *msgs[cut:]]

    def _steps(self, msgs: list[BaseMessage], budget: int, tier: str,
               ) -> Generator[_Call, str | BaseException, Fitted]:
        """The fit as a generator: yields summarizer calls, receives their text or error."""
        count = self.counter(tier)
        hashes = prefix_hashes(msgs, f"{self._namespace}|{tier}")
        plan = self._plan(msgs, budget, tier, hashes)
        if plan.kind == "asis":
            return Fitted(msgs, False, plan.before, plan.before, budget, plan.before <= budget)
        if plan.kind in ("truncate", "nofit"):
            return self._truncated(msgs, plan, budget, count, None, 0, 0)
        if plan.kind == "cached":
            out = self._assemble(msgs, plan.cut, plan.previous)
            after = count(out)
            return Fitted(out, True, plan.before, after, budget, after <= budget,
                          summary_cached=True, summarizer=self.model_name)
        summary = plan.previous
        ms = 0.0
        calls = inputs = 0
        for start, end in plan.spans:
            prompt = self._prompt(msgs[start:end], summary)
            n_in = self._own(prompt)
            calls += 1
            inputs += n_in
            t0 = time.perf_counter()
            result = yield _Call(prompt, n_in)
            ms += (time.perf_counter() - t0) * 1000.0
            problem = self._invalid(result)
            if problem is not None:
                self.breaker.record_failure(SUMMARIZER_KEY)
                return self._truncated(msgs, plan, budget, count, problem, ms, calls, inputs)
            assert isinstance(result, str)
            summary = result.strip()
            self.cache.put(hashes[end], summary)  # committed: valid and complete to `end`
        self.breaker.record_success(SUMMARIZER_KEY)
        out = self._assemble(msgs, plan.cut, summary)
        after = count(out)
        if after > budget:
            return self._truncated(msgs, plan, budget, count,
                                   f"summarized context {after} tokens > budget {budget}",
                                   ms, calls, inputs)
        return Fitted(out, True, plan.before, after, budget, True, summarizer_ms=ms,
                      summarizer=self.model_name, summarizer_calls=calls,
                      summarizer_input_tokens=inputs)

    def _invalid(self, result: str | BaseException) -> str | None:
        if isinstance(result, BaseException):
            return f"{type(result).__name__}: {str(result)[:200]}".rstrip(": ")
        text = result.strip()
        if not text:
            return "summarizer returned an empty summary"
        n = self._own([SystemMessage(text)])
        if n > self.summary_tokens * 1.25 + 16:
            return f"summary of {n} tokens exceeds its cap of {self.summary_tokens}"
        return None

    def _truncated(self, msgs: list[BaseMessage], plan: _Plan, budget: int,
                   count: TokenCounter, problem: str | None, ms: float, calls: int,
                   inputs: int = 0) -> Fitted:
        why = problem or plan.error
        if plan.kind != "truncate":
            lead = _leading_system(msgs)
            tail = _tail_start(msgs, lead)
            cuts = _safe_cuts(msgs, lead, tail)
            fallback = self._truncation(
                plan.before, budget, int(budget * self.trigger), cuts,
                lambda c: count(self._assemble(msgs, c, None)), why or "")
        else:
            fallback = plan
        out = self._assemble(msgs, fallback.cut, None) if fallback.kind == "truncate" else msgs
        after = count(out)
        return Fitted(out, out != msgs, plan.before, after, budget, after <= budget,
                      summarizer_ms=ms if calls else None,
                      summarizer=self.model_name if calls else None,
                      summarizer_calls=calls, summarizer_input_tokens=inputs,
                      fallback_truncated=fallback.kind == "truncate", error=why)


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                 thread_name_prefix="stream-summarizer")


def _leading_system(msgs: Sequence[BaseMessage]) -> int:
    i = 0
    while i < len(msgs) and isinstance(msgs[i], SystemMessage):
        i += 1
    return i


def _safe_cuts(msgs: Sequence[BaseMessage], lead: int, tail: int) -> list[int]:
    """Where the conversation may be cut: never just before a ``ToolMessage`` (its tool call
    would be separated from it); ``tail`` (the latest user turn) always."""
    return [i for i in range(lead, tail + 1) if i == tail or not isinstance(msgs[i], ToolMessage)]


def _tail_start(msgs: Sequence[BaseMessage], lead: int) -> int:
    """Where the part that is never summarized starts: the latest user turn (and all after)."""
    for i in range(len(msgs) - 1, lead - 1, -1):
        if isinstance(msgs[i], HumanMessage):
            return i
    for i in range(len(msgs) - 1, lead - 1, -1):
        if not isinstance(msgs[i], ToolMessage):
            return i
    return min(lead, len(msgs))


