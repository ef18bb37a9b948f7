"""An instant, counting sub-model for the proxy benchmark (native async: no thread hop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult


class Ticking(BaseChatModel):
    """Streams ``n`` one-word tokens, ``delay`` s apart, counting what it generated."""

    n: int = 20
    delay: float = 0.01
    generated: int = 0

    @property
    def _llm_type(self) -> str:
        return "ticking"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for i in range(self.n):
            if self.delay:
                await asyncio.sleep(self.delay)
            self.generated += 1
            yield ChatGenerationChunk(message=AIMessageChunk(content=f" w{i}"))
