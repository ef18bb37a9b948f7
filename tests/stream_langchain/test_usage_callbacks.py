"""A ChatStream request appears once to LangChain's callbacks: one ``on_chat_model_start``,
one ``on_llm_end``, and ``get_usage_metadata_callback()`` totals equal to what the tier
reported, over invoke, stream, batch, async and with_structured_output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
    get_usage_metadata_callback,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from stream_langchain import ChatStream
from tests.stream_langchain.conftest import FixedJudge

IN, OUT = 3, 4


class Reporting(BaseChatModel):
    """A tier that streams two words (or one tool call when tools are bound) and reports
    ``IN`` + ``OUT`` tokens, as a provider's last chunk does."""

    @property
    def _llm_type(self) -> str:
        return "reporting"

    @property
    def model_name(self) -> str:
        return "reporting-1"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None,
                   **kwargs: Any) -> Runnable[Any, Any]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools],
                         tool_choice=tool_choice, **kwargs)

    def _chunks(self, kwargs: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        tools = kwargs.get("tools")
        if kwargs.get("response_format"):
            yield ChatGenerationChunk(message=AIMessageChunk(content='{"answer": "hi"}'))
        elif tools:
            name = tools[0]["function"]["name"]
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[{
                "type": "tool_call_chunk", "name": name, "args": json.dumps({"answer": "hi"}),
                "id": "call_1", "index": 0}]))
        else:
            yield ChatGenerationChunk(message=AIMessageChunk(content="Hello"))
            yield ChatGenerationChunk(message=AIMessageChunk(content=" there"))
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata={"input_tokens": IN, "output_tokens": OUT,
                                        "total_tokens": IN + OUT},
            response_metadata={"model_name": self.model_name}))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(kwargs)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(kwargs):
            yield chunk


class Counting(BaseCallbackHandler):
    """Counts chat-model starts and LLM ends, and sums the usage the ends report."""

    def __init__(self) -> None:
        self.starts = 0
        self.ends = 0
        self.tokens = 0

    def on_chat_model_start(self, serialized: dict[str, Any],
                            messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.ends += 1
        for gens in response.generations:
            for gen in gens:
                usage = getattr(getattr(gen, "message", None), "usage_metadata", None)
                if usage:
                    self.tokens += usage["total_tokens"]


class Answer(BaseModel):
    """The answer."""

    answer: str


def _chat() -> ChatStream:
    return ChatStream(local=Reporting(), judge=FixedJudge("LOW"))


def _totals(cb: Any) -> tuple[int, int]:
    usage = cb.usage_metadata
    return (sum(u["input_tokens"] for u in usage.values()),
            sum(u["output_tokens"] for u in usage.values()))


def test_invoke_is_counted_once() -> None:
    """One invoke: one start, one end, usage 3 + 4 (not 6 + 8)."""
    counter = Counting()
    with get_usage_metadata_callback() as cb:
        msg = _chat().invoke("hi", config={"callbacks": [counter]})
    assert msg.usage_metadata is not None and msg.usage_metadata["total_tokens"] == IN + OUT
    assert _totals(cb) == (IN, OUT)
    assert (counter.starts, counter.ends, counter.tokens) == (1, 1, IN + OUT)


def test_stream_is_counted_once() -> None:
    """A streamed request: one start, one end, usage counted once."""
    counter = Counting()
    with get_usage_metadata_callback() as cb:
        text = "".join(str(c.content) for c in _chat().stream(
            "hi", config={"callbacks": [counter]}))
    assert text == "Hello there"
    assert _totals(cb) == (IN, OUT)
    assert (counter.starts, counter.ends, counter.tokens) == (1, 1, IN + OUT)


def test_batch_counts_each_request_once() -> None:
    """Three requests in a batch: three starts, three ends, three times the usage."""
    counter = Counting()
    with get_usage_metadata_callback() as cb:
        _chat().batch(["a", "b", "c"], config={"callbacks": [counter]})
    assert _totals(cb) == (3 * IN, 3 * OUT)
    assert (counter.starts, counter.ends, counter.tokens) == (3, 3, 3 * (IN + OUT))


async def test_async_invoke_and_stream_are_counted_once() -> None:
    """ainvoke and astream: one start and one usage record each."""
    counter = Counting()
    chat = _chat()
    with get_usage_metadata_callback() as cb:
        await chat.ainvoke("hi", config={"callbacks": [counter]})
        async for _ in chat.astream("hi", config={"callbacks": [counter]}):
            pass
    assert _totals(cb) == (2 * IN, 2 * OUT)
    assert (counter.starts, counter.ends, counter.tokens) == (2, 2, 2 * (IN + OUT))


def test_with_structured_output_is_counted_once() -> None:
    """with_structured_output (a forced tool call through the tier): the parsed object, one
    start, usage once."""
    counter = Counting()
    with get_usage_metadata_callback() as cb:
        out = _chat().with_structured_output(Answer).invoke(
            "hi", config={"callbacks": [counter]})
    assert out == Answer(answer="hi")
    assert _totals(cb) == (IN, OUT)
    assert (counter.starts, counter.tokens) == (1, IN + OUT)


def test_json_schema_structured_output_is_counted_once() -> None:
    """method="json_schema": the schema reaches the tier as response_format, the text is
    parsed; one start, usage once."""
    counter = Counting()
    with get_usage_metadata_callback() as cb:
        out = _chat().with_structured_output(Answer, method="json_schema").invoke(
            "hi", config={"callbacks": [counter]})
        raw = _chat().with_structured_output(Answer.model_json_schema(), method="json_schema",
                                             include_raw=True).invoke("hi")
    assert out == Answer(answer="hi")
    assert raw["parsed"] == {"answer": "hi"} and raw["parsing_error"] is None
    assert _totals(cb) == (2 * IN, 2 * OUT)
    assert (counter.starts, counter.tokens) == (1, IN + OUT)


def test_inside_a_chain_the_tier_run_stays_hidden() -> None:
    """In an LCEL chain the tier's own run does not reach the chain's handlers either."""
    counter = Counting()
    chain = RunnableLambda(lambda x: x) | _chat()
    with get_usage_metadata_callback() as cb:
        chain.invoke("hi", config={"callbacks": [counter]})
    assert _totals(cb) == (IN, OUT)
    assert (counter.starts, counter.ends) == (1, 1)


@pytest.mark.slow
def test_real_llama_tier_usage_counted_once_and_exact() -> None:
    """On the embedded 0.5B: the callback's usage equals the routing record's, which is
    llama.cpp's own count of the templated prompt (more than the message text alone)."""
    counter = Counting()
    with ChatStream.embedded(hpc=None, max_tokens=4, temperature=0.0,
                             judge=FixedJudge("LOW")) as chat, \
            get_usage_metadata_callback() as cb:
        msg = chat.invoke("Say hi.", config={"callbacks": [counter]})
        record = msg.response_metadata["stream"]
        llm: Any = chat.tiers["local"]
        text_only = len(llm.get_token_ids("Say hi."))
    assert counter.starts == 1
    assert _totals(cb) == (record["usage"]["input_tokens"], record["usage"]["output_tokens"])
    assert record["usage"]["input_tokens"] > text_only
    assert not record.get("usage_estimated")


@pytest.mark.slow
def test_real_llama_tier_json_schema_structured_output() -> None:
    """On the embedded 0.5B, method="json_schema" answers under the schema's grammar: a valid
    object, one start, the callback's usage equal to llama.cpp's count."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    counter = Counting()
    chat = ChatStream(local=ChatLlamaCpp(max_tokens=48, temperature=0.0),
                      judge=FixedJudge("LOW"))
    with get_usage_metadata_callback() as cb:
        raw = chat.with_structured_output(Answer, method="json_schema", include_raw=True
                                          ).invoke("Say hi.", config={"callbacks": [counter]})
    assert isinstance(raw["parsed"], Answer), raw
    usage = raw["raw"].response_metadata["stream"]["usage"]
    assert counter.starts == 1
    assert _totals(cb) == (usage["input_tokens"], usage["output_tokens"])


class Slow(BaseChatModel):
    """Streams one chunk, then waits until cancelled; records whether its stream was closed."""

    closed: bool = False

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        try:
            yield ChatGenerationChunk(message=AIMessageChunk(content="a"))
            await asyncio.Event().wait()
            yield ChatGenerationChunk(message=AIMessageChunk(content="never"))
        finally:
            self.closed = True


async def test_cancelling_a_hidden_tier_stream_closes_it_cleanly() -> None:
    """A caller cancelled while the tier's step runs (a client disconnecting) closes the
    tier's stream, with no 'asynchronous generator is already running' error."""
    from stream_langchain._run import atier_stream

    model = Slow()
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, c: errors.append(c))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in atier_stream(model, [HumanMessage("hi")]):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.closed and errors == []
