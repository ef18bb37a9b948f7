"""Fixtures for the engine's tests: real tier models on this machine.

- ``local_model``: the bundled Gemma 3 270M in-process (llama.cpp), short answers.
- ``server_model``: ``ChatOpenAI`` against llama.cpp's OpenAI-compatible server (the
  stand-in for vLLM and for a cloud API), short answers.
- ``dead_model``: ``ChatOpenAI`` against a loopback port nobody listens on: a real client
  failing for real before its first token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from stream_langchain.judges import Complexity, Judge, Judgement

MAX_TOKENS = 12


class FixedJudge(Judge):
    """A judge that always answers one label (routing tests must not depend on a classifier)."""

    def __init__(self, label: str, p_high: float | None = None) -> None:
        self.label = Complexity(label)
        self.name = f"fixed-{label.lower()}"
        self.p_high = p_high

    def _judge(self, text: str) -> Judgement:
        probs = None
        if self.p_high is not None:
            rest = (1.0 - self.p_high) / 2
            probs = {"LOW": rest, "MEDIUM": rest, "HIGH": self.p_high}
        return Judgement(self.label, 0.9, self.name, probs=probs)


class DiesAfter(BaseChatModel):
    """Streams a real model's tokens, then raises after ``k`` chunks (a backend dying
    mid-answer)."""

    inner: BaseChatModel
    k: int = 3
    error: str = "backend connection reset"

    @property
    def _llm_type(self) -> str:
        return "dies-after"

    @property
    def model_name(self) -> str:
        return f"dying-{self.k}"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        n = 0
        for chunk in self.inner.stream(messages, stop=stop, **kwargs):
            if chunk.content:
                n += 1
            yield ChatGenerationChunk(message=chunk)
            if n >= self.k:
                raise ConnectionResetError(self.error)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        n = 0
        async for chunk in self.inner.astream(messages, stop=stop, **kwargs):
            if chunk.content:
                n += 1
            yield ChatGenerationChunk(message=chunk)
            if n >= self.k:
                raise ConnectionResetError(self.error)


@pytest.fixture(scope="session")
def local_model() -> BaseChatModel:
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    # Gemma 270M (base model), not the default 0.5B instruct: these tests check plumbing
    # (routing, records, failover), where the fastest real model is the right one.
    return ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=MAX_TOKENS,
                        temperature=0.0, seed=7)


def openai_model(base_url: str, name: str, **kwargs: Any) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        api_key="sk-test-not-a-secret",  # type: ignore[arg-type]
        model=name,
        temperature=0,
        max_tokens=MAX_TOKENS,  # type: ignore[call-arg]
        extra_body={"max_tokens": MAX_TOKENS},  # llama.cpp ignores max_completion_tokens
        stream_usage=True,
        max_retries=0,
        **kwargs,
    )


@pytest.fixture(scope="session")
def server_url(llama_server: Any) -> str:
    return str(llama_server.base_url)


@pytest.fixture
def hpc_model(server_url: str) -> BaseChatModel:
    return openai_model(server_url, "hpc-gemma")


@pytest.fixture
def cloud_model(server_url: str) -> BaseChatModel:
    return openai_model(server_url, "cloud-gemma")


@pytest.fixture
def dead_model() -> BaseChatModel:
    from stream_langchain.tiers.llama_server import free_port

    return openai_model(f"http://127.0.0.1:{free_port()}/v1", "nobody-home", timeout=5)
