"""The default complexity judge: the embedded classifier, escalating to the fine-tuned encoder.

Example:
    >>> from stream_langchain.judges import default_judge
    >>> default_judge().judge("What is 2 + 2?").complexity.value
    'LOW'
"""

from __future__ import annotations

import logging

from stream_langchain.judges.base import CachedJudge, CascadeJudge, FallbackJudge, Judge
from stream_langchain.judges.keyword import KeywordJudge

__all__ = ["CASCADE_HIGH_THRESHOLD", "ESCALATE_BELOW", "default_judge"]

logger = logging.getLogger(__name__)

ESCALATE_BELOW = 0.5
"""Default judge: below this embedded confidence the fine-tuned transformer decides.

On the 1,200-query benchmark (5-fold CV) that is 39% of queries, which keeps the median
judging time on the embedded path (see ``benchmarks/judge/README.md``)."""
CASCADE_HIGH_THRESHOLD = 0.52
"""P(HIGH) at which the transformer says HIGH inside the default cascade: its queries are the
ambiguous ones, so the standalone threshold (0.455) would let retention fall under 85%."""


def default_judge(escalate_below: float = ESCALATE_BELOW) -> Judge:
    """The default complexity judge, cached.

    The embedded classifier (~0.3 ms) labels every query; when its confidence is below
    ``escalate_below`` the fine-tuned MiniLM judge (numpy, ~14 ms) decides instead.
    0 never asks the transformer; 1 uses it alone, with its own HIGH threshold. If an
    artifact cannot be loaded, routing goes on with what is left (a warning is logged), down
    to the keyword judge; only an ``escalate_below`` outside ``[0, 1]`` raises.

    Example:
        >>> from stream_langchain.judges import default_judge
        >>> default_judge().judge("What is the capital of France?").complexity.value
        'LOW'
    """
    if not 0.0 <= escalate_below <= 1.0:
        raise ValueError("escalate_below must be within [0, 1]")
    try:
        from stream_langchain.judges.embedded import EmbeddedJudge

        embedded = EmbeddedJudge()
    except Exception as exc:  # a missing or unreadable artifact must not stop routing
        logger.warning("embedded judge unavailable (%s); routing with the keyword judge", exc)
        return CachedJudge(KeywordJudge())
    primary: Judge = embedded
    if escalate_below > 0.0:
        try:
            from stream_langchain.judges.transformer import TransformerJudge

            if escalate_below >= 1.0:
                primary = TransformerJudge()
            else:
                second = TransformerJudge(high_threshold=CASCADE_HIGH_THRESHOLD)
                primary = CascadeJudge(embedded, second, threshold=escalate_below)
        except Exception as exc:
            logger.warning("transformer judge unavailable (%s); routing with the embedded "
                           "judge alone", exc)
    return CachedJudge(FallbackJudge(primary, KeywordJudge()))
