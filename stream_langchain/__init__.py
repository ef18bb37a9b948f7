"""STREAM: tiered LLM inference (local / HPC / cloud) as one LangChain chat model.

Example:
    >>> from stream_langchain import ChatStream
    >>> ChatStream.__name__
    'ChatStream'
"""

from __future__ import annotations

from stream_langchain._run import model_name
from stream_langchain.chat_model import ChatStream
from stream_langchain.errors import (
    AllTiersFailed,
    CapabilityError,
    HPCError,
    ImageFileError,
    JudgeError,
    LlamaServerError,
    ModelError,
    OllamaError,
    SettingsError,
    StreamError,
    TierFailure,
    UnsupportedFeature,
)
from stream_langchain.judges import (
    CachedJudge,
    CascadeJudge,
    Complexity,
    FallbackJudge,
    Judge,
    Judgement,
    KeywordJudge,
    LLMJudge,
)
from stream_langchain.settings import Settings

__all__ = [
    "AllTiersFailed",
    "CachedJudge",
    "CapabilityError",
    "CascadeJudge",
    "ChatStream",
    "Complexity",
    "FallbackJudge",
    "HPCError",
    "ImageFileError",
    "Judge",
    "JudgeError",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "LlamaServerError",
    "ModelError",
    "OllamaError",
    "Settings",
    "SettingsError",
    "StreamError",
    "TierFailure",
    "UnsupportedFeature",
    "model_name",
]
