"""The routing record's type: the wire shape it reads and writes."""

from __future__ import annotations

import json

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from stream_langchain import ChatStream
from stream_langchain.judges import KeywordJudge
from stream_langchain.record import RouteHint, RouteRecord


def _llm() -> ChatStream:
    return ChatStream(local=GenericFakeChatModel(messages=iter([AIMessage("one two")] * 4)),
                      judge=KeywordJudge(), summarize=False)


def test_a_real_record_round_trips_key_for_key_in_order() -> None:
    chunks = list(_llm().stream("hi"))
    raw = chunks[-1].response_metadata["stream"]
    rec = RouteRecord.from_metadata(chunks[-1].response_metadata)
    assert rec is not None and rec.tier == "local" and rec.usage is not None
    assert list(rec.to_dict().items()) == list(raw.items())
    assert json.loads(json.dumps(rec.to_dict())) == raw


def test_the_hint_and_the_record_carry_fallbacks_as_the_same_list() -> None:
    rec = RouteRecord.from_dict({"tier": "cloud", "fallbacks": [{"tier": "local",
                                                                 "error": "OSError: x"}]})
    hint = RouteHint(tier="cloud", model="m", complexity="HIGH", judge="j", judge_ms=0.0,
                     fallbacks=list(rec.fallbacks))
    assert hint.to_dict()["fallbacks"] == rec.to_dict()["fallbacks"] == [
        {"tier": "local", "error": "OSError: x"}]


def test_the_first_output_chunk_carries_a_hint_readable_as_routehint() -> None:
    hints = [RouteHint.from_metadata(c.response_metadata) for c in _llm().stream("hi")]
    found = [h for h in hints if h is not None]
    assert len(found) == 1 and found[0].tier == "local" and found[0].fallbacks == []


def test_optional_keys_appear_only_when_they_apply() -> None:
    base = {"tier": "hpc", "model": "m", "complexity": "LOW", "judged_complexity": "LOW",
            "confidence": 0.5, "judge": "k", "judge_ms": 0.1}
    plain = RouteRecord(**base).to_dict()  # type: ignore[arg-type]
    assert "usage" not in plain and "summarizer_calls" not in plain and "needs" not in plain
    rich = RouteRecord(**base, summarizer_calls=2, summarizer_input_tokens=40,  # type: ignore[arg-type]
                       tier_metadata={"hpc_mode": "stream", "hpc_queue_ms": None}).to_dict()
    assert rich["summarizer_input_tokens"] == 40 and rich["hpc_queue_ms"] is None
    back = RouteRecord.from_dict(rich)
    assert back.hpc_mode == "stream" and back.tier_value("hpc_queue_ms", 1) is None


def test_unknown_keys_survive_the_round_trip_last() -> None:
    raw = {**RouteRecord(tier="local", model="m", complexity="LOW", judged_complexity="LOW",
                         confidence=1.0, judge="k", judge_ms=0.0).to_dict(), "future": 1}
    assert list(RouteRecord.from_dict(raw).to_dict().items()) == list(raw.items())


def test_a_partial_record_round_trips_without_gaining_keys() -> None:
    """The proxy publishes a subset; reading it back adds nothing."""
    public = {"tier": "cloud", "fallbacks": [], "usage": {"input_tokens": 1,
                                                          "output_tokens": 2}}
    rec = RouteRecord.from_dict(public)
    assert rec.judge == "" and rec.failover is False
    assert rec.to_dict() == public
