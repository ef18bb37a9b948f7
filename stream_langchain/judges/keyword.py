"""KeywordJudge: a fast heuristic judge that needs no model and never fails.

Example:
    >>> from stream_langchain.judges.keyword import KeywordJudge
    >>> KeywordJudge().judge("What is 2 + 2?").complexity
    <Complexity.LOW: 'LOW'>
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from stream_langchain.judges.base import Complexity, Judge, Judgement

__all__ = ["KeywordJudge"]

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

