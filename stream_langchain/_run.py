"""The state of one routed request, shared by ChatStream's sync and async paths.

Everything that is not I/O lives here: which tier is being tried, what has been streamed,
fallback and failover bookkeeping, and the routing record. The two loops in
``chat_model.py`` only call the sub-models and feed this object.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable

from stream_langchain._messages import continuation
from stream_langchain.context import Fitted
from stream_langchain.errors import AllTiersFailed, TierFailure, describe
from stream_langchain.judges import Complexity, Judgement
from stream_langchain.record import (
    HINT_KEY,
    RECORD_KEY,
    TIER_METADATA_KEYS,
    Fallback,
    RouteHint,
    RouteRecord,
)
from stream_langchain.routing import RoutePlan

__all__ = ["AllTiersFailed", "RequestRun", "TierFailure", "atier_stream", "model_name",
           "tier_stream"]


def model_name(model: BaseChatModel) -> str:
    """The model's name as providers report it (``model_name``/``model``), else its type."""
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return model._llm_type


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


class RequestRun:
    """One request through the tiers: feed it chunks and errors, ask it what to do next."""

    def __init__(
        self,
        *,
        messages: Sequence[BaseMessage],
        judgement: Judgement,
        complexity: Complexity,
        plan: RoutePlan,
        models: dict[str, BaseChatModel],
        context_tokens: int,
        started: float,
        failover: bool,
    ) -> None:
        self.messages = list(messages)
        self.judgement = judgement
        self.complexity = complexity
        self.plan = plan
        self.models = models
        self.context_tokens = context_tokens
        self.started = started
        self.allow_failover = failover
        self.partial: list[str] = []
        self.fallbacks: list[Fallback] = []
        self.causes: list[BaseException] = []
        self.failover = False
        self.tiers_used: list[str] = []
        self.ttft_ms: float | None = None
        self.summarized = False
        self.fitted: Fitted | None = None
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.needs: dict[str, Any] | None = None
        self.tier_metadata: dict[str, Any] = {}
        self.usage_estimated = False
        self._tier_output = False
        self._announced = False

    # ----------------------------------------------------------------- per tier

    def messages_for(self, tier: str) -> list[BaseMessage]:
        """The conversation to send to ``tier``: the original, or a continuation prompt
        carrying the partial answer after a mid-stream failure."""
        self._tier_output = False
        if self.partial:
            return continuation(self.messages, "".join(self.partial))
        return list(self.messages)

    def use_fit(self, tier: str, fitted: Fitted) -> bool:
        """Record how the context was fitted to ``tier``; ``False`` (and ``tier`` listed in
        ``skipped``) when it still does not fit, so it must not be sent there."""
        self.fitted = fitted
        self.summarized = fitted.summarized
        if fitted.fits:
            return True
        why = f" ({fitted.error})" if fitted.error else ""
        self.plan.skipped.append({"tier": tier, "reason": (
            f"context {fitted.tokens_before} tokens does not fit budget {fitted.budget} "
            f"even after fitting{why}")})
        return False

    def on_chunk(self, tier: str, message: BaseMessage) -> ChatGenerationChunk:
        """Re-emit a sub-model chunk as ours (its id and end marker dropped).

        A tier whose ``stream`` falls back to ``invoke`` (``disable_streaming``, for example
        ``"tool_calling"``) yields one whole ``AIMessage``: it is taken as a single chunk.
        """
        if not isinstance(message, AIMessageChunk):
            message = AIMessageChunk(**message.model_dump(exclude={"type"}))
        if _has_output(message):
            if self.ttft_ms is None:
                self.ttft_ms = (time.perf_counter() - self.started) * 1000.0
            if not self._tier_output:
                self._tier_output = True
                self.tiers_used.append(tier)
            if isinstance(message.content, str):
                self.partial.append(message.content)
        if message.usage_metadata:
            self.usage["input_tokens"] += message.usage_metadata.get("input_tokens", 0)
            self.usage["output_tokens"] += message.usage_metadata.get("output_tokens", 0)
        meta = dict(message.response_metadata)
        if _has_output(message) and not self._announced:
            # The first output chunk says where the answer comes from, so a UI can show it
            # before the last chunk's full record arrives.
            self._announced = True
            meta[HINT_KEY] = self.route_hint(tier)
        for key in TIER_METADATA_KEYS:
            if key in meta:
                self.tier_metadata[key] = meta[key]
        if meta.get("usage_estimated"):
            self.usage_estimated = True
        update: dict[str, Any] = {"id": None, "response_metadata": meta}
        if getattr(message, "chunk_position", None):
            update["chunk_position"] = None
        return ChatGenerationChunk(message=message.model_copy(update=update))

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
        return RouteHint(tier=tier, model=model_name(self.models[tier]),
                         complexity=self.complexity.value, judge=self.judgement.judge,
                         judge_ms=round(self.judgement.ms, 3),
                         fallbacks=list(self.fallbacks)).to_dict()

    def record(self, tier: str) -> RouteRecord:
        """The routing record (``response_metadata["stream"]``) as known now."""
        j = self.judgement
        rec = RouteRecord(
            tier=tier,
            model=model_name(self.models[tier]),
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
            skipped=list(self.plan.skipped),  # type: ignore[arg-type]
            override=self.plan.override,
            judge_errors=list(j.errors),
            needs=self.needs,
            tier_metadata=dict(self.tier_metadata),
            usage_estimated=self.usage_estimated,
        )
        if self.fitted is not None:
            self.fitted.apply(rec)
        return rec

    def final_chunk(self, record: RouteRecord) -> ChatGenerationChunk:
        """An empty last chunk that carries the routing record."""
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={RECORD_KEY: record.to_dict()},
                chunk_position="last",
            )
        )

    def all_failed(self) -> AllTiersFailed:
        fallbacks = cast("list[dict[str, str]]", list(self.fallbacks))
        return AllTiersFailed(fallbacks, list(self.plan.skipped), causes=list(self.causes))
