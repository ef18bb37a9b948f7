"""Sub-models and conversations for the context-fitting tests.

``CountingSummarizer`` is a deterministic summarizer: it answers with a short, bounded summary
and counts its calls and input tokens, so plumbing tests can check how much work each turn
costs without depending on what a small model happens to write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from stream_langchain.context import count_tokens, message_text

FILLER = ("Tell me more about the weather patterns over the ocean this season, and how the "
          "currents change from week to week.")
ANSWER = ("The currents shift with the winds; warm water moves north in spring and the storms "
          "follow it, so the patterns change a little every week.")


class CountingSummarizer(BaseChatModel):
    """Answers a summary request with ``Summary #n (k chars seen)``; counts what it was sent.

    ``mode``: ``"ok"``; ``"raise"`` (a dead backend); ``"empty"``; ``"long"`` (far past any
    cap); ``"slow"`` (sleeps ``delay_s`` first).
    """

    mode: str = "ok"
    delay_s: float = 0.0
    max_tokens: int = 256
    input_tokens: list[int] = Field(default_factory=list)
    """Input tokens of every call (shared with the fitter's ``model_copy``: same list)."""
    prompts: list[str] = Field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.input_tokens)

    @property
    def _llm_type(self) -> str:
        return "counting-summarizer"

    @property
    def model_name(self) -> str:
        return "counting-summarizer"

    def _reply(self, messages: list[BaseMessage]) -> str:
        self.input_tokens.append(count_tokens(messages))
        text = "\n".join(message_text(m) for m in messages)
        self.prompts.append(text)
        if self.mode == "raise":
            raise ConnectionError("summarizer backend unreachable")
        if self.mode == "slow":
            time.sleep(self.delay_s)
        if self.mode == "empty":
            return "   "
        if self.mode == "long":
            return "word " * 5000
        return f"Summary #{len(self.prompts)} ({len(text)} chars seen)."

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._reply(messages)))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=self._reply(messages)))


def chat(turns: int, *, system: str = "You are a helpful assistant.",
         latest: str = "What is 2 + 2?") -> list[BaseMessage]:
    """A system prompt, ``turns`` filler exchanges, then ``latest`` as the user's turn."""
    msgs: list[BaseMessage] = [SystemMessage(system)]
    for i in range(turns):
        msgs += [HumanMessage(f"({i}) {FILLER}"), AIMessage(f"({i}) {ANSWER}")]
    return [*msgs, HumanMessage(latest)]


def tool_exchange(i: int, n_calls: int = 2) -> list[BaseMessage]:
    """A user turn answered through ``n_calls`` tool calls and their results."""
    calls = [{"name": "lookup", "args": {"q": f"item {i}.{k}"}, "id": f"call_{i}_{k}"}
             for k in range(n_calls)]
    return [HumanMessage(f"({i}) Look up the items, please. {FILLER}"),
            AIMessage("", tool_calls=calls),
            *[ToolMessage(f"result {i}.{k}: {ANSWER}", tool_call_id=f"call_{i}_{k}")
              for k in range(n_calls)],
            AIMessage(f"({i}) Done. {ANSWER}")]
