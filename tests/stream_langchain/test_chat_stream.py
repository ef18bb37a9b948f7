"""ChatStream routing on real sub-models: llama.cpp in-process, llama.cpp's OpenAI server
through ChatOpenAI, and real connection failures."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

from stream_langchain import AllTiersFailed, CapabilityError, ChatStream, TierFailure
from stream_langchain.routing import CircuitBreaker
from tests.stream_langchain.conftest import DiesAfter, FixedJudge

pytestmark = pytest.mark.slow


def record_of(chunks: list[AIMessageChunk]) -> dict[str, Any]:
    return chunks[-1].response_metadata["stream"]


def test_low_goes_local(local_model: BaseChatModel, hpc_model: BaseChatModel,
                        cloud_model: BaseChatModel) -> None:
    """LOW is answered by local; the record names tier, model, judge and timings."""
    llm = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model, judge=FixedJudge("LOW"))
    msg = llm.invoke("What is the capital of France?")
    rec = msg.response_metadata["stream"]
    assert rec["tier"] == "local"
    assert rec["model"] == "gemma-3-270m-q4_k_m.gguf"
    assert rec["complexity"] == "LOW" and rec["judge"] == "fixed-low"
    assert rec["ttft_ms"] > 0 and rec["judge_ms"] >= 0
    assert rec["fallbacks"] == [] and rec["failover"] is False and rec["summarized"] is False
    assert rec["context_tokens"] > 0
    assert msg.content and msg.usage_metadata and msg.usage_metadata["output_tokens"] > 0


def test_medium_goes_hpc_high_goes_cloud(local_model: BaseChatModel, hpc_model: BaseChatModel,
                                         cloud_model: BaseChatModel) -> None:
    """MEDIUM prefers hpc and HIGH prefers cloud, streamed through ChatOpenAI."""
    mid = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model,
                     judge=FixedJudge("MEDIUM"))
    chunks = list(mid.stream("Explain photosynthesis."))
    assert record_of(chunks)["tier"] == "hpc"
    assert record_of(chunks)["model"] == "hpc-gemma"
    assert sum(1 for c in chunks if c.content) >= 2, "expected a real token stream"
    high = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model,
                      judge=FixedJudge("HIGH"))
    rec = high.invoke("Prove Fermat's little theorem.").response_metadata["stream"]
    assert rec["tier"] == "cloud" and rec["model"] == "cloud-gemma"
    assert rec["usage"]["output_tokens"] > 0


def test_unconfigured_tiers_fall_through_and_are_recorded(local_model: BaseChatModel) -> None:
    """With only local configured, HIGH still answers locally and says why."""
    llm = ChatStream(local=local_model, judge=FixedJudge("HIGH"))
    rec = llm.invoke("Prove it.").response_metadata["stream"]
    assert rec["tier"] == "local"
    assert {s["tier"]: s["reason"] for s in rec["skipped"]} == {
        "cloud": "not configured", "hpc": "not configured"}


def test_override_kwarg_config_and_chain(local_model: BaseChatModel, hpc_model: BaseChatModel,
                                         cloud_model: BaseChatModel) -> None:
    """tier= and configurable.stream_tier force a tier, also inside an LCEL chain."""
    llm = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model, judge=FixedJudge("LOW"))
    assert llm.invoke("hi", tier="hpc").response_metadata["stream"]["tier"] == "hpc"
    cfg = {"configurable": {"stream_tier": "cloud"}}
    rec = llm.invoke("hi", config=cfg).response_metadata["stream"]  # type: ignore[arg-type]
    assert rec["tier"] == "cloud" and rec["override"] == "cloud"
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | llm
    out = chain.invoke({"q": "hello"}, config={"configurable": {"stream_tier": "hpc"}})
    assert out.response_metadata["stream"]["tier"] == "hpc"
    text = (chain | StrOutputParser()).invoke({"q": "hello"})
    assert isinstance(text, str) and text


class CountingJudge(FixedJudge):
    """A FixedJudge that counts its calls."""

    calls = 0

    def _judge(self, text: str) -> Any:
        self.calls += 1
        return super()._judge(text)


async def test_a_forced_tier_runs_no_judge(local_model: BaseChatModel) -> None:
    """tier= (kwarg or config) skips the judge, sync and async; the record says judge=forced."""
    judge = CountingJudge("LOW")
    llm = ChatStream(local=local_model, judge=judge, max_tokens=2)
    rec = llm.invoke("hi", tier="local").response_metadata["stream"]
    cfg = {"configurable": {"stream_tier": "local"}}
    arec = (await llm.ainvoke("hi", config=cfg)).response_metadata["stream"]  # type: ignore[arg-type]
    assert judge.calls == 0
    for r in (rec, arec):
        assert r["judge"] == "forced" and r["override"] == "local" and r["tier"] == "local"
    assert llm.invoke("hi").response_metadata["stream"]["judge"] == "fixed-low"
    assert judge.calls == 1


def test_privacy_never_sends_to_cloud(local_model: BaseChatModel, hpc_model: BaseChatModel,
                                      dead_model: BaseChatModel) -> None:
    """allow_cloud=False skips cloud even for HIGH and refuses a cloud override."""
    llm = ChatStream(local=local_model, hpc=hpc_model, cloud=dead_model, allow_cloud=False,
                     judge=FixedJudge("HIGH"))
    rec = llm.invoke("Prove the Riemann hypothesis.").response_metadata["stream"]
    assert rec["tier"] == "hpc"
    assert {"tier": "cloud", "reason": "privacy: allow_cloud=False"} in rec["skipped"]
    assert all(f["tier"] != "cloud" for f in rec["fallbacks"])
    with pytest.raises(ValueError, match="allow_cloud=False"):
        llm.invoke("hi", tier="cloud")


def test_fallback_before_first_token(local_model: BaseChatModel,
                                     dead_model: BaseChatModel) -> None:
    """A tier that fails before answering is recorded and the next tier answers."""
    llm = ChatStream(local=local_model, hpc=dead_model, judge=FixedJudge("MEDIUM"))
    chunks = list(llm.stream("Explain entropy."))
    rec = record_of(chunks)
    assert rec["tier"] == "local"
    assert len(rec["fallbacks"]) == 1 and rec["fallbacks"][0]["tier"] == "hpc"
    assert "Connection refused" in rec["fallbacks"][0]["error"]
    assert rec["failover"] is False and rec["tiers"] == ["local"]


def test_midstream_failover_continues_the_answer(local_model: BaseChatModel,
                                                 cloud_model: BaseChatModel) -> None:
    """A tier dying after k tokens: the next tier continues the same answer; nothing lost."""
    dying = DiesAfter(inner=local_model, k=3)
    llm = ChatStream(local=local_model, hpc=dying, cloud=cloud_model, judge=FixedJudge("MEDIUM"))
    chunks = list(llm.stream("Write a sentence about the sea."))
    rec = record_of(chunks)
    assert rec["failover"] is True
    assert rec["tiers"] == ["hpc", "cloud"] and rec["tier"] == "cloud"
    assert rec["fallbacks"] == [{"tier": "hpc", "error": "ConnectionResetError: "
                                 "backend connection reset"}]
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 3, "the continuation must add tokens after the 3 partial ones"
    full = llm.invoke("Write a sentence about the sea.")
    assert full.response_metadata["stream"]["failover"] is True
    assert len(str(full.content)) > 0


def test_midstream_failure_raises_when_failover_disabled(local_model: BaseChatModel,
                                                         cloud_model: BaseChatModel) -> None:
    """failover=False: a tier dying mid-answer is an error, never a shorter answer."""
    llm = ChatStream(local=local_model, hpc=DiesAfter(inner=local_model, k=2), cloud=cloud_model,
                     judge=FixedJudge("MEDIUM"), failover=False)
    with pytest.raises(TierFailure, match="hpc: ConnectionResetError"):
        list(llm.stream("Tell me a story."))


def test_all_tiers_down_names_every_cause(dead_model: BaseChatModel) -> None:
    """Every tier failing raises one error naming each tier and its cause."""
    from stream_langchain.tiers.llama_server import free_port
    from tests.stream_langchain.conftest import openai_model

    other = openai_model(f"http://127.0.0.1:{free_port()}/v1", "also-gone")
    llm = ChatStream(local=dead_model, cloud=other, judge=FixedJudge("LOW"))
    with pytest.raises(AllTiersFailed) as info:
        llm.invoke("hi")
    msg = str(info.value)
    assert msg.count("ConnectionError") >= 2 and "Connection refused" in msg
    assert "local: " in msg and "cloud: " in msg
    assert "hpc: not configured" in msg
    assert [e["tier"] for e in info.value.errors] == ["local", "cloud"]


def test_circuit_breaker_opens_and_closes(local_model: BaseChatModel,
                                          dead_model: BaseChatModel) -> None:
    """After N failures a tier is skipped; after the cooldown it is tried again."""
    clock = {"now": 0.0}
    breaker = CircuitBreaker(threshold=2, window=60, cooldown=30, clock=lambda: clock["now"])
    llm = ChatStream(local=local_model, hpc=dead_model, judge=FixedJudge("MEDIUM"),
                     circuit_breaker=breaker)
    for _ in range(2):
        rec = llm.invoke("q").response_metadata["stream"]
        assert rec["fallbacks"][0]["tier"] == "hpc"
    assert llm.breaker.state("hpc") == "open"
    rec = llm.invoke("q").response_metadata["stream"]
    assert rec["fallbacks"] == []
    assert {"tier": "hpc", "reason": "circuit open after repeated failures"} in rec["skipped"]
    clock["now"] = 31.0
    assert llm.breaker.state("hpc") == "half-open"
    rec = llm.invoke("q").response_metadata["stream"]
    assert rec["fallbacks"][0]["tier"] == "hpc", "half-open tier must be retried"
    assert llm.breaker.state("hpc") == "open", "a failed retry reopens the circuit"


def test_cloud_budget_sends_high_to_hpc_once_spent(local_model: BaseChatModel,
                                                   hpc_model: BaseChatModel,
                                                   cloud_model: BaseChatModel) -> None:
    """Cloud spend is charged from usage; once the budget is gone, HIGH goes to HPC."""
    llm = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model,
                     judge=FixedJudge("HIGH"), cloud_budget_usd=1e-6,
                     prices={"cloud-gemma": {"input": 1.0, "output": 1.0}})
    first = llm.invoke("Prove it.").response_metadata["stream"]
    assert first["tier"] == "cloud" and first["cloud_cost_usd"] > 0
    assert llm.budget.exhausted
    second = llm.invoke("Prove it again.").response_metadata["stream"]
    assert second["tier"] == "hpc"
    assert {"tier": "cloud", "reason": "cloud budget exhausted"} in second["skipped"]


def test_high_threshold_demotes_unsure_high(local_model: BaseChatModel,
                                            hpc_model: BaseChatModel,
                                            cloud_model: BaseChatModel) -> None:
    """A HIGH label with P(HIGH) below the threshold is routed as MEDIUM."""
    llm = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model,
                     judge=FixedJudge("HIGH", p_high=0.5), high_threshold=0.8)
    rec = llm.invoke("Hard?").response_metadata["stream"]
    assert rec["judged_complexity"] == "HIGH" and rec["complexity"] == "MEDIUM"
    assert rec["tier"] == "hpc" and rec["high_threshold"] == 0.8
    sure = ChatStream(local=local_model, hpc=hpc_model, cloud=cloud_model,
                      judge=FixedJudge("HIGH", p_high=0.9), high_threshold=0.8)
    assert sure.invoke("Hard?").response_metadata["stream"]["tier"] == "cloud"


async def test_async_stream_fallback_and_failover(local_model: BaseChatModel,
                                                  dead_model: BaseChatModel) -> None:
    """The async path falls back and fails over like the sync one."""
    llm = ChatStream(local=local_model, hpc=dead_model, judge=FixedJudge("MEDIUM"))
    chunks = [c async for c in llm.astream("Explain gravity.")]
    rec = record_of(chunks)
    assert rec["tier"] == "local" and rec["fallbacks"][0]["tier"] == "hpc"
    dying = ChatStream(local=local_model, hpc=DiesAfter(inner=local_model, k=2),
                       judge=FixedJudge("MEDIUM"))
    msg = await dying.ainvoke("Tell me about rivers.")
    rec = msg.response_metadata["stream"]
    assert rec["failover"] is True and rec["tiers"] == ["hpc", "local"]


def test_does_not_mutate_caller_messages(local_model: BaseChatModel) -> None:
    """Failover and routing never modify the caller's message list."""
    llm = ChatStream(local=local_model, hpc=DiesAfter(inner=local_model, k=1),
                     judge=FixedJudge("MEDIUM"))
    messages = [SystemMessage("Be brief."), HumanMessage("Name a fruit.")]
    before = [m.model_copy() for m in messages]
    llm.invoke(messages)
    assert messages == before


def test_bind_tools_forwards_to_the_routed_tier(local_model: BaseChatModel) -> None:
    """Tools reach the chosen tier's own bind_tools; a tier that cannot call tools says so."""

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    # The profile says the base Gemma cannot call tools: refused before any tier is called.
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"))
    with pytest.raises(CapabilityError, match=r"needs tool calling \(.*local: no tool calling: "
                       r"tools=False \(profile: tool_calling=False\)"):
        llm.bind_tools([add]).invoke("What is 2 + 3?")
    # Told otherwise, it is tried, and the tier's own refusal is the reported failure.
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"),
                     capabilities={"local": {"tools": True}})
    with pytest.raises(AllTiersFailed, match="does not support tool calling"):
        llm.bind_tools([add]).invoke("What is 2 + 3?")


def test_ls_params_name_the_forced_tier(local_model: BaseChatModel,
                                        hpc_model: BaseChatModel) -> None:
    """Traces name the tier and model when a tier is forced, else every tier."""
    llm = ChatStream(local=local_model, hpc=hpc_model, judge=FixedJudge("LOW"))
    assert llm._get_ls_params(tier="hpc")["ls_model_name"] == "hpc:hpc-gemma"
    assert llm._get_ls_params()["ls_model_name"] == (
        "local:gemma-3-270m-q4_k_m.gguf|hpc:hpc-gemma")


def test_standard_params_reach_the_tiers(local_model: BaseChatModel) -> None:
    """max_tokens on ChatStream caps every tier without touching the caller's model."""
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"), max_tokens=3)
    msg = llm.invoke("Count from one to twenty.")
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] <= 3
    assert local_model.max_tokens != 3  # type: ignore[attr-defined]
