"""StreamLLM against the embedded stack: every endpoint, the routing record, tiers, errors,
callbacks and instrumentation."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index.core.llms import LLM, AudioBlock, ChatMessage
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.tools import FunctionTool
from pydantic import Field, ValidationError

from stream_langchain import CapabilityError, ChatStream, KeywordJudge
from stream_llamaindex import StreamLLM, StreamRoutingEvent
from tests.stream_llamaindex.conftest import MAX_TOKENS

pytestmark = pytest.mark.slow

USER = [ChatMessage(role="user", content="Name a colour.")]


def _record(extra: dict[str, Any]) -> dict[str, Any]:
    record = extra["stream"]
    assert record["tier"] == "local"
    assert record["model"].endswith(".gguf")
    assert record["complexity"] in {"LOW", "MEDIUM", "HIGH"}
    assert {"judge", "judge_ms", "ttft_ms", "summarized", "context_tokens", "fallbacks",
            "failover"} <= record.keys()
    return record


def _cloud_model() -> ChatOpenAI:
    # Constructing ChatOpenAI makes no request; nothing is sent to this port.
    return ChatOpenAI(model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="none")


# ------------------------------------------------------------------ class and construction


def test_is_a_function_calling_llm() -> None:
    """StreamLLM is a LlamaIndex FunctionCallingLLM (so LLM and BaseLLM)."""
    assert issubclass(StreamLLM, FunctionCallingLLM)
    assert issubclass(StreamLLM, LLM)
    assert issubclass(StreamLLM, BaseLLM)
    assert StreamLLM.class_name() == "StreamLLM"


def test_wraps_a_given_chat_stream(engine: ChatStream) -> None:
    """StreamLLM(chat_stream=...) uses that engine and keeps no tier forced."""
    llm = StreamLLM(chat_stream=engine)
    assert llm.chat_stream is engine
    assert llm.tier is None


def test_embedded_splits_kwargs_between_llm_and_engine() -> None:
    """embedded(): StreamLLM's own fields stay on it, the rest reach ChatStream.embedded."""
    with StreamLLM.embedded(hpc=None, max_tokens=5, tier="local") as llm:
        assert llm.tier == "local"
        assert sorted(llm.chat_stream.tiers) == ["local"]
        assert llm.chat_stream.local.max_tokens == 5  # type: ignore[union-attr]


def test_from_settings_builds_the_engine_from_a_dict() -> None:
    """from_settings() builds the tiers the settings name."""
    settings = {"local": {"provider": "llamacpp", "max_tokens": 6, "context_window": 1024},
                "stream": {"judge": "keyword"}}
    with StreamLLM.from_settings(settings) as llm:
        assert sorted(llm.chat_stream.tiers) == ["local"]
        assert llm.metadata.context_window == 1024


def test_unknown_tier_is_refused_at_construction(engine: ChatStream) -> None:
    """A forced tier that is not local/hpc/cloud is a validation error naming it."""
    with pytest.raises(ValidationError, match="unknown tier 'gpu'"):
        StreamLLM(chat_stream=engine, tier="gpu")
    with pytest.raises(ValueError, match="unknown tier 'gpu'"):
        StreamLLM.embedded(hpc=None, tier="gpu")


def test_chat_stream_is_required() -> None:
    """Without an engine StreamLLM cannot be built."""
    with pytest.raises(ValidationError, match="chat_stream"):
        StreamLLM()  # type: ignore[call-arg]


# ------------------------------------------------------------------ metadata


def test_metadata_of_the_embedded_stack(llm: StreamLLM) -> None:
    """Chat model, the local window, tool calling (the 0.5B instruct model calls tools
    in-process through its GGUF's template; measured in test_standard.py)."""
    meta = llm.metadata
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is True
    assert meta.context_window == 2048
    assert meta.num_output == MAX_TOKENS
    assert meta.model_name.startswith("local:") and meta.model_name.endswith(".gguf")


def test_metadata_follows_the_routable_tiers(engine: ChatStream) -> None:
    """Window = smallest routable tier's; function calling when a routable tier can call
    tools (here only cloud: the local tier is the Gemma base model, whose profile says it
    cannot); a forced tier or allow_cloud=False narrows what is routable."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    gemma = ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=MAX_TOKENS)
    both = ChatStream(local=gemma, cloud=_cloud_model(), judge=KeywordJudge(),
                      context_windows={"local": 2048, "cloud": 128000})
    llm = StreamLLM(chat_stream=both)
    assert llm.metadata.context_window == 2048
    assert llm.metadata.is_function_calling_model is True
    assert set(llm.metadata.model_name.split("|")) == {
        "local:gemma-3-270m-q4_k_m.gguf", "cloud:gpt-4o-mini"}

    pinned = StreamLLM(chat_stream=both, tier="cloud")
    assert pinned.metadata.context_window == 128000
    assert pinned.metadata.model_name == "cloud:gpt-4o-mini"

    private = StreamLLM(chat_stream=both.model_copy(update={"allow_cloud": False}))
    assert private.metadata.is_function_calling_model is False
    assert list(private.routable_tiers()) == ["local"]


# ------------------------------------------------------------------ endpoints


def test_chat_returns_text_and_the_routing_record(llm: StreamLLM) -> None:
    """chat(): assistant text, the record under additional_kwargs['stream'], token counts,
    the LangChain message as raw."""
    resp = llm.chat(USER)
    assert resp.message.role == "assistant"
    assert isinstance(resp.message.content, str) and resp.message.content
    _record(resp.additional_kwargs)
    assert 0 < resp.additional_kwargs["completion_tokens"] <= MAX_TOKENS
    assert isinstance(resp.raw, AIMessage)


async def test_achat_returns_text_and_the_routing_record(llm: StreamLLM) -> None:
    """achat(): same contract as chat()."""
    resp = await llm.achat(USER)
    assert resp.message.content
    _record(resp.additional_kwargs)


def test_stream_chat_deltas_concatenate_to_the_answer(llm: StreamLLM) -> None:
    """stream_chat(): deltas join to the final message; only the last response has the
    record; the first carries the early route hint."""
    responses = list(llm.stream_chat(USER))
    assert len(responses) >= 2
    last = responses[-1]
    assert "".join(r.delta or "" for r in responses) == last.message.content
    assert last.message.content
    _record(last.additional_kwargs)
    assert all("stream" not in r.additional_kwargs for r in responses[:-1])
    assert responses[0].additional_kwargs.get("stream_route", {}).get("tier") in {None, "local"}


async def test_astream_chat_deltas_concatenate_to_the_answer(llm: StreamLLM) -> None:
    """astream_chat(): same contract as stream_chat()."""
    responses = [r async for r in await llm.astream_chat(USER)]
    last = responses[-1]
    assert "".join(r.delta or "" for r in responses) == last.message.content
    _record(last.additional_kwargs)


def test_complete_returns_text_and_the_routing_record(llm: StreamLLM) -> None:
    """complete(): the prompt as one user message; text and record."""
    resp = llm.complete("The capital of France is")
    assert resp.text
    _record(resp.additional_kwargs)


async def test_acomplete_returns_text_and_the_routing_record(llm: StreamLLM) -> None:
    """acomplete(): same contract as complete()."""
    resp = await llm.acomplete("The capital of France is")
    assert resp.text
    _record(resp.additional_kwargs)


def test_stream_complete_deltas_concatenate_to_the_text(llm: StreamLLM) -> None:
    """stream_complete(): deltas join to the final text, which carries the record."""
    responses = list(llm.stream_complete("Count to three:"))
    assert "".join(r.delta or "" for r in responses) == responses[-1].text
    _record(responses[-1].additional_kwargs)


async def test_astream_complete_deltas_concatenate_to_the_text(llm: StreamLLM) -> None:
    """astream_complete(): same contract as stream_complete()."""
    responses = [r async for r in await llm.astream_complete("Count to three:")]
    assert "".join(r.delta or "" for r in responses) == responses[-1].text
    _record(responses[-1].additional_kwargs)


def test_conversation_with_system_and_history(llm: StreamLLM) -> None:
    """A system prompt and earlier turns go through and the caller's list is untouched."""
    messages = [ChatMessage(role="system", content="Answer in one word."),
                ChatMessage(role="user", content="Hi"),
                ChatMessage(role="assistant", content="Hello"),
                ChatMessage(role="user", content="Name a fruit.")]
    before = [m.model_copy(deep=True) for m in messages]
    resp = llm.chat(messages)
    assert resp.additional_kwargs["stream"]["context_tokens"] > 10
    assert messages == before


# ------------------------------------------------------------------ forcing a tier


def test_tier_kwarg_passes_through(llm: StreamLLM) -> None:
    """tier='local' reaches ChatStream as its override."""
    assert llm.chat(USER, tier="local").additional_kwargs["stream"]["override"] == "local"
    assert llm.complete("Hi", tier="local").additional_kwargs["stream"]["override"] == "local"


def test_langchain_config_forces_a_tier(llm: StreamLLM) -> None:
    """config={'configurable': {'stream_tier': ...}} reaches ChatStream."""
    resp = llm.chat(USER, config={"configurable": {"stream_tier": "local"}})
    assert resp.additional_kwargs["stream"]["override"] == "local"


def test_forced_tier_field_applies_to_every_call(engine: ChatStream) -> None:
    """StreamLLM(tier=...) forces the tier unless the call says otherwise."""
    llm = StreamLLM(chat_stream=engine, tier="local")
    assert llm.chat(USER).additional_kwargs["stream"]["override"] == "local"
    last = list(llm.stream_complete("Hi"))[-1]
    assert last.additional_kwargs["stream"]["override"] == "local"


def test_no_override_when_nothing_is_forced(llm: StreamLLM) -> None:
    """Without tier= the engine routes on its own (override None)."""
    assert llm.chat(USER).additional_kwargs["stream"]["override"] is None


# ------------------------------------------------------------------ errors


def test_empty_conversation_is_chat_streams_value_error(llm: StreamLLM) -> None:
    """An empty message list raises ChatStream's ValueError, sync and streamed."""
    with pytest.raises(ValueError, match="at least one message"):
        llm.chat([])
    with pytest.raises(ValueError, match="at least one message"):
        list(llm.stream_chat([]))


async def test_empty_conversation_is_a_value_error_async(llm: StreamLLM) -> None:
    """Same for achat / astream_chat."""
    with pytest.raises(ValueError, match="at least one message"):
        await llm.achat([])
    with pytest.raises(ValueError, match="at least one message"):
        async for _ in await llm.astream_chat([]):
            pass


def test_unknown_tier_kwarg_is_a_value_error(llm: StreamLLM) -> None:
    """tier='gpu' raises ChatStream's ValueError naming the valid tiers."""
    with pytest.raises(ValueError, match="unknown tier 'gpu'.*local, hpc, cloud"):
        llm.chat(USER, tier="gpu")


def test_unconfigured_tier_is_a_value_error(llm: StreamLLM) -> None:
    """Forcing a tier that is not configured raises ChatStream's ValueError saying so."""
    with pytest.raises(ValueError, match="tier override 'cloud': that tier is not configured"):
        llm.complete("Hi", tier="cloud")


def test_unsupported_block_is_refused(llm: StreamLLM) -> None:
    """An audio block is a ValueError naming the block type (images: test_images.py)."""
    msg = ChatMessage(role="user", blocks=[AudioBlock(audio=b"RIFF0000WAVE")])
    with pytest.raises(ValueError, match="'audio' block"):
        llm.chat([msg])


def test_tools_on_a_stack_that_cannot_call_them() -> None:
    """chat_with_tools on the Gemma base model (profile: no tool calling) is ChatStream's
    CapabilityError naming tool calling, raised before any tier is called; no fake call."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    gemma = ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=MAX_TOKENS)
    llm = StreamLLM(chat_stream=ChatStream(local=gemma, judge=KeywordJudge()))
    tool = FunctionTool.from_defaults(fn=lambda a, b: a + b, name="add",
                                      description="Add two numbers.")
    with pytest.raises(CapabilityError, match="needs tool calling.*local: no tool calling"):
        llm.chat_with_tools([tool], user_msg="Add 2 and 3.")


def test_tools_on_the_embedded_stack_are_called(llm: StreamLLM) -> None:
    """chat_with_tools on the embedded 0.5B instruct model: a real call of the tool, with
    the arguments from the question."""

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    tool = FunctionTool.from_defaults(fn=add)
    # a whole call is ~25 tokens: the fixture's 12 would cut it (and a cut call is no call)
    resp = llm.chat_with_tools([tool], user_msg="Add 2 and 3.", max_tokens=64, temperature=0)
    calls = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=True)
    assert [c.tool_name for c in calls] == ["add"]
    # the model sometimes writes the numbers as JSON strings; the tool schema coerces them
    assert {k: int(v) for k, v in calls[0].tool_kwargs.items()} == {"a": 2, "b": 3}


def test_failed_call_is_reported_to_callbacks(engine: ChatStream) -> None:
    """A failing call still closes its callback event (with the exception)."""
    debug = LlamaDebugHandler()
    llm = StreamLLM(chat_stream=engine, callback_manager=CallbackManager([debug]))
    with pytest.raises(ValueError):
        llm.chat([])
    ends = debug.get_event_pairs()
    assert ends and "exception" in ends[-1][-1].payload


# ------------------------------------------------------------------ callbacks, instrumentation


class _Collect(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


def _collecting() -> _Collect:
    handler = _Collect()
    get_dispatcher().add_event_handler(handler)
    return handler


def _stop(handler: _Collect) -> None:
    get_dispatcher().event_handlers.remove(handler)


def test_instrumentation_events_carry_the_record(llm: StreamLLM) -> None:
    """chat and stream_complete emit a StreamRoutingEvent and an LLM end event whose
    response has the record."""
    handler = _collecting()
    try:
        llm.chat(USER)
        list(llm.stream_complete("Hi"))
    finally:
        _stop(handler)
    routed = [e for e in handler.events if isinstance(e, StreamRoutingEvent)]
    assert [e.record["tier"] for e in routed] == ["local", "local"]
    chat_end = [e for e in handler.events if isinstance(e, LLMChatEndEvent)]
    assert chat_end and chat_end[0].response.additional_kwargs["stream"]["tier"] == "local"
    completion_end = [e for e in handler.events if isinstance(e, LLMCompletionEndEvent)]
    assert completion_end[-1].response.additional_kwargs["stream"]["tier"] == "local"


async def test_instrumentation_events_async(llm: StreamLLM) -> None:
    """astream_chat emits the StreamRoutingEvent too."""
    handler = _collecting()
    try:
        async for _ in await llm.astream_chat(USER):
            pass
    finally:
        _stop(handler)
    assert any(isinstance(e, StreamRoutingEvent) for e in handler.events)


def test_callback_manager_sees_the_record(engine: ChatStream) -> None:
    """LlamaIndex callbacks (LlamaDebugHandler) get the response with the record."""
    debug = LlamaDebugHandler()
    llm = StreamLLM(chat_stream=engine, callback_manager=CallbackManager([debug]))
    llm.chat(USER)
    pairs = debug.get_llm_inputs_outputs()
    assert len(pairs) == 1
    response = pairs[0][1].payload["response"]
    assert response.additional_kwargs["stream"]["tier"] == "local"


def test_payload_names_the_routed_models_and_no_secret(engine: ChatStream) -> None:
    """to_payload() (sent with every event) names the tiers' models and never a key."""
    cloud = ChatOpenAI(model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1",
                       api_key="sk-test-secret-123")
    llm = StreamLLM(chat_stream=ChatStream(local=engine.local, cloud=cloud, judge=KeywordJudge()))
    payload = llm.to_payload()
    assert payload["class_name"] == "StreamLLM"
    assert "cloud:gpt-4o-mini" in payload["model_name"]
    assert "sk-test-secret-123" not in repr(payload) + repr(llm)
