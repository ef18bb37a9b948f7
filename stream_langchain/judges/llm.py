"""LLMJudge: prompts any LangChain chat model with the paper's rubric.

Example:
    >>> from stream_langchain.judges.llm import parse_label
    >>> parse_label("HIGH")
    <Complexity.HIGH: 'HIGH'>
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stream_langchain.judges.base import Complexity, Judge, JudgeError, Judgement

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["FEW_SHOT_EXAMPLES", "RUBRIC", "LLMJudge", "parse_label"]

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

