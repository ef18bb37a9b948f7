"""The memory fitter: fill the budget, recall evicted turns, summarize in the background.

For one tier with a prompt budget ``B`` (its window minus the answer's reserve):

1. A conversation of at most ``B`` tokens is sent as it is.
2. Otherwise the leading system messages and the latest user turn are kept, then the most
   recent turns verbatim (as many as fit, keeping ``recall_share`` of the room for recall),
   then the latest summary cached for a prefix of this conversation (if any), then the
   evicted turns most relevant to the latest user message, quoted in one system message
   (BM25 over the evicted turns, plus embeddings when configured; the user's own words are
   kept longer than assistant answers, so long answers are compressed first). Room left
   over goes back to the verbatim window. The result fills the budget; it never shrinks the
   conversation to a fraction of it.
3. No model is called on the request path. Summaries are written in the background: after an
   answer (:meth:`MemoryFitter.prepare`, past ``watermark`` of the budget) and when a fit
   evicts at least ``min_span_tokens`` not yet summarized. A request that finds a summary
   being written waits at most ``wait_s`` for it, then goes on with the previous summary and
   recall (``summary_pending`` in the record).
4. Summaries are facts first (names, numbers, dates, identifiers, decisions, in the user's
   words), extended incrementally and cached by the hash of the prefix they cover (the same
   stores as :class:`~stream_langchain.context.SummarizingFitter`). Each is validated: an
   identifier the user wrote in the span (or the previous summary held) that the summary
   dropped is supplemented by quoting the sentence it was in.

Cuts never fall before a ``ToolMessage``: a tool call and its results stay together, both in
the verbatim window and in a recalled excerpt.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from stream_langchain._priority import Preempted
from stream_langchain._priority import background as background_work
from stream_langchain.context._cache import LRUSummaryCache, SummaryCache, canonical
from stream_langchain.context._count import (
    IMAGE_TOKENS,
    TokenCounter,
    cl100k_counter,
    count_tokens,
    message_text,
    model_counter,
)
from stream_langchain.context._fitter import (
    SUMMARIZER_KEY,
    SUMMARY_HEADER,
    Fitted,
    _DetailedFitter,
    _leading_system,
    _limited,
    _name,
    _render,
    _safe_cuts,
    _tail_start,
)
from stream_langchain.context._recall import Embedder, RecallIndex, message_key
from stream_langchain.routing import CircuitBreaker

__all__ = ["RECALL_HEADER", "MemoryFitter", "identifiers"]

RECALL_HEADER = "Earlier in this conversation (quoted excerpts, oldest first):\n"
"""Starts the system message that quotes recalled turns."""

_SUMMARY_ID = "stream-summary"
_RECALL_ID = "stream-recall"

_INSTRUCTIONS = (
    "You keep notes on a conversation. Write the facts first, one short line each: every "
    "name, number, date, identifier, address, decision and preference the user stated, in "
    "the user's own words and spelled exactly as written. Then one line on what was "
    "discussed. Do not answer questions and do not add anything new."
)
_EXTEND = ("Notes so far:\n{previous}\n\nNew messages:\n{span}\n\nWrite the updated notes: "
           "keep every fact from the notes so far and add the facts from the new messages.")
_FIRST = "Conversation:\n{span}\n\nWrite the notes."

_ID = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"            # e-mail addresses
    r"|\b[\w.-]*\d(?:[\w,./:-]*\w)?"          # anything with a digit: 42,000  318  gs-ml-2
    r"|\b[A-Z][A-Za-z0-9]*[A-Z][\w-]*"         # BLUEFIN, PostgreSQL, McKay
    r"|(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}(?:[ -][A-Z][a-z]+)*"  # names inside a sentence
)
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
_DIGITS = re.compile(r"\d+")


def _strength(identifier: str) -> int:
    """How much an identifier is worth keeping: addresses and codes most, bare small numbers
    and single capitalized words least."""
    if "@" in identifier or (any(c.isdigit() for c in identifier)
                             and any(c.isalpha() for c in identifier)):
        return 3
    if identifier.isdigit() or identifier.replace(",", "").isdigit():
        return 2 if len(identifier) >= 3 else 1
    return 2 if " " in identifier or sum(c.isupper() for c in identifier) > 1 else 1


def _hash_all(msgs: Sequence[BaseMessage], namespace: str) -> tuple[list[str], list[str]]:
    """Each message's recall key and the prefix hashes (as ``message_key`` and
    ``prefix_hashes`` compute them), serializing every message once."""
    canon = [canonical(m) for m in msgs]
    keys = [hashlib.sha256(b"stream-recall-v1\0" + c).hexdigest() for c in canon]
    h = hashlib.sha256(b"stream-summary-v1\0" + namespace.encode()).digest()
    prefix = [h.hex()]
    for c in canon:
        h = hashlib.sha256(h + c).digest()
        prefix.append(h.hex())
    return keys, prefix


def identifiers(text: str) -> list[str]:
    """Identifiers a summary must keep: e-mails, tokens with digits, capitalized names
    inside a sentence, words with inner capitals.

    Example:
        >>> identifiers("Our bucket is gs-ml-2 and Marta Kowalski owns it. Ask her.")
        ['gs-ml-2', 'Marta Kowalski']
    """
    seen: dict[str, None] = {}
    for match in _ID.finditer(text):
        token = match.group(0).strip(".,:;-")
        if len(token) >= 2 or token.isdigit():
            seen.setdefault(token, None)
    return list(seen)


@dataclass
class _Layout:
    """How a conversation is laid out for one tier (decided without calling any model)."""

    kind: str  # "asis" | "fit" | "nofit"
    before: int
    tokens: int
    cut: int = 0
    base: int = 0
    summary: str | None = None
    recalled: list[tuple[int, int]] = field(default_factory=list)
    pending: bool = False
    waited_ms: float = 0.0
    excerpts: dict[tuple[int, int], str] = field(default_factory=dict)


@dataclass
class _Job:
    """A background summary: ``msgs[base:end]`` folded into ``previous``."""

    msgs: list[BaseMessage]
    hashes: list[str]
    base: int
    end: int
    previous: str | None


class MemoryFitter(_DetailedFitter):
    """A :class:`~stream_langchain.context.ContextFitter` that fills the budget, recalls
    evicted turns and summarizes in the background (see the module docs).

    Args:
        model: the chat model that writes summaries (``ChatStream``: ``summarizer_model``,
            else its local tier).
        counters: per tier, a token counter in that tier's tokenizer; others count cl100k x
            ``margin``.
        embedder: an embedding model for recall (LangChain ``Embeddings``); ``None``: BM25.
        summary_tokens: a summary's cap.
        recall_share: the part of the room kept for recalled turns before verbatim turns
            take the rest (unused recall room goes back to the verbatim window).
        excerpt_chars: an assistant answer or tool result quoted in recall is clipped to
            this (a user turn to four times this).
        watermark: :meth:`prepare` summarizes once the history passes this part of the budget.
        min_span_tokens: evicted tokens not yet summarized before a new summary is written.
        chunk_tokens: most conversation tokens in one summarizer call (less when the
            summarizer's ``n_ctx`` requires it).
        wait_s: the longest a request waits for a summary being written.
        timeout_s: a summarizer call slower than this counts as failed.
        cache: where summaries and the recall index live (default: in-process LRU).
        breaker: the summarizer's health (key ``summarizer``).
        background: ``False`` writes summaries inline after the request's fit (tests,
            benchmarks that want them ready).
        write: ``False`` only reads summaries others wrote into ``cache`` (never schedules).
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        counters: Mapping[str, TokenCounter] | None = None,
        embedder: Embedder | None = None,
        # Limits
        summary_tokens: int = 256,
        recall_share: float = 0.35,
        excerpt_chars: int = 320,
        watermark: float = 0.6,
        min_span_tokens: int = 512,
        chunk_tokens: int = 4096,
        margin: float = 1.15,
        image_tokens: int = IMAGE_TOKENS,
        # Timeouts
        wait_s: float = 0.25,
        timeout_s: float = 120.0,
        cache: SummaryCache | None = None,
        breaker: CircuitBreaker | None = None,
        background: bool = True,
        write: bool = True,
    ) -> None:
        if not 0.0 <= recall_share < 1.0 or not 0.0 < watermark <= 1.0:
            raise ValueError(f"recall_share must be in [0, 1) and watermark in (0, 1], got "
                             f"{recall_share} and {watermark}")
        if summary_tokens < 16 or chunk_tokens < 64 or min_span_tokens < 0:
            raise ValueError("summary_tokens must be >= 16, chunk_tokens >= 64 and "
                             f"min_span_tokens >= 0, got {summary_tokens}, {chunk_tokens}, "
                             f"{min_span_tokens}")
        if wait_s < 0 or timeout_s <= 0:
            raise ValueError(f"wait_s must be >= 0 and timeout_s > 0, got {wait_s}, "
                             f"{timeout_s}")
        self.model = model
        self.model_name = _name(model)
        self._summarizer = _limited(model, summary_tokens)
        self.summary_tokens = summary_tokens
        self.recall_share = recall_share
        self.excerpt_chars = excerpt_chars
        self.watermark = watermark
        self.min_span_tokens = min_span_tokens
        window = getattr(model, "n_ctx", None)
        if isinstance(window, int) and window > 0:
            chunk_tokens = max(64, min(chunk_tokens,
                                       int((window - 2 * summary_tokens - 200) / margin)))
        self.chunk_tokens = chunk_tokens
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.cache: SummaryCache = cache if cache is not None else LRUSummaryCache()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.image_tokens = image_tokens
        self.background = background
        self.write = write
        self.index = RecallIndex(self.cache, embedder=embedder)
        self._fallback = cl100k_counter(margin, image_tokens=image_tokens)
        self.counters = dict(counters or {})
        self._own = model_counter(model, margin=margin, image_tokens=image_tokens)
        self._namespace = f"memory|{self.model_name}|{summary_tokens}|{_INSTRUCTIONS}"
        self._sizes: dict[tuple[str, str], int] = {}
        self._jobs: dict[str, concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.preempted = 0
        """Summarizer calls that yielded to an answer and were started again."""
        self.log: list[dict[str, Any]] = []
        """One entry per summarizer call: ``ms``, ``input_tokens``, ``supplemented``,
        ``error`` (the benchmark reports the background work from it)."""

    # ------------------------------------------------------------------ public

    def estimate(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                 tier: str) -> int:
        """Tokens after fitting to ``tier`` (no model is called): at most the budget when the
        system messages and the latest turn fit in it, more when nothing can fit."""
        msgs = list(messages)
        per = self._sizes_of(msgs, tier)
        before = sum(per)
        if before <= budget_tokens:
            return before
        fixed = self._fixed(msgs, per)
        return fixed if fixed > budget_tokens else budget_tokens

    def fit_detailed(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str,
        on_event: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> Fitted:
        """Fit ``messages`` (not modified) to ``tier``'s budget; see the module docs.

        No model is called here; the wait for a summary being written is at most
        :attr:`wait_s`. ``on_event`` is accepted for the fitter interface (nothing blocks,
        so there is no progress to report).
        """
        msgs = list(messages)
        layout = self._layout(msgs, budget_tokens, tier)
        fitted = self._fitted(msgs, layout, budget_tokens, tier)
        if layout.kind == "fit":
            self._schedule(msgs, layout.cut, tier)
        return fitted

    async def afit_detailed(
        self, messages: Sequence[BaseMessage], *, budget_tokens: int, tier: str,
        on_event: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> Fitted:
        """Async form of :meth:`fit_detailed` (run in a thread: the bounded wait never
        blocks the event loop)."""
        return await asyncio.to_thread(self.fit_detailed, messages,
                                       budget_tokens=budget_tokens, tier=tier)

    def prepare(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                tier: str) -> bool:
        """After an answer: start writing the summary the next request will want, once the
        history (``messages``, the answer included) passes ``watermark`` of the budget.

        Returns:
            Whether a summary job was started.
        """
        msgs = list(messages)
        per = self._sizes_of(msgs, tier)
        if sum(per) < self.watermark * budget_tokens:
            return False
        limit = int(self.watermark * budget_tokens)
        lead = _leading_system(msgs)
        end = len(msgs)
        cuts = [c for c in _safe_cuts(msgs, lead, end) if c <= end]
        cut = self._verbatim_cut(per, cuts, end, limit - sum(per[:lead]))
        return self._schedule(msgs, cut, tier)

    def wait_idle(self, timeout_s: float = 600.0) -> bool:
        """Wait until no summary is being written (benchmarks and tests); ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                running = [f for f in self._jobs.values() if not f.done()]
            if not running:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            concurrent.futures.wait(running, timeout=left)

    def close(self) -> None:
        """Stop the background worker (queued summaries are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ sizes

    def _sizes_of(self, msgs: list[BaseMessage], tier: str,
                  keys: list[str] | None = None) -> list[int]:
        count = self.counter(tier)
        out = []
        for i, m in enumerate(msgs):
            key = (tier, keys[i] if keys is not None else message_key(m))
            n = self._sizes.get(key)
            if n is None:
                if len(self._sizes) > 100_000:
                    self._sizes.clear()
                n = self._sizes[key] = count([m])
            out.append(n)
        return out

    def _size_of(self, text: str, tier: str) -> int:
        """Tokens of ``text`` as a system message (cached by content)."""
        key = (tier, message_key(SystemMessage(text)))
        n = self._sizes.get(key)
        if n is None:
            n = self._sizes[key] = self.counter(tier)([SystemMessage(text)])
        return n

    @staticmethod
    def _fixed(msgs: list[BaseMessage], per: list[int]) -> int:
        """Tokens that are always sent: system messages and the latest user turn on."""
        lead = _leading_system(msgs)
        tail = _tail_start(msgs, lead)
        mid = sum(per[i] for i in range(lead, tail) if isinstance(msgs[i], SystemMessage))
        return sum(per[:lead]) + mid + sum(per[tail:])

    @staticmethod
    def _verbatim_cut(per: list[int], cuts: list[int], tail: int, limit: int) -> int:
        """The earliest safe cut whose turns up to ``tail`` fit ``limit`` (contiguous)."""
        best = tail
        used = 0
        for c in reversed([c for c in cuts if c < tail]):
            used += sum(per[c:best])
            if used > limit:
                break
            best = c
        return best

    # ------------------------------------------------------------------ the layout

    def _summary_for(self, hashes: list[str], cuts: list[int], lead: int,
                     ) -> tuple[int, str | None]:
        for j in reversed(cuts):
            if j > lead and (hit := self.cache.get(hashes[j])) is not None:
                return j, hit
        return lead, None

    def _wait_pending(self, hashes: list[str]) -> tuple[bool, float]:
        """Wait (at most ``wait_s``) for summaries being written for a prefix of this
        conversation; ``(still pending, ms waited)``."""
        present = set(hashes)
        with self._lock:
            running = [f for h, f in self._jobs.items() if h in present and not f.done()]
        if not running:
            return False, 0.0
        t0 = time.perf_counter()
        if self.wait_s > 0:
            concurrent.futures.wait(running, timeout=self.wait_s)
        return (any(not f.done() for f in running),
                (time.perf_counter() - t0) * 1000.0)

    def _layout(self, msgs: list[BaseMessage], budget: int, tier: str) -> _Layout:
        keys, hashes = _hash_all(msgs, self._namespace)
        per = self._sizes_of(msgs, tier, keys)
        before = sum(per)
        if before <= budget:
            return _Layout("asis", before, before)
        fixed = self._fixed(msgs, per)
        if fixed > budget:
            return _Layout("nofit", before, fixed)
        lead = _leading_system(msgs)
        tail = _tail_start(msgs, lead)
        cuts = _safe_cuts(msgs, lead, tail)
        pending, waited = self._wait_pending(hashes)
        base, summary = self._summary_for(hashes, cuts, lead)
        s_tokens = self._size_of(SUMMARY_HEADER + summary, tier) if summary else 0
        if s_tokens > (budget - fixed) // 2:
            base, summary, s_tokens = lead, None, 0
        room = budget - fixed - s_tokens
        cut = self._verbatim_cut(per, cuts, tail, int(room * (1 - self.recall_share)))
        units = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b <= cut]
        units = [u for u in units if not all(isinstance(m, SystemMessage)
                                             for m in msgs[u[0]:u[1]])]
        excerpts = {u: self._excerpt(msgs[u[0]:u[1]]) for u in units}
        sizes = {u: self._size_of(t, tier) for u, t in excerpts.items()}
        header = self._size_of(RECALL_HEADER, tier)
        left = room - header - sum(per[cut:tail])
        chosen = self._recall(msgs, keys, units, excerpts, sizes, left)
        left -= sum(sizes[u] for u in chosen)
        # Room left over goes back to the verbatim window (a recalled turn moves there).
        for u in reversed(units):
            cost = sum(per[u[0]:u[1]]) - (sizes[u] if u in chosen else 0)
            if u[1] != cut or cost > left:
                break
            left -= cost
            chosen.discard(u)
            cut = u[0]
        recalled = sorted(chosen)
        layout = _Layout("fit", before, 0, cut=cut, base=base, summary=summary,
                         recalled=recalled, pending=pending, waited_ms=waited,
                         excerpts={u: excerpts[u] for u in recalled})
        return layout

    def _recall(self, msgs: list[BaseMessage], msg_keys: list[str],
                units: list[tuple[int, int]],
                excerpts: dict[tuple[int, int], str], sizes: dict[tuple[int, int], int],
                room: int) -> set[tuple[int, int]]:
        """The evicted turns that fit ``room``, in this order: the user's turns relevant to
        the latest user message (most relevant first); the user's turns that state facts
        (addresses and codes, then names and numbers: :func:`identifiers`), newest first;
        relevant assistant turns; then the user's other earlier turns, newest first. A
        question worded unlike the statement it asks about ("the support email" for "write
        to ops-desk@...") still finds the fact, and long assistant answers never crowd out
        what the user said."""
        if not units or room <= 0:
            return set()
        query = message_text(msgs[_tail_start(msgs, _leading_system(msgs))])
        keys = [msg_keys[a] if b - a == 1 else
                message_key(SystemMessage(excerpts[(a, b)])) for a, b in units]
        scores = self.index.scores(query, keys, [excerpts[u] for u in units])
        user = [any(isinstance(m, HumanMessage) for m in msgs[a:b]) for a, b in units]
        weighted = [s * (1.0 if u else 0.7) for s, u in zip(scores, user, strict=True)]
        ranked = sorted((i for i, w in enumerate(weighted) if w > 0),
                        key=lambda i: (-weighted[i], -i))
        newest = [i for i in reversed(range(len(units))) if user[i]]
        worth = {i: max((_strength(x) for x in identifiers(excerpts[units[i]])), default=0)
                 for i in newest}
        facts = sorted((i for i in newest if worth[i] > 1), key=lambda i: -worth[i])
        picks = ([i for i in ranked if user[i]] + facts + [i for i in ranked if not user[i]]
                 + newest)
        order = [units[i] for i in dict.fromkeys(picks)]
        chosen: set[tuple[int, int]] = set()
        for u in order:
            if sizes[u] <= room:
                chosen.add(u)
                room -= sizes[u]
        return chosen

    def _excerpt(self, span: Sequence[BaseMessage]) -> str:
        lines = []
        for m in span:
            if isinstance(m, SystemMessage):
                continue
            limit = self.excerpt_chars * (4 if isinstance(m, HumanMessage) else 1)
            lines.append(_render(m, limit))
        return "\n".join(lines)

    def _fitted(self, msgs: list[BaseMessage], layout: _Layout, budget: int,
                tier: str) -> Fitted:
        if layout.kind == "asis":
            return Fitted(msgs, False, layout.before, layout.before, budget,
                          layout.before <= budget, summary_used=False)
        if layout.kind == "nofit":
            return Fitted(msgs, False, layout.before, layout.before, budget, False,
                          summary_used=False,
                          error="system messages and the latest turn alone exceed the budget")
        recalled = list(layout.recalled)
        summary = layout.summary
        while True:
            out = self._assemble(msgs, layout, recalled, summary)
            after = sum(self._sizes_of(out, tier))
            if after <= budget or (not recalled and summary is None):
                break
            if recalled:  # the estimate was short: drop the oldest excerpt
                recalled.pop(0)
            else:
                summary = None
        return Fitted(out, True, layout.before, after, budget, after <= budget,
                      summary_cached=summary is not None,
                      summarizer=self.model_name if summary is not None else None,
                      summary_used=summary is not None, summary_pending=layout.pending,
                      recalled_turns=sum(1 for a, b in recalled for m in msgs[a:b]
                                         if isinstance(m, HumanMessage)) or len(recalled),
                      summary_wait_ms=layout.waited_ms)

    def _assemble(self, msgs: list[BaseMessage], layout: _Layout,
                  recalled: list[tuple[int, int]], summary: str | None) -> list[BaseMessage]:
        lead = _leading_system(msgs)
        kept_system = [m for m in msgs[lead:layout.cut] if isinstance(m, SystemMessage)]
        out = [*msgs[:lead], *kept_system]
        if summary:
            out.append(SystemMessage(SUMMARY_HEADER + summary, id=_SUMMARY_ID))
        if recalled:
            text = "\n".join(layout.excerpts[u] for u in recalled)
            out.append(SystemMessage(RECALL_HEADER + text, id=_RECALL_ID))
        return [*out, *msgs[layout.cut:]]

    # ------------------------------------------------------------------ background summaries

    def _schedule(self, msgs: list[BaseMessage], end: int, tier: str) -> bool:
        """Start summarizing ``msgs[:end]`` (from the latest cached summary on) when enough
        is unsummarized and no summary is being written for this conversation."""
        lead = _leading_system(msgs)
        if end <= lead or not self.write:
            return False
        cuts = [c for c in _safe_cuts(msgs, lead, len(msgs)) if c <= end]
        if not cuts or cuts[-1] != end:
            return False
        _, hashes = _hash_all(msgs[:end], self._namespace)
        base, previous = self._summary_for(hashes, cuts, lead)
        per = self._sizes_of(msgs[base:end], tier)
        if sum(per) < max(self.min_span_tokens, 1) or not self.breaker.allow(SUMMARIZER_KEY):
            return False
        present = set(hashes)
        with self._lock:
            if any(h in present and not f.done() for h, f in self._jobs.items()):
                return False
            if any(h == hashes[end] for h in self._jobs):
                return False
            self._jobs = {h: f for h, f in self._jobs.items() if not f.done()}
            job = _Job(list(msgs[:end]), hashes, base, end, previous)
            if not self.background:
                future: concurrent.futures.Future[None] = concurrent.futures.Future()
                self._jobs[hashes[end]] = future
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="stream-memory")
                self._jobs[hashes[end]] = self._pool.submit(self._run, job)
                return True
        try:
            self._run(job)
        finally:
            future.set_result(None)
        return True

    def _spans(self, msgs: list[BaseMessage], base: int, end: int) -> list[tuple[int, int]]:
        lead = _leading_system(msgs)
        ends = [c for c in _safe_cuts(msgs, lead, end) if base < c <= end]
        spans: list[tuple[int, int]] = []
        start = prev = base
        used = 0
        for c in ends:
            t = count_tokens(msgs[prev:c], image_tokens=self.image_tokens)
            if used and used + t > self.chunk_tokens:
                spans.append((start, prev))
                start, used = prev, 0
            used += t
            prev = c
        if prev > start:
            spans.append((start, prev))
        return spans

    def _run(self, job: _Job) -> None:
        summary = job.previous
        for start, end in self._spans(job.msgs, job.base, job.end):
            span = job.msgs[start:end]
            prompt = self._prompt(span, summary)
            entry: dict[str, Any] = {"input_tokens": self._own(prompt), "span": [start, end]}
            t0 = time.perf_counter()
            result = self._call(prompt)
            entry["ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
            problem = self._invalid(result)
            if problem is not None:
                entry["error"] = problem
                self.log.append(entry)
                self.breaker.record_failure(SUMMARIZER_KEY)
                return
            assert isinstance(result, str)
            summary, entry["supplemented"] = self._validated(result.strip(), span, summary)
            self.log.append(entry)
            self.cache.put(job.hashes[end], summary)
        self.breaker.record_success(SUMMARIZER_KEY)

    def _call(self, prompt: list[BaseMessage]) -> str | BaseException:
        """The summarizer's answer, or why there is none. The call runs as background work:
        on an in-process model it yields to a waiting answer (:class:`Preempted`) and is
        started again once that answer is done, at most ``_PREEMPTIONS`` times; each attempt
        has ``timeout_s``."""
        pool = _calls()
        for _ in range(_PREEMPTIONS):
            future = pool.submit(_in_background, self._summarizer.invoke, prompt)
            try:
                return str(future.result(timeout=self.timeout_s).content)
            except Preempted:
                self.preempted += 1
                continue
            except concurrent.futures.TimeoutError:
                return TimeoutError(f"summarizer took longer than {self.timeout_s:g} s")
            except Exception as exc:
                return exc
        return Preempted(f"summarizer yielded to answers {_PREEMPTIONS} times in a row")

    def _prompt(self, span: list[BaseMessage], previous: str | None) -> list[BaseMessage]:
        lines = [_render(m, self.chunk_tokens * 3) for m in span
                 if not isinstance(m, SystemMessage)]
        text = "\n".join(lines)
        body = (_EXTEND.format(previous=previous, span=text) if previous
                else _FIRST.format(span=text))
        return [SystemMessage(_INSTRUCTIONS), HumanMessage(body)]

    def _invalid(self, result: str | BaseException) -> str | None:
        if isinstance(result, BaseException):
            return f"{type(result).__name__}: {str(result)[:200]}".rstrip(": ")
        if not result.strip():
            return "summarizer returned an empty summary"
        return None

    def _validated(self, text: str, span: list[BaseMessage],
                   previous: str | None) -> tuple[str, int]:
        """Supplement ``text`` with the sentences holding identifiers it dropped (from the
        user's turns in ``span`` and the previous summary), then cap it; ``(summary, n)``."""
        sources = [message_text(m) for m in span if isinstance(m, HumanMessage)]
        if previous:
            sources.append(previous)
        sentences = [s.strip() for src in sources for s in _SENTENCE.findall(src)]
        shape = collections.Counter(_DIGITS.sub("#", s) for s in sentences)
        lower = text.lower()
        quotes: list[tuple[int, int, str]] = []
        for n, sentence in enumerate(sentences):
            if shape[_DIGITS.sub("#", sentence)] > 1:
                continue  # the same sentence with other numbers: a template, not a fact
            missing = [i for i in identifiers(sentence) if i.lower() not in lower]
            if missing:
                quotes.append((sum(_strength(i) for i in missing), n, sentence))
                lower += " " + sentence.lower()
        # Over the cap, the weakest quotes go first, then the model's prose.
        kept = sorted(quotes, key=lambda q: (-q[0], q[1]))
        while True:
            lines = [f"- {q}" for _, _, q in sorted(kept, key=lambda q: q[1])] + [text]
            if not kept or self._own([SystemMessage("\n".join(lines))]) <= self.summary_tokens:
                break
            kept.pop()
        out = "\n".join(lines)
        if self._own([SystemMessage(out)]) > self.summary_tokens:
            out = out[: self.summary_tokens * 3]
        return out, len(quotes)


_CALLS: list[concurrent.futures.ThreadPoolExecutor] = []
_PREEMPTIONS = 8


def _in_background(call: Callable[[list[BaseMessage]], Any], prompt: list[BaseMessage]) -> Any:
    with background_work():
        return call(prompt)


def _calls() -> concurrent.futures.ThreadPoolExecutor:
    if not _CALLS:
        _CALLS.append(concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="stream-memory-call"))
    return _CALLS[0]

