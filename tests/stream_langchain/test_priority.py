"""Answers go before background summaries on a shared in-process model.

The lock's rules with threads only; then the real llama.cpp model (the bundled Gemma 270M): a
generation running as background work stops between tokens when an answer waits, and the
memory fitter starts its summary again after that answer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from stream_langchain._priority import ModelLock, Preempted, background, is_background
from stream_langchain.context import MemoryFitter
from tests.stream_langchain.context_helpers import chat


def _until(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


def test_background_context_is_per_thread_and_restored() -> None:
    seen: list[bool] = []
    with background():
        assert is_background()
        t = threading.Thread(target=lambda: seen.append(is_background()))
        t.start()
        t.join()
    assert not is_background() and seen == [False]


def test_background_work_waits_while_an_answer_waits() -> None:
    """Held by A; an answer (foreground) and a summary (background) both wait; on release the
    answer gets the lock first even though the summary asked first."""
    lock = ModelLock()
    order: list[str] = []
    lock.acquire()

    def take(name: str, low: bool) -> None:
        lock.acquire(low=low)
        order.append(name)
        time.sleep(0.01)
        lock.release()

    summary = threading.Thread(target=take, args=("summary", True))
    summary.start()
    time.sleep(0.05)
    answer = threading.Thread(target=take, args=("answer", False))
    answer.start()
    assert _until(lambda: lock.contended)
    lock.release()
    summary.join(5)
    answer.join(5)
    assert order == ["answer", "summary"]
    assert not lock.locked() and not lock.contended


def test_release_of_an_unheld_lock_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="unheld"):
        ModelLock().release()


class PreemptedOnce(BaseChatModel):
    """Yields to an answer on its first call (as the in-process model does), then writes."""

    calls: int = 0
    backgrounds: list[bool] = []

    @property
    def _llm_type(self) -> str:
        return "preempted-once"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        self.calls += 1
        self.backgrounds.append(is_background())
        if self.calls == 1:
            raise Preempted("yielded to a waiting request")
        return ChatResult(generations=[ChatGeneration(message=AIMessage("Summary: it went."))])


def test_a_preempted_summary_is_started_again_and_cached() -> None:
    model = PreemptedOnce()
    f = MemoryFitter(model, background=False, min_span_tokens=32)
    msgs = chat(40)
    f.fit_detailed(msgs, budget_tokens=1200, tier="local")
    assert f.preempted >= 1 and model.calls >= 2
    assert all(model.backgrounds)  # the summarizer's calls run as background work
    assert not any("error" in e for e in f.log)
    nxt = f.fit_detailed([*msgs[:-1]], budget_tokens=1200, tier="local")
    assert nxt.summary_cached


@pytest.mark.slow
def test_a_background_generation_yields_to_an_answer_on_the_real_model() -> None:
    """A long background generation on llama.cpp stops at the next token once an answer
    waits; the answer then runs, and the background call raised :class:`Preempted`."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    llm = ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=400, temperature=0.0)
    first = threading.Event()
    outcome: dict[str, Any] = {}

    def summary() -> None:
        tokens = 0
        try:
            with background():
                for _ in llm.stream("Count from one to five hundred: one, two, three,"):
                    tokens += 1
                    if tokens == 1:
                        first.set()
                        # Keep this token's turn until the answer is waiting for the lock.
                        _until(lambda: llm._lock.contended)
            outcome["finished"] = tokens
        except Preempted as exc:
            outcome["preempted"] = (tokens, str(exc))

    t = threading.Thread(target=summary)
    t.start()
    assert first.wait(120)
    answer = llm.invoke("The capital of France is", max_tokens=4)
    t.join(120)
    assert "preempted" in outcome, outcome
    assert outcome["preempted"][0] <= 2  # stopped at the next token
    assert isinstance(answer.content, str)
    assert not llm._lock.locked()


def test_background_prompt_evaluation_stops_between_batches() -> None:
    """The prompt of background work is fed in small batches; once an answer waits, the next
    batch is not evaluated (a summary yields during its prefill, not only between tokens).
    Foreground prompts go through whole."""
    from stream_langchain.tiers.llamacpp import _BACKGROUND_BATCH, _preemptible

    lock = ModelLock()
    fed: list[int] = []
    waiter: list[threading.Thread] = []

    def evaluate(tokens: Any) -> None:
        fed.append(len(tokens))
        if len(fed) == 2 and not waiter:  # an answer arrives during the second batch
            waiter.append(threading.Thread(target=lambda: (lock.acquire(), lock.release())))
            waiter[0].start()
            assert _until(lambda: lock.contended)

    eval_tokens = _preemptible(evaluate, lock)
    eval_tokens(list(range(1000)))
    assert fed == [1000]
    fed.clear()
    lock.acquire(low=True)
    with background(), pytest.raises(Preempted, match="prompt evaluation"):
        eval_tokens(list(range(1000)))
    assert fed == [_BACKGROUND_BATCH, _BACKGROUND_BATCH]
    lock.release()
    waiter[0].join(5)
    assert not lock.locked()
