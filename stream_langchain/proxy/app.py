"""The OpenAI-compatible HTTP app over a ChatStream (FastAPI).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (streaming and not),
``POST /v1/responses`` (:mod:`.responses`), ``GET /v1/admin/usage`` and
``POST /v1/admin/keys/{key_id}/revoke`` (admin keys), ``GET /health``, ``GET /metrics``.
With ``ProxyConfig.redis_url`` limits, revocation and breakers are shared by replicas
(:mod:`.shared`).

One request: authenticate (Bearer key) -> bounded body -> validate (:mod:`.schema`) -> model
to tier -> rate limits (:mod:`.limits`) -> ``ChatStream.astream`` -> the chunks out as SSE or
one JSON body -> one usage row (:mod:`.usage`), however the request ends. Headers are sent
once a tier's stream has begun (its first chunk, which announces the route) or the request
ended, so a request no tier can serve is a plain 503 and the stream's ``x-stream-route``
header names the tier answering.

Example:
    >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    >>> from stream_langchain import ChatStream, KeywordJudge
    >>> from stream_langchain.proxy.usage import Store
    >>> chat = ChatStream(local=GenericFakeChatModel(messages=iter(["hi"])),
    ...                   judge=KeywordJudge())
    >>> app = create_app(chat, store=Store("sqlite://"))
    >>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1/chat"))
    ['/v1/chat/completions']
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from langchain_core.messages import AIMessageChunk
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

import stream_langchain.proxy.chat_completions as chat_format
import stream_langchain.proxy.responses as responses_format
from stream_langchain._run import model_name
from stream_langchain.chat_model import ChatStream
from stream_langchain.context import count_text_tokens, count_tokens
from stream_langchain.errors import describe
from stream_langchain.proxy.auth import Authenticator, Authenticators, Identity, KeyAuth, KeyRing
from stream_langchain.proxy.errors import APIError, ClientGone, ShuttingDown, api_error
from stream_langchain.proxy.limits import Limiter, Limits, Permit
from stream_langchain.proxy.ops import AccessLog, Metrics
from stream_langchain.proxy.schema import ChunkWriter, Encoder, MessageLimits, ParsedRequest
from stream_langchain.proxy.shared import SharedLimiter, SharedState
from stream_langchain.proxy.sse import SSEResponse
from stream_langchain.proxy.usage import Store, UsageRow, cost_avoided
from stream_langchain.record import RouteHint, RouteRecord

if TYPE_CHECKING:
    from stream_langchain.proxy.globus import GlobusAuth

__all__ = ["ProxyConfig", "create_app"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

MODEL_PREFIX = "stream"
# Routing-record fields published in ``x-stream-route`` and the ``stream`` field.
_PUBLIC = ("tier", "model", "complexity", "judged_complexity", "confidence", "judge",
           "judge_ms", "ttft_ms", "total_ms", "summarized", "context_tokens", "fallbacks",
           "failover", "tiers", "skipped", "override", "needs", "usage", "usage_estimated",
           "cloud_cost_usd", "hpc_mode", "hpc_fallback_reason", "hpc_queue_ms")


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy enforces. Every limit has a default; none is unbounded."""

    # Limits
    limits: Limits = field(default_factory=Limits)
    """Per-identity requests/min, tokens/min, concurrent requests (keys may override)."""
    messages: MessageLimits = field(default_factory=MessageLimits)
    """Messages per request and characters per message."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body accepted (413 past it). Images travel inline as base64, a third
    larger than the file: 32 MiB takes a 20 MiB image (26.7 MiB encoded) and the
    conversation."""
    # Timeouts
    key_cache_s: float = 5.0
    """How long a verified key is trusted without reading the database: a key revoked with
    ``stream keys revoke`` (another process, writing the database) still works on a running
    proxy for up to this long. Revoking through ``POST /v1/admin/keys/{id}/revoke``, or with
    Redis shared state (``redis_url``), takes effect at once."""
    # Authentication
    auth: tuple[str, ...] = ("keys",)
    """Who may call: ``keys`` (STREAM API keys), ``globus`` (Globus Auth tokens, with a
    :class:`~stream_langchain.proxy.globus.GlobusAuth` given to :func:`create_app`), or both."""
    metrics_key: bool = False
    """``GET /metrics`` asks for an API key (any valid one) instead of being open; it is
    open by default so a Prometheus scraper on a private network needs nothing, and it shows
    counts and latencies per model and tier, never identities, keys or content."""
    # Shared state
    redis_url: str | None = None
    """Redis shared by replicas (limits, key revocation, circuit breakers; see
    :mod:`stream_langchain.proxy.shared`); ``None``: this process keeps its own."""


def public_route(route: RouteRecord | RouteHint | None) -> dict[str, Any] | None:
    """The routing record's (or the route hint's) public fields (no secrets: names,
    timings, errors' one-liners)."""
    if route is None:
        return None
    wire = route.to_dict()
    return {k: wire[k] for k in _PUBLIC if k in wire}


def _route_header(route: dict[str, Any] | None) -> dict[str, str]:
    if route is None:
        return {}
    return {"x-stream-route": json.dumps(route, separators=(",", ":"), ensure_ascii=True,
                                         default=str)}


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass
class _Call:
    """One chat request in flight: what the usage row and the metrics need."""

    identity: Identity
    req: ParsedRequest
    permit: Permit
    input_estimate: int
    forced: str | None = None
    """The tier the model name forces (``stream-hpc``), if any."""
    started: float = field(default_factory=time.perf_counter)
    done: bool = False


_END: Any = object()


async def _unless_gone(request: Request, aw: Awaitable[T]) -> T:
    """Await ``aw`` unless the client disconnects first; then cancel it (which cancels the
    tier's generation) and raise :class:`ClientGone`."""
    work = asyncio.ensure_future(aw)
    gone = asyncio.ensure_future(SSEResponse._watch(request.receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left = gone.done() and not gone.cancelled()
        for task in (work, gone):
            if not task.done():
                task.cancel()
        for task in (work, gone):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if left and (work.cancelled() or not work.done()):
        raise ClientGone()
    return work.result()


def _authenticators(config: ProxyConfig, keys: KeyRing,
                    globus: GlobusAuth | None) -> Authenticators:
    methods: list[Authenticator] = []
    for name in config.auth:
        if name == "keys":
            methods.append(KeyAuth(keys))
        elif name == "globus":
            if globus is None:
                raise ValueError("auth 'globus' needs a GlobusAuth (settings [proxy.globus])")
            methods.append(globus)
        else:
            raise ValueError(f"unknown auth method {name!r}: use keys, globus or both")
    return Authenticators(methods)


class _Proxy:
    def __init__(self, chat: ChatStream, store: Store, config: ProxyConfig,
                 globus: GlobusAuth | None = None) -> None:
        self.chat = chat
        self.store = store
        self.config = config
        self.keys = KeyRing(store, cache_s=config.key_cache_s)
        self.auth = _authenticators(config, self.keys, globus)
        self.globus = globus if "globus" in self.auth else None
        self.shared = SharedState(config.redis_url) if config.redis_url else None
        self.limiter = (Limiter(config.limits) if self.shared is None
                        else SharedLimiter(self.shared, config.limits))
        if self.shared is not None:
            self.shared.attach_breaker(chat.breaker)
        self.metrics = Metrics()
        self.models: dict[str, str | None] = {MODEL_PREFIX: None}
        self.models.update({f"{MODEL_PREFIX}-{t}": t for t in chat.tiers})
        self._no_keys_until = 0.0
        self._has_keys = True
        self._drained = asyncio.Event()
        self._reading: set[asyncio.Task[Any]] = set()
        """Request tasks waiting for their next chunk (:meth:`_next`)."""
        self._cut: set[asyncio.Task[Any]] = set()
        """Those the drain cancelled, until they report it."""

    # ------------------------------------------------------------------ shutdown

    def drain(self, within_s: float) -> None:
        """Graceful shutdown began: answers still running in ``within_s`` seconds are cut
        then, each with an error the client can read (SSE ``error`` event or a 503,
        ``server_shutting_down``) and its usage row, before the server cancels them."""
        asyncio.get_running_loop().call_later(max(within_s, 0.0), self._cut_all)

    def _cut_all(self) -> None:
        """The drain time is up: every request waiting for its next chunk is cancelled
        there (which stops its tier) and told :class:`ShuttingDown` (:meth:`_next`)."""
        self._drained.set()
        for task in list(self._reading):
            if task not in self._cut:
                self._cut.add(task)
                task.cancel()

    def _was_cut(self, task: asyncio.Task[Any]) -> bool:
        """Whether the drain cancelled ``task`` (that cancellation is then taken back: the
        request goes on to report the cut)."""
        if task not in self._cut:
            return False
        self._cut.discard(task)
        task.uncancel()
        return True

    async def _next(self, agen: AsyncIterator[AIMessageChunk]) -> Any:
        """The next chunk, ``_END``, or :class:`ShuttingDown` when the drain time is up.

        The chunk is awaited in the request's own task (no task per chunk); the drain
        cancels that task while it waits (:meth:`_cut_all`)."""
        if self._drained.is_set():
            raise ShuttingDown()
        task = asyncio.current_task()
        assert task is not None
        self._reading.add(task)
        try:
            chunk = await agen.__anext__()
        except StopAsyncIteration:
            chunk = _END
        except asyncio.CancelledError:
            if self._was_cut(task):
                raise ShuttingDown() from None
            raise
        finally:
            self._reading.discard(task)
        if self._was_cut(task):  # the tier finished its chunk despite the cancellation
            raise ShuttingDown()
        return chunk

    async def _collect(self, agen: AsyncIterator[AIMessageChunk], writer: ChunkWriter) -> None:
        while (chunk := await self._next(agen)) is not _END:
            writer.feed(chunk)

    # ------------------------------------------------------------------ auth

    async def authenticate(self, request: Request) -> Identity:
        key = _bearer(request)
        if key is None:
            if self.globus is not None:
                raise APIError(401, "missing token: send 'Authorization: Bearer <token>' with "
                                    "a STREAM API key or a Globus access token for this proxy",
                               code="missing_api_key")
            if not await self.has_keys():
                raise APIError(401, "this proxy has no API keys yet; create one with "
                                    "`stream keys create --name NAME`", code="no_api_keys")
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' (keys "
                                "come from `stream keys create`)", code="missing_api_key")
        ident = await self.auth.identify(key)
        if ident is None:
            if self.globus is None and not await self.has_keys():
                raise APIError(401, "this proxy has no API keys yet; create one with "
                                    "`stream keys create --name NAME`", code="no_api_keys")
            raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
        if self.shared is not None and await self.shared.before_request(
                ident.key_id if ident.source == "key" else None, self.chat.breaker,
                self.chat.tiers):
            raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
        request.state.log = {"identity": ident.name, "key_id": ident.key_id}
        request.state.identity = ident
        return ident

    async def admit(self, ident: Identity, tokens: int) -> Permit:
        """The identity's limits for one request (across replicas when shared)."""
        if isinstance(self.limiter, SharedLimiter):
            return await self.limiter.aadmit(ident.name, tokens=tokens, rpm=ident.rpm,
                                             tpm=ident.tpm, max_concurrent=ident.max_concurrent)
        return self.limiter.admit(ident.name, tokens=tokens, rpm=ident.rpm, tpm=ident.tpm,
                                  max_concurrent=ident.max_concurrent)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key: in the store, and at once on every replica sharing Redis."""
        done = await asyncio.to_thread(self.keys.revoke, key_id)
        if done and self.shared is not None:
            await self.shared.revoke(key_id)
        return done

    async def has_keys(self) -> bool:
        now = time.monotonic()
        if now >= self._no_keys_until:
            self._has_keys = await asyncio.to_thread(self.store.active_key_count) > 0
            self._no_keys_until = now + self.config.key_cache_s
        return self._has_keys

    async def read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        hint = (" (inline images count as base64, 4/3 of the file: send large images by "
                "http(s) URL, or raise the proxy's max_body_bytes)")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body is {declared} bytes; the limit is {limit}"
                                + hint, code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body exceeds {limit} bytes" + hint,
                               code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ models

    def model_entries(self) -> list[dict[str, Any]]:
        tiers = self.chat.tiers
        out = []
        for name, tier in self.models.items():
            info: dict[str, Any] = ({"routing": "auto", "tiers": {t: model_name(m)
                                                                  for t, m in tiers.items()}}
                                    if tier is None else
                                    {"routing": "forced", "tier": tier,
                                     "model": model_name(tiers[tier])})
            out.append({"id": name, "object": "model", "created": 0, "owned_by": "stream",
                        "stream": info})
        return out

    def tier_for(self, model: str) -> str | None:
        if model not in self.models:
            raise APIError(404, f"the model {model!r} does not exist; this proxy serves "
                                + ", ".join(self.models), param="model",
                           code="model_not_found")
        return self.models[model]

    # ------------------------------------------------------------------ chat

    async def chat_completions(self, request: Request) -> Response:
        ident = await self.authenticate(request)
        req = chat_format.parse_chat_request(await self.read_body(request),
                                                  limits=self.config.messages)
        return await self.serve(request, ident, req, chat_format.ChatEncoder(req))

    async def responses(self, request: Request) -> Response:
        ident = await self.authenticate(request)
        req = responses_format.parse_responses_request(await self.read_body(request),
                                                limits=self.config.messages)
        return await self.serve(request, ident, req, responses_format.ResponsesEncoder(req))

    async def serve(self, request: Request, ident: Identity, req: ParsedRequest,
                    enc: Encoder) -> Response:
        """Route ``req`` through the ChatStream and answer in ``enc``'s format."""
        tier = self.tier_for(req.model)
        estimate = count_tokens(req.messages, image_tokens=self.chat.image_tokens)
        permit = await self.admit(ident, estimate)
        call = _Call(ident, req, permit, estimate, forced=tier)
        request.state.log.update({"model": req.model, "stream": req.stream})
        self.metrics.in_flight.inc()
        kwargs = dict(req.kwargs)
        if tier is not None:
            kwargs["tier"] = tier
        writer = enc.writer
        agen = cast(AsyncGenerator[AIMessageChunk, None],
                    self.chat.astream(req.messages, stop=req.stop, **kwargs))
        try:
            first = await _unless_gone(request, self._until_output(agen, enc))
        except BaseException as exc:
            await agen.aclose()
            mapped = self.map_error(exc)
            self.finish(call, writer, "aborted" if isinstance(exc, asyncio.CancelledError
                                                              | ClientGone)
                        else "error", request, error=mapped)
            raise mapped from None
        headers = self.limiter.headers(ident.name, rpm=ident.rpm, tpm=ident.tpm)
        if req.stream:
            route = public_route(writer.hint or writer.record)
            headers.update(_route_header(route))
            return SSEResponse(self._events(agen, enc, first, call, request), headers=headers)
        try:
            await _unless_gone(request, self._collect(agen, writer))
        except BaseException as exc:
            mapped = self.map_error(exc)
            self.finish(call, writer, "aborted" if isinstance(exc, asyncio.CancelledError
                                                              | ClientGone)
                        else "error", request, error=mapped)
            raise mapped from None
        finally:
            await agen.aclose()
        inp, out = self.finish(call, writer, "ok", request)
        route = public_route(writer.record)
        headers.update(_route_header(route))
        return JSONResponse(enc.body(route, inp, out), headers=headers)

    async def _until_output(self, agen: AsyncIterator[AIMessageChunk],
                            enc: Encoder) -> list[bytes]:
        """Pull chunks until a tier's stream begins (the chunk announcing the route, or
        output) or the stream ends: the headers wait for it, so a request that no tier
        serves is still an ordinary error response, and they go out while the first token
        is on its way (the client reads them meanwhile)."""
        while (chunk := await self._next(agen)) is not _END:
            events = enc.chunk(chunk)
            if events:
                return events
        return []

    async def _events(self, agen: AsyncGenerator[AIMessageChunk, None], enc: Encoder,
                      first: list[bytes], call: _Call,
                      request: Request) -> AsyncGenerator[bytes, None]:
        status, error = "aborted", None
        writer = enc.writer
        # One body write per chunk (its events joined): every write is a syscall and, on a
        # kept-alive connection, a packet.
        try:
            if first:
                yield b"".join(first)
            while (chunk := await self._next(agen)) is not _END:
                events = enc.chunk(chunk)
                if events:
                    yield b"".join(events)
            status = "ok"
            inp, out = self._tokens(call, writer)
            yield b"".join(enc.end(public_route(writer.record), inp, out))
        except Exception as exc:  # failed after streaming began: say so, never a fake "stop"
            status, error = "error", exc
            err = api_error(exc)
            error = err  # the row says what the client was told
            _log_error(request, err)
            yield b"".join(enc.error(err))
        finally:
            if status == "aborted":
                self.metrics.cancelled.inc()
            with contextlib.suppress(BaseException):
                await agen.aclose()
            self.finish(call, writer, status, request, error=error)

    def map_error(self, exc: BaseException) -> BaseException:
        """What the client is told (:func:`~.errors.api_error`); a cancellation stays one."""
        if isinstance(exc, asyncio.CancelledError):
            return exc
        if isinstance(exc, ClientGone):
            self.metrics.cancelled.inc()
        return api_error(exc)

    def _tokens(self, call: _Call, writer: ChunkWriter) -> tuple[int, int]:
        """Input and output tokens: the engine's record (the tier's own count) when the
        answer finished; an estimate from what was generated when it was cut after output
        began; zero when nothing was generated (refused before any tier answered)."""
        usage = writer.record.usage if writer.record is not None else None
        if usage:
            return int(usage["input_tokens"]), int(usage["output_tokens"])
        text = writer.output_text()
        if not text:
            return 0, 0
        return call.input_estimate, count_text_tokens(text)

    def finish(self, call: _Call, writer: ChunkWriter, status: str, request: Request,
               *, error: BaseException | None = None) -> tuple[int, int]:
        """Record the request once: usage row, limits, metrics, access-log fields."""
        inp, out = self._tokens(call, writer)
        if call.done:
            return inp, out
        call.done = True
        call.permit.settle(inp + out)  # the admission's reservation becomes what ran
        call.permit.release()
        self.metrics.in_flight.dec()
        now = time.perf_counter()
        record = writer.record
        tier = writer.tier or call.forced
        duration = now - call.started
        hpc_s = 0.0
        if tier == "hpc":
            hpc_ms = None if record is None else record.tier_value("hpc_total_ms")
            hpc_s = hpc_ms / 1000.0 if isinstance(hpc_ms, int | float) else duration
        first = writer.first_output_at
        ttft_ms = None if first is None else (first - call.started) * 1000.0
        err = None
        if isinstance(error, APIError):  # what the client was told: status, code, message
            err = f"{error.status} {error.code or error.type}: {error.message}"[:500]
        elif error is not None and not isinstance(error, asyncio.CancelledError):
            err = describe(error)[:500]
        self.store.record(UsageRow(
            identity=call.identity.name, key_id=call.identity.key_id, model=call.req.model,
            tier=tier, status=status, stream=call.req.stream, input_tokens=inp,
            output_tokens=out, output_chunks=writer.content_chunks,
            cloud_cost_usd=float(record.cloud_cost_usd or 0.0) if record is not None else 0.0,
            hpc_seconds=hpc_s,
            duration_ms=duration * 1000.0, ttft_ms=ttft_ms, error=err))
        label = tier or "none"
        self.metrics.requests.labels(call.req.model, label, status).inc()
        self.metrics.tokens.labels(label, "input").inc(inp)
        self.metrics.tokens.labels(label, "output").inc(out)
        if ttft_ms is not None:
            self.metrics.ttft.labels(label).observe(ttft_ms / 1000.0)
        log = getattr(request.state, "log", None)
        if isinstance(log, dict):
            log.update({"tier": tier, "outcome": status, "input_tokens": inp,
                        "output_tokens": out,
                        "ttft_ms": None if ttft_ms is None else round(ttft_ms, 3)})
        return inp, out


def _log_error(request: Request, err: APIError) -> None:
    """Name a refusal's code and parameter in the request's access-log line."""
    log = getattr(request.state, "log", None)
    if not isinstance(log, dict):
        log = request.state.log = {}
    log.update({"error_code": err.code, "error_param": err.param})


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _proxy(request: Request) -> _Proxy:
    return cast(_Proxy, request.app.state.proxy)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Say what is served (and warn when no key can get in); flush usage at the end."""
    proxy = cast(_Proxy, app.state.proxy)
    store, chat = proxy.store, proxy.chat
    n = await asyncio.to_thread(store.active_key_count)
    if proxy.globus is not None:
        logger.info("accepting %s%s", proxy.globus.describe(),
                    f" and {n} API key(s)" if "keys" in proxy.auth else "")
    elif n == 0:
        logger.warning("the key store (%s) has no API keys: every request gets 401 until "
                       "`stream keys create --name NAME` makes one", store.url_safe)
    else:
        logger.info("serving %s with %d API key(s); tiers: %s", ", ".join(proxy.models), n,
                    ", ".join(chat.tiers))
    if proxy.shared is not None:
        await proxy.shared.ping()
        logger.info("shared state in Redis at %s (%s)", proxy.shared.url_safe,
                    proxy.shared.health()["redis"])
    yield
    await asyncio.to_thread(store.flush)
    if proxy.shared is not None:
        await proxy.shared.close()


# ---------------------------------------------------------------------- error handlers

async def _api_error(request: Request, exc: Exception) -> Response:
    err = cast(APIError, exc)
    _log_error(request, err)
    ident = getattr(request.state, "identity", None)
    if isinstance(ident, Identity):  # an authenticated caller: its limits, every time
        for name, value in _proxy(request).limiter.headers(ident.name, rpm=ident.rpm,
                                                           tpm=ident.tpm).items():
            err.headers.setdefault(name, value)
    return _error_response(err)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = cast(StarletteHTTPException, exc).status_code
    msg = "no such route" if status == 404 else str(cast(StarletteHTTPException, exc).detail)
    api = APIError(status, msg, code="not_found" if status == 404 else None)
    _log_error(request, api)
    return _error_response(api)


async def _validation(request: Request, exc: Exception) -> Response:
    errors = cast(RequestValidationError, exc).errors()
    err = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(p) for p in err.get("loc", ()))
    api = APIError(422, f"{param}: {err.get('msg')}", param=param or None,
                   code="invalid_value")
    _log_error(request, api)
    return _error_response(api)


async def _unexpected(_r: Request, exc: Exception) -> Response:
    logger.error("unhandled error: %s", describe(exc))
    return _error_response(APIError(500, "internal error", code="internal_error"))


# ---------------------------------------------------------------------- routes

async def health(request: Request) -> dict[str, Any]:
    """Liveness, each tier's circuit state and, with Redis, the shared state (no
    authentication); ``degraded`` while Redis is unreachable."""
    proxy = _proxy(request)
    out: dict[str, Any] = {"status": "ok", "models": list(proxy.models),
                           "tiers": {t: proxy.chat.breaker.state(t) for t in proxy.chat.tiers}}
    if proxy.shared is not None:
        ok = await proxy.shared.ping()
        out["shared"] = proxy.shared.health()
        out["status"] = "ok" if ok else "degraded"
    return out


async def metrics(request: Request) -> Response:
    """Prometheus metrics (a key is required only with ``ProxyConfig.metrics_key``)."""
    proxy = _proxy(request)
    if proxy.config.metrics_key:
        await proxy.authenticate(request)
    return Response(generate_latest(proxy.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def list_models(request: Request) -> JSONResponse:
    """The models this proxy serves: ``stream`` (auto-routing) and one per tier."""
    proxy = _proxy(request)
    ident = await proxy.authenticate(request)
    return JSONResponse({"object": "list", "data": proxy.model_entries()},
                        headers=proxy.limiter.headers(ident.name, rpm=ident.rpm,
                                                      tpm=ident.tpm))


async def get_model(model: str, request: Request) -> JSONResponse:
    """One model (404 when this proxy does not serve it)."""
    proxy = _proxy(request)
    await proxy.authenticate(request)
    proxy.tier_for(model)
    return JSONResponse(next(m for m in proxy.model_entries() if m["id"] == model))


async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions, streaming (SSE) or not, routed by STREAM (user messages
    may carry images: they go only to tiers that take them, else 400)."""
    return await _proxy(request).chat_completions(request)


async def responses(request: Request) -> Response:
    """OpenAI Responses API (text and images in, text out, streaming events, function
    tools)."""
    return await _proxy(request).responses(request)


async def admin_revoke(key_id: str, request: Request) -> JSONResponse:
    """Revoke a key (admin keys only): refused at once by every replica sharing Redis."""
    proxy = _proxy(request)
    ident = await proxy.authenticate(request)
    if not ident.admin:
        raise APIError(403, f"key {ident.key_id!r} has no admin rights",
                       code="admin_required")
    if not await proxy.revoke(key_id):
        raise APIError(404, f"no active key {key_id!r}", code="key_not_found")
    return JSONResponse({"id": key_id, "revoked": True})


async def admin_usage(request: Request, identity: str | None = None,
                      since: float = 0.0, by: str = "identity") -> JSONResponse:
    """Usage per identity and tier (``by=tier``: per tier), with errors, aborted and,
    when the cloud tier's price is configured, ``cost_avoided_usd`` (admin keys only)."""
    proxy = _proxy(request)
    ident = await proxy.authenticate(request)
    if not ident.admin:
        who = (f"Globus identity {ident.name!r}" if ident.source == "globus"
               else f"key {ident.key_id!r}")
        raise APIError(403, f"{who} has no admin rights", code="admin_required")
    if by not in ("identity", "tier"):
        raise APIError(400, "by must be identity or tier", param="by", code="invalid_value")
    store, chat = proxy.store, proxy.chat
    await asyncio.to_thread(store.flush)
    rows = await asyncio.to_thread(store.summary, identity=identity, since=since, by=by)
    price = chat.prices.get(model_name(chat.cloud)) if chat.cloud is not None else None
    if price is not None:
        rows = cost_avoided(rows, input_usd_per_m=float(price.get("input", 0.0)),
                            output_usd_per_m=float(price.get("output", 0.0)))
    return JSONResponse({"object": "list", "data": rows})


def _add_routes(app: FastAPI, models: list[str]) -> None:
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model}", get_model, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"],
                      openapi_extra=chat_format.openapi_body(models))
    app.add_api_route("/v1/responses", responses, methods=["POST"],
                      openapi_extra=responses_format.openapi_body(models))
    app.add_api_route("/v1/admin/keys/{key_id}/revoke", admin_revoke, methods=["POST"])
    app.add_api_route("/v1/admin/usage", admin_usage, methods=["GET"])
    # The two inference routes take only the Request: served by plain Starlette routes
    # placed first, they skip FastAPI's per-request dependency resolution; the API routes
    # above stay for the OpenAPI schema (and answer nothing the plain ones do not).
    app.router.routes[:0] = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                             Route("/v1/responses", responses, methods=["POST"])]


def create_app(chat: ChatStream, *, store: Store, config: ProxyConfig | None = None,
               globus: GlobusAuth | None = None) -> FastAPI:
    """The proxy as an ASGI app serving ``chat``.

    Args:
        chat: the engine (``ChatStream.embedded()`` / ``ChatStream.from_settings(...)``).
        store: keys and usage (the caller closes it).
        config: limits and auth methods; defaults when ``None``.
        globus: checks Globus tokens when ``config.auth`` includes ``globus``.
    """
    proxy = _Proxy(chat, store, config or ProxyConfig(), globus)
    app = FastAPI(title="STREAM proxy", version="1", lifespan=_lifespan,
                  description="OpenAI-compatible API over STREAM's tiers (local, HPC, cloud).")
    app.state.proxy = proxy
    app.state.on_drain = proxy.drain  # called by serve()/ProxyServer when shutdown begins
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
    _add_routes(app, list(proxy.models))
    app.add_middleware(AccessLog, metrics=proxy.metrics)
    return app
