"""LLMJudge robustness and CascadeJudge: the LLM is asked only when the embedded judge is unsure.

Where a scripted answer is needed (exact LLM outputs such as "HIGH" or an unparseable
sentence) the tests use langchain_core's ``GenericFakeChatModel``: the paper's LLM judge runs
on Ollama, which cannot run on these machines, and the bundled Gemma 270M is a base model
whose outputs cannot be scripted. A real client failing for real (``dead_model``: ChatOpenAI
against a closed loopback port) and the real bundled model (slow tests) cover the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from stream_langchain.judges import (
    FEW_SHOT_EXAMPLES,
    CascadeJudge,
    Complexity,
    FallbackJudge,
    JudgeError,
    KeywordJudge,
    LLMJudge,
    parse_label,
)
from stream_langchain.judges.embedded import EmbeddedJudge

Q = "Explain the difference between TCP and UDP."


def scripted(answers: Iterable[str]) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))


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
    sure = CascadeJudge(embedded, LLMJudge(scripted([])), threshold=conf - 1e-6)
    out = sure.judge(Q)  # an empty script would fail if the LLM were asked
    assert out.judge == "embedded" and (sure.consulted, sure.total) == (0, 1)

    unsure = CascadeJudge(embedded, LLMJudge(scripted(["HIGH"])), threshold=conf + 1e-6)
    out = unsure.judge(Q)
    assert (out.complexity, out.judge) == (Complexity.HIGH, "llm")
    assert (unsure.consulted, unsure.total) == (1, 1)


def test_cascade_keeps_the_primary_answer_when_the_llm_fails(
    embedded: EmbeddedJudge, dead_model: BaseChatModel
) -> None:
    first = embedded.judge(Q)
    for llm in (LLMJudge(scripted(["no idea"])), LLMJudge(dead_model, timeout=20)):
        out = CascadeJudge(embedded, llm, threshold=1.0).judge(Q)
        assert out.complexity == first.complexity and out.probs == first.probs
        assert out.judge == "embedded" and len(out.errors) == 1
        assert out.errors[0].startswith("llm: ")


async def test_cascade_async_path_consults_and_falls_back(embedded: EmbeddedJudge) -> None:
    j = CascadeJudge(embedded, LLMJudge(scripted(["LOW"])), threshold=1.0)
    assert (await j.ajudge(Q)).complexity is Complexity.LOW
    j2 = CascadeJudge(embedded, LLMJudge(scripted([])), threshold=1.0)
    out = await j2.ajudge(Q)
    assert out.judge == "embedded" and out.errors


def test_cascade_rejects_threshold_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CascadeJudge(KeywordJudge(), KeywordJudge(), threshold=1.2)


# --------------------------------------------------------------------------- real tiny model


@pytest.mark.slow
def test_llm_judge_on_the_bundled_model_labels_or_raises(local_model: BaseChatModel) -> None:
    """The real Gemma 270M (base model): a parsed label or a JudgeError, never garbage."""
    j = LLMJudge(local_model, few_shot=FEW_SHOT_EXAMPLES, timeout=60)
    try:
        out = j.judge("What is the capital of France?")
    except JudgeError:
        pass
    else:
        assert out.complexity in set(Complexity) and out.judge == "llm"
    chain = FallbackJudge(CascadeJudge(EmbeddedJudge(), j, threshold=1.0), KeywordJudge())
    assert chain.judge("Prove that sqrt(2) is irrational.").complexity in set(Complexity)
