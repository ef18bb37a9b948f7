"""STREAM: tiered LLM inference (local / HPC / cloud) as one LangChain chat model.

Example:
    >>> from stream_langchain import ChatStream
    >>> ChatStream.__name__
    'ChatStream'
"""

from __future__ import annotations

from stream_langchain._run import AllTiersFailed, TierFailure, model_name
from stream_langchain.chat_model import ChatStream
from stream_langchain.judges import (
    CachedJudge,
    CascadeJudge,
    Complexity,
    FallbackJudge,
    Judge,
    JudgeError,
    Judgement,
    KeywordJudge,
    LLMJudge,
)
from stream_langchain.routing import CapabilityError
from stream_langchain.settings import Settings, SettingsError

__all__ = [
    "AllTiersFailed",
    "CachedJudge",
    "CapabilityError",
    "CascadeJudge",
    "ChatStream",
    "Complexity",
    "FallbackJudge",
    "Judge",
    "JudgeError",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "Settings",
    "SettingsError",
    "TierFailure",
    "model_name",
]
