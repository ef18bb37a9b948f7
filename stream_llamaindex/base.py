"""StreamLLM: a LlamaIndex LLM over ChatStream's tiered engine (no routing of its own).

Every call is converted to LangChain messages, sent through a
:class:`~stream_langchain.ChatStream` (judge, route, summarize, stream, fail over), and the
answer converted back. The routing record rides on every final ``ChatResponse``
(``additional_kwargs["stream"]``), on LlamaIndex's LLM end events and callbacks, and on a
:class:`StreamRoutingEvent` sent to the instrumentation dispatcher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableConfig
from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, field_validator
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.base import BaseEvent
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from stream_langchain import model_name
from stream_langchain.chat_model import CONFIG_KEY, ChatStream
from stream_langchain.record import RouteRecord
from stream_langchain.routing import validate_tier
from stream_llamaindex._convert import (
    StreamedTurn,
    to_chat_response,
    to_langchain_messages,
    tool_selections,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["StreamLLM", "StreamRoutingEvent", "can_call_tools"]

dispatcher = get_dispatcher(__name__)

class StreamRoutingEvent(BaseEvent):
    """Instrumentation event sent once per answered request, carrying ChatStream's routing
    record (``tier``, ``model``, ``complexity``, ``judge``, ``ttft_ms``, ``fallbacks``, ...)."""

    record: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "StreamRoutingEvent"


def can_call_tools(model: BaseChatModel) -> bool:
    """Whether a tier model can call tools.

    The model's LangChain ``profile`` decides when it says (``profile["tool_calling"]``):
    STREAM's own tiers set it from what their model measurably does (the in-process
    Qwen2.5-Coder models call tools through their GGUF template; the bundled Gemma base model
    cannot; the embedded HPC stand-in's llama.cpp server does not do it reliably). Otherwise a
    model can when it implements ``bind_tools`` itself (``ChatOpenAI`` and ``ChatOllama`` do;
    ``BaseChatModel``'s raises ``NotImplementedError``).
    """
    profile = getattr(model, "profile", None) or {}
    if "tool_calling" in profile:
        return bool(profile["tool_calling"])
    return type(model).bind_tools is not BaseChatModel.bind_tools


class StreamLLM(FunctionCallingLLM):
    """LlamaIndex LLM that routes each request across local / HPC / cloud tiers via ChatStream.

    It has no routing logic of its own: judging, routing, summarization, fallback and
    failover are ChatStream's. Tool calls are forwarded to the routed tier, so agents work
    whenever a routable tier can call tools (``metadata.is_function_calling_model``), as the
    embedded stack's Qwen2.5-Coder-0.5B-Instruct does in-process. User messages may carry
    ``ImageBlock``s (bytes, a path, a data or http(s) URL); ChatStream sends them only to a
    tier that takes images (:attr:`image_inputs`).

    Setup:
        .. code-block:: bash

            pip install "stream-tiered[local,llamaindex]"

    Instantiate:
        .. code-block:: python

            from stream_llamaindex import StreamLLM

            llm = StreamLLM.embedded(hpc=None, max_tokens=64)   # offline, bundled model
            llm = StreamLLM.from_settings("stream.toml")
            llm = StreamLLM(chat_stream=my_chat_stream, tier="hpc")  # pin one tier

    Chat / complete:
        .. code-block:: python

            from llama_index.core.llms import ChatMessage

            resp = llm.chat([ChatMessage(role="user", content="Name a colour.")])
            resp.additional_kwargs["stream"]["tier"]          # 'local'
            llm.complete("The capital of France is", tier="local").text

    Stream:
        .. code-block:: python

            for r in llm.stream_chat([ChatMessage(role="user", content="Count to 3.")]):
                print(r.delta, end="")
            r.additional_kwargs["stream"]       # the last response carries the record

    Images:
        .. code-block:: python

            from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock

            llm = StreamLLM(chat_stream=ChatStream(cloud=ChatOpenAI(model="gpt-4o-mini")))
            llm.image_inputs                    # True: gpt-4o-mini's profile takes images
            msg = ChatMessage(role="user", blocks=[TextBlock(text="What is in this picture?"),
                                                   ImageBlock(path="photo.png")])
            llm.chat([msg]).additional_kwargs["stream"]["needs"]   # {'images': 1, ...}

    Async:
        .. code-block:: python

            await llm.achat(messages)
            async for r in await llm.astream_complete("hi"):
                ...

    Every method accepts ``tier="local" | "hpc" | "cloud"`` (or a LangChain
    ``config={"configurable": {"stream_tier": ...}}``) to force a tier for one call; other
    keyword arguments go to the routed tier's model.
    """

    chat_stream: ChatStream = Field(
        description="The ChatStream engine every call goes through.", exclude=True
    )
    tier: str | None = Field(
        default=None,
        description="Force every request to this tier (local, hpc or cloud); None lets "
        "ChatStream route. A per-call tier= wins over it.",
    )

    @field_validator("tier")
    @classmethod
    def _check_tier(cls, value: str | None) -> str | None:
        return None if value is None else validate_tier(value)

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "StreamLLM"

    # ------------------------------------------------------------------ construction

    @classmethod
    def _split(cls, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        own = {k: v for k, v in kwargs.items() if k in cls.model_fields and k != "chat_stream"}
        engine = {k: v for k, v in kwargs.items() if k not in own}
        return own, engine

    @classmethod
    def _wrap(cls, engine: ChatStream, own: dict[str, Any]) -> StreamLLM:
        try:
            return cls(chat_stream=engine, **own)
        except BaseException:
            engine.close()
            raise

    @classmethod
    def from_settings(cls, source: Any = None, **kwargs: Any) -> StreamLLM:
        """Build over :meth:`ChatStream.from_settings` (a TOML path, a dict, or ``None`` for
        ``STREAM_CONFIG``). StreamLLM's own fields (``tier``, ``callback_manager``,
        ``system_prompt``, ...) are taken from ``kwargs``; the rest go to ChatStream.

        Raises:
            SettingsError: invalid settings (from ChatStream).
        """
        own, engine = cls._split(kwargs)
        if own.get("tier") is not None:
            validate_tier(own["tier"])
        return cls._wrap(ChatStream.from_settings(source, **engine), own)

    @classmethod
    def embedded(cls, **kwargs: Any) -> StreamLLM:
        """Build over :meth:`ChatStream.embedded`: the offline stack (bundled model
        in-process). ``kwargs`` split as in :meth:`from_settings` (for example
        ``hpc=None, max_tokens=32`` go to ChatStream, ``tier="local"`` stays here).
        """
        own, engine = cls._split(kwargs)
        if own.get("tier") is not None:
            validate_tier(own["tier"])
        return cls._wrap(ChatStream.embedded(**engine), own)

    def close(self) -> None:
        """Stop whatever the ChatStream started (embedded servers, pools); idempotent."""
        self.chat_stream.close()

    def __enter__(self) -> StreamLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ metadata

    def routable_tiers(self, tier: str | None = None) -> dict[str, BaseChatModel]:
        """The tiers a request may be routed to: the forced tier (``tier``, else
        :attr:`tier`), or every configured tier the engine allows (no cloud when
        ``allow_cloud`` is false); ChatStream's :meth:`~ChatStream.routable_tiers`."""
        return self.chat_stream.routable_tiers(tier if tier is not None else self.tier)

    @property
    def metadata(self) -> LLMMetadata:
        """What LlamaIndex plans with.

        ``context_window``: the smallest window among the routable tiers (so a prompt fits
        wherever it is routed); ``num_output``: ChatStream's ``max_tokens``, else the largest
        tier limit (at most half the window); ``is_function_calling_model``: some routable
        tier can call tools (ChatStream sends a request with tools past the tiers that
        cannot, without counting it against their health).
        """
        tiers = self.routable_tiers()
        engine = self.chat_stream
        windows = [n for t in tiers if (n := engine.window(t)) is not None]
        window = min(windows) if windows else DEFAULT_CONTEXT_WINDOW
        outputs = [n for t in tiers if (n := engine.answer_limit(t)) is not None]
        num_output = min(max(outputs) if outputs else DEFAULT_NUM_OUTPUTS, window // 2)
        return LLMMetadata(
            context_window=window,
            num_output=num_output,
            is_chat_model=True,
            is_function_calling_model=any(map(can_call_tools, tiers.values())),
            model_name="|".join(f"{t}:{model_name(m)}" for t, m in tiers.items())
            or "stream-router",
            system_role=MessageRole.SYSTEM,
        )

    @property
    def image_inputs(self) -> bool:
        """Whether requests with ``ImageBlock``s can be answered: some routable tier takes
        image input (its model's LangChain ``profile["image_inputs"]``, or ChatStream's
        ``capabilities={tier: {"vision": True}}``).

        LlamaIndex's ``LLMMetadata`` has no field for this (0.14), so it is here, named as in
        LangChain's profile. When it is false, a request with images raises ChatStream's
        ``CapabilityError`` (a ``ValueError``) before any tier is called.
        """
        caps = self.chat_stream.tier_capabilities
        return any(caps[t].vision is True for t in self.routable_tiers() if t in caps)

    # ------------------------------------------------------------------ shared plumbing

    def _call(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> tuple[list[BaseMessage], RunnableConfig | None, dict[str, Any]]:
        """Convert one call's input: LangChain messages, config, ChatStream kwargs."""
        lc_messages = to_langchain_messages(messages)
        kw = {k: v for k, v in kwargs.items() if not (k in ("tools", "tool_choice") and v is None)}
        config: RunnableConfig | None = kw.pop("config", None)
        configured = ((config or {}).get("configurable") or {}).get(CONFIG_KEY)
        if "tier" not in kw and configured is None and self.tier is not None:
            kw["tier"] = self.tier
        return lc_messages, config, kw

    def _finish(self, response: ChatResponse) -> ChatResponse:
        record = RouteRecord.from_metadata(response.additional_kwargs)
        if record is not None:
            dispatcher.event(StreamRoutingEvent(record=record.to_dict()))
        return response

    # ------------------------------------------------------------------ chat (undecorated)

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        lc_messages, config, kw = self._call(messages, kwargs)
        answer = self.chat_stream.invoke(lc_messages, config, **kw)
        return self._finish(to_chat_response(answer))

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        lc_messages, config, kw = self._call(messages, kwargs)

        def gen() -> ChatResponseGen:
            turn = StreamedTurn()
            for chunk in self.chat_stream.stream(lc_messages, config, **kw):
                response = turn.add(_as_chunk(chunk))
                if response is not None:
                    yield response
            yield self._finish(turn.final())

        return gen()

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        lc_messages, config, kw = self._call(messages, kwargs)
        answer = await self.chat_stream.ainvoke(lc_messages, config, **kw)
        return self._finish(to_chat_response(answer))

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        lc_messages, config, kw = self._call(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            turn = StreamedTurn()
            async for chunk in self.chat_stream.astream(lc_messages, config, **kw):
                response = turn.add(_as_chunk(chunk))
                if response is not None:
                    yield response
            yield self._finish(turn.final())

        return gen()

    # ------------------------------------------------------------------ public endpoints

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer a conversation; the routing record is in ``additional_kwargs["stream"]``."""
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream an answer; the last response carries the routing record."""
        return self._stream_chat(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`."""
        return await self._achat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""
        return await self._astream_chat(messages, **kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` as one user message; the record is in ``additional_kwargs``."""
        return chat_to_completion_decorator(self._chat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Stream the answer to ``prompt``; the last response carries the record."""
        return stream_chat_to_completion_decorator(self._stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async :meth:`complete`."""
        return await achat_to_completion_decorator(self._achat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""
        return await astream_chat_to_completion_decorator(self._astream_chat)(prompt, **kwargs)

    # ------------------------------------------------------------------ tools

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Chat kwargs with the tools in OpenAI's format (every LangChain tier accepts it).

        ``tool_required`` becomes LangChain's ``tool_choice="any"``; a ``tool_choice`` (a tool
        name, ``"auto"``, ``"none"``) is passed as given.
        """
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        out: dict[str, Any] = {"messages": messages, **kwargs}
        if tools:
            out["tools"] = [t.metadata.to_openai_tool(skip_length_check=True) for t in tools]
            if tool_choice is None and tool_required:
                tool_choice = "any"
            if tool_choice is not None:
                out["tool_choice"] = tool_choice
        return out

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls are allowed."""
        if not allow_parallel_tool_calls:
            seen = False
            kept = []
            for block in response.message.blocks:
                if isinstance(block, ToolCallBlock):
                    if seen:
                        continue
                    seen = True
                kept.append(block)
            response.message.blocks = kept
        return response

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """The tool calls the routed tier made.

        Raises:
            ValueError: there are none and ``error_on_no_tool_call`` is true.
        """
        calls = tool_selections(response)
        if not calls and error_on_no_tool_call:
            raise ValueError("Expected at least one tool call, but got 0 tool calls.")
        return calls


def _as_chunk(chunk: BaseMessage) -> AIMessageChunk:
    if isinstance(chunk, AIMessageChunk):
        return chunk
    return AIMessageChunk(content=chunk.content,
                          response_metadata=dict(chunk.response_metadata))
