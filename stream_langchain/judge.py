"""Complexity judges: decide whether a query is LOW, MEDIUM or HIGH.

Every judge implements :class:`Judge`: ``judge(text)`` / ``ajudge(text)`` return a
:class:`Judgement` (complexity, confidence, judge name, latency). Judges compose:

- :class:`KeywordJudge`: a fast heuristic that is always available (no model).
- :class:`LLMJudge`: prompts any LangChain chat model with the paper's rubric.
- :class:`FallbackJudge`: tries judges in order; a failing judge falls through to the next,
  never to a crash.
- :class:`CachedJudge`: an LRU cache in front of any judge.

Example:
    >>> from stream_langchain.judge import KeywordJudge, CachedJudge
    >>> judge = CachedJudge(KeywordJudge())
    >>> judge.judge("What is 2 + 2?").complexity
    <Complexity.LOW: 'LOW'>
    >>> judge.judge("Prove that there are infinitely many primes, step by step.").complexity
    <Complexity.HIGH: 'HIGH'>
"""

from __future__ import annotations

import asyncio
import re
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from threading import Lock
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "CachedJudge",
    "Complexity",
    "FallbackJudge",
    "Judge",
    "JudgeError",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "parse_label",
]


class Complexity(str, Enum):
    """How demanding a query is; decides the tier order."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class JudgeError(RuntimeError):
    """A judge could not produce a label (model error, timeout, unparseable output)."""


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


# --------------------------------------------------------------------------- keyword judge

_HIGH_PATTERNS = [
    r"\bprove\b", r"\bproof\b", r"\bderive\b", r"\bderivation\b", r"\btheorem\b",
    r"\blemma\b", r"\bstep[- ]by[- ]step\b", r"\bin detail\b", r"\brigorous",
    r"\bimplement\b", r"\bdesign (a|an|the)\b", r"\barchitect", r"\boptimi[sz]e\b",
    r"\bdebug\b", r"\bmulti-?step\b", r"\btrade-?offs?\b", r"\bcomprehensive\b",
    r"\bcompare and contrast\b", r"\bcritically\b", r"\bevaluate\b", r"\bsynthesi[sz]e\b",
    r"\bintegral\b", r"\bdifferential equation", r"\beigen", r"\bcomplexity of\b",
    r"\bresearch (proposal|plan)\b", r"\bwrite (a|an) (essay|paper|report|program)\b",
    r"\$.*\$",
]
_MEDIUM_PATTERNS = [
    r"\bexplain\b", r"\bwhy\b", r"\bhow (does|do|can|might|would|should)\b", r"\bdescribe\b",
    r"\bdifference between\b", r"\bcompare\b", r"\bsummari[sz]e\b", r"\banaly[sz]e\b",
    r"\bcalculate\b", r"\bcompute\b", r"\bsolve\b", r"\bestimate\b", r"\bdiscuss\b",
    r"\bwhat are the (advantages|implications|effects|causes)\b", r"\bexample",
]
_LOW_PATTERNS = [
    r"^(hi|hello|hey|thanks|thank you)\b", r"^what is\b", r"^who (is|was)\b",
    r"^when (is|was|did)\b", r"^where (is|was)\b", r"\bdefine\b", r"\bdefinition of\b",
    r"\bcapital of\b", r"\btranslate\b", r"^(is|are|was|were|does|do|can) ",
    r"\bwhich of the following\b",
]


def _compile(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


class KeywordJudge(Judge):
    """Heuristic judge from keywords and length; microseconds, no model, never fails.

    It is the last resort of every default judge chain, so it must always answer.
    """

    name = "keyword"

    def __init__(self) -> None:
        self._high = _compile(_HIGH_PATTERNS)
        self._medium = _compile(_MEDIUM_PATTERNS)
        self._low = _compile(_LOW_PATTERNS)

    def _judge(self, text: str) -> Judgement:
        t = text.strip()
        words = len(t.split())
        high = sum(1 for p in self._high if p.search(t))
        medium = sum(1 for p in self._medium if p.search(t))
        low = sum(1 for p in self._low if p.search(t))
        score = 2.0 * high + 1.0 * medium - 1.0 * low
        score += min(words, 400) / 60.0  # long, detailed requests tend to be harder
        if t.count("\n") >= 5 or "```" in t:
            score += 1.0
        if score >= 2.0:
            label = Complexity.HIGH
        elif score >= 1.0:
            label = Complexity.MEDIUM
        else:
            label = Complexity.LOW
        margin = min(abs(score - 1.0), abs(score - 2.0)) if label is Complexity.MEDIUM else (
            score - 2.0 if label is Complexity.HIGH else 1.0 - score
        )
        confidence = 0.5 + 0.45 * (1.0 - 1.0 / (1.0 + max(margin, 0.0)))
        return Judgement(label, round(confidence, 3), self.name)


# --------------------------------------------------------------------------- LLM judge

RUBRIC = """You classify how demanding a user's query is, to pick which model answers it.

LOW: greetings, simple facts, definitions, short lookups, basic arithmetic, yes/no questions
with well-known answers.
MEDIUM: explanations, comparisons, summaries, moderate reasoning or calculation,
standard code snippets, questions needing some domain knowledge.
HIGH: multi-step reasoning, proofs, derivations, complex analysis or design, research-level
or specialist questions, long or intricate code, anything where a wrong answer is likely
from a small model.

Answer with exactly one word: LOW, MEDIUM or HIGH."""

_LABEL_RE = re.compile(r"\b(LOW|MEDIUM|HIGH)\b", re.IGNORECASE)
_ALIASES = {
    "EASY": "LOW", "SIMPLE": "LOW", "TRIVIAL": "LOW", "MODERATE": "MEDIUM", "MED": "MEDIUM",
    "INTERMEDIATE": "MEDIUM", "HARD": "HIGH", "COMPLEX": "HIGH", "DIFFICULT": "HIGH",
}


def parse_label(output: str) -> Complexity:
    """Extract a complexity label from free-form model output.

    The first of ``LOW``/``MEDIUM``/``HIGH`` (any case, as a word) wins; common synonyms
    (``easy``, ``hard``, ...) are accepted.

    Example:
        >>> parse_label("**Medium** - it needs some reasoning")
        <Complexity.MEDIUM: 'MEDIUM'>

    Raises:
        JudgeError: no label found.
    """
    m = _LABEL_RE.search(output)
    if m:
        return Complexity(m.group(1).upper())
    for word in re.findall(r"[A-Za-z]+", output):
        alias = _ALIASES.get(word.upper())
        if alias:
            return Complexity(alias)
    raise JudgeError(f"judge output has no LOW/MEDIUM/HIGH label: {output[:80]!r}")


class LLMJudge(Judge):
    """Ask a chat model for the label with the paper's rubric (one word, temperature 0).

    Args:
        model: any LangChain chat model (``ChatOllama(model="llama3.2:3b", temperature=0)``
            in the paper). Bound with ``temperature=0`` and a short ``max_tokens`` where the
            model accepts them.
        timeout: seconds before the judge gives up (raises :class:`JudgeError`, which a
            :class:`FallbackJudge` turns into the next judge's answer).
        few_shot: optional ``(query, label)`` examples shown before the query.
        name: the judge's name in the routing record.
        confidence: the confidence reported with a parsed label (LLMs give no calibrated
            probability).
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        timeout: float = 10.0,
        few_shot: Sequence[tuple[str, Complexity | str]] = (),
        name: str = "llm",
        confidence: float = 0.7,
        max_query_chars: int = 4000,
    ) -> None:
        if timeout <= 0:
            raise ValueError("LLMJudge timeout must be > 0 seconds")
        self.model = model
        self.timeout = timeout
        self.few_shot = [(q, Complexity(lbl)) for q, lbl in few_shot]
        self.name = name
        self.confidence = confidence
        self.max_query_chars = max_query_chars

    def _messages(self, text: str) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        msgs: list[Any] = [SystemMessage(RUBRIC)]
        for q, lbl in self.few_shot:
            msgs.append(HumanMessage(f"Query: {q}\nLabel:"))
            msgs.append(AIMessage(lbl.value))
        msgs.append(HumanMessage(f"Query: {text[: self.max_query_chars]}\nLabel:"))
        return msgs

    def _bound(self) -> Any:
        try:
            return self.model.bind(temperature=0, max_tokens=4)
        except Exception:  # pragma: no cover - models without bind kwargs
            return self.model

    def _result(self, content: Any) -> Judgement:
        text = content if isinstance(content, str) else str(content)
        return Judgement(parse_label(text), self.confidence, self.name)

    def _judge(self, text: str) -> Judgement:
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures import TimeoutError as FutTimeout

        pool = ThreadPoolExecutor(max_workers=1)
        fut = pool.submit(self._bound().invoke, self._messages(text))
        try:
            msg = fut.result(timeout=self.timeout)
        except FutTimeout as exc:
            raise JudgeError(f"LLM judge {self.name!r} timed out after {self.timeout}s") from exc
        except Exception as exc:
            raise JudgeError(f"LLM judge {self.name!r} failed: {exc}") from exc
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self._result(msg.content)

    async def _ajudge(self, text: str) -> Judgement:
        try:
            msg = await asyncio.wait_for(
                self._bound().ainvoke(self._messages(text)), timeout=self.timeout
            )
        except TimeoutError as exc:
            raise JudgeError(f"LLM judge {self.name!r} timed out after {self.timeout}s") from exc
        except Exception as exc:
            raise JudgeError(f"LLM judge {self.name!r} failed: {exc}") from exc
        return self._result(msg.content)


# --------------------------------------------------------------------------- composition


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
