"""The HPC stream's state machine, fed by hand: no relay, no executor, no clock."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest
from langchain_core.outputs import ChatGenerationChunk

import relay
from hpc_functions import protocol
from stream_langchain.errors import RelayFailed
from stream_langchain.tiers.hpc import ChatHPC
from stream_langchain.tiers.hpc_errors import (
    HPCError,
    HPCFirstTokenTimeout,
    HPCIdleTimeout,
    HPCQueueTimeout,
    HPCRemoteError,
    HPCTaskError,
)
from stream_langchain.tiers.hpc_stream import HPCTimeouts, _RelayStream

T = HPCTimeouts(queue=10, first_token=5, idle=2)


def _stream(failover: bool = False) -> _RelayStream:
    return _RelayStream(T, model="m", now=100.0, failover=failover)


def _delta(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": protocol.DELTA, "content": text, **extra}


def _summary(**kw: Any) -> dict[str, Any]:
    base = {"ok": True, "mode": "stream", "error": None, "error_kind": None, "cancelled": False,
            "frames": 0, "completion_tokens": 0, "prompt_tokens": 0, "backend_ttft_s": None,
            "duration_s": 0.0}
    return {**base, **kw}


def _usage(chunk: ChatGenerationChunk) -> dict[str, Any]:
    return dict(getattr(chunk.message, "usage_metadata", None) or {})


def _started(now: float = 101.0) -> _RelayStream:
    s = _stream()
    assert s.receive_payload({"type": protocol.START, "node_time": 0.0}, now) == []
    return s


def test_a_whole_stream_yields_tokens_then_usage_and_metadata() -> None:
    """start, deltas, usage, end: one chunk per token, then a final chunk with the node's usage."""
    s = _started(101.0)
    out = s.receive_payload(_delta("Hel", model="served-model"), 101.5)
    out += s.receive_payload(_delta("lo", finish_reason="stop"), 101.6)
    assert [c.text for c in out] == ["Hel", "lo"]
    assert s.receive_payload({"type": protocol.USAGE, "backend_ttft_s": 0.25,
                              "usage": {"prompt_tokens": 7, "completion_tokens": 2}}, 101.7) == []
    final = s.receive_end(102.0)
    meta = final.message.response_metadata
    assert _usage(final) == {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}
    assert meta["hpc_mode"] == "stream" and meta["model_name"] == "served-model"
    assert meta["finish_reason"] == "stop" and "usage_estimated" not in meta
    assert meta["hpc_queue_ms"] == pytest.approx(1000)
    assert meta["hpc_backend_ttft_ms"] == pytest.approx(250)
    assert meta["hpc_total_ms"] == pytest.approx(2000)
    assert s.done


def test_without_usage_the_tokens_are_counted_and_marked_estimated() -> None:
    """No usage payload and none on the end frame: output counted by chunks, flagged."""
    s = _started()
    s.receive_payload(_delta("a"), 101.1)
    s.receive_payload(_delta("b"), 101.2)
    s.receive_payload({"type": protocol.DELTA, "role": "assistant"}, 101.3)  # no token
    final = s.receive_end(101.4)
    assert _usage(final)["output_tokens"] == 2
    assert final.message.response_metadata["usage_estimated"] is True
    assert final.message.response_metadata["model_name"] == "m"


def test_the_end_frames_usage_is_used_when_no_usage_payload_came() -> None:
    """The consumer's end-frame usage stands in for a missing usage payload."""
    s = _started()
    s.receive_payload(_delta("a"), 101.1)
    final = s.receive_end(101.2, {"prompt_tokens": 3, "completion_tokens": 1})
    assert _usage(final)["input_tokens"] == 3


@pytest.mark.parametrize(
    ("events", "error", "match", "tokens"),
    [
        ([], HPCQueueTimeout, "queue_timeout=10", 0),
        ([("start", 105.0)], HPCFirstTokenTimeout, "first_token_timeout=5", 0),
        ([("start", 105.0), ("delta", 106.0)], HPCIdleTimeout, "idle_timeout=2", 1),
    ],
)
def test_each_phase_times_out_with_its_own_error(
    events: list[tuple[str, float]], error: type[HPCError], match: str, tokens: int
) -> None:
    """queue, first token and idle each raise their own timeout once their deadline passes."""
    s = _stream()
    for kind, now in events:
        s.receive_payload(_delta("x") if kind == "delta" else {"type": kind}, now)
    deadline = s.deadline()
    s.tick(deadline - 0.01)  # not yet
    with pytest.raises(error, match=match) as info:
        s.tick(deadline)
    assert info.value.tokens == tokens


def test_every_event_restarts_the_phase_timer() -> None:
    """A non-token payload (usage, role-only delta) also pushes the deadline back."""
    s = _started(101.0)
    s.receive_payload(_delta("a"), 101.0)
    assert s.deadline() == 103.0
    s.receive_payload({"type": protocol.DELTA, "role": "assistant"}, 102.5)
    assert s.deadline() == 104.5
    s.tick(104.0)


def test_time_the_caller_spends_between_chunks_is_not_silence() -> None:
    """The driver resumes the timer when it waits again; a slow caller is no idle timeout."""
    s = _started(101.0)
    s.receive_payload(_delta("a"), 101.0)
    s.resume(110.0)  # the caller took 9 s over the chunk
    s.tick(111.9)
    with pytest.raises(HPCIdleTimeout):
        s.tick(112.0)


def test_a_node_error_mid_stream_counts_the_tokens_already_sent() -> None:
    """An authentic error frame after tokens is a remote error carrying the token count."""
    s = _started()
    for i in range(3):
        s.receive_payload(_delta(str(i)), 101.1 + i)
    with pytest.raises(HPCRemoteError, match="backend died") as info:
        s.receive_relay_error(relay.RemoteError("backend died"))
    assert info.value.tokens == 3


def test_a_relay_lost_before_the_first_token_moves_on_only_with_failover() -> None:
    """Before any token a lost relay is RelayFailed for the pool; without failover, HPCError."""
    lost = relay.ChannelClosed("gone")
    with pytest.raises(RelayFailed):
        _RelayStream(T, model="m", now=0.0, failover=True).receive_relay_error(lost)
    with pytest.raises(HPCError, match="after 0 tokens") as info:
        _stream().receive_relay_error(lost)
    assert not isinstance(info.value, RelayFailed)


def test_a_relay_lost_after_tokens_never_moves_on() -> None:
    """After the first token even a failover stream raises HPCError with the count."""
    s = _RelayStream(T, model="m", now=100.0, failover=True)
    s.receive_payload({"type": protocol.START}, 100.5)
    s.receive_payload(_delta("a"), 101.0)
    with pytest.raises(HPCError, match="after 1 tokens") as info:
        s.receive_relay_error(relay.TruncatedStream("cut"))
    assert info.value.tokens == 1 and not isinstance(info.value, RelayFailed)


def test_an_unknown_payload_kind_is_an_error() -> None:
    """A payload the protocol does not define ends the request."""
    with pytest.raises(HPCError, match="unexpected payload"):
        _started().receive_payload({"type": "mystery"}, 101.5)


def test_a_node_that_answered_in_batch_mode_ends_the_request() -> None:
    """ok batch summary before any token: the answer and a batch final chunk, with the reason."""
    s = _stream()
    completion = {"model": "x", "choices": [{"message": {"content": "whole"},
                                             "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 4, "completion_tokens": 1}}
    out = s.receive_task_result(
        _summary(mode="batch", completion=completion, relay_error="refused"), 103.0)
    assert [c.text for c in out] == ["whole", ""]
    meta = out[-1].message.response_metadata
    assert meta["hpc_mode"] == "batch" and "refused" in meta["hpc_fallback_reason"]
    assert meta["hpc_total_ms"] == pytest.approx(3000) and s.done


def test_batch_after_tokens_is_an_error() -> None:
    """A node switching to batch after streaming would repeat the answer: an error."""
    s = _started()
    s.receive_payload(_delta("a"), 101.1)
    with pytest.raises(HPCRemoteError, match="after streaming"):
        s.receive_task_result(_summary(mode="batch", completion={}), 102.0)


@pytest.mark.parametrize(
    ("summary", "started", "error", "match"),
    [
        (_summary(ok=False, error="HTTP 500", error_kind="backend"), True, HPCRemoteError,
         "HTTP 500"),
        (_summary(ok=False, error="refused", error_kind="relay"), False, HPCError,
         "could not stream"),
        ("not a dict", False, HPCTaskError, "not a summary"),
    ],
)
def test_task_results_that_end_the_request(
    summary: Any, started: bool, error: type[HPCError], match: str
) -> None:
    """A failed backend, a node that could not stream, or a bad result each raise."""
    s = _started() if started else _stream()
    with pytest.raises(error, match=match):
        s.receive_task_result(summary, 102.0)


def test_a_relay_error_summary_after_start_leaves_the_stream_to_decide() -> None:
    """A started task that reports a relay error: frames may be in flight, nothing raised."""
    s = _started()
    assert s.receive_task_result(_summary(ok=False, error="x", error_kind="relay"), 102.0) == []
    assert s.receive_task_result(_summary(), 102.0) == [] and not s.done


def test_a_task_that_raised_is_a_task_error() -> None:
    """The executor's exception becomes HPCTaskError naming it."""
    with pytest.raises(HPCTaskError, match="boom"):
        _stream().receive_task_result(None, 101.0, RuntimeError("boom"))


def test_timeouts_are_validated_and_the_old_keywords_map_onto_them() -> None:
    """HPCTimeouts refuses non-positive values; ChatHPC's old keywords set its fields."""
    with pytest.raises(ValueError, match="queue_timeout"):
        HPCTimeouts(queue=0)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        llm = ChatHPC(executor=ex, queue_timeout=7, backend_timeout=3,
                      timeouts=HPCTimeouts(idle=9))
        assert llm.timeouts == HPCTimeouts(queue=7, idle=9, backend=3)
        assert (llm.queue_timeout, llm.idle_timeout, llm.backend_timeout) == (7, 9, 3)
        assert llm.request_body([])["backend_timeout"] == 3
        with pytest.raises(ValueError, match="idle_timeout"):
            ChatHPC(executor=ex, idle_timeout=-1)
