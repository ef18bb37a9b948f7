"""Build ChatStream's tiers and judge from :class:`~stream_langchain.settings.Settings`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel

from stream_langchain.capabilities import tier_capabilities
from stream_langchain.context import (
    LRUSummaryCache,
    MemoryFitter,
    SQLiteSummaryCache,
    SummarizingFitter,
    SummaryCache,
    model_counter,
)
from stream_langchain.judges import CachedJudge, FallbackJudge, Judge, KeywordJudge, LLMJudge
from stream_langchain.ollama import OllamaProbe, OllamaTier, is_ollama
from stream_langchain.settings import (
    CloudSettings,
    HPCSettings,
    LocalSettings,
    Settings,
    SettingsError,
)

__all__ = ["build_cloud", "build_hpc", "build_judge", "build_local", "build_ollama_probe",
           "build_summarizer", "from_settings"]

# Context windows when neither the settings nor the model's profile give one (the paper's).
_DEFAULT_WINDOW = {"hpc": 65536, "cloud": 128000}

ModelT = TypeVar("ModelT", bound=BaseChatModel)
"""The class to build (``ChatStream``): passed in, so nothing here imports the engine."""


def build_local(s: Settings) -> BaseChatModel:
    """The local tier: Ollama, or the bundled model in-process."""
    if s.local.provider == "llamacpp":
        from stream_langchain.tiers.llamacpp import ChatLlamaCpp

        kwargs: dict[str, Any] = {"temperature": s.local.temperature,
                                  "max_tokens": s.local.max_tokens,
                                  "n_ctx": min(s.local.context_window, 32768)}
        return ChatLlamaCpp(**kwargs)
    from langchain_ollama import ChatOllama

    # No num_ctx: ChatStream learns the window from Ollama (build_ollama_probe) and sends it.
    return ChatOllama(
        model=s.local.model,
        base_url=s.local.base_url,
        temperature=s.local.temperature,
        num_predict=s.local.max_tokens,
    )


def build_ollama_probe(s: Settings) -> OllamaProbe:
    """What learns the Ollama tier's window (at most ``[local] context_window``) and times
    its first token (``first_token_timeout_s``, ``cold_load_timeout_s``)."""
    return OllamaProbe(max_num_ctx=s.local.context_window,
                       first_token_timeout_s=s.local.first_token_timeout_s,
                       cold_load_timeout_s=s.local.cold_load_timeout_s)


def _learn_num_ctx(local: BaseChatModel, probe: OllamaProbe) -> BaseChatModel:
    """``local`` with the learned window as ``num_ctx`` (the ceiling when Ollama does not
    answer now: ChatStream asks again at its first request), so that the summarizer, built
    here with the same model, asks for the same context as the answers (a different
    ``num_ctx`` makes Ollama reload the model)."""
    caps = OllamaTier(local, probe).learn()
    window = caps.context_window if caps is not None else None
    return local.model_copy(update={"num_ctx": window or probe.max_num_ctx})


def build_cloud(s: Settings, env: Mapping[str, str] | None = None) -> BaseChatModel | None:
    """The cloud tier (any OpenAI-compatible API) when a model is configured."""
    if not s.cloud.enabled:
        return None
    from langchain_openai import ChatOpenAI

    key = s.cloud.api_key(env)
    return ChatOpenAI(
        model=s.cloud.model,  # type: ignore[arg-type]
        base_url=s.cloud.base_url,
        api_key=key,
        temperature=s.cloud.temperature,
        max_tokens=s.cloud.max_tokens,  # type: ignore[call-arg]
        stream_usage=True,
    )


def build_hpc(
    s: Settings, env: Mapping[str, str] | None = None, *, globus_client: Any = None
) -> BaseChatModel | None:
    """The HPC tier (Globus Compute + relay) when an endpoint is configured.

    ``globus_client`` is passed to ``globus_compute_sdk.Executor`` (default: the SDK builds
    one from your Globus login or ``GLOBUS_COMPUTE_CLIENT_ID``/``_SECRET``).
    """
    if not s.hpc.enabled:
        return None
    source = os.environ if env is None else env
    if not s.hpc.relay_url and not s.hpc.relay_urls:
        raise SettingsError("hpc.endpoint_id is set but hpc.relay_url is not")
    secret = source.get(s.hpc.relay_secret_env, "")
    if not secret:
        raise SettingsError(
            f"HPC tier is configured but the environment variable {s.hpc.relay_secret_env} "
            "that should hold the relay secret is unset or empty"
        )
    from stream_langchain.tiers.hpc import ChatHPC

    return ChatHPC.from_globus(
        endpoint_id=s.hpc.endpoint_id,
        endpoint_ids=s.hpc.endpoint_ids,
        amqp_port=s.hpc.amqp_port,
        task_group_id=s.hpc.task_group_id,
        client=globus_client,
        relay_url=s.hpc.relay_url,
        relay_urls=s.hpc.relay_urls,
        relay_secret=secret,
        backend_url=s.hpc.backend_url,
        model=s.hpc.model,
        max_tokens=s.hpc.max_tokens,
        queue_timeout=s.hpc.queue_timeout_s,
        first_token_timeout=s.hpc.first_token_timeout_s,
        idle_timeout=s.hpc.idle_timeout_s,
        batch_timeout=s.hpc.batch_timeout_s,
        mode=s.hpc.mode,
        batch_fallback=s.hpc.batch_fallback,
    )


def build_summarizer(s: Settings, tiers: Mapping[str, BaseChatModel | None],
                     ) -> MemoryFitter | SummarizingFitter | None:
    """The context fitter ``[context]`` describes, writing with the tier ``summarizer``
    names, else the local tier (``None``: neither is configured, or ``summarizer =
    "none"``)."""
    c = s.context
    writer = (None if c.summarizer == "none"
              else tiers.get(c.summarizer) or tiers.get("local"))
    if writer is None:
        return None
    cache: SummaryCache = (SQLiteSummaryCache(c.cache_path) if c.cache_path
                           else LRUSummaryCache(c.cache_size))
    if s.shared.redis_url:  # replicas share summaries (docs/scaling.md)
        from stream_langchain.context._cache import RedisSummaryCache

        cache = RedisSummaryCache(s.shared.redis_url)
    counters = {t: model_counter(m, margin=c.token_margin, image_tokens=c.image_tokens)
                for t, m in tiers.items() if m is not None}
    if c.fitter == "memory":
        return MemoryFitter(
            writer, summary_tokens=c.summary_tokens, chunk_tokens=c.chunk_tokens,
            margin=c.token_margin, timeout_s=c.timeout_s, cache=cache, wait_s=c.wait_s,
            recall_share=c.recall_share, watermark=c.watermark,
            image_tokens=c.image_tokens, counters=counters)
    return SummarizingFitter(
        writer, keep_turns={str(t): n for t, n in c.keep_turns.items()}, trigger=c.trigger,
        summary_tokens=c.summary_tokens, chunk_tokens=c.chunk_tokens, margin=c.token_margin,
        timeout_s=c.timeout_s, cache=cache, image_tokens=c.image_tokens, counters=counters)


def build_judge(s: Settings, local: BaseChatModel | None) -> Judge:
    """The judge named by ``stream.judge``, always ending in the keyword judge."""
    from stream_langchain.judges.default import default_judge

    kind = s.stream.judge
    if kind == "keyword":
        return CachedJudge(KeywordJudge())
    if kind in ("embedded", "transformer"):
        return default_judge(escalate_below=0.0 if kind == "embedded" else 1.0)
    if kind == "auto" or local is None:
        return default_judge()
    llm = LLMJudge(local)
    if kind == "cascade":
        try:
            from stream_langchain.judges import CascadeJudge  # type: ignore[attr-defined]
            from stream_langchain.judges.embedded import EmbeddedJudge
        except ImportError:
            pass
        else:
            cascade = CascadeJudge(EmbeddedJudge(), llm, threshold=s.stream.cascade_threshold)
            return CachedJudge(FallbackJudge(cascade, KeywordJudge()))
    return CachedJudge(FallbackJudge(llm, KeywordJudge()))


def from_settings(
    cls: type[ModelT],
    source: Settings | str | os.PathLike[str] | Mapping[str, Any] | None,
    *,
    env: Mapping[str, str] | None = None,
    globus_client: Any = None,
    **overrides: Any,
) -> ModelT:
    """``ChatStream`` from settings; ``overrides`` win over what the settings build."""
    s = source if isinstance(source, Settings) else Settings.load(source, env=env)
    local = (overrides.pop("local") if "local" in overrides
             else build_local(s) if s.local.enabled else None)
    probe = overrides.pop("ollama_probe", None) or build_ollama_probe(s)
    if local is not None and is_ollama(local) and getattr(local, "num_ctx", None) is None:
        local = _learn_num_ctx(local, probe)
    kwargs: dict[str, Any] = {
        "local": local,
        "hpc": (overrides.pop("hpc") if "hpc" in overrides
                else build_hpc(s, env, globus_client=globus_client)),
        "cloud": overrides.pop("cloud") if "cloud" in overrides else build_cloud(s, env),
        "allow_cloud": s.stream.allow_cloud,
        "high_threshold": s.stream.high_threshold,
        "failure_threshold": s.routing.failure_threshold,
        "failure_window_s": s.routing.failure_window_s,
        "cooldown_s": s.routing.cooldown_s,
        "cloud_budget_usd": s.budget.cloud_usd,
        "prices": {m: p.model_dump() for m, p in s.budget.prices.items()},
        "context_reserve": {"local": s.local.output_reserve, "hpc": s.hpc.output_reserve,
                            "cloud": s.cloud.output_reserve},
        "image_tokens": s.context.image_tokens,
    }
    sections: dict[str, LocalSettings | HPCSettings | CloudSettings] = {
        "local": s.local, "hpc": s.hpc, "cloud": s.cloud}
    # With Ollama this is the ceiling: ChatStream caps it at the trained length it learns.
    windows: dict[str, int] = {"local": s.local.context_window} if local is not None else {}
    kwargs["ollama_probe"] = probe
    capabilities: dict[str, dict[str, Any]] = {}
    for tier in ("hpc", "cloud"):
        model = kwargs[tier]
        window = sections[tier].context_window
        if window is not None:
            windows[tier] = window
        elif model is None or tier_capabilities(model).context_window is None:
            windows[tier] = _DEFAULT_WINDOW[tier]
    for tier, section in sections.items():
        caps = {k: getattr(section, k) for k in ("vision", "tools")
                if getattr(section, k) is not None}
        if caps:
            capabilities[tier] = caps
    kwargs["context_windows"] = windows
    kwargs["capabilities"] = capabilities
    if "summarizer" not in overrides:
        kwargs["summarizer"] = build_summarizer(s, {"local": local, **{
            t: kwargs[t] for t in ("hpc", "cloud") if kwargs[t] is not None}})
        kwargs["summarize"] = kwargs["summarizer"] is not None
    if "judge" not in overrides:
        kwargs["judge"] = build_judge(s, local)
    kwargs.update(overrides)
    return cls(**kwargs)
