"""The Ollama local tier, spoken to for real: its window, its capabilities, its failures.

Ollama allocates the context it is asked for (``options.num_ctx``), else the model's Modelfile
``num_ctx``, else the server default (``OLLAMA_CONTEXT_LENGTH``: 4096 below 24 GiB of VRAM),
and **silently drops** the start of any prompt longer than that. ``ChatOllama(model=...)``
without ``num_ctx`` therefore looks like a tier of unknown window to ChatStream, which would
never fit (summarize, recall) a conversation for it, while Ollama truncates it.

This module asks the server instead, once per model (cached, asked again after a failure):

- ``POST /api/show``: the trained context length (``model_info["<arch>.context_length"]``),
  the Modelfile ``parameters`` (its ``num_ctx``) and the ``capabilities`` (``tools``,
  ``vision``);
- ``GET /api/ps``: whether the model is loaded, with which context, until when.

ChatStream then fits conversations to the learned window (never above the trained length, at
most :attr:`OllamaProbe.max_num_ctx` for memory) and sends that window as ``num_ctx`` with
every request, so Ollama can never truncate behind its back; the routing record's ``ollama``
entry says where the window came from. It never imports ``langchain_ollama``: a tier is an
Ollama tier when its class comes from that package (``ChatOllama`` or a subclass).

Failures get messages a user can act on (:class:`OllamaNotRunning`,
:class:`OllamaModelMissing`), and a model that is not loaded (the first request after
``keep_alive`` expired) gets its own, longer first-token timeout: a cold load is not a dead
tier.

Example:
    >>> info = OllamaModelInfo(model="llama3.2:3b", base_url="http://127.0.0.1:11434",
    ...                        trained_context=131072, trained_key="llama.context_length",
    ...                        capabilities=("completion", "tools"))
    >>> OllamaProbe(max_num_ctx=32768).window(info)
    (32768, 'ollama: llama.context_length=131072, capped at max_num_ctx=32768')
    >>> print(OllamaNotRunning("http://127.0.0.1:11434", "llama3.2:3b"))
    Ollama is not running at http://127.0.0.1:11434 (start it with `ollama serve`)
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel

from stream_langchain.capabilities import Capabilities
from stream_langchain.errors import OllamaError, OllamaModelMissing, OllamaNotRunning, OllamaTimeout

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NUM_CTX",
    "OllamaError",
    "OllamaModelInfo",
    "OllamaModelMissing",
    "OllamaNotRunning",
    "OllamaProbe",
    "OllamaTier",
    "OllamaTimeout",
    "is_ollama",
]

DEFAULT_HOST = "http://127.0.0.1:11434"
"""Where Ollama listens unless ``base_url`` or ``OLLAMA_HOST`` says otherwise."""

DEFAULT_NUM_CTX = 4096
"""Ollama's default context below 24 GiB of VRAM (``OLLAMA_CONTEXT_LENGTH`` changes it)."""

_KEEP_ALIVE_S = 300.0  # Ollama keeps a model loaded 5 minutes after its last request
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def is_ollama(model: object) -> bool:
    """Whether ``model`` is a ``langchain_ollama`` chat model (``ChatOllama`` or a subclass).

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> is_ollama(GenericFakeChatModel(messages=iter([])))
        False
    """
    return any(c.__module__.split(".")[0] == "langchain_ollama"
               for c in type(model).__mro__)


def _host(model: BaseChatModel) -> str:
    """The server's address as the ``ollama`` client resolves it, without credentials."""
    url = getattr(model, "base_url", None) or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    if "://" not in url:
        url = "http://" + url
    parsed = httpx.URL(url)
    host = parsed.host or "127.0.0.1"
    if host == "0.0.0.0":  # noqa: S104 (a listen address, meaning this machine)
        host = "127.0.0.1"
    port = parsed.port or 11434
    path = parsed.path.rstrip("/")
    return f"{parsed.scheme}://{host}:{port}{path}"


def _duration_s(value: Any) -> float:
    """``keep_alive`` in seconds (``"5m"``, ``300``); negative means forever."""
    if value is None:
        return _KEEP_ALIVE_S
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value).strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else _KEEP_ALIVE_S


def _no_such_page(body: str) -> bool:
    """A 404 for the path (``404 page not found``), not Ollama's "model not found"."""
    return "page not found" in body


def _modelfile_num_ctx(parameters: str | None) -> int | None:
    for line in (parameters or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return int(value.strip())
    return None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True)
class OllamaModelInfo:
    """What Ollama said about one model."""

    model: str
    base_url: str
    trained_context: int | None = None
    """``model_info["<arch>.context_length"]``: the longest context the model was trained on."""
    trained_key: str | None = None
    """The ``model_info`` key it came from (``llama.context_length``)."""
    modelfile_num_ctx: int | None = None
    """``num_ctx`` from the Modelfile ``parameters``: the model's own default context."""
    capabilities: tuple[str, ...] = ()
    """``/api/show``'s ``capabilities`` (``completion``, ``tools``, ``vision``, ...)."""
    loaded_context: int | None = None
    """The context it is loaded with (``/api/ps``); ``None``: not loaded."""
    loaded_for_s: float | None = None
    """Seconds it stays loaded (``expires_at`` minus now, when asked)."""
    learned_at: float = 0.0
    """``time.monotonic()`` when this was asked."""

    def server_default(self, default_num_ctx: int) -> tuple[int, str]:
        """The context Ollama would allocate if no ``num_ctx`` were sent, and why."""
        if self.modelfile_num_ctx:
            n, why = self.modelfile_num_ctx, "Modelfile num_ctx"
        else:
            n, why = default_num_ctx, "server default (OLLAMA_CONTEXT_LENGTH)"
        if self.trained_context and n > self.trained_context:
            n, why = self.trained_context, why + ", capped at the trained length"
        return n, why



@contextlib.contextmanager
def _asking(base_url: str, model: str) -> Iterator[None]:
    """Ollama's HTTP failures as :class:`OllamaError` (sync and async callers alike)."""
    try:
        yield
    except httpx.TransportError as exc:
        raise OllamaNotRunning(base_url, model) from exc
    except httpx.HTTPError as exc:  # an unusable base_url
        raise OllamaError(f"cannot ask Ollama at {base_url}: {exc}", base_url, model) from exc

class OllamaProbe:
    """Learns, per server and model, what Ollama says (:class:`OllamaModelInfo`), and keeps
    it until a request fails or ``ttl_s`` passes. Thread-safe; one probe may serve several
    ChatStreams.

    Args:
        max_num_ctx: ceiling for the learned window (memory: Ollama allocates the whole KV
            cache for ``num_ctx``); a model trained on less uses its trained length.
        default_num_ctx: what the server allocates when no ``num_ctx`` is sent (default:
            ``OLLAMA_CONTEXT_LENGTH`` from this process's environment, else 4096); reported
            in the record, never sent.
        probe_timeout_s: for ``/api/show`` and ``/api/ps``, and for connecting.
        first_token_timeout_s: a loaded model's wait for its first (and each next) piece.
        cold_load_timeout_s: the same wait when the model is not loaded (or loaded with
            another context): loading weights takes a while and is not a failure.
        ttl_s: how long what was learned is trusted without a failure.
    """

    def __init__(
        self,
        *,
        # Limits
        max_num_ctx: int = 32768,
        default_num_ctx: int | None = None,
        # Timeouts
        probe_timeout_s: float = 5.0,
        first_token_timeout_s: float = 60.0,
        cold_load_timeout_s: float = 300.0,
        ttl_s: float = 3600.0,
    ) -> None:
        if max_num_ctx < 256:
            raise ValueError(f"max_num_ctx must be >= 256 tokens, got {max_num_ctx}")
        if min(probe_timeout_s, first_token_timeout_s, cold_load_timeout_s, ttl_s) <= 0:
            raise ValueError("Ollama timeouts and ttl_s must be > 0 seconds")
        env = os.environ.get("OLLAMA_CONTEXT_LENGTH", "")
        self.max_num_ctx = max_num_ctx
        self.default_num_ctx = default_num_ctx or (int(env) if env.isdigit() else
                                                   DEFAULT_NUM_CTX)
        self.probe_timeout_s = probe_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.cold_load_timeout_s = cold_load_timeout_s
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], OllamaModelInfo] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OllamaProbe(max_num_ctx={self.max_num_ctx}, default_num_ctx="
                f"{self.default_num_ctx})")

    # ------------------------------------------------------------------ learning

    def cached(self, base_url: str, model: str) -> OllamaModelInfo | None:
        """What is known about ``model`` without asking (``None``: nothing, or too old)."""
        with self._lock:
            info = self._cache.get((base_url, model))
        if info is None or time.monotonic() - info.learned_at > self.ttl_s:
            return None
        return info

    def forget(self, base_url: str, model: str) -> None:
        """Ask again next time (after a failure)."""
        with self._lock:
            self._cache.pop((base_url, model), None)

    def info(self, base_url: str, model: str, *,
             headers: Mapping[str, str] | None = None) -> OllamaModelInfo:
        """What Ollama says about ``model`` (cached).

        Raises:
            OllamaNotRunning: nothing answers at ``base_url`` (or not within the timeout).
            OllamaModelMissing: the model is not pulled.
        """
        info = self.cached(base_url, model)
        if info is not None:
            return info
        with _asking(base_url, model), httpx.Client(
                base_url=base_url, timeout=self.probe_timeout_s,
                headers=dict(headers or {})) as client:
            show = client.post("/api/show", json={"model": model})
            ps = client.get("/api/ps") if show.status_code == 200 else None
        return self._store(base_url, model, show, ps)

    async def ainfo(self, base_url: str, model: str, *,
                    headers: Mapping[str, str] | None = None) -> OllamaModelInfo:
        """Async form of :meth:`info`."""
        info = self.cached(base_url, model)
        if info is not None:
            return info
        with _asking(base_url, model):
            async with httpx.AsyncClient(base_url=base_url, timeout=self.probe_timeout_s,
                                         headers=dict(headers or {})) as client:
                show = await client.post("/api/show", json={"model": model})
                ps = await client.get("/api/ps") if show.status_code == 200 else None
        return self._store(base_url, model, show, ps)

    def _store(self, base_url: str, model: str, show: httpx.Response,
               ps: httpx.Response | None) -> OllamaModelInfo:
        if show.status_code == 404 and not _no_such_page(show.text):
            raise OllamaModelMissing(base_url, model)
        if show.status_code != 200 or ps is None:
            raise OllamaError(f"{base_url} answered /api/show with HTTP {show.status_code} "
                              f"({show.text[:120]!r}): is base_url an Ollama server?",
                              base_url, model)
        try:
            info = _parse_show(base_url, model, show.json())
            if ps.status_code == 200:
                info = _with_ps(info, ps.json())
        except (ValueError, AttributeError, TypeError) as exc:
            raise OllamaError(f"{base_url} did not answer /api/show as Ollama does: is "
                              "base_url an Ollama server?", base_url, model) from exc
        with self._lock:
            self._cache[(base_url, model)] = info
        return info

    # ------------------------------------------------------------------ the window

    def window(self, info: OllamaModelInfo, num_ctx: int | None = None) -> tuple[int, str]:
        """The window to fit to and send as ``num_ctx``, and where it came from: the
        model's own ``num_ctx`` if it has one, else :attr:`max_num_ctx`; never above the
        trained length."""
        trained = info.trained_context
        if num_ctx:
            n, why = num_ctx, f"num_ctx={num_ctx}"
        else:
            n, why = self.max_num_ctx, f"max_num_ctx={self.max_num_ctx}"
        if not trained:
            return n, f"{why} (ollama reported no trained length)"
        learned = f"ollama: {info.trained_key}={trained}"
        if trained <= n:
            return trained, learned + (f" (below {why})" if trained < n else "")
        return n, f"{learned}, capped at {why}" if not num_ctx else f"{why} ({learned})"


def _parse_show(base_url: str, model: str, body: Mapping[str, Any]) -> OllamaModelInfo:
    info = body.get("model_info") or {}
    arch = info.get("general.architecture")
    key = f"{arch}.context_length" if arch else None
    trained = _positive(info.get(key)) if key else None
    if trained is None:  # an architecture key Ollama did not name
        for k, v in info.items():
            if k.endswith(".context_length") and _positive(v):
                key, trained = k, v
                break
    caps = tuple(str(c) for c in body.get("capabilities") or ())
    return OllamaModelInfo(model=model, base_url=base_url, trained_context=trained,
                           trained_key=key if trained else None,
                           modelfile_num_ctx=_modelfile_num_ctx(body.get("parameters")),
                           capabilities=caps, learned_at=time.monotonic())


def _with_ps(info: OllamaModelInfo, body: Mapping[str, Any]) -> OllamaModelInfo:
    for m in body.get("models") or []:
        if info.model not in (m.get("model"), m.get("name")):
            continue
        left: float | None = None
        try:
            expires = datetime.fromisoformat(str(m.get("expires_at")))
            left = (expires - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            left = None
        return replace(info, loaded_context=_positive(m.get("context_length")),
                       loaded_for_s=left)
    return info


class OllamaTier:
    """ChatStream's handle on one Ollama tier.

    It learns the tier's window and capabilities through an :class:`OllamaProbe`, keeps a
    private copy of the model with ``num_ctx`` set to that window (the caller's object is
    left alone), gives each request a model whose first-token timeout suits a loaded or a
    cold model, and turns the client's errors into :class:`OllamaError` messages.

    Args:
        model: a ``ChatOllama`` (or subclass).
        probe: shared learning and limits.
    """

    def __init__(self, model: BaseChatModel, probe: OllamaProbe) -> None:
        self.model = model.model_copy()
        self.probe = probe
        self.base_url = _host(model)
        self.name = str(getattr(model, "model", "") or "")
        self.info: OllamaModelInfo | None = None
        self.error: OllamaError | None = None
        self.num_ctx: int | None = None
        self.window_source: str | None = None
        self.cold = False
        self._explicit = _positive(getattr(model, "num_ctx", None))
        if self._explicit is None:
            # Until the window is learned, the ceiling: a summarizer built from this copy
            # before the first request asks for the same context as the answers (a different
            # num_ctx makes Ollama reload the model; it caps a request at the trained length).
            self.model.num_ctx = probe.max_num_ctx  # type: ignore[attr-defined]
        kwargs = getattr(model, "client_kwargs", None) or {}
        self._headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
        self._warm: tuple[int, float] | None = None  # (num_ctx, loaded until, monotonic)
        self._variants: dict[tuple[int, bool], BaseChatModel] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ learning

    def learn(self) -> Capabilities | None:
        """Ask (or recall) what Ollama says; ``None`` when it cannot be asked (the error is
        kept, and raised by :meth:`check` when the tier is tried)."""
        try:
            info = self.probe.info(self.base_url, self.name, headers=self._headers)
        except OllamaError as exc:
            self.error = exc
            return None
        return self._learned(info)

    async def alearn(self) -> Capabilities | None:
        """Async form of :meth:`learn`."""
        try:
            info = await self.probe.ainfo(self.base_url, self.name, headers=self._headers)
        except OllamaError as exc:
            self.error = exc
            return None
        return self._learned(info)

    def _learned(self, info: OllamaModelInfo) -> Capabilities:
        self.error = None
        if info is not self.info:
            self.info = info
            if info.loaded_context and (info.loaded_for_s or 0) > 0:
                with self._lock:
                    self._warm = (info.loaded_context,
                                  info.learned_at + (info.loaded_for_s or 0.0))
        n, why = self.probe.window(info)
        if self._explicit and self._explicit != n:  # the caller's num_ctx, not one we learned
            n, why = self.probe.window(info, self._explicit)
        self.window_source = why
        caps = info.capabilities
        source = f"ollama /api/show: capabilities={list(caps)}"
        return Capabilities(
            vision=("vision" in caps) if caps else None,
            image_urls=False,  # Ollama takes images inline (base64) only
            tools=("tools" in caps) if caps else None,
            context_window=n,
            sources={"vision": source, "tools": source, "context_window": why,
                     "image_urls": "ollama: images are sent inline only"})

    def cap(self, window: int) -> int:
        """``window``, at most the trained length."""
        trained = self.info.trained_context if self.info else None
        return min(window, trained) if trained else window

    def use_window(self, window: int | None) -> None:
        """Send ``window`` (capped at the trained length) as ``num_ctx`` from now on."""
        if window is None or self.info is None:
            return
        self.num_ctx = self.cap(window)
        self.model.num_ctx = self.num_ctx  # type: ignore[attr-defined]

    def check(self) -> None:
        """Raise the probe's error, if the server could not be asked."""
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------------ requests

    def _is_warm(self, num_ctx: int) -> bool:
        with self._lock:
            warm = self._warm
        return warm is not None and warm[0] == num_ctx and time.monotonic() < warm[1]

    def request_model(self) -> BaseChatModel:
        """The model one request uses: ``num_ctx`` set, and the first-token timeout of a
        loaded model, or of a cold load when the model is not loaded with this context."""
        n = self.num_ctx
        if n is None:
            return self.model
        cold = not self._is_warm(n)
        self.cold = cold
        with self._lock:
            model = self._variants.get((n, cold))
        if model is None:
            model = self._variant(n, cold)
            with self._lock:
                self._variants[(n, cold)] = model
        return model

    def _variant(self, num_ctx: int, cold: bool) -> BaseChatModel:
        """A new client (the timeout is the client's) with this tier's settings."""
        m = self.model
        wait = self.probe.cold_load_timeout_s if cold else self.probe.first_token_timeout_s
        kwargs = dict(getattr(m, "client_kwargs", None) or {})
        kwargs.setdefault("timeout", httpx.Timeout(wait, connect=self.probe.probe_timeout_s))
        fields = {k: getattr(m, k) for k in m.model_fields_set}
        fields.update(num_ctx=num_ctx, client_kwargs=kwargs, validate_model_on_init=False)
        return type(m)(**fields)

    def timeout_s(self) -> float:
        return self.probe.cold_load_timeout_s if self.cold else self.probe.first_token_timeout_s

    def on_success(self) -> None:
        """A request answered: the model is loaded with ``num_ctx`` for ``keep_alive``."""
        if self.num_ctx is None:
            return
        keep = _duration_s(getattr(self.model, "keep_alive", None))
        until = float("inf") if keep < 0 else time.monotonic() + keep
        with self._lock:
            self._warm = (self.num_ctx, until) if keep != 0 else None

    def explain(self, exc: BaseException) -> BaseException:
        """``exc`` as the :class:`OllamaError` a user can act on (when it is one of the
        client's connection, missing-model or timeout errors); forgets what was learned,
        so the next request asks again."""
        self.probe.forget(self.base_url, self.name)
        with self._lock:
            self._warm = None
        err: BaseException = exc
        if isinstance(exc, OllamaError):
            return exc
        if isinstance(exc, ConnectionError | httpx.ConnectError | httpx.ConnectTimeout):
            err = OllamaNotRunning(self.base_url, self.name)
        elif getattr(exc, "status_code", None) == 404 and not _no_such_page(str(exc)):
            err = OllamaModelMissing(self.base_url, self.name)
        elif isinstance(exc, httpx.TimeoutException):
            state = "a cold load" if self.cold else "the model was loaded"
            err = OllamaTimeout(f"Ollama at {self.base_url} sent no token from {self.name} "
                                f"within {self.timeout_s():g} s ({state})",
                                self.base_url, self.name)
        if err is not exc:
            err.__cause__ = exc
        return err

    def record(self) -> dict[str, Any]:
        """The routing record's ``ollama`` entry: the window sent and where it came from."""
        rec: dict[str, Any] = {"base_url": self.base_url, "num_ctx": self.num_ctx,
                               "window_source": self.window_source,
                               "cold_load": self.cold}
        if self.info is not None:
            default, why = self.info.server_default(self.probe.default_num_ctx)
            rec.update(trained_context=self.info.trained_context,
                       server_default=default, server_default_source=why,
                       loaded_context=self.info.loaded_context,
                       capabilities=list(self.info.capabilities))
        return rec
