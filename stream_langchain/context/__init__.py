"""Tier-aware context fitting: token budgets, recall of evicted turns, background summaries.

:class:`~stream_langchain.ChatStream` counts the conversation's tokens and, for each tier it
considers, asks its ``summarizer`` (any :class:`ContextFitter`) for the messages that fit that
tier's prompt budget (window minus the answer's reserve). The default fitter,
:class:`MemoryFitter`, fills that budget: system messages, the latest turn and as many recent
turns verbatim as fit, the latest summary of older turns (written in the background after an
answer, never on the request path beyond a small bound), and the evicted turns most relevant
to the latest question, quoted (BM25, plus embeddings when configured). Summaries and the
recall index are cached by content hash (:class:`LRUSummaryCache`, or
:class:`SQLiteSummaryCache` shared between processes), so a client that resends the whole
history pays only for what is new. :class:`SummarizingFitter` is the previous fitter (older
turns summarized inline on the request path), kept for comparison (``[context] fitter =
"summarize"``). Routing uses the size after fitting, and the routing record says what
happened (``summarized``, ``context_tokens_before`` / ``_after``, ``summary_cached``,
``summary_pending``, ``recalled_turns``, ``summarizer``, ``fallback_truncated``).

Example:
    >>> from langchain_core.messages import HumanMessage
    >>> count_tokens([HumanMessage("hello world")]) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage

from stream_langchain.context._cache import (
    LRUSummaryCache,
    SQLiteSummaryCache,
    SummaryCache,
    prefix_hashes,
)
from stream_langchain.context._count import (
    IMAGE_TOKENS,
    TokenCounter,
    cl100k_counter,
    count_text_tokens,
    count_tokens,
    message_text,
    model_counter,
)
from stream_langchain.context._fitter import (
    DEFAULT_KEEP_TURNS,
    SUMMARIZER_KEY,
    SUMMARY_HEADER,
    Fitted,
    SummarizingFitter,
)
from stream_langchain.context._memory import RECALL_HEADER, MemoryFitter, identifiers
from stream_langchain.context._recall import Embedder, RecallIndex, bm25_scores, terms

__all__ = [
    "DEFAULT_KEEP_TURNS",
    "IMAGE_TOKENS",
    "RECALL_HEADER",
    "SUMMARIZER_KEY",
    "SUMMARY_HEADER",
    "ContextFitter",
    "Embedder",
    "Fitted",
    "LRUSummaryCache",
    "MemoryFitter",
    "RecallIndex",
    "SQLiteSummaryCache",
    "SummarizingFitter",
    "SummaryCache",
    "TokenCounter",
    "afit_with",
    "bm25_scores",
    "cl100k_counter",
    "count_text_tokens",
    "count_tokens",
    "estimate_with",
    "fit_with",
    "identifiers",
    "message_text",
    "model_counter",
    "prefix_hashes",
    "prepare_with",
    "terms",
]

OnEvent = Callable[[str, dict[str, Any]], Any]


@runtime_checkable
class ContextFitter(Protocol):
    """Makes a conversation fit a tier's token budget.

    Implementations must not mutate ``messages``; they return a new list.
    """

    def fit(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str
    ) -> tuple[list[BaseMessage], bool]:
        """Return ``(messages_to_send, changed)``."""
        ...

    async def afit(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str
    ) -> tuple[list[BaseMessage], bool]:
        """Async form of :meth:`fit`."""
        ...


def _plain(messages: Sequence[BaseMessage], out: list[BaseMessage], changed: bool,
           budget: int) -> Fitted:
    before, after = count_tokens(messages), count_tokens(out)
    return Fitted(out, changed, before, after, budget, after <= budget)


def fit_with(fitter: ContextFitter, messages: Sequence[BaseMessage], *, budget_tokens: int,
             tier: str, on_event: OnEvent | None = None) -> Fitted:
    """Fit with any :class:`ContextFitter`; :class:`MemoryFitter` and
    :class:`SummarizingFitter` report in full, others as ``(messages, changed)`` with cl100k
    counts."""
    if isinstance(fitter, SummarizingFitter | MemoryFitter):
        return fitter.fit_detailed(messages, budget_tokens=budget_tokens, tier=tier,
                                   on_event=on_event)
    out, changed = fitter.fit(messages, budget_tokens=budget_tokens, tier=tier)
    return _plain(messages, out, changed, budget_tokens)


async def afit_with(fitter: ContextFitter, messages: Sequence[BaseMessage], *,
                    budget_tokens: int, tier: str, on_event: OnEvent | None = None) -> Fitted:
    """Async form of :func:`fit_with`."""
    if isinstance(fitter, SummarizingFitter | MemoryFitter):
        return await fitter.afit_detailed(messages, budget_tokens=budget_tokens, tier=tier,
                                          on_event=on_event)
    out, changed = await fitter.afit(messages, budget_tokens=budget_tokens, tier=tier)
    return _plain(messages, out, changed, budget_tokens)


def estimate_with(fitter: ContextFitter, messages: Sequence[BaseMessage], *,
                  budget_tokens: int, tier: str) -> int | None:
    """Tokens after fitting, without calling a model, when the fitter can tell
    (:meth:`MemoryFitter.estimate`, :meth:`SummarizingFitter.estimate`); ``None`` otherwise."""
    if isinstance(fitter, SummarizingFitter | MemoryFitter):
        return fitter.estimate(messages, budget_tokens=budget_tokens, tier=tier)
    return None


def prepare_with(fitter: ContextFitter, messages: Sequence[BaseMessage], *,
                 budget_tokens: int, tier: str) -> bool:
    """After an answer: let a fitter that writes summaries in the background start the one
    the next request will want (:meth:`MemoryFitter.prepare`); ``False`` for others."""
    if isinstance(fitter, MemoryFitter):
        return fitter.prepare(messages, budget_tokens=budget_tokens, tier=tier)
    return False
