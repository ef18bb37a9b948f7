"""ChatHPC: the HPC tier as a LangChain chat model (Globus Compute + encrypted relay).

Per request, :class:`ChatHPC` makes a new relay channel, a fresh AES-256 key and a pair of
capability tokens; connects the consumer side of the channel; submits
:func:`hpc_functions.stream_chat` through any :class:`concurrent.futures.Executor` (in
production ``globus_compute_sdk.Executor``) with the producer token and the key as task
arguments (the control plane); and yields the verified, decrypted deltas as
:class:`~langchain_core.messages.AIMessageChunk` objects as they arrive (the data plane).

If the relay cannot be reached, it runs :func:`hpc_functions.batch_chat` instead (the whole
answer through the control plane) and says so in the final chunk's ``response_metadata``
(``hpc_mode="batch"``, ``hpc_fallback_reason``).

Failures are exceptions, never shorter answers: before the first chunk (so a router can try
another tier) and mid-stream (so it can fail over). Every error is an :class:`HPCError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils import secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from stream_langchain.errors import describe
from stream_langchain.tiers.hpc_errors import (
    ExecutorRefused,
    HPCError,
    HPCFirstTokenTimeout,
    HPCIdleTimeout,
    HPCQueueTimeout,
    HPCRemoteError,
    HPCTaskError,
)
from stream_langchain.tiers.hpc_globus import (
    globus_endpoint_status,
    globus_executor,
    shipped_serializer,
)
from stream_langchain.tiers.hpc_pool import HealthPool, RelayFailed, failover_stream
from stream_langchain.tiers.hpc_stream import (
    TIMEOUT_KEYWORDS,
    HPCTimeouts,
    _RelayStream,
    batch_chunks,
    drive,
    is_unreachable,
)

__all__ = [
    "ChatHPC",
    "HPCError",
    "HPCFirstTokenTimeout",
    "HPCIdleTimeout",
    "HPCQueueTimeout",
    "HPCRemoteError",
    "HPCTaskError",
    "HPCTimeouts",
    "globus_executor",
    "new_relay_secret",
    "shipped_serializer",
]


class ChatHPC(BaseChatModel):
    """The HPC tier: a model served on a cluster, reached through Globus Compute and a relay.

    Setup:
        ``pip install 'stream-tiered[hpc]'``; an endpoint with ``relay`` and ``httpx``
        installed next to an OpenAI-compatible server (vLLM); a relay reachable from both
        sides. See ``docs/deployment.md``.

    Key init args:
        executor: any ``concurrent.futures.Executor`` (``globus_compute_sdk.Executor`` in
            production; see :meth:`from_globus`).
        relay_url: ``ws://``/``wss://`` URL of the relay (``None``: batch mode only).
        relay_secret: the relay's token-signing secret (env ``STREAM_RELAY_SECRET``).
        backend_url: the OpenAI-compatible base URL *as seen from the HPC node*.
        model: the model name the backend serves.

    Instantiate:
        .. code-block:: python

            from stream_langchain.tiers.hpc import ChatHPC

            llm = ChatHPC.from_globus(
                endpoint_id="...", relay_url="wss://relay.example.org",
                relay_secret=os.environ["STREAM_RELAY_SECRET"],
                backend_url="http://127.0.0.1:8000/v1",
                model="meta-llama/Llama-3.3-70B-Instruct",
            )

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Why is the sky blue?"):
                print(chunk.content, end="", flush=True)

    Async:
        .. code-block:: python

            async for chunk in llm.astream("Why is the sky blue?"):
                ...

    The final chunk carries ``usage_metadata`` and ``response_metadata`` with ``hpc_mode``
    (``"stream"`` or ``"batch"``), ``hpc_fallback_reason`` (batch only), ``hpc_queue_ms``
    (submit to task start), ``hpc_backend_ttft_ms`` (the backend's own TTFT as measured on
    the node, so ``ttft - hpc_backend_ttft_ms`` is what the dual-channel path adds) and
    ``model_name``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    executor: Any = Field(default=None, exclude=True, repr=False)
    """Runs the HPC functions: any ``concurrent.futures.Executor``."""
    relay_url: str | None = None
    """Relay base URL (``ws://host:port`` or ``wss://...``); ``None`` means batch mode only."""
    relay_secret: SecretStr | None = Field(
        default_factory=secret_from_env("STREAM_RELAY_SECRET", default=None), repr=False
    )
    """The relay's secret, used to mint per-channel capability tokens (never sent anywhere);
    read from ``STREAM_RELAY_SECRET`` when not given."""
    backend_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible base URL of the model server, as the HPC node sees it."""
    backend_api_key: SecretStr | None = Field(default=None, repr=False)
    """Bearer key for the backend, if it needs one (travels in the task arguments)."""
    model: str = "default"
    """Model name sent to the backend."""
    max_tokens: int | None = Field(default=512, gt=0)
    """Upper bound on the answer length (sent as ``max_tokens``)."""
    temperature: float | None = None
    """Sampling temperature (backend default when ``None``)."""
    top_p: float | None = None
    """Nucleus sampling (backend default when ``None``)."""
    stop: list[str] | None = None
    """Stop sequences."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """More chat-completions body fields, sent as given."""
    mode: Literal["stream", "batch"] = "stream"
    """``"stream"``: tokens through the relay; ``"batch"``: the whole answer as the task result."""
    batch_fallback: bool = True
    """Use batch mode when the relay cannot be reached (else raise)."""
    # Timeouts
    timeouts: HPCTimeouts = Field(default_factory=HPCTimeouts)
    """Every timeout (queue, first token, idle, relay open, batch, backend), in seconds. The
    keywords ``queue_timeout``, ``first_token_timeout``, ``idle_timeout``,
    ``relay_open_timeout``, ``batch_timeout`` and ``backend_timeout`` set its fields and read
    them back as attributes."""
    token_ttl: float = Field(default=3600.0, gt=0)
    """Lifetime of the per-request capability tokens."""
    # Several relays and endpoints (see stream_langchain.tiers.hpc_pool)
    relay_urls: list[str] = Field(default_factory=list)
    """Several relays (same secret, no shared state): each request picks a healthy one and
    moves to the next if it cannot be reached before the first token. Includes
    ``relay_url`` when both are given."""
    executors: list[Any] = Field(default_factory=list, exclude=True, repr=False)
    """Several endpoints (one Executor each, after ``executor``): a task not started within
    ``queue_timeout`` moves to the next before the first token."""
    endpoint_ids: list[str] = Field(default_factory=list)
    """Names of the endpoints in the record (``hpc_endpoint``), in the order of ``executor``
    then ``executors`` (default: ``endpoint-0``, ``endpoint-1``, ...)."""
    failover_cooldown: float = Field(default=30.0, gt=0)
    """Seconds a relay or endpoint that failed is avoided (doubling while it keeps failing)."""
    endpoint_status: Callable[[str], str | None] | None = Field(
        default=None, exclude=True, repr=False)
    """``status(endpoint name) -> "online" | "offline" | None``: an endpoint reported
    ``"offline"`` is skipped before submitting (``from_globus`` asks Globus Compute)."""

    @model_validator(mode="before")
    @classmethod
    def _timeout_keywords(cls, data: Any) -> Any:
        """Map the old timeout keywords (``queue_timeout=...``) onto :attr:`timeouts`."""
        if not isinstance(data, dict) or not TIMEOUT_KEYWORDS.keys() & data.keys():
            return data
        data = dict(data)
        given = data.get("timeouts") or HPCTimeouts()
        if isinstance(given, dict):
            given = HPCTimeouts(**given)
        changes = {f: data.pop(k) for k, f in TIMEOUT_KEYWORDS.items() if k in data}
        data["timeouts"] = dataclasses.replace(given, **changes)
        return data

    @property
    def queue_timeout(self) -> float:
        """``timeouts.queue``: from submit until the task starts and reaches the relay."""
        return self.timeouts.queue

    @property
    def first_token_timeout(self) -> float:
        """``timeouts.first_token``: from task start until the first token."""
        return self.timeouts.first_token

    @property
    def idle_timeout(self) -> float:
        """``timeouts.idle``: the longest silence between two frames once tokens flow."""
        return self.timeouts.idle

    @property
    def relay_open_timeout(self) -> float:
        """``timeouts.relay_open``: connecting to the relay (here and on the node)."""
        return self.timeouts.relay_open

    @property
    def batch_timeout(self) -> float:
        """``timeouts.batch``: a whole batch-mode answer, from submit."""
        return self.timeouts.batch

    @property
    def backend_timeout(self) -> float:
        """``timeouts.backend``: on the node, connecting to the backend and between bytes."""
        return self.timeouts.backend

    @model_validator(mode="after")
    def _check(self) -> ChatHPC:
        if self.executor is None and self.executors:
            self.executor, self.executors = self.executors[0], self.executors[1:]
        for ex in [self.executor, *self.executors]:
            if not isinstance(ex, concurrent.futures.Executor) and not callable(
                getattr(ex, "submit", None)
            ):
                raise ValueError("executor must be a concurrent.futures.Executor (has .submit)")
        if self.relay_url is None and self.relay_urls:
            self.relay_url = self.relay_urls[0]
        if self.relay_url is not None:
            for url in self._relays():
                if not url.startswith(("ws://", "wss://")):
                    raise ValueError(f"relay_url must start with ws:// or wss://: {url!r}")
            if self.relay_secret is None or not self.relay_secret.get_secret_value():
                raise ValueError("relay_url is set but relay_secret is missing or empty")
        if not self.backend_url.startswith(("http://", "https://")):
            raise ValueError(f"backend_url must be an http(s) URL: {self.backend_url!r}")
        return self

    _pools: tuple[HealthPool, HealthPool, dict[str, Any]] | None = PrivateAttr(default=None)

    def _relays(self) -> list[str]:
        """The relay URLs, ``relay_url`` first, without repeats."""
        urls = [self.relay_url] if self.relay_url else []
        return list(dict.fromkeys([*urls, *self.relay_urls]))

    def _pools_now(self) -> tuple[HealthPool, HealthPool, dict[str, Any]]:
        if self._pools is None:
            execs = [self.executor, *self.executors]
            names = list(self.endpoint_ids[: len(execs)])
            names += [f"endpoint-{i}" for i in range(len(names), len(execs))]
            relays = HealthPool(self._relays() or ["-"], self.failover_cooldown)
            endpoints = HealthPool(names, self.failover_cooldown)
            self._pools = (relays, endpoints, dict(zip(names, execs, strict=True)))
        return self._pools

    @property
    def _relay_pool(self) -> HealthPool:
        return self._pools_now()[0]

    @property
    def _endpoint_pool(self) -> HealthPool:
        return self._pools_now()[1]

    @property
    def _executor_map(self) -> dict[str, Any]:
        return self._pools_now()[2]

    @classmethod
    def from_globus(
        cls,
        *,
        endpoint_id: str | None = None,
        endpoint_ids: Sequence[str] = (),
        amqp_port: int | None = 443,
        task_group_id: str | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> ChatHPC:
        """Build a ChatHPC over ``globus_compute_sdk.Executor(endpoint_id=...)``.

        Args:
            endpoint_id: Globus Compute endpoint UUID.
            endpoint_ids: More endpoints (one Executor each; a task not started within
                ``queue_timeout`` moves to the next).
            amqp_port: Results-queue port (443, 5671 or 5672).
            task_group_id: Task group to reuse (optional).
            client: A ``globus_compute_sdk.Client`` (optional).
            **kwargs: ChatHPC fields (``relay_url``, ``relay_secret``, ``backend_url``, ...).

        Returns:
            The chat model.
        """
        ids = list(dict.fromkeys([*([endpoint_id] if endpoint_id else []), *endpoint_ids]))
        if not ids:
            raise ValueError("from_globus needs endpoint_id or endpoint_ids")
        execs = [
            globus_executor(i, amqp_port=amqp_port, task_group_id=task_group_id, client=client)
            for i in ids
        ]
        kwargs.setdefault("endpoint_status", globus_endpoint_status(dict(zip(ids, execs,
                                                                             strict=True))))
        return cls(executor=execs[0], executors=execs[1:], endpoint_ids=ids, **kwargs)

    # -- LangChain surface ------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "stream-hpc"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend_url": self.backend_url,
            "relay_url": self.relay_url,
            "mode": self.mode,
            "executor": type(self.executor).__name__,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "stream-hpc"
        params["ls_model_name"] = kwargs.get("model", self.model)
        if self.max_tokens:
            params["ls_max_tokens"] = self.max_tokens
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind OpenAI-format tools; they pass through to the backend (vLLM with tool parsing).

        Args:
            tools: Tools (dicts, pydantic models, functions or LangChain tools).
            tool_choice: ``"auto"``, ``"none"``, ``"required"``, a tool name, or a dict.
            **kwargs: More request fields.

        Returns:
            A runnable that sends the tools with every request.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def request_body(
        self, messages: Sequence[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The plain-data request the HPC functions receive (chat body plus backend URL).

        Args:
            messages: The conversation.
            stop: Stop sequences for this call.
            **kwargs: Per-call body fields (``tools``, ``max_tokens``, ...).

        Returns:
            A dict with only JSON-able values.
        """
        from stream_langchain._messages import to_openai_messages

        body: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(messages)}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.top_p is not None:
            body["top_p"] = self.top_p
        stops = stop if stop is not None else self.stop
        if stops:
            body["stop"] = list(stops)
        body.update(self.model_kwargs)
        body.update({k: v for k, v in kwargs.items() if v is not None})
        body["backend_url"] = self.backend_url
        body["backend_timeout"] = self.timeouts.backend
        body["backend_batch_timeout"] = self.timeouts.batch
        if self.backend_api_key is not None:
            body["backend_api_key"] = self.backend_api_key.get_secret_value()
        return body

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

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._chunks(messages, stop, **kwargs):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # The one implementation is async; drive it on a private loop (no drift between paths).
        for chunk in _drive_sync(self._chunks(messages, stop, **kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- the real path ---------------------------------------------------------------------

    async def _chunks(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        body = self.request_body(messages, stop, **kwargs)
        batch = self.mode == "batch" or self.relay_url is None
        reason = None if self.mode == "batch" else "no relay configured"
        async for chunk in failover_stream(self, body, batch=reason, stream=not batch):
            yield chunk

    async def _batch(
        self, body: dict[str, Any], reason: str | None, executor: Any = None
    ) -> list[ChatGenerationChunk]:
        from hpc_functions import batch_chat

        submitted = time.monotonic()
        try:
            future = (executor or self.executor).submit(batch_chat, body)
        except Exception as exc:
            raise ExecutorRefused(f"executor refused the batch task: {describe(exc)}") from exc
        try:
            result = await asyncio.wait_for(
                asyncio.wrap_future(future), self.timeouts.queue + self.timeouts.batch
            )
        except TimeoutError:
            future.cancel()
            raise HPCQueueTimeout(
                f"batch task did not finish within {self.timeouts.queue + self.timeouts.batch:g}s"
            ) from None
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            raise HPCTaskError(f"HPC batch task failed: {describe(exc)}") from exc
        meta: dict[str, Any] = {"hpc_mode": "batch", "hpc_total_ms": _ms(submitted)}
        if reason:
            meta["hpc_fallback_reason"] = reason
        return batch_chunks(result["completion"], meta)

    async def _stream_via_relay(
        self,
        body: dict[str, Any],
        relay_url: str | None = None,
        executor: Any = None,
        channel: str | None = None,
        failover: bool = False,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """One request through one relay: open the consumer, submit the task, drive the stream.

        Args:
            body: The request body (:meth:`request_body`).
            relay_url: The relay (default ``relay_url``).
            executor: The endpoint's executor (default ``executor``).
            channel: The channel id (default: a new one).
            failover: Raise :class:`RelayFailed` when the relay is unreachable or lost before
                the first token (the pool moves on) instead of falling back or failing.
        """
        import relay

        relay_url = relay_url or self.relay_url
        assert relay_url is not None and self.relay_secret is not None
        channel = channel or relay.new_channel()
        key = relay.new_key()
        tokens = relay.mint_tokens(self.relay_secret.get_secret_value(), channel, self.token_ttl)
        consumer = self._consumer(relay_url, channel, tokens.consumer, key)
        try:
            await consumer.__aenter__()
        except Exception as exc:
            reason = self._unreachable(exc, failover)
            for chunk in await self._batch(body, reason):
                yield chunk
            return
        info = self._relay_info(relay_url, channel, tokens.producer, key)
        core = _RelayStream(self.timeouts, model=self.model, now=time.monotonic(),
                            failover=failover)
        future: concurrent.futures.Future[Any] | None = None
        try:
            future = self._submit_stream(executor or self.executor, body, info)
            async for chunk in drive(core, consumer, future):
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                await consumer.__aexit__(None, None, None)
            if future is not None and not future.done():
                future.cancel()  # not started yet: never runs; running: the producer sees the close

    def _consumer(self, relay_url: str, channel: str, token: str, key: bytes) -> Any:
        import relay

        t = self.timeouts
        return relay.Consumer(
            relay_url, channel, token, key,
            open_timeout=t.relay_open,
            # The stream's own phase timers are tighter and name the phase; these are backstops.
            first_frame_timeout=t.queue + t.relay_open,
            idle_timeout=max(t.first_token, t.idle) + 1.0,
        )

    def _unreachable(self, exc: Exception, failover: bool) -> str:
        """The batch-mode reason for a consumer that did not open, or raise."""
        if failover and is_unreachable(exc):  # hpc_pool tries the next relay, then batch
            raise RelayFailed(f"relay unreachable: {describe(exc)}") from exc
        if self.batch_fallback and is_unreachable(exc):
            return f"relay unreachable: {describe(exc)}"
        raise HPCError(f"could not open the relay channel: {describe(exc)}") from exc

    def _relay_info(self, url: str, channel: str, token: str, key: bytes) -> dict[str, Any]:
        """The relay half of the task arguments (the producer's token and the key)."""
        return {
            "url": url,
            "channel": channel,
            "token": token,
            "key": key,
            "open_timeout": self.timeouts.relay_open,
            "batch_on_relay_error": self.batch_fallback,
        }

    @staticmethod
    def _submit_stream(
        executor: Any, body: dict[str, Any], info: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        from hpc_functions import stream_chat

        try:
            return executor.submit(stream_chat, body, info)  # type: ignore[no-any-return]
        except Exception as exc:
            raise ExecutorRefused(f"executor refused the task: {describe(exc)}") from exc


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


def _drive_sync(agen: AsyncGenerator[ChatGenerationChunk, None]) -> Iterator[ChatGenerationChunk]:
    """Iterate an async generator from sync code, on a private event loop.

    In a thread without a running loop the loop runs right here; under a running loop (for
    example sync ``invoke`` inside a notebook) it runs in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:
        loop = asyncio.new_event_loop()
        step: asyncio.Task[ChatGenerationChunk] | None = None
        try:
            while True:
                step = loop.create_task(_anext(agen))
                try:
                    yield loop.run_until_complete(step)
                except StopAsyncIteration:
                    return
                step = None
        finally:
            # Interrupted mid-step (Ctrl-C, SystemExit, the caller closing us): cancel the
            # step so the generator's cleanup (closing the relay channel) runs, then close it.
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(step)
            with contextlib.suppress(Exception):
                loop.run_until_complete(agen.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    else:
        yield from _drive_in_thread(agen)


async def _anext(agen: AsyncGenerator[ChatGenerationChunk, None]) -> ChatGenerationChunk:
    return await agen.__anext__()


def _drive_in_thread(
    agen: AsyncGenerator[ChatGenerationChunk, None],
) -> Iterator[ChatGenerationChunk]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="chathpc-sync", daemon=True)
    thread.start()
    try:
        while True:
            step = asyncio.run_coroutine_threadsafe(agen.__anext__(), loop)
            try:
                yield step.result()
            except StopAsyncIteration:
                return
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(agen.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def new_relay_secret() -> str:
    """A fresh random relay secret (for loopback stacks and tests)."""
    return secrets.token_urlsafe(32)
