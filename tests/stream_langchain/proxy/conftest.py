"""Fixtures for the proxy: a real uvicorn server on a loopback port, a real SQLite store.

Protocol tests run the proxy over a ChatStream whose tier is :class:`ScriptedModel`, an
instant sub-model that streams a fixed script (text pieces and, for the tool tests, OpenAI
tool-call chunks with the arguments split across chunks, as vLLM and OpenAI stream them) and
counts what it generated. Tests about real generation use the embedded stack (slow).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.proxy import KeyRing, ProxyConfig, ProxyServer, Store, create_app

Piece = str | dict[str, Any]


class ScriptedModel(BaseChatModel):
    """Streams ``script`` (strings: text; dicts: tool-call chunk fields), ``delay`` seconds
    apart, then a usage chunk; ``fail_after`` raises after that many pieces. ``generated``
    counts the pieces made; ``stopped`` turns true once the stream is over (finished,
    failed, closed or cancelled), after which ``generated`` cannot change."""

    script: list[Any]
    delay: float = 0.0
    fail_after: int | None = None
    input_tokens: int = 11
    name_: str = "scripted-1"
    generated: int = 0
    stopped: bool = False
    calls: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def model_name(self) -> str:
        return self.name_

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   **kwargs: Any) -> Runnable[Any, Any]:
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise NotImplementedError("async only")

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self.calls.append({"messages": messages, "stop": stop, **kwargs})
        self.stopped = False
        out = 0
        try:
            for i, piece in enumerate(self.script):
                if self.fail_after is not None and i >= self.fail_after:
                    raise ConnectionResetError("backend connection reset")
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.generated += 1
                if isinstance(piece, str):
                    out += 1
                    yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
                else:
                    yield ChatGenerationChunk(message=AIMessageChunk(
                        content="", tool_call_chunks=[{"type": "tool_call_chunk", **piece}]))
        finally:
            self.stopped = True
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata={"input_tokens": self.input_tokens, "output_tokens": out,
                                        "total_tokens": self.input_tokens + out},
            response_metadata={"finish_reason": "stop"}))


WORDS = ["Hello", " from", " the", " scripted", " tier", "."]


def make_chat(model: BaseChatModel | None = None, **kw: Any) -> ChatStream:
    """A ChatStream whose only tier (local, unless ``kw`` says otherwise) is ``model``."""
    if model is None and not kw:
        model = ScriptedModel(script=WORDS)
    if model is not None:
        kw.setdefault("local", model)
    return ChatStream(judge=KeywordJudge(), **kw)


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'proxy.db'}")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def keys(store: Store) -> dict[str, str]:
    """Two keys: ``user`` (alice) and ``admin`` (root)."""
    ring = KeyRing(store)
    return {"user": ring.create("alice")[0], "admin": ring.create("root", admin=True)[0]}


ServeFn = Callable[..., ProxyServer]


@pytest.fixture
def serve(store: Store) -> Iterator[ServeFn]:
    """``serve(chat, config=None)``: the proxy over ``chat`` on a loopback port (stopped after
    the test)."""
    servers: list[ProxyServer] = []

    def start(chat: ChatStream, config: ProxyConfig | None = None,
              **kw: Any) -> ProxyServer:
        server = ProxyServer(create_app(chat, store=store, config=config), **kw).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
