"""Several relays and several endpoints behind one ChatHPC: health, choice and failover.

A research centre runs more than one relay and often more than one Globus Compute endpoint.
:class:`HealthPool` keeps, per relay or endpoint, what recent requests found (a failure
puts it in a cooldown that doubles while failures repeat, a success clears it) and orders
the candidates for one request: the healthy ones first, rotated by the request's channel id
so that load spreads, then the cooling ones (oldest failure first) as a last resort.

:func:`failover_stream` drives one HPC request over those orders. Before the first token, a
relay that cannot be reached (or is lost while the task waits) moves the request to the next
relay on a fresh channel, and an endpoint that does not start the task within
``queue_timeout`` (or refuses it, or is reported offline) moves it to the next endpoint;
when no relay can be reached the request runs in batch mode. After the first token nothing
moves: the error goes to the caller (ChatStream fails over to another tier from the partial
answer). The final chunk's ``response_metadata`` names the relay (``hpc_relay``) and the endpoint
(``hpc_endpoint``) that served the request and lists what was skipped
(``hpc_failovers``).

Relays share nothing: a channel lives on one relay, so a request moves by starting over on
another relay with a new channel, key and tokens.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.outputs import ChatGenerationChunk

from stream_langchain.errors import RelayFailed, describe
from stream_langchain.tiers.hpc_errors import ExecutorRefused, HPCError, HPCQueueTimeout

__all__ = ["HealthPool", "RelayFailed", "failover_stream"]

_E = TypeVar("_E", bound=BaseException)


@dataclass
class _Health:
    failures: int = 0
    until: float = 0.0  # monotonic time before which the target is avoided
    last_error: str | None = None


class HealthPool:
    """Recent-result health of interchangeable targets (relays or endpoints).

    Args:
        names: The targets, in configured order (relay URLs, endpoint ids).
        cooldown: Seconds a target is avoided after a failure (doubled per repeated failure,
            at most ``8 * cooldown``).
        clock: Monotonic clock (tests).

    Example:
        >>> pool = HealthPool(["ws://a", "ws://b"], cooldown=30)
        >>> pool.failed("ws://a", "refused")
        >>> pool.order("channel-1")
        ['ws://b', 'ws://a']
    """

    def __init__(
        self, names: Sequence[str], cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not names:
            raise ValueError("a HealthPool needs at least one target")
        self.names = list(dict.fromkeys(names))
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._health = {n: _Health() for n in self.names}

    def healthy(self, name: str) -> bool:
        """Whether ``name`` is outside its cooldown."""
        with self._lock:
            return self._health[name].until <= self._clock()

    def order(self, key: str) -> list[str]:
        """Candidates for one request: healthy ones rotated by ``key``, then cooling ones."""
        now = self._clock()
        with self._lock:
            healthy = [n for n in self.names if self._health[n].until <= now]
            cooling = sorted(
                (n for n in self.names if self._health[n].until > now),
                key=lambda n: self._health[n].until,
            )
        if healthy:
            shift = zlib.crc32(key.encode()) % len(healthy)
            healthy = healthy[shift:] + healthy[:shift]
        return healthy + cooling

    def failed(self, name: str, error: str) -> None:
        """Record a failure: ``name`` is avoided for its (growing) cooldown."""
        with self._lock:
            h = self._health[name]
            h.failures += 1
            h.last_error = error
            h.until = self._clock() + self.cooldown * min(2 ** (h.failures - 1), 8)

    def succeeded(self, name: str) -> None:
        """Record a success: ``name`` is healthy again."""
        with self._lock:
            self._health[name] = _Health()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per target: ``healthy``, ``failures``, ``last_error`` (for health pages)."""
        now = self._clock()
        with self._lock:
            return {
                n: {"healthy": h.until <= now, "failures": h.failures,
                    "last_error": h.last_error}
                for n, h in self._health.items()
            }


def _annotate(chunk: ChatGenerationChunk, extra: dict[str, Any]) -> ChatGenerationChunk:
    meta = chunk.message.response_metadata
    if "hpc_mode" in meta:
        meta.update(extra)
    return chunk


def _skip(
    pool: HealthPool, role: str, name: str, exc: _E, skipped: list[dict[str, str]]
) -> _E:
    """Record that ``name`` failed with ``exc`` (its health, the request's skipped list)."""
    pool.failed(name, describe(exc))
    skipped.append({role: name, "error": describe(exc)})
    return exc


async def _attempt_endpoint(
    chat: Any, body: dict[str, Any], endpoint: str, executor: Any, key: str,
    skipped: list[dict[str, str]],
) -> AsyncIterator[ChatGenerationChunk]:
    """One endpoint: each relay in health order, then batch mode (if allowed)."""
    import relay

    relays: HealthPool = chat._relay_pool
    last: BaseException | None = None
    for url in relays.order(key):
        extra: dict[str, Any] = {
            "hpc_relay": url, "hpc_endpoint": endpoint, "hpc_failovers": skipped
        }
        try:
            async for chunk in chat._stream_via_relay(
                body, relay_url=url, executor=executor, channel=relay.new_channel(),
                failover=True,
            ):
                yield _annotate(chunk, extra)
        except RelayFailed as exc:
            last = _skip(relays, "relay", url, exc, skipped)
            continue
        relays.succeeded(url)
        return
    if not chat.batch_fallback:
        why = describe(last) if last else "no relay"
        raise HPCError(f"could not open the relay channel on any relay: {why}")
    reason = str(last) if last else "relay unreachable: no relay"
    async for chunk in _batch_on(chat, body, reason, endpoint, executor, skipped):
        yield chunk


async def _batch_on(
    chat: Any, body: dict[str, Any], reason: str | None, endpoint: str, executor: Any,
    skipped: list[dict[str, str]],
) -> AsyncIterator[ChatGenerationChunk]:
    """Batch mode on one endpoint; the final chunk names it and what was skipped."""
    extra = {"hpc_relay": None, "hpc_endpoint": endpoint, "hpc_failovers": skipped}
    for chunk in await chat._batch(body, reason, executor=executor):
        yield _annotate(chunk, extra)


async def _reported_offline(chat: Any, endpoint: str) -> bool:
    status = getattr(chat, "endpoint_status", None)
    if status is None:
        return False
    try:
        state = await asyncio.to_thread(status, endpoint)
    except Exception:  # noqa: BLE001 - unknown: try the endpoint
        return False
    return state == "offline"


async def failover_stream(
    chat: Any, body: dict[str, Any], *, batch: str | None = None, stream: bool = True
) -> AsyncIterator[ChatGenerationChunk]:
    """One HPC request over the chat model's relays and endpoints (see the module docs).

    Args:
        chat: The :class:`~stream_langchain.tiers.hpc.ChatHPC`.
        body: Its request body (plain data).
        batch: Batch-mode reason when ``stream`` is false (``None``: batch by choice).
        stream: Whether to stream through a relay (else batch mode on the first endpoint
            that takes the task).

    Yields:
        The request's chunks; the final one names ``hpc_relay`` and ``hpc_endpoint``.

    Raises:
        HPCQueueTimeout: No endpoint started the task in time.
        HPCError: Any other failure (as the single-relay path raises it).
    """
    import relay

    endpoints: HealthPool = chat._endpoint_pool
    executors: dict[str, Any] = chat._executor_map
    key = relay.new_channel()
    skipped: list[dict[str, str]] = []
    last: HPCError | None = None
    for endpoint in endpoints.order(key):
        if await _reported_offline(chat, endpoint):
            endpoints.failed(endpoint, "reported offline")
            skipped.append({"endpoint": endpoint, "error": "reported offline"})
            last = HPCQueueTimeout(f"endpoint {endpoint} is reported offline")
            continue
        yielded = False
        try:
            gen = (
                _attempt_endpoint(chat, body, endpoint, executors[endpoint], key, skipped)
                if stream else _batch_on(chat, body, batch, endpoint, executors[endpoint], skipped)
            )
            async for chunk in gen:
                yielded = True
                yield chunk
        except (HPCQueueTimeout, ExecutorRefused) as exc:
            if yielded:
                raise
            last = _skip(endpoints, "endpoint", endpoint, exc, skipped)
            continue
        endpoints.succeeded(endpoint)
        return
    assert last is not None
    raise last
