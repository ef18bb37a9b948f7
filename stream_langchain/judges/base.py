"""The judge interface and its composition: what every complexity judge is and how judges combine.

Every judge implements :class:`Judge`: ``judge(text)`` / ``ajudge(text)`` return a
:class:`Judgement` (complexity, confidence, judge name, latency). Judges compose:

- :class:`KeywordJudge`: a fast heuristic that is always available (no model).
- :class:`LLMJudge`: prompts any LangChain chat model with the paper's rubric.
- :class:`FallbackJudge`: tries judges in order; a failing judge falls through to the next,
  never to a crash.
- :class:`CachedJudge`: an LRU cache in front of any judge.
- :class:`CascadeJudge`: a fast judge first; a slower one only when the fast one is unsure.

The embedded classifier (the default) is
:class:`stream_langchain.judges.embedded.EmbeddedJudge`; the keyword and LLM judges live in
:mod:`stream_langchain.judges.keyword` and :mod:`stream_langchain.judges.llm`.

Example:
    >>> from stream_langchain.judges import KeywordJudge, CachedJudge
    >>> judge = CachedJudge(KeywordJudge())
    >>> judge.judge("What is 2 + 2?").complexity
    <Complexity.LOW: 'LOW'>
    >>> judge.judge("Prove that there are infinitely many primes, step by step.").complexity
    <Complexity.HIGH: 'HIGH'>
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from enum import StrEnum
from threading import Lock
from typing import TYPE_CHECKING

from stream_langchain.errors import JudgeError

if TYPE_CHECKING:
    pass

__all__ = [
    "CachedJudge",
    "CascadeJudge",
    "Complexity",
    "FallbackJudge",
    "Judge",
    "JudgeError",
    "Judgement",
]


class Complexity(StrEnum):
    """How demanding a query is; decides the tier order."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


@dataclass(frozen=True)
class Judgement:
    """The outcome of judging one query.

    Attributes:
        complexity: the label.
        confidence: in ``[0, 1]``; the judge's belief in ``complexity``.
        judge: name of the judge that produced the label (after any fallback).
        ms: wall-clock latency of the judging, in milliseconds.
        probs: per-label probabilities when the judge has them (``{"LOW": p, ...}``).
        cached: whether the label came from a cache.
    """

    complexity: Complexity
    confidence: float
    judge: str
    ms: float = 0.0
    probs: dict[str, float] | None = None
    cached: bool = False
    errors: tuple[str, ...] = field(default_factory=tuple)

    def prob(self, label: Complexity | str) -> float:
        """Probability of ``label``: from ``probs`` when present, else from the confidence."""
        key = Complexity(label).value
        if self.probs is not None:
            return float(self.probs.get(key, 0.0))
        if key == self.complexity.value:
            return self.confidence
        return (1.0 - self.confidence) / 2.0


class Judge(ABC):
    """Interface of every complexity judge.

    Subclasses implement :meth:`_judge` (and may override :meth:`_ajudge` when they have a
    native async path). The public methods add timing and argument checks.
    """

    name: str = "judge"

    @abstractmethod
    def _judge(self, text: str) -> Judgement: ...

    async def _ajudge(self, text: str) -> Judgement:
        return self._judge(text)

    def judge(self, text: str) -> Judgement:
        """Label ``text``; raises :class:`JudgeError` when this judge cannot."""
        _check_text(text)
        t0 = time.perf_counter()
        out = self._judge(text)
        return _timed(out, t0)

    async def ajudge(self, text: str) -> Judgement:
        """Async form of :meth:`judge`."""
        _check_text(text)
        t0 = time.perf_counter()
        out = await self._ajudge(text)
        return _timed(out, t0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"a judge takes the query as str, got {type(text).__name__}")


def _timed(out: Judgement, t0: float) -> Judgement:
    if out.cached or out.ms:
        return out
    return replace(out, ms=(time.perf_counter() - t0) * 1000.0)




class FallbackJudge(Judge):
    """Try judges in order; the first that answers wins. Failures are kept in ``errors``.

    The last judge should be one that never fails (:class:`KeywordJudge`); if every judge
    fails, :class:`JudgeError` names each one's cause.
    """

    def __init__(self, *judges: Judge) -> None:
        if not judges:
            raise ValueError("FallbackJudge needs at least one judge")
        self.judges = list(judges)
        self.name = "+".join(j.name for j in judges)

    def _judge(self, text: str) -> Judgement:
        errors: list[str] = []
        for j in self.judges:
            try:
                out = j.judge(text)
            except Exception as exc:
                errors.append(f"{j.name}: {exc}")
                continue
            return replace(out, errors=tuple(errors)) if errors else out
        raise JudgeError("every judge failed: " + "; ".join(errors))

    async def _ajudge(self, text: str) -> Judgement:
        errors: list[str] = []
        for j in self.judges:
            try:
                out = await j.ajudge(text)
            except Exception as exc:
                errors.append(f"{j.name}: {exc}")
                continue
            return replace(out, errors=tuple(errors)) if errors else out
        raise JudgeError("every judge failed: " + "; ".join(errors))


class CascadeJudge(Judge):
    """A fast judge first; a slower, stronger one only when the fast one is unsure.

    ``primary`` (the embedded classifier) labels every query. When its confidence is below
    ``threshold`` the ``secondary`` (an :class:`LLMJudge`) is asked and its label is used;
    if the secondary fails (timeout, unparseable output, server down) the primary's answer
    stands, with the failure kept in ``errors``. ``consulted`` / ``total`` count how often
    the secondary was asked.

    Args:
        primary: the judge that always runs (must not fail; wrap it in a
            :class:`FallbackJudge` otherwise).
        secondary: the judge asked below the threshold.
        threshold: in ``[0, 1]``; 0 never consults the secondary, 1 always does.
        name: the cascade's name (default ``"primary>secondary"``).

    Example:
        >>> from stream_langchain.judges import CascadeJudge, KeywordJudge
        >>> j = CascadeJudge(KeywordJudge(), KeywordJudge(), threshold=0.0)
        >>> _ = j.judge("What is 2 + 2?"); (j.consulted, j.total)
        (0, 1)
    """

    def __init__(
        self, primary: Judge, secondary: Judge, threshold: float = 0.6, *, name: str | None = None
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("CascadeJudge threshold must be within [0, 1]")
        self.primary = primary
        self.secondary = secondary
        self.threshold = threshold
        self.name = name or f"{primary.name}>{secondary.name}"
        self.consulted = 0
        self.total = 0
        self._lock = Lock()

    def _needs_secondary(self, first: Judgement) -> bool:
        with self._lock:
            self.total += 1
            ask = first.confidence < self.threshold
            if ask:
                self.consulted += 1
        return ask

    def _merge(self, first: Judgement, second: Judgement | None, error: str | None) -> Judgement:
        # ms=0 lets Judge.judge time the whole cascade, not only its last step
        if second is None:
            errors = first.errors + (error,) if error else first.errors
            return replace(first, errors=errors, ms=0.0)
        return replace(second, errors=first.errors + second.errors, ms=0.0)

    def _judge(self, text: str) -> Judgement:
        first = self.primary.judge(text)
        if not self._needs_secondary(first):
            return first
        try:
            second = self.secondary.judge(text)
        except Exception as exc:
            return self._merge(first, None, f"{self.secondary.name}: {exc}")
        return self._merge(first, second, None)

    async def _ajudge(self, text: str) -> Judgement:
        first = await self.primary.ajudge(text)
        if not self._needs_secondary(first):
            return first
        try:
            second = await self.secondary.ajudge(text)
        except Exception as exc:
            return self._merge(first, None, f"{self.secondary.name}: {exc}")
        return self._merge(first, second, None)


class CachedJudge(Judge):
    """An LRU cache in front of ``judge``, keyed by the exact query text.

    Only successful judgements are cached, so a transient failure is retried next time.
    """

    def __init__(self, judge: Judge, *, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError("CachedJudge maxsize must be >= 1")
        self.inner = judge
        self.maxsize = maxsize
        self.name = judge.name
        self._cache: OrderedDict[str, Judgement] = OrderedDict()
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def _get(self, text: str) -> Judgement | None:
        with self._lock:
            hit = self._cache.get(text)
            if hit is None:
                self.misses += 1
                return None
            self._cache.move_to_end(text)
            self.hits += 1
            return replace(hit, cached=True, ms=0.0)

    def _put(self, text: str, out: Judgement) -> None:
        with self._lock:
            self._cache[text] = out
            self._cache.move_to_end(text)
            while len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)

    def judge(self, text: str) -> Judgement:
        _check_text(text)
        t0 = time.perf_counter()
        hit = self._get(text)
        if hit is not None:
            return replace(hit, ms=(time.perf_counter() - t0) * 1000.0)
        out = self.inner.judge(text)
        self._put(text, out)
        return out

    async def ajudge(self, text: str) -> Judgement:
        _check_text(text)
        t0 = time.perf_counter()
        hit = self._get(text)
        if hit is not None:
            return replace(hit, ms=(time.perf_counter() - t0) * 1000.0)
        out = await self.inner.ajudge(text)
        self._put(text, out)
        return out

    def _judge(self, text: str) -> Judgement:  # pragma: no cover - judge() is overridden
        return self.inner.judge(text)

    def clear(self) -> None:
        """Drop every cached judgement."""
        with self._lock:
            self._cache.clear()
