"""LLMJudge robustness and CascadeJudge: the LLM is asked only when the embedded judge is unsure.

Where a scripted answer is needed (exact LLM outputs such as "HIGH" or an unparseable
sentence) the tests use langchain_core's ``GenericFakeChatModel``: the paper's LLM judge runs
on Ollama, which cannot run on these machines, and the bundled Gemma 270M is a base model
whose outputs cannot be scripted. A real client failing for real (``dead_model``: ChatOpenAI
against a closed loopback port) and real models (slow tests: the bundled Gemma on the text
path, the shipped Qwen2.5-Coder-0.5B on the structured path) cover the rest. Tests on real
models assert what the judge made of whatever the model answered, never one answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult

from stream_langchain.judges import (
    FEW_SHOT_EXAMPLES,
    CascadeJudge,
    Complexity,
    FallbackJudge,
    Judge,
    JudgeError,
    Judgement,
    KeywordJudge,
    LLMJudge,
    parse_label,
)
from stream_langchain.judges.embedded import EmbeddedJudge

Q = "Explain the difference between TCP and UDP."
QUERIES = (
    Q,
    "What is 2 + 2?",
    "hi",
    "Prove that there are infinitely many primes.",
    "Design a rate limiter for a distributed API gateway.",
    "Translate 'good morning' into French.",
    "Why is the sky blue?",
)


def scripted(answers: Iterable[str]) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))


class Recorder(Judge):
    """Wraps a judge and records each call's outcome: its Judgement or the error it raised."""

    def __init__(self, inner: Judge) -> None:
        self.inner = inner
        self.name = inner.name
        self.outcomes: list[Judgement | Exception] = []

    def _judge(self, text: str) -> Judgement:
        try:
            out = self.inner.judge(text)
        except Exception as exc:
            self.outcomes.append(exc)
            raise
        self.outcomes.append(out)
        return out

    async def _ajudge(self, text: str) -> Judgement:
        try:
            out = await self.inner.ajudge(text)
        except Exception as exc:
            self.outcomes.append(exc)
            raise
        self.outcomes.append(out)
        return out


@pytest.fixture(scope="module")
def embedded() -> EmbeddedJudge:
    return EmbeddedJudge()


# --------------------------------------------------------------------------- parse_label


@pytest.mark.parametrize(("output", "label"), [
    ("HIGH", "HIGH"), ("medium\n\nQuery:", "MEDIUM"), ("**Low** - a lookup", "LOW"),
    ("Label: HIGH", "HIGH"), ("The answer is MEDIUM.", "MEDIUM"), ("Hard.", "HIGH"),
    ("HIGH, not LOW", "HIGH"),
])
def test_parse_label_accepts_one_clear_label(output: str, label: str) -> None:
    assert parse_label(output) is Complexity(label)


@pytest.mark.parametrize("output", [
    "", "I cannot classify this.", "Either LOW or HIGH", "This is a simple question",
])
def test_parse_label_rejects_missing_or_ambiguous_labels(output: str) -> None:
    with pytest.raises(JudgeError):
        parse_label(output)


# --------------------------------------------------------------------------- LLMJudge


def test_llm_judge_parses_the_model_answer() -> None:
    out = LLMJudge(scripted(["MEDIUM"]), confidence=0.8).judge(Q)
    assert (out.complexity, out.confidence, out.judge) == (Complexity.MEDIUM, 0.8, "llm")


def test_llm_judge_unparseable_answer_is_a_judge_error() -> None:
    with pytest.raises(JudgeError, match="no LOW/MEDIUM/HIGH"):
        LLMJudge(scripted(["Sure! Here is an essay about TCP."])).judge(Q)


def test_llm_judge_shows_few_shot_examples_before_the_query() -> None:
    j = LLMJudge(scripted(["LOW"]), few_shot=FEW_SHOT_EXAMPLES)
    msgs = j._messages(Q)
    assert len(msgs) == 2 + 2 * len(FEW_SHOT_EXAMPLES)
    assert FEW_SHOT_EXAMPLES[0][0] in msgs[1].content and msgs[2].content == "LOW"
    assert Q in msgs[-1].content
    with pytest.raises(ValueError):
        LLMJudge(scripted([]), few_shot=[("q", "EASY")])


def test_structured_output_falls_back_to_text_when_unsupported() -> None:
    """A model without tool calling still gets a label through the text path."""
    out = LLMJudge(scripted(["HIGH"]), structured=True).judge(Q)
    assert out.complexity is Complexity.HIGH


async def test_llm_judge_async_path() -> None:
    out = await LLMJudge(scripted(["LOW"])).ajudge("hi")
    assert out.complexity is Complexity.LOW


def test_unreachable_llm_is_a_judge_error(dead_model: BaseChatModel) -> None:
    with pytest.raises(JudgeError, match="failed"):
        LLMJudge(dead_model, timeout=20).judge(Q)


# --------------------------------------------------------------------------- CascadeJudge


def test_cascade_asks_the_llm_only_below_the_threshold(embedded: EmbeddedJudge) -> None:
    conf = embedded.judge(Q).confidence
    llm = Recorder(LLMJudge(scripted([])))
    sure = CascadeJudge(embedded, llm, threshold=conf - 1e-6)
    out = sure.judge(Q)
    assert out.judge == "embedded" and out.errors == () and llm.outcomes == []
    assert (sure.consulted, sure.total) == (0, 1)

    llm = Recorder(LLMJudge(scripted(["HIGH"])))
    unsure = CascadeJudge(embedded, llm, threshold=conf + 1e-6)
    out = unsure.judge(Q)
    assert (out.complexity, out.judge, out.errors) == (Complexity.HIGH, "llm", ())
    assert len(llm.outcomes) == 1 and (unsure.consulted, unsure.total) == (1, 1)


@pytest.mark.parametrize("answer", ["LOW", "MEDIUM", "HIGH"])
def test_cascade_calls_the_llm_exactly_for_the_unsure_queries_and_uses_its_label(
    embedded: EmbeddedJudge, answer: str
) -> None:
    """Over queries on both sides of the threshold: the LLM is called for each query the
    embedded judge is less sure of than the threshold, and only for those; its label (and
    no probabilities) replaces the embedded one there; elsewhere the embedded answer stands."""
    firsts = {q: embedded.judge(q) for q in QUERIES}
    threshold = sorted(f.confidence for f in firsts.values())[len(QUERIES) // 2]
    unsure = [q for q in QUERIES if firsts[q].confidence < threshold]
    assert 0 < len(unsure) < len(QUERIES)  # both branches are exercised
    llm = Recorder(LLMJudge(scripted([answer] * len(QUERIES))))
    cascade = CascadeJudge(embedded, llm, threshold=threshold)
    for q in QUERIES:
        asked_before = len(llm.outcomes)
        out = cascade.judge(q)
        asked = len(llm.outcomes) - asked_before
        assert asked == (q in unsure), q
        if asked:
            assert (out.complexity, out.judge, out.probs) == (Complexity(answer), "llm", None)
        else:
            assert out.complexity == firsts[q].complexity and out.judge == "embedded"
            assert out.probs == firsts[q].probs
        assert out.errors == ()
    assert (cascade.consulted, cascade.total) == (len(unsure), len(QUERIES))


def test_cascade_keeps_the_primary_answer_when_the_llm_fails(
    embedded: EmbeddedJudge, dead_model: BaseChatModel
) -> None:
    first = embedded.judge(Q)
    for inner in (LLMJudge(scripted(["no idea"])), LLMJudge(dead_model, timeout=20)):
        llm = Recorder(inner)
        out = CascadeJudge(embedded, llm, threshold=1.0).judge(Q)
        (failure,) = llm.outcomes  # the LLM was asked, and failed
        assert isinstance(failure, JudgeError)
        assert out.complexity == first.complexity and out.probs == first.probs
        assert out.judge == "embedded" and out.errors == (f"llm: {failure}",)


async def test_cascade_async_path_consults_and_falls_back(embedded: EmbeddedJudge) -> None:
    llm = Recorder(LLMJudge(scripted(["LOW"])))
    out = await CascadeJudge(embedded, llm, threshold=1.0).ajudge(Q)
    assert (out.complexity, out.judge) == (Complexity.LOW, "llm") and len(llm.outcomes) == 1
    llm = Recorder(LLMJudge(scripted([])))
    out = await CascadeJudge(embedded, llm, threshold=1.0).ajudge(Q)
    (failure,) = llm.outcomes
    assert out.judge == "embedded" and out.errors == (f"llm: {failure}",)
    assert out.complexity == embedded.judge(Q).complexity


def test_cascade_rejects_threshold_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CascadeJudge(KeywordJudge(), KeywordJudge(), threshold=1.2)


# --------------------------------------------------------------------------- real models


class Tap(BaseChatModel):
    """Delegates to ``inner`` and keeps each raw answer (to check what the judge made of it)."""

    inner: BaseChatModel
    answers: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "tap"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        result = self.inner._generate(messages, stop=stop, **kwargs)
        self.answers.append(str(result.generations[0].message.content))
        return result


def _expected(raw: str) -> Complexity | None:
    try:
        return parse_label(raw)
    except JudgeError:
        return None


@pytest.mark.slow
def test_llm_judge_on_the_bundled_model_uses_exactly_what_the_model_said(
    local_model: BaseChatModel, embedded: EmbeddedJudge
) -> None:
    """The real Gemma 270M (base model, text path): the judge returns the label its raw
    answer holds, or raises JudgeError when that answer holds none; in a cascade the LLM's
    label is used, or its failure falls back to the embedded judge's."""
    tap = Tap(inner=local_model, answers=[])
    j = LLMJudge(tap, few_shot=FEW_SHOT_EXAMPLES, timeout=120)
    try:
        out: Judgement | None = j.judge("What is the capital of France?")
    except JudgeError:
        out = None
    (raw,) = tap.answers
    expected = _expected(raw)
    if expected is None:
        assert out is None, raw
    else:
        assert out is not None and out.complexity is expected, raw
        assert (out.judge, out.confidence) == ("llm", j.confidence)

    llm = Recorder(j)
    text = "Prove that sqrt(2) is irrational."
    chain = FallbackJudge(CascadeJudge(embedded, llm, threshold=1.0), KeywordJudge())
    got = chain.judge(text)
    (second,) = llm.outcomes
    if isinstance(second, Judgement):
        assert (got.complexity, got.judge, got.errors) == (second.complexity, "llm", ())
        assert second.complexity == _expected(tap.answers[-1])
    else:
        assert (got.complexity, got.judge) == (embedded.judge(text).complexity, "embedded")
        assert got.errors == (f"llm: {second}",) and _expected(tap.answers[-1]) is None


class _Calls(BaseCallbackHandler):
    """Records what the chat model was invoked with and what it answered."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.messages: list[BaseMessage] = []

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            **kwargs: Any) -> None:
        self.params.append(dict(kwargs.get("invocation_params") or {}))

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        generation = response.generations[0][0]
        assert isinstance(generation, ChatGeneration)
        self.messages.append(generation.message)


@pytest.mark.slow
def test_structured_llm_judge_on_the_shipped_qwen_takes_the_structured_path() -> None:
    """On the shipped Qwen2.5-Coder-0.5B (ChatLlamaCpp's default), structured=True asks
    through with_structured_output: the model is called with the label schema (a forced
    tool, or a response_format), answers with that structure holding one of the three
    labels, and the judge returns that label (whichever it is)."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    calls = _Calls()
    model = ChatLlamaCpp(temperature=0.0, max_tokens=64, callbacks=[calls])
    assert model.tool_calling
    j = LLMJudge(model, structured=True, timeout=300)
    out = j.judge(Q)
    assert j._runnable_structured is True
    (params,) = calls.params
    (answer,) = calls.messages
    assert isinstance(answer, AIMessage)
    if params.get("tools"):  # function calling: BaseChatModel's default
        assert [t["function"]["name"] for t in params["tools"]] == ["complexity"]
        assert params.get("tool_choice") not in (None, "auto", "none")
        (call,) = answer.tool_calls
        assert call["name"] == "complexity"
        label = call["args"]["label"]
    else:  # a JSON schema response format
        assert params["response_format"]
        label = json.loads(str(answer.content))["label"]
    assert label in {c.value for c in Complexity}
    assert (out.complexity, out.judge) == (Complexity(label), "llm")
