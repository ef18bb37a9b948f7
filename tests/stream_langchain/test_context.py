"""The context-fitting seam: ChatStream hands each tier's budget to its ContextFitter and
records whether the conversation was changed (the summarizer plugs in here)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from stream_langchain import ChatStream
from stream_langchain.context import ContextFitter, count_tokens
from tests.stream_langchain.conftest import FixedJudge

pytestmark = pytest.mark.slow


class KeepRecent:
    """Keeps system messages and the most recent turns that fit (a stand-in summarizer)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def fit(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
            tier: str) -> tuple[list[BaseMessage], bool]:
        self.calls.append((tier, budget_tokens))
        if count_tokens(messages) <= budget_tokens:
            return list(messages), False
        system = [m for m in messages if isinstance(m, SystemMessage)]
        kept: list[BaseMessage] = []
        for m in reversed([m for m in messages if not isinstance(m, SystemMessage)]):
            if count_tokens([*system, m, *kept]) > budget_tokens:
                break
            kept.insert(0, m)
        return [*system, *kept], True

    async def afit(self, messages: Sequence[BaseMessage], *, budget_tokens: int,
                   tier: str) -> tuple[list[BaseMessage], bool]:
        return self.fit(messages, budget_tokens=budget_tokens, tier=tier)


def conversation(turns: int) -> list[BaseMessage]:
    msgs: list[BaseMessage] = [SystemMessage("Be brief.")]
    for i in range(turns):
        msgs += [HumanMessage(f"Tell me fact number {i} about the ocean, please."),
                 AIMessage(f"Fact {i}: the ocean is deep and wide and full of life.")]
    return [*msgs, HumanMessage("Summarize.")]


def test_fitter_gets_the_tier_budget_and_the_record_says_summarized(
        local_model: BaseChatModel) -> None:
    """A custom fitter gets window minus reserve for the tier; the record says summarized."""
    fitter = KeepRecent()
    assert isinstance(fitter, ContextFitter)
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"), summarizer=fitter,
                     context_windows={"local": 70}, context_reserve={"local": 10})
    messages = conversation(10)
    rec = llm.invoke(messages).response_metadata["stream"]
    assert fitter.calls == [("local", 60)]  # window minus the answer's reserve
    assert rec["summarized"] is True and rec["context_tokens"] > 60
    short = llm.invoke([HumanMessage("Hi")]).response_metadata["stream"]
    assert short["summarized"] is False


async def test_async_path_uses_afit(local_model: BaseChatModel) -> None:
    """ainvoke fits through the fitter's afit."""
    fitter = KeepRecent()
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"), summarizer=fitter,
                     context_windows={"local": 70}, context_reserve={"local": 10})
    msg = await llm.ainvoke(conversation(10))
    assert msg.response_metadata["stream"]["summarized"] is True
    assert fitter.calls == [("local", 60)]
