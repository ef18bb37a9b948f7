"""The state of one routed request, shared by ChatStream's sync and async paths.

Everything that is not I/O lives here: the conversation's count (once per tokenizer), the
fit per tier (made once, reused), each attempt's model, messages and budget, what has been
streamed, fallback and failover bookkeeping, and the routing record
(:class:`~stream_langchain.record.RouteRecord`). The two loops in ``chat_model.py`` only
call the judge, the fitter and the sub-models, and feed this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable

from stream_langchain._messages import continuation, final_chunk
from stream_langchain.capabilities import model_name
from stream_langchain.context import IMAGE_TOKENS, ContextFitter, Fitted, count_text_tokens
from stream_langchain.context._count import CountMemo, count_tokens, counted_once
from stream_langchain.context._fitter import _DetailedFitter
from stream_langchain.errors import AllTiersFailed, TierFailure, describe
from stream_langchain.judges import Complexity, Judgement
from stream_langchain.record import (
    HINT_KEY,
    RECORD_KEY,
    TIER_METADATA_KEYS,
    Fallback,
    RouteHint,
    RouteRecord,
    Skip,
    Usage,
)
from stream_langchain.routing import RoutePlan

__all__ = ["AllTiersFailed", "Attempt", "Binder", "RequestRun", "TierFailure", "atier_stream",
           "model_name", "tier_stream"]


def _unset_handlers() -> None:
    from langchain_core.runnables.config import var_child_runnable_config
    from langchain_core.tracers.context import _configure_hooks

    var_child_runnable_config.set(None)
    for var, *_ in _configure_hooks:
        var.set(None)


def _tier_context() -> contextvars.Context:
    """A copy of the current context without the callback handlers LangChain finds there
    (the enclosing chain's config, ``get_usage_metadata_callback()``, ``tracing_v2_enabled()``
    and other configure hooks).

    The tier's run happens inside ChatStream's own run, which already reports the request to
    every handler once (start, tokens, end with the usage the tier measured). Letting the tier
    report to the same handlers would count each request twice. A LangSmith tracer that the
    environment alone turns on (``LANGSMITH_TRACING``) is not a handler found here: it still
    sees the tier's run, as a trace of its own.
    """
    ctx = contextvars.copy_context()
    ctx.run(_unset_handlers)
    return ctx


def tier_stream(model: Runnable[Any, Any], messages: list[BaseMessage],
                **kwargs: Any) -> Iterator[BaseMessageChunk]:
    """``model.stream(messages, **kwargs)`` out of sight of the caller's callback handlers
    (see :func:`_tier_context`)."""
    ctx = _tier_context()
    chunks = ctx.run(model.stream, messages, **kwargs)
    try:
        while True:
            try:
                chunk = ctx.run(next, chunks)
            except StopIteration:
                return
            yield chunk
    finally:
        ctx.run(chunks.close)  # type: ignore[attr-defined]


_END = object()


async def atier_stream(model: Runnable[Any, Any], messages: list[BaseMessage],
                       **kwargs: Any) -> AsyncIterator[BaseMessageChunk]:
    """``model.astream(messages, **kwargs)`` out of sight of the caller's callback handlers
    (each step runs as a task in :func:`_tier_context`; cancelling the caller cancels it)."""
    ctx = _tier_context()
    chunks = ctx.run(model.astream, messages, **kwargs)

    async def step() -> Any:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return _END

    task: asyncio.Task[Any] | None = None
    try:
        while True:
            task = asyncio.create_task(step(), context=ctx)
            chunk = await task
            if chunk is _END:
                return
            yield chunk
    finally:
        if task is not None and not task.done():
            # The caller was cancelled while a step ran: the step is still inside the
            # generator until its own cancellation lands; closing before that would find
            # the generator running ("aclose(): asynchronous generator is already running").
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: the caller's cancellation is what propagates
        # Abandoned streams are closed by the loop's async-generator finalizer, which may
        # already be closing the tier's stream: closing it again would raise.
        if not getattr(chunks, "ag_running", False):
            await asyncio.create_task(chunks.aclose(), context=ctx)  # type: ignore[attr-defined]


def _has_output(msg: AIMessageChunk) -> bool:
    return bool(msg.content) or bool(msg.tool_call_chunks)


Binder = Callable[[str], tuple[Runnable[Any, Any], dict[str, Any]]]
"""A tier's model as this request sends to it (tools bound) and the call's keyword
arguments; raises ``NotImplementedError`` for a capability the tier lacks."""


@dataclass
class Attempt:
    """One try of one tier: what to send and to which model."""

    tier: str
    model: Runnable[Any, Any]
    """The tier's model, tools bound when the request has tools."""
    messages: list[BaseMessage]
    """The conversation for this tier (a continuation after a mid-stream failure), fitted
    once :attr:`fit_needed` is ``False``."""
    kwargs: dict[str, Any]
    """Keyword arguments of the model call (``stop`` and the caller's own)."""
    budget: int
    """The tier's prompt budget (window minus the answer's reserve)."""
    fit_needed: bool
    """The fitter must still fit :attr:`messages` (I/O: it may wait for a summary); the
    shell calls it and hands the result to :meth:`RequestRun.use_fit`."""


class RequestRun:
    """One request through the tiers: it prepares each attempt, takes the tiers' chunks and
    errors, and builds the routing record. No I/O: ``ChatStream._stream`` / ``_astream``
    call the judge, the fitter and the models, and feed this object.

    Args:
        messages: the conversation (not modified).
        judgement: what the judge said (or the forced placeholder).
        complexity: the label routed on (after ``high_threshold``).
        model_names: per configured tier, its model's name (for the record).
        budgets: per tier with a known window, its prompt budget.
        fitter: the context fitter, if any.
        image_tokens: tokens counted per image part.
        started: ``time.perf_counter()`` when the request began.
        failover: continue on the next tier after a failure mid-answer.

    Example:
        >>> from langchain_core.messages import AIMessageChunk, HumanMessage
        >>> from stream_langchain.judges import Complexity, Judgement
        >>> from stream_langchain.routing import RoutePlan
        >>> run = RequestRun(messages=[HumanMessage("hi")],
        ...                  judgement=Judgement(Complexity.LOW, 0.9, "keyword"),
        ...                  complexity=Complexity.LOW, model_names={"local": "qwen"})
        >>> run.route(RoutePlan(Complexity.LOW, ["local"]))
        >>> [a.tier for a in run.attempts(lambda t: (None, {}))]
        ['local']
        >>> _ = run.on_chunk("local", AIMessageChunk("Hello"))
        >>> run.finish("local").message.response_metadata["stream"]["tiers"]
        ['local']
    """

    def __init__(
        self,
        *,
        messages: Sequence[BaseMessage],
        judgement: Judgement,
        complexity: Complexity,
        model_names: Mapping[str, str],
        budgets: Mapping[str, int] | None = None,
        fitter: ContextFitter | None = None,
        image_tokens: int = IMAGE_TOKENS,
        started: float | None = None,
        failover: bool = True,
        needs: dict[str, Any] | None = None,
    ) -> None:
        self.messages = list(messages)
        self.judgement = judgement
        self.complexity = complexity
        self.model_names = dict(model_names)
        self.budgets = dict(budgets or {})
        self.fitter = fitter
        self.image_tokens = image_tokens
        self.started = time.perf_counter() if started is None else started
        self.allow_failover = failover
        self.needs = needs
        self.plan = RoutePlan(complexity, [])
        self.memo: CountMemo = {}
        with self.counting():
            self.context_tokens = count_tokens(self.messages, image_tokens=image_tokens)
        self.fits: dict[str, Fitted] = {}
        """Per tier, the fit of the original conversation once made (made once, reused)."""
        self.partial: list[str] = []
        self.fallbacks: list[Fallback] = []
        self.causes: list[BaseException] = []
        self.failover = False
        self.tiers_used: list[str] = []
        self.ttft_ms: float | None = None
        self.summarized = False
        self.fitted: Fitted | None = None
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.tier_metadata: dict[str, Any] = {}
        self.usage_estimated = False
        self._tier_output = False
        self._announced: str | None = None
        """The tier the route hint named (:meth:`on_chunk`)."""

    # ----------------------------------------------------------------- routing

    def counting(self) -> contextlib.AbstractContextManager[None]:
        """A block in which this request's messages are counted once per tokenizer (the
        shell wraps its fitter calls in it; no ``yield`` inside)."""
        return counted_once(self.memo)

    def budget(self, tier: str) -> int:
        """``tier``'s prompt budget (unbounded when its window is unknown)."""
        return self.budgets.get(tier, _UNBOUNDED)

    def fitted_sizes(self) -> dict[str, int] | None:
        """Per windowed tier, the conversation's size after fitting, for routing (``None``:
        the fitter cannot tell without fitting). A tier the conversation fits as it is
        keeps its fit (:attr:`fits`), so it is not fitted again when tried."""
        if self.fitter is None:
            return None
        if not isinstance(self.fitter, _DetailedFitter):
            return None
        sizes: dict[str, int] = {}
        with self.counting():
            for tier, budget in self.budgets.items():
                got = self.fitter.settle(self.messages, budget_tokens=budget, tier=tier)
                if isinstance(got, Fitted):
                    self.fits[tier] = got
                    got = got.tokens_after
                sizes[tier] = got
        return sizes or None

    def settled(self, tier: str) -> Fitted | None:
        """``tier``'s fit of the original conversation when it is known without waiting:
        made at routing, or made now when the conversation goes to ``tier`` as it is (the
        common case: no fitter I/O, no thread). ``None``: the shell must fit (I/O)."""
        if tier in self.fits or not isinstance(self.fitter, _DetailedFitter):
            return self.fits.get(tier)
        with self.counting():
            got = self.fitter.settle(self.messages, budget_tokens=self.budget(tier), tier=tier)
        if isinstance(got, Fitted):
            self.fits[tier] = got
            return got
        return None

    def route(self, plan: RoutePlan) -> None:
        """The tiers to try, in order (``routing.plan_route``)."""
        self.plan = plan

    # ----------------------------------------------------------------- per tier

    def attempts(self, bind: Binder, **call: Any) -> Iterator[Attempt]:
        """The attempts, one per tier in the plan's order, while the shell keeps asking
        (it stops at the first tier that answers). A tier that cannot take the request
        (``bind`` raises ``NotImplementedError``: a capability gap, not ill health) is
        recorded as a fallback and passed over."""
        for tier in self.plan.order:
            try:
                model, kwargs = bind(tier)
            except NotImplementedError as exc:
                self.on_error(tier, exc)
                continue
            messages = self.messages_for(tier)
            attempt = Attempt(tier, model, messages, {**call, **kwargs}, self.budget(tier),
                              fit_needed=self.fitter is not None)
            known = None if self.partial else self.settled(tier)
            if known is not None and self.use_fit(attempt, known):
                yield attempt
            elif known is None:
                yield attempt

    def messages_for(self, tier: str) -> list[BaseMessage]:
        """The conversation to send to ``tier``: the original, or a continuation prompt
        carrying the partial answer after a mid-stream failure."""
        self._tier_output = False
        if self.partial:
            return continuation(self.messages, "".join(self.partial))
        return list(self.messages)

    def use_fit(self, attempt: Attempt, fitted: Fitted) -> bool:
        """Take the fit of ``attempt``'s messages; ``False`` (and the tier listed in
        ``skipped``) when it still does not fit, so it must not be sent there."""
        self.fitted = fitted
        self.summarized = fitted.summarized
        attempt.fit_needed = False
        if not fitted.fits:
            why = f" ({fitted.error})" if fitted.error else ""
            self.plan.skipped.append({"tier": attempt.tier, "reason": (
                f"context {fitted.tokens_before} tokens does not fit budget {fitted.budget} "
                f"even after fitting{why}")})
            return False
        attempt.messages = fitted.messages
        return True

    def on_chunk(self, tier: str, message: BaseMessage) -> ChatGenerationChunk:
        """Re-emit a sub-model chunk as ours (its id and end marker dropped).

        A tier whose ``stream`` falls back to ``invoke`` (``disable_streaming``, for example
        ``"tool_calling"``) yields one whole ``AIMessage``: it is taken as a single chunk.
        """
        if not isinstance(message, AIMessageChunk):
            message = AIMessageChunk(**message.model_dump(exclude={"type"}))
        meta = dict(message.response_metadata)
        if self._announced != tier and not self.started_output:
            # The first chunk of a tier's stream says where the answer comes from (a UI, or
            # the proxy's headers, need not wait for the first token); a tier that began and
            # failed before any output is replaced by the next one's announcement.
            self._announced = tier
            meta[HINT_KEY] = self.route_hint(tier)
        if _has_output(message):
            self._output(tier, message, meta)
        if message.usage_metadata:
            self.usage["input_tokens"] += message.usage_metadata.get("input_tokens", 0)
            self.usage["output_tokens"] += message.usage_metadata.get("output_tokens", 0)
        for key in TIER_METADATA_KEYS:
            if key in meta:
                self.tier_metadata[key] = meta[key]
        if meta.get("usage_estimated"):
            self.usage_estimated = True
        update: dict[str, Any] = {"id": None, "response_metadata": meta}
        if getattr(message, "chunk_position", None):
            update["chunk_position"] = None
        return ChatGenerationChunk(message=message.model_copy(update=update))

    def _output(self, tier: str, message: AIMessageChunk, meta: dict[str, Any]) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0
        if not self._tier_output:
            self._tier_output = True
            self.tiers_used.append(tier)
        if isinstance(message.content, str):
            self.partial.append(message.content)

    def on_error(self, tier: str, exc: BaseException) -> None:
        """Record a tier's failure; raise if the answer cannot continue elsewhere."""
        self.fallbacks.append(Fallback(tier=tier, error=describe(exc)))
        self.causes.append(exc)
        if self._tier_output:
            if not self.allow_failover:
                raise TierFailure(tier, exc) from exc
            self.failover = True

    @property
    def started_output(self) -> bool:
        return bool(self.partial) or bool(self.tiers_used)

    # ----------------------------------------------------------------- the end

    def route_hint(self, tier: str) -> dict[str, Any]:
        """The decision as known at the first token: tier, model, complexity, judge."""
        return RouteHint(tier=tier, model=self.model_names[tier],
                         complexity=self.complexity.value, judge=self.judgement.judge,
                         judge_ms=round(self.judgement.ms, 3),
                         fallbacks=list(self.fallbacks)).to_dict()

    def record(self, tier: str) -> RouteRecord:
        """The routing record (``response_metadata["stream"]``) as known now."""
        j = self.judgement
        rec = RouteRecord(
            tier=tier,
            model=self.model_names[tier],
            complexity=self.complexity.value,
            judged_complexity=j.complexity.value,
            confidence=round(j.confidence, 4),
            judge=j.judge,
            judge_ms=round(j.ms, 3),
            judge_cached=j.cached,
            ttft_ms=None if self.ttft_ms is None else round(self.ttft_ms, 3),
            total_ms=round((time.perf_counter() - self.started) * 1000.0, 3),
            summarized=self.summarized,
            context_tokens=self.context_tokens,
            context_tokens_before=self.context_tokens,
            context_tokens_after=self.context_tokens,
            fallbacks=list(self.fallbacks),
            failover=self.failover,
            tiers=list(self.tiers_used) or [tier],
            skipped=cast("list[Skip]", list(self.plan.skipped)),
            override=self.plan.override,
            judge_errors=list(j.errors),
            needs=self.needs,
            tier_metadata=dict(self.tier_metadata),
            usage_estimated=self.usage_estimated,
        )
        if self.fitted is not None:
            self.fitted.apply(rec)
        return rec

    def answer_usage(self) -> tuple[Usage, bool]:
        """Tokens in and out of the answer, and whether any is counted here: a tier that
        reports no usage, or no prompt tokens, is counted so budgets never see a free
        answer."""
        usage = Usage(input_tokens=self.usage["input_tokens"],
                      output_tokens=self.usage["output_tokens"])
        estimated = False
        if not usage["input_tokens"]:
            usage["input_tokens"] = self.context_tokens
            estimated = True
        if not usage["output_tokens"] and self.partial:
            usage["output_tokens"] = count_text_tokens("".join(self.partial))
            estimated = True
        return usage, estimated

    def finish(self, tier: str, usage: tuple[Usage, bool] | None = None,
               **fields: Any) -> ChatGenerationChunk:
        """The last chunk: empty, carrying the routing record (``fields`` set on it) and
        the usage this run counted itself, so it reaches usage callbacks once. ``usage``:
        :meth:`answer_usage`, when the caller needed it first (to charge for it)."""
        record = self.record(tier)
        for name, value in fields.items():
            setattr(record, name, value)
        counted, estimated = usage if usage is not None else self.answer_usage()
        record.usage = counted
        record.usage_estimated = record.usage_estimated or estimated
        added = {k: counted[k] - self.usage[k] for k in ("input_tokens", "output_tokens")}
        return final_chunk(response_metadata={RECORD_KEY: record.to_dict()},
                           usage=added if any(added.values()) else None)

    def history(self) -> list[BaseMessage]:
        """The conversation with this answer appended (for preparing the next request)."""
        return [*self.messages, AIMessage("".join(self.partial))]

    def all_failed(self) -> AllTiersFailed:
        fallbacks = cast("list[dict[str, str]]", list(self.fallbacks))
        return AllTiersFailed(fallbacks, list(self.plan.skipped), causes=list(self.causes))


_UNBOUNDED = 1 << 62
