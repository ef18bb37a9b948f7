"""Complexity judges: decide whether a query is LOW, MEDIUM or HIGH.

Every judge implements :class:`Judge`: ``judge(text)`` / ``ajudge(text)`` return a
:class:`Judgement` (complexity, confidence, judge name, latency). Judges compose:

- :class:`KeywordJudge`: a fast heuristic that is always available (no model).
- :class:`LLMJudge`: prompts any LangChain chat model with the paper's rubric.
- :class:`FallbackJudge`: tries judges in order; a failing judge falls through to the next,
  never to a crash.
- :class:`CachedJudge`: an LRU cache in front of any judge.
- :class:`CascadeJudge`: a fast judge first; a slower one only when the fast one is unsure.

The embedded classifier (the default) is
:class:`stream_langchain.classifier.EmbeddedJudge`.

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
from enum import StrEnum
from threading import Lock
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "FEW_SHOT_EXAMPLES",
    "CachedJudge",
    "CascadeJudge",
    "Complexity",
    "FallbackJudge",
    "Judge",
    "JudgeError",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "parse_label",
]


class Complexity(StrEnum):
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

RUBRIC = """You classify how much reasoning a user's query needs, to pick which model answers it.

LOW: the answer is recalled or computed in one step: a fact, a definition, a lookup, a
greeting, trivial arithmetic. No chain of reasoning.
MEDIUM: a known, textbook procedure, or putting together two to four familiar concepts:
explaining a standard algorithm, a routine calculation, a comparison, ordinary code.
HIGH: no standard recipe exists and the answer must build its own line of reasoning: a
proof or formal derivation, a novel design, an analysis weighing competing evidence,
expert judgement where a small model is likely to be wrong.

Judge the depth of reasoning, not the wording or length: "What is X?" can be any of the
three, and a long question can be easy.

Answer with exactly one word: LOW, MEDIUM or HIGH."""

_LABEL_RE = re.compile(r"\b(LOW|MEDIUM|HIGH)\b", re.IGNORECASE)
_LABELS = frozenset(c.value for c in Complexity)
_ALIASES = {
    "EASY": "LOW", "SIMPLE": "LOW", "TRIVIAL": "LOW", "MODERATE": "MEDIUM", "MED": "MEDIUM",
    "INTERMEDIATE": "MEDIUM", "HARD": "HIGH", "COMPLEX": "HIGH", "DIFFICULT": "HIGH",
}


def parse_label(output: str) -> Complexity:
    """Extract a complexity label from free-form model output.

    A label (``LOW``/``MEDIUM``/``HIGH``, any case, as a word) that opens the answer wins.
    Otherwise the answer must name exactly one distinct label: a hedge such as "LOW or
    HIGH" is ambiguous and rejected. A synonym (``easy``, ``hard``, ...) is accepted only as
    the answer's first word, so prose that merely contains "simple" is not a label.

    Example:
        >>> parse_label("**Medium** - it needs some reasoning")
        <Complexity.MEDIUM: 'MEDIUM'>
        >>> parse_label("Label: HIGH")
        <Complexity.HIGH: 'HIGH'>

    Raises:
        JudgeError: no label found, or the labels found disagree.
    """
    words = re.findall(r"[A-Za-z]+", output)
    if words and words[0].upper() in _LABELS:
        return Complexity(words[0].upper())
    found = [m.group(1).upper() for m in _LABEL_RE.finditer(output)]
    if found:
        if len(set(found)) > 1:
            raise JudgeError(f"judge output names several labels: {output[:80]!r}")
        return Complexity(found[0])
    if words and words[0].upper() in _ALIASES:
        return Complexity(_ALIASES[words[0].upper()])
    raise JudgeError(f"judge output has no LOW/MEDIUM/HIGH label: {output[:80]!r}")


FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Who wrote Pride and Prejudice?", "LOW"),
    ("How do I list hidden files in a directory on Linux?", "LOW"),
    ("Explain the difference between a process and a thread.", "MEDIUM"),
    ("A car accelerates from rest at 3 m/s^2 for 8 s. How far does it travel?", "MEDIUM"),
    ("Prove that the square root of 2 is irrational.", "HIGH"),
    ("What is the most likely explanation for the Hubble tension, given current data?",
     "HIGH"),
    ("Design a rate limiter for a distributed API gateway and discuss its failure modes.",
     "HIGH"),
)
"""Hand-written ``(query, label)`` examples for ``LLMJudge(few_shot=FEW_SHOT_EXAMPLES)``."""


class LLMJudge(Judge):
    """Ask a chat model for the label with the paper's rubric (one word, temperature 0).

    The output is constrained to the three labels: with ``structured=True`` the model is asked
    through ``with_structured_output`` for a ``{"label": "LOW"|"MEDIUM"|"HIGH"}`` object (tool
    calling / JSON mode, where the model supports it; otherwise the plain-text path is used);
    plain text is parsed by :func:`parse_label`. Anything that yields no label raises
    :class:`JudgeError`, so a :class:`FallbackJudge` or :class:`CascadeJudge` moves on.

    Args:
        model: any LangChain chat model (``ChatOllama(model="llama3.2:3b", temperature=0)``
            in the paper). Bound with ``temperature=0`` and a short ``max_tokens`` where the
            model accepts them.
        timeout: seconds before the judge gives up (raises :class:`JudgeError`, which a
            :class:`FallbackJudge` turns into the next judge's answer).
        few_shot: optional ``(query, label)`` examples shown before the query
            (:data:`FEW_SHOT_EXAMPLES` is a ready set).
        name: the judge's name in the routing record.
        confidence: the confidence reported with a parsed label (LLMs give no calibrated
            probability).
        max_query_chars: longer queries are cut to this many characters in the prompt.
        structured: ask for structured output (see above).
        max_tokens: output token cap of the plain-text path.
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
        structured: bool = False,
        max_tokens: int = 4,
    ) -> None:
        if timeout <= 0:
            raise ValueError("LLMJudge timeout must be > 0 seconds")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError("LLMJudge confidence must be within [0, 1]")
        if max_tokens < 1:
            raise ValueError("LLMJudge max_tokens must be >= 1")
        self.model = model
        self.timeout = timeout
        self.few_shot = [(q, Complexity(str(lbl).upper())) for q, lbl in few_shot]
        self.name = name
        self.confidence = confidence
        self.max_query_chars = max_query_chars
        self.structured = structured
        self.max_tokens = max_tokens
        self._runnable: Any = None
        self._runnable_structured = False

    def _messages(self, text: str) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        msgs: list[Any] = [SystemMessage(RUBRIC)]
        for q, lbl in self.few_shot:
            msgs.append(HumanMessage(f"Query: {q}\nLabel:"))
            msgs.append(AIMessage(lbl.value))
        msgs.append(HumanMessage(f"Query: {text[: self.max_query_chars]}\nLabel:"))
        return msgs

    def _bound(self) -> Any:
        if self._runnable is not None:
            return self._runnable
        runnable: Any = None
        if self.structured:
            try:
                runnable = self.model.with_structured_output(_label_schema())
                self._runnable_structured = True
            except (NotImplementedError, ValueError, TypeError, AttributeError):
                runnable = None
        if runnable is None:
            try:
                runnable = self.model.bind(temperature=0, max_tokens=self.max_tokens)
            except Exception:  # pragma: no cover - models without bind kwargs
                runnable = self.model
        self._runnable = runnable
        return runnable

    def _result(self, out: Any) -> Judgement:
        if self._runnable_structured:
            label = out.get("label") if isinstance(out, dict) else getattr(out, "label", None)
            if label is None:
                raise JudgeError(f"LLM judge {self.name!r}: structured output has no label")
            return Judgement(parse_label(str(label)), self.confidence, self.name)
        content = getattr(out, "content", out)
        if isinstance(content, list):  # content blocks
            content = " ".join(
                b.get("text", "") if isinstance(b, dict) else str(b) for b in content
            )
        return Judgement(parse_label(str(content)), self.confidence, self.name)

    def _judge(self, text: str) -> Judgement:
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures import TimeoutError as FutTimeout

        runnable = self._bound()
        pool = ThreadPoolExecutor(max_workers=1)
        fut = pool.submit(runnable.invoke, self._messages(text))
        try:
            msg = fut.result(timeout=self.timeout)
        except FutTimeout as exc:
            raise JudgeError(f"LLM judge {self.name!r} timed out after {self.timeout}s") from exc
        except Exception as exc:
            raise JudgeError(f"LLM judge {self.name!r} failed: {exc}") from exc
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self._result(msg)

    async def _ajudge(self, text: str) -> Judgement:
        runnable = self._bound()
        try:
            msg = await asyncio.wait_for(runnable.ainvoke(self._messages(text)),
                                         timeout=self.timeout)
        except TimeoutError as exc:
            raise JudgeError(f"LLM judge {self.name!r} timed out after {self.timeout}s") from exc
        except Exception as exc:
            raise JudgeError(f"LLM judge {self.name!r} failed: {exc}") from exc
        return self._result(msg)


def _label_schema() -> dict[str, Any]:
    """JSON schema of the structured answer: one of the three labels."""
    return {
        "title": "complexity",
        "description": "How demanding the user's query is.",
        "type": "object",
        "properties": {"label": {"type": "string", "enum": [c.value for c in Complexity]}},
        "required": ["label"],
    }


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
        >>> from stream_langchain.judge import CascadeJudge, KeywordJudge
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
