"""Complexity judges: decide whether a query is LOW, MEDIUM or HIGH.

Where things are:

- :mod:`~stream_langchain.judges.base`: the :class:`Judge` interface, :class:`Judgement`,
  :class:`Complexity`, and the composing judges (cached, fallback, cascade).
- :mod:`~stream_langchain.judges.keyword`: :class:`KeywordJudge` (no model, never fails).
- :mod:`~stream_langchain.judges.llm`: :class:`LLMJudge` (any chat model with the rubric).
- :mod:`~stream_langchain.judges.embedded`: the numpy classifier (``EmbeddedJudge``).
- :mod:`~stream_langchain.judges.transformer`: the fine-tuned encoder (``TransformerJudge``).
- :mod:`~stream_langchain.judges.default`: :func:`default_judge`, what ``ChatStream`` uses.
- :mod:`~stream_langchain.judges.evaluate`: scoring judges on the 1,200-query benchmark.

A new judge subclasses :class:`Judge` in a module of its own here; nothing in this package
imports the tiers, the CLI or the proxy.

Example:
    >>> from stream_langchain.judges import CachedJudge, KeywordJudge
    >>> CachedJudge(KeywordJudge()).judge("What is 2 + 2?").complexity.value
    'LOW'
"""

from __future__ import annotations

from stream_langchain.judges.base import (
    CachedJudge,
    CascadeJudge,
    Complexity,
    FallbackJudge,
    Judge,
    JudgeError,
    Judgement,
)
from stream_langchain.judges.default import default_judge
from stream_langchain.judges.keyword import KeywordJudge
from stream_langchain.judges.llm import FEW_SHOT_EXAMPLES, RUBRIC, LLMJudge, parse_label

__all__ = [
    "FEW_SHOT_EXAMPLES",
    "RUBRIC",
    "CachedJudge",
    "CascadeJudge",
    "Complexity",
    "FallbackJudge",
    "Judge",
    "JudgeError",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "default_judge",
    "parse_label",
]
