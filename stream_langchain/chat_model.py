"""ChatStream: a LangChain chat model that judges, routes and streams across tiers."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from stream_langchain._messages import check_messages, latest_user_text
from stream_langchain._run import (
    AllTiersFailed,
    Binder,
    RequestRun,
    atier_stream,
    tier_stream,
)
from stream_langchain.capabilities import (
    Capabilities,
    model_name,
    request_needs,
    tier_capabilities,
    validate_capabilities,
)
from stream_langchain.context import (
    IMAGE_TOKENS,
    ContextFitter,
    MemoryFitter,
    afit_with,
    fit_with,
    model_counter,
    prepare_with,
)
from stream_langchain.errors import UnsupportedFeature
from stream_langchain.judges import Complexity, Judge, Judgement, default_judge
from stream_langchain.ollama import OllamaProbe, OllamaTier, is_ollama
from stream_langchain.routing import (
    TIERS,
    CapabilityError,
    CircuitBreaker,
    CloudBudget,
    plan_route,
    validate_tier,
)

__all__ = ["AllTiersFailed", "CapabilityError", "ChatStream"]

logger = logging.getLogger(__name__)

CONFIG_KEY = "stream_tier"
"""``RunnableConfig["configurable"]`` key that forces a tier inside chains."""

_ROUTER_KWARGS = frozenset({"tier", "tools", "tool_choice"})
# A forced tier is not judged (DESIGN: request path, step 2): the record says ``judge: forced``
# and, with nothing judged, the neutral MEDIUM at confidence 0.
_FORCED = Judgement(complexity=Complexity.MEDIUM, confidence=0.0, judge="forced")


# Standard parameter -> the field names tier models use for it, in order of preference.
_PARAM_FIELDS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "max_tokens": ("max_tokens", "num_predict", "max_output_tokens"),
    "timeout": ("request_timeout", "timeout"),
    "max_retries": ("max_retries",),
}


def _with_params(model: BaseChatModel, params: dict[str, Any]) -> BaseChatModel:
    """A copy of ``model`` with the standard parameters it has a field for (the caller's
    object is left alone); ``model`` itself when none applies."""
    fields = type(model).model_fields
    update: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        for field_name in _PARAM_FIELDS[name]:
            if field_name in fields:
                update[field_name] = value
                break
    return model.model_copy(update=update) if update else model


def _answer_limit(model: BaseChatModel) -> int | None:
    """The tier model's own answer-length limit, if it has one."""
    for name in _PARAM_FIELDS["max_tokens"]:
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _ContextEvents:
    """Summarization progress to ``on_context_event`` and, as LangChain custom events
    (``stream_summarize_start`` / ``_end``), to the run's callback handlers: :meth:`emit`
    on the sync path, :meth:`aemit` on the async one."""

    def __init__(self, hook: Callable[[str, dict[str, Any]], None] | None,
                 run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
                 ) -> None:
        self.hook = hook
        self.run_id = None if run_manager is None else run_manager.run_id
        self.args: tuple[Any, ...] | None = None
        if run_manager is not None:
            self.args = (run_manager.handlers, run_manager.inheritable_handlers,
                         run_manager.parent_run_id)

    def emit(self, name: str, data: dict[str, Any]) -> None:
        if self.hook is not None:
            self.hook(name, data)
        if self.args is not None and self.run_id is not None:
            handlers, inheritable, parent = self.args
            CallbackManager(handlers, inheritable, parent_run_id=parent).on_custom_event(
                f"stream_{name}", data, run_id=self.run_id)

    async def aemit(self, name: str, data: dict[str, Any]) -> None:
        if self.hook is not None:
            self.hook(name, data)
        if self.args is not None and self.run_id is not None:
            handlers, inheritable, parent = self.args
            await AsyncCallbackManager(handlers, inheritable,
                                       parent_run_id=parent).on_custom_event(
                f"stream_{name}", data, run_id=self.run_id)


class ChatStream(BaseChatModel):
    """Tiered chat model: per request, judge the query, pick local / HPC / cloud, stream.

    Each tier is any LangChain chat model. The routing decision and its timings are in
    ``response_metadata["stream"]`` of the answer (and of the last streamed chunk).

    Setup:
        .. code-block:: bash

            pip install "stream-tiered[local]"     # the embedded default (llama.cpp)

    Key init args:
        local / hpc / cloud: the tier models (``None``: tier not configured).
        judge: a :class:`~stream_langchain.judges.Judge` (default: embedded classifier with a
            keyword fallback, cached).
        allow_cloud: ``False`` never sends anything to the cloud tier.
        high_threshold: a HIGH label only counts when the judge's P(HIGH) reaches it.
        cloud_budget_usd / prices: stop using cloud once this much is spent.
        failure_threshold / failure_window_s / cooldown_s: the circuit breaker.

    Instantiate:
        .. code-block:: python

            from langchain_ollama import ChatOllama
            from langchain_openai import ChatOpenAI
            from stream_langchain import ChatStream

            llm = ChatStream(local=ChatOllama(model="llama3.2:3b"),
                             cloud=ChatOpenAI(model="gpt-4o-mini"))
            llm = ChatStream.from_settings("stream.toml")
            llm = ChatStream.embedded()          # offline: bundled model, no servers

    Invoke:
        .. code-block:: python

            msg = llm.invoke("What is the capital of France?")
            msg.response_metadata["stream"]["tier"]      # 'local'

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Prove that sqrt(2) is irrational."):
                print(chunk.content, end="")

    Force a tier:
        .. code-block:: python

            llm.invoke("hi", tier="local")
            chain.invoke(x, config={"configurable": {"stream_tier": "hpc"}})

    Async:
        .. code-block:: python

            await llm.ainvoke("hi")
            async for chunk in llm.astream("hi"):
                ...
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    local: BaseChatModel | None = None
    """The local tier (free, private, small)."""
    hpc: BaseChatModel | None = None
    """The HPC tier (institutional GPUs; usually a ``ChatHPC``)."""
    cloud: BaseChatModel | None = None
    """The cloud tier (a commercial API)."""
    judge: Judge | None = None
    """Complexity judge; ``None`` uses :func:`default_judge`."""
    allow_cloud: bool = True
    """``False`` guarantees no request reaches the cloud tier."""
    high_threshold: float = Field(0.0, ge=0.0, le=1.0)
    """Cost-quality threshold: HIGH only when P(HIGH) >= this, else MEDIUM (0 = off)."""
    failover: bool = True
    """Continue an answer on the next tier when a tier dies after its first token."""
    context_windows: dict[str, int] = Field(default_factory=dict)
    """Per tier, the context window in tokens (default: the window the tier model allocates,
    ``n_ctx`` / ``num_ctx``, else its profile's ``max_input_tokens``, else unknown: never
    fitted)."""
    capabilities: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per tier, overrides of what its model's ``profile`` says it can take: ``vision``
    (image parts), ``image_urls`` (images by http(s) URL), ``tools`` (tool calling),
    ``context_window``. For example ``{"hpc": {"vision": True}}`` for a Qwen2.5-VL node.
    Requests with images go only to tiers known to take them; with tools bound, tiers known
    not to call tools are skipped. See :mod:`stream_langchain.capabilities`."""
    image_tokens: int = Field(IMAGE_TOKENS, ge=0)
    """Tokens counted per image part when fitting contexts (an estimate: 765, OpenAI's figure
    for a 1024x1024 image at high detail)."""
    context_reserve: dict[str, int] = Field(default_factory=dict)
    """Per tier, tokens of the window kept for the answer (default: the answer limit,
    ``max_tokens``, at most half the window)."""
    summarizer: ContextFitter | None = None
    """Makes the context fit each tier's budget (window minus reserve). ``None``: a
    :class:`~stream_langchain.context.MemoryFitter` over ``summarizer_model`` when
    ``summarize`` is on."""
    summarizer_model: BaseChatModel | None = None
    """The model that writes summaries for the default fitter (default: the local tier)."""
    summarize: bool = True
    """``False``: no default fitter; tiers whose window is too small are skipped."""
    on_context_event: Callable[[str, dict[str, Any]], None] | None = Field(default=None,
                                                                         exclude=True)
    """Called with ``("summarize_start", data)`` before the summarizer runs and
    ``("summarize_end", data)`` after, so a UI can show "summarizing context". The same
    events reach LangChain callback handlers as custom events ``stream_summarize_start`` /
    ``_end`` when LangChain gives the run a callback manager (``invoke``, ``ainvoke``,
    chains and agents; ``stream()`` gets none, so use this hook there)."""
    cloud_budget_usd: float = Field(math.inf, ge=0.0)
    """Cloud spend limit in USD; once reached, HIGH goes to HPC."""
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    """USD per million ``input``/``output`` tokens, per cloud model name."""
    failure_threshold: int = Field(3, ge=1)
    """Failures within ``failure_window_s`` that open a tier's circuit."""
    failure_window_s: float = Field(60.0, gt=0)
    """Window over which tier failures are counted."""
    cooldown_s: float = Field(30.0, gt=0)
    """How long an open circuit keeps a tier out of routing."""
    ollama_probe: OllamaProbe | None = Field(default=None, exclude=True)
    """Learns the window and capabilities of ``ChatOllama`` tiers from the Ollama server and
    sets the ceiling (``max_num_ctx``) and first-token timeouts (warm, cold load) of what is
    sent; ``None``: ``OllamaProbe()``. See :mod:`stream_langchain.ollama`."""
    circuit_breaker: CircuitBreaker | None = Field(default=None, exclude=True)
    """A breaker to use instead of one built from the three fields above (for example one
    shared by several ChatStreams, or with an injected clock)."""

    # Standard parameters, applied to every tier model that has the matching field.
    temperature: float | None = None
    """Sampling temperature for every tier (``None``: each tier's own)."""
    max_tokens: int | None = None
    """Answer length limit for every tier (``None``: each tier's own)."""
    timeout: float | None = None
    """Request timeout, seconds, for tiers that have one (``None``: each tier's own)."""
    max_retries: int | None = None
    """Retries for tiers that retry (``None``: each tier's own)."""
    stop: list[str] | None = None
    """Default stop sequences."""
    streaming: bool = True
    """Accepted for compatibility: ChatStream always streams from its tiers."""

    _judge: Judge = PrivateAttr()
    _tier_models: dict[str, BaseChatModel] = PrivateAttr(default_factory=dict)
    _breaker: CircuitBreaker = PrivateAttr()
    _budget: CloudBudget = PrivateAttr()
    _closers: list[Callable[[], None]] = PrivateAttr(default_factory=list)
    _fitter: ContextFitter | None = PrivateAttr(default=None)
    _caps: dict[str, Capabilities] = PrivateAttr(default_factory=dict)
    _ollama: dict[str, OllamaTier] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _build(self) -> ChatStream:
        if not self.tiers:
            raise ValueError("ChatStream needs at least one tier: pass local=, hpc= or cloud=")
        for tier in self.context_windows:
            validate_tier(tier)
        validate_capabilities(self.capabilities, TIERS)
        self._caps = {t: tier_capabilities(m, self.capabilities.get(t))
                      for t, m in self.tiers.items()}
        self._judge = self.judge if self.judge is not None else default_judge()
        self._breaker = self.circuit_breaker or CircuitBreaker(
            threshold=self.failure_threshold, window=self.failure_window_s,
            cooldown=self.cooldown_s,
        )
        self._budget = CloudBudget(self.cloud_budget_usd, self.prices)
        params = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                  "timeout": self.timeout, "max_retries": self.max_retries}
        self._tier_models = {t: _with_params(m, params) for t, m in self.tiers.items()}
        probe = self.ollama_probe or OllamaProbe()
        self._ollama = {t: OllamaTier(m, probe) for t, m in self._tier_models.items()
                        if is_ollama(m)}
        self._tier_models.update({t: o.model for t, o in self._ollama.items()})
        for tier in self.context_reserve:
            validate_tier(tier)
        self._fitter = self.summarizer
        writer = self.summarizer_model or self._tier_models.get("local")
        if self._fitter is None and self.summarize and writer is not None:
            self._fitter = MemoryFitter(
                writer, breaker=self._breaker, image_tokens=self.image_tokens,
                counters={t: model_counter(m, image_tokens=self.image_tokens)
                          for t, m in self._tier_models.items()})
        return self

    def _resolve_model_profile(self) -> Any:
        """ChatStream's own profile: what at least one tier it may use can do (the cloud
        tier counts only when ``allow_cloud``)."""
        caps = [tier_capabilities(m, self.capabilities.get(t))
                for t, m in self.tiers.items() if t != "cloud" or self.allow_cloud]
        vision = any(c.vision for c in caps)
        tools = any(c.tools for c in caps)
        profile: dict[str, Any] = {
            "text_inputs": True,
            "text_outputs": True,
            "image_inputs": vision,
            "image_url_inputs": any(c.vision and c.image_urls is not False for c in caps),
            "tool_calling": tools,
            "structured_output": tools,  # with_structured_output binds a tool
        }
        windows = [c.context_window for c in caps if c.context_window]
        if windows:
            profile["max_input_tokens"] = max(windows)
        return profile

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_settings(cls, source: str | Any | None = None, **overrides: Any) -> ChatStream:
        """Build from a TOML settings file (or dict) plus environment variables.

        See :mod:`stream_langchain.settings` for the format. ``overrides`` are passed to the
        constructor (for example ``judge=`` or ``local=``).

        Raises:
            SettingsError: invalid settings, or a configured cloud key variable is unset.
        """
        from stream_langchain._factory import from_settings

        return from_settings(cls, source, **overrides)

    @classmethod
    def embedded(cls, **overrides: Any) -> ChatStream:
        """The offline default: Qwen2.5-Coder-0.5B-Instruct in-process (llama.cpp) as the local
        tier, and the embedded HPC stack (Qwen2.5-Coder-1.5B-Instruct behind a loopback relay)
        when its parts are installed. No network, no keys (see
        :mod:`stream_langchain.tiers.embedded`).

        Example:
            >>> llm = ChatStream.embedded(hpc=None)
            >>> sorted(llm.tiers)
            ['local']
        """
        from stream_langchain.tiers.embedded import build_embedded

        return build_embedded(cls, **overrides)

    # ------------------------------------------------------------------ properties

    @property
    def tiers(self) -> dict[str, BaseChatModel]:
        """The configured tiers, by name."""
        out: dict[str, BaseChatModel] = {}
        for name in TIERS:
            model = getattr(self, name)
            if model is not None:
                out[name] = model
        return out

    @property
    def tier_capabilities(self) -> dict[str, Capabilities]:
        """Per configured tier, what it can take (profile plus ``capabilities`` overrides).

        Example:
            >>> from langchain_core.language_models import GenericFakeChatModel
            >>> llm = ChatStream(cloud=GenericFakeChatModel(messages=iter([])),
            ...                  capabilities={"cloud": {"vision": True}})
            >>> llm.tier_capabilities["cloud"].vision, llm.profile["image_inputs"]
            (True, True)
        """
        return dict(self._caps)

    @property
    def breaker(self) -> CircuitBreaker:
        """Tier health (the circuit breaker)."""
        return self._breaker

    @property
    def budget(self) -> CloudBudget:
        """Cloud spend so far and what is left."""
        return self._budget

    @property
    def fitter(self) -> ContextFitter | None:
        """The context fitter in use (``None``: none; tiers too small are skipped)."""
        return self._fitter

    @property
    def active_judge(self) -> Judge:
        """The judge in use."""
        return self._judge

    @property
    def _llm_type(self) -> str:
        return "stream-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "tiers": {t: model_name(m) for t, m in self.tiers.items()},
            "judge": self._judge.name,
            "allow_cloud": self.allow_cloud,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "stream"
        tier = kwargs.get("tier")
        tiers = self.tiers
        if isinstance(kwargs.get("model"), str):
            params["ls_model_name"] = kwargs["model"]
        elif isinstance(tier, str) and tier in tiers:
            params["ls_model_name"] = f"{tier}:{model_name(tiers[tier])}"
        else:
            params["ls_model_name"] = "|".join(f"{t}:{model_name(m)}" for t, m in tiers.items())
        return params

    def close(self) -> None:
        """Stop whatever :meth:`embedded` or :meth:`from_settings` started (idempotent)."""
        while self._closers:
            closer = self._closers.pop()
            closer()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ tools

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; each request forwards them to the tier it is routed to.

        The tier's own ``bind_tools`` formats them, so any tier that can call tools works.
        """
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False,
        method: str = "function_calling", strict: bool | None = None, **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers parsed into ``schema``: ``method="function_calling"`` (default) binds it as a
        forced tool call; ``"json_schema"`` sends it as the OpenAI ``response_format`` (the
        in-process llama.cpp tier answers under a JSON-schema grammar) and parses the text;
        ``"json_mode"`` asks only for a JSON object."""
        if method in ("json_schema", "json_mode"):
            from stream_langchain._structured import json_schema_output

            if kwargs:
                raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
            return json_schema_output(self, schema, include_raw=include_raw, strict=strict,
                                      json_mode=method == "json_mode")
        if method != "function_calling":
            raise ValueError("method must be 'function_calling', 'json_schema' or "
                             f"'json_mode', not {method!r}")
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    # ------------------------------------------------------------------ config -> kwargs

    @staticmethod
    def _tier_from_config(config: RunnableConfig | None, kwargs: dict[str, Any]) -> None:
        if "tier" in kwargs:
            return
        tier = (ensure_config(config).get("configurable") or {}).get(CONFIG_KEY)
        if tier is not None:
            kwargs["tier"] = tier

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AIMessage:
        self._tier_from_config(config, kwargs)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AIMessage:
        self._tier_from_config(config, kwargs)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        self._tier_from_config(config, kwargs)
        yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        self._tier_from_config(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    # ------------------------------------------------------------------ what other faces use

    def routable_tiers(self, tier: str | None = None) -> dict[str, BaseChatModel]:
        """The tiers a request may be routed to: only ``tier`` when it is forced, else every
        configured tier this ChatStream allows (no cloud when ``allow_cloud`` is false).

        Example:
            >>> from langchain_core.language_models import GenericFakeChatModel
            >>> fake = GenericFakeChatModel(messages=iter([]))
            >>> sorted(ChatStream(local=fake, cloud=fake, allow_cloud=False).routable_tiers())
            ['local']
        """
        tiers = {t: m for t, m in self.tiers.items() if t != "cloud" or self.allow_cloud}
        if tier is not None:
            return {tier: tiers[tier]} if tier in tiers else {}
        return tiers

    def window(self, tier: str) -> int | None:
        """``tier``'s context window in tokens as routing uses it: ``context_windows``, else
        what its model allocates (``n_ctx``, ``num_ctx``, an Ollama server's learned window,
        never above the trained length), else its profile's ``max_input_tokens``; ``None``
        when unknown.

        Example:
            >>> from langchain_core.language_models import GenericFakeChatModel
            >>> fake = GenericFakeChatModel(messages=iter([]))
            >>> ChatStream(local=fake, context_windows={"local": 4096}).window("local")
            4096
        """
        window = self.context_windows.get(tier, self._caps[tier].context_window)
        if tier in self._ollama and isinstance(window, int):
            window = self._ollama[tier].cap(window)  # never above the trained length
        return window if isinstance(window, int) and window > 0 else None

    def answer_limit(self, tier: str | None = None) -> int | None:
        """The answer's length limit in tokens: :attr:`max_tokens`, else the tier model's
        own (``max_tokens``, ``num_predict``, ``max_output_tokens``); without ``tier``, the
        largest among :meth:`routable_tiers`. ``None``: no limit known."""
        if self.max_tokens:
            return self.max_tokens
        names = [tier] if tier is not None else list(self.routable_tiers())
        limits = [n for t in names if (n := _answer_limit(self._tier_models[t])) is not None]
        return max(limits) if limits else None

    def _budget_tokens(self, tier: str) -> int:
        """The prompt budget for ``tier``: its window minus the answer's reserve."""
        window = self.window(tier)
        if window is None:
            return 1 << 62
        reserve = self.context_reserve.get(tier)
        if reserve is None:
            reserve = min(self.answer_limit(tier) or 4096, window // 2)
        return max(window - reserve, 0)

    _window = window  # the name the tests and older callers use

    # ------------------------------------------------------------------ the request path

    def _open(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        """Check the request; the text the judge reads."""
        check_messages(messages)
        tier = kwargs.get("tier")
        if tier is not None:
            validate_tier(tier)
        return latest_user_text(messages)

    def _route(self, messages: list[BaseMessage], judgement: Judgement,
               kwargs: dict[str, Any], started: float) -> RequestRun:
        """The request's run, with its route planned (the policy's inputs are ours)."""
        complexity = judgement.complexity
        if (
            complexity is Complexity.HIGH
            and self.high_threshold > 0
            and judgement.prob(Complexity.HIGH) < self.high_threshold
        ):
            complexity = Complexity.MEDIUM
        needs = request_needs(messages, tools=bool(kwargs.get("tools")))
        run = RequestRun(
            messages=messages, judgement=judgement, complexity=complexity,
            model_names={t: model_name(m) for t, m in self.tiers.items()},
            budgets={t: self._budget_tokens(t) for t in self.tiers if self.window(t)},
            fitter=self._fitter, image_tokens=self.image_tokens, started=started,
            failover=self.failover, needs=needs.record(),
        )
        fitted = run.fitted_sizes() if kwargs.get("tier") is None else None
        run.route(plan_route(
            complexity,
            available=self.tiers,
            breaker=self._breaker,
            override=kwargs.get("tier"),
            allow_cloud=self.allow_cloud,
            budget=self._budget,
            context_tokens=run.context_tokens,
            context_windows=run.budgets if self._fitter is None or fitted else None,
            fitted_tokens=fitted,
            capabilities=self._caps,
            needs=needs,
        ))
        return run

    def _binder(self, kwargs: dict[str, Any]) -> Binder:
        """How this request reaches a tier: its model (tools bound) and the call's kwargs."""
        tools = kwargs.get("tools")
        choice = kwargs.get("tool_choice")
        forward = {k: v for k, v in kwargs.items() if k not in _ROUTER_KWARGS}

        def bind(tier: str) -> tuple[Runnable[Any, Any], dict[str, Any]]:
            ollama = self._ollama.get(tier)
            base = self._tier_models[tier] if ollama is None else ollama.request_model()
            if not tools:
                return base, forward
            extra = {"tool_choice": choice} if choice is not None else {}
            try:
                return base.bind_tools(tools, **extra), forward
            except NotImplementedError as exc:
                raise UnsupportedFeature(f"{type(base).__name__} ({model_name(base)})",
                                         "tool calling") from exc

        return bind

    def _learn_wanted(self, kwargs: dict[str, Any]) -> list[str]:
        """Ollama tiers to learn about before routing: healthy ones this request may use."""
        return [t for t in self._ollama if kwargs.get("tier") in (None, t)
                and self._breaker.allow(t)]

    def _learned(self, tier: str, caps: Capabilities | None) -> None:
        if caps is not None:
            self._caps[tier] = tier_capabilities(self.tiers[tier], self.capabilities.get(tier),
                                                 learned=caps)
        self._ollama[tier].use_window(self.window(tier))

    def _sending(self, tier: str) -> None:
        """Just before a tier is called (an Ollama tier checks its server's state)."""
        if tier in self._ollama:
            self._ollama[tier].check()

    def _failed(self, run: RequestRun, tier: str, exc: BaseException) -> None:
        """A tier failed: its health, and the error as the user should read it (Ollama's,
        see OllamaTier.explain)."""
        self._breaker.record_failure(tier)
        ollama = self._ollama.get(tier)
        run.on_error(tier, exc if ollama is None else ollama.explain(exc))

    def _prepare_context(self, run: RequestRun) -> None:
        """After an answer: let the fitter start the summary the next request will want
        (in the background; sized for the smallest window among the tiers)."""
        if self._fitter is None or not run.partial or not run.budgets:
            return
        tier = min(run.budgets, key=run.budgets.__getitem__)
        try:
            with run.counting():
                prepare_with(self._fitter, run.history(), budget_tokens=run.budgets[tier],
                             tier=tier)
        except Exception as exc:  # preparing ahead must never fail an answer
            logger.warning("context preparation failed: %s: %s", type(exc).__name__, exc)

    def _events(self, run_manager: CallbackManagerForLLMRun
                | AsyncCallbackManagerForLLMRun | None) -> _ContextEvents:
        return _ContextEvents(self.on_context_event, run_manager)

    def _succeeded(self, run: RequestRun, tier: str) -> ChatGenerationChunk:
        """The answer is complete: health, Ollama's state, the cloud's charge, the record."""
        self._breaker.record_success(tier)
        fields: dict[str, Any] = {}
        if tier in self._ollama:
            self._ollama[tier].on_success()
            fields["ollama"] = self._ollama[tier].record()
        usage = run.answer_usage()
        if tier == "cloud":
            fields["cloud_cost_usd"] = self._budget.charge(
                model_name(self.tiers[tier]), input_tokens=usage[0]["input_tokens"],
                output_tokens=usage[0]["output_tokens"])
        if math.isfinite(self._budget.limit_usd):
            fields["cloud_budget_remaining_usd"] = round(self._budget.remaining_usd, 6)
        if self.high_threshold > 0:
            fields["high_threshold"] = self.high_threshold
        final = run.finish(tier, usage, **fields)
        self._prepare_context(run)
        return final

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        started = time.perf_counter()
        text = self._open(messages, kwargs)
        judgement = _FORCED if kwargs.get("tier") is not None else self._judge.judge(text)
        for tier in self._learn_wanted(kwargs):
            self._learned(tier, self._ollama[tier].learn())
        run = self._route(messages, judgement, kwargs, started)
        events = self._events(run_manager)
        for attempt in run.attempts(self._binder(kwargs), stop=stop or self.stop):
            if attempt.fit_needed and self._fitter is not None:
                with run.counting():
                    fitted = fit_with(self._fitter, attempt.messages, budget_tokens=attempt.budget,
                                      tier=attempt.tier, on_event=events.emit)
                if not run.use_fit(attempt, fitted):
                    continue
            try:
                self._sending(attempt.tier)
                for message in tier_stream(attempt.model, attempt.messages, **attempt.kwargs):
                    chunk = run.on_chunk(attempt.tier, message)
                    if run_manager and chunk.text:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            except Exception as exc:
                self._failed(run, attempt.tier, exc)
                continue
            yield self._succeeded(run, attempt.tier)
            return
        raise run.all_failed()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        started = time.perf_counter()
        text = self._open(messages, kwargs)
        judgement = (_FORCED if kwargs.get("tier") is not None
                     else await self._judge.ajudge(text))
        for tier in self._learn_wanted(kwargs):
            self._learned(tier, await self._ollama[tier].alearn())
        run = self._route(messages, judgement, kwargs, started)
        events = self._events(run_manager)
        for attempt in run.attempts(self._binder(kwargs), stop=stop or self.stop):
            if attempt.fit_needed and self._fitter is not None:
                with run.counting():
                    fitted = await afit_with(self._fitter, attempt.messages,
                                             budget_tokens=attempt.budget, tier=attempt.tier,
                                             on_event=events.aemit)
                if not run.use_fit(attempt, fitted):
                    continue
            try:
                self._sending(attempt.tier)
                async for message in atier_stream(attempt.model, attempt.messages,
                                                  **attempt.kwargs):
                    chunk = run.on_chunk(attempt.tier, message)
                    if run_manager and chunk.text:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            except Exception as exc:
                self._failed(run, attempt.tier, exc)
                continue
            yield self._succeeded(run, attempt.tier)
            return
        raise run.all_failed()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
