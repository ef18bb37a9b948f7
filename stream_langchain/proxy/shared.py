"""State that proxy replicas share through Redis: rate limits, key revocation, circuit breakers.

One proxy process needs nothing shared. Behind a load balancer, N replicas each keeping their
own state would give a user N times their limit, keep a revoked key working on the other
replicas for their key-cache lifetime, and retry a failing tier on every replica. With
``[shared] redis_url`` (``stream proxy --redis URL``) the proxy keeps that state in Redis:

- **Rate limits** (:class:`SharedLimiter`, the :class:`~stream_langchain.proxy.limits.Limiter`
  interface plus :meth:`SharedLimiter.aadmit`): requests/min, tokens/min and concurrency per
  identity, checked and charged by one Lua script (atomic across replicas, Redis's clock).
  Tokens are reserved at admission and settled to what ran at the end, as in one process.
  Concurrency slots are leases (10 minutes) so a replica that dies frees its slots.
- **Key revocation** (:meth:`SharedState.revoke`): a revoked key id is written to Redis and
  published; every replica checks it on every request (one round trip, pipelined with the
  breaker read), so no key cache hides a revocation.
- **Circuit breakers** (:meth:`SharedState.attach_breaker`): when a replica's breaker opens a
  tier, the open state (with its cooldown as a TTL) goes to Redis; every replica reads the
  open tiers before a request and skips them. A success anywhere closes it.

When Redis cannot be reached the proxy keeps serving with per-process limits and its own
breaker and key cache (logged once per outage; ``/health`` says ``degraded``), and tries
Redis again every ``retry_s`` seconds; once Redis answers, state is shared again.

Example:
    >>> shared = SharedState("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> limiter = SharedLimiter(shared, Limits(rpm=10))  # doctest: +SKIP
    >>> permit = await limiter.aadmit("alice", tokens=12)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from stream_langchain.proxy.limits import WINDOW_S, Limiter, Limits, Permit
from stream_langchain.routing import CircuitBreaker

__all__ = ["SharedLimiter", "SharedPermit", "SharedState"]

logger = logging.getLogger("stream.proxy.shared")

T = TypeVar("T")
LEASE_MS = 600_000
"""A concurrency slot's lease: a replica that dies mid-request frees it after this."""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_ADMIT = _NOW + """
local window = tonumber(ARGV[6])
local edge = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', edge)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', edge)
if #old > 0 then
  redis.call('HDEL', KEYS[3], unpack(old))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', edge)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local function reset(key)
  local o = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #o == 0 then return 0 end
  return tonumber(o[2]) + window - now
end
local nreq = redis.call('ZCARD', KEYS[1])
local tsum = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do tsum = tsum + tonumber(v) end
local rpm, tpm, conc, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local code, wait = 0, 0
if nreq >= rpm then code, wait = 1, reset(KEYS[1])
elseif tsum >= tpm or tokens > tpm then
  code, wait = 2, reset(KEYS[2])
  if wait <= 0 then wait = window end
elseif redis.call('ZCARD', KEYS[4]) >= conc then code, wait = 3, 1000
else
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  if tokens > 0 then
    redis.call('ZADD', KEYS[2], now, ARGV[5])
    redis.call('HSET', KEYS[3], ARGV[5], tokens)
    tsum = tsum + tokens
  end
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), ARGV[5])
  nreq = nreq + 1
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], window * 2) end
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[7]))
return {code, wait, nreq, tsum, reset(KEYS[1]), reset(KEYS[2])}
"""

_SETTLE = _NOW + """
if tonumber(ARGV[2]) < 0 then
  -- nothing to settle (release only)
elseif redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
elseif tonumber(ARGV[2]) > 0 then
  local member = ARGV[1] .. ':' .. now
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('HSET', KEYS[2], member, ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) * 2)
if ARGV[4] == '1' then redis.call('ZREM', KEYS[3], ARGV[1]) end
return 1
"""


class _Down(Exception):
    """Redis is (still) unreachable; the caller falls back to per-process state."""


class SharedState:
    """A Redis connection shared by the proxy's limiter, key checks and breakers.

    Args:
        url: ``redis://`` / ``rediss://`` URL (its password is never logged).
        prefix: Key prefix (several proxies on one Redis).
        retry_s: After a failure, seconds before Redis is tried again.
        timeout_s: Connect and command timeout.
    """

    def __init__(self, url: str, *, prefix: str = "stream:", retry_s: float = 1.0,
                 timeout_s: float = 0.5) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._aioredis = aioredis
        self._clients: dict[int, Any] = {}  # one per event loop (proxy tests run several)
        self._down_until = 0.0
        self.degraded = False
        self.last_error: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url_safe(self) -> str:
        """The URL without its password."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}"

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            client = self._aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                decode_responses=True)
            self._clients[id(loop)] = client
        return client

    async def run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(client)``; raise :class:`_Down` (after logging once) if Redis fails."""
        if self.degraded and time.monotonic() < self._down_until:
            raise _Down(self.last_error or "redis unreachable")
        try:
            result = await op(self._client())
        except (TimeoutError, OSError, self._aioredis.RedisError) as exc:
            self._mark_down(exc)
            raise _Down(str(exc)) from exc
        if self.degraded:
            self.degraded = False
            logger.warning("shared state: Redis at %s is back; limits, revocation and "
                           "breakers are shared again", self.url_safe)
        return result

    def _mark_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_s
        self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if not self.degraded:
            self.degraded = True
            logger.error("shared state: Redis at %s unreachable (%s); serving with "
                         "per-process limits, key cache and breakers until it is back",
                         self.url_safe, self.last_error)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background on the running loop (writes nobody waits for)."""
        try:
            task = asyncio.ensure_future(coro)
        except RuntimeError:  # no running loop: nothing to share from here
            if asyncio.iscoroutine(coro):
                coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the background writes started so far (tests, shutdown)."""
        await asyncio.sleep(0)  # permits flush on the next turn of the loop
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def key(self, *parts: str) -> str:
        """A namespaced Redis key."""
        return self.prefix + ":".join(parts)

    async def ping(self) -> bool:
        """Whether Redis answers now (used by ``/health``, which thus also notices recovery)."""
        self._down_until = 0.0
        try:
            return bool(await self.run(lambda r: r.ping()))
        except _Down:
            return False

    def health(self) -> dict[str, Any]:
        """``{"redis": "ok" | "unreachable", ...}`` for ``/health`` (no secrets)."""
        out: dict[str, Any] = {"redis": "unreachable" if self.degraded else "ok",
                               "url": self.url_safe}
        if self.degraded:
            out["error"] = self.last_error
            out["fallback"] = "per-process limits, key cache and breakers"
        return out

    # -- key revocation ---------------------------------------------------------------------

    async def revoke(self, key_id: str) -> bool:
        """Tell every replica that ``key_id`` is revoked (the store holds the truth).

        Returns:
            Whether Redis took it (``False``: other replicas learn it within their key cache
            lifetime, as without Redis).
        """
        async def op(r: Any) -> None:
            async with r.pipeline(transaction=True) as p:
                p.set(self.key("revoked", key_id), "1")
                p.publish(self.key("events"), f"revoked {key_id}")
                await p.execute()
        try:
            await self.run(op)
        except _Down:
            return False
        return True

    async def before_request(self, key_id: str | None, breaker: CircuitBreaker | None,
                             tiers: Iterable[str]) -> bool:
        """One round trip per request: is ``key_id`` revoked, which tiers are open elsewhere.

        Opens (in ``breaker``) the tiers another replica opened. Returns whether the key is
        revoked (``False`` when Redis is down: the local key cache decides).
        """
        names = list(tiers) if breaker is not None else []

        async def op(r: Any) -> list[Any]:
            async with r.pipeline(transaction=False) as p:
                p.exists(self.key("revoked", key_id or "-"))
                for t in names:
                    p.pttl(self.key("breaker", t))
                return list(await p.execute())
        try:
            revoked, *ttls = await self.run(op)
        except _Down:
            return False
        for tier, ttl in zip(names, ttls, strict=True):
            if breaker is not None and isinstance(ttl, int) and ttl > 0:
                breaker.open_for(tier, ttl / 1000.0)
        return bool(revoked) and key_id is not None

    # -- circuit breakers -------------------------------------------------------------------

    def attach_breaker(self, breaker: CircuitBreaker) -> None:
        """Publish ``breaker``'s opens and closes to Redis (reads: :meth:`before_request`)."""
        def listener(tier: str, opened: bool, seconds: float) -> None:
            self.spawn(self._breaker_write(tier, opened, seconds))
        breaker.listener = listener

    async def _breaker_write(self, tier: str, opened: bool, seconds: float) -> None:
        async def op(r: Any) -> None:
            if opened:
                await r.set(self.key("breaker", tier), "open", px=max(int(seconds * 1000), 1))
            else:
                await r.delete(self.key("breaker", tier))
        try:
            await self.run(op)
        except _Down:
            pass

    async def close(self) -> None:
        """Finish background writes and close the connections of the running loop."""
        await self.drain()
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()


class SharedPermit(Permit):
    """A permit whose reservation and concurrency slot live in Redis. Settling and releasing
    are written in the background, together in one script call when both happen in the same
    turn of the event loop (as at the end of a request): the request path never waits."""

    def __init__(self, limiter: SharedLimiter, keys: list[str], member: str,
                 reserved: int) -> None:
        self._limiter = limiter
        self._keys = keys
        self._member = member
        self._released = False
        self._settled = False
        self._used = -1  # -1: nothing to settle
        self._flush_pending = False
        self.reserved = reserved

    def add_tokens(self, n: int) -> None:
        """Charge ``n`` more tokens to the identity's minute."""
        if n > 0:
            self._limiter.shared.spawn(self._limiter._settle(
                self._keys, f"{self._member}+{secrets.token_hex(4)}", n, release=False))

    def settle(self, used: int) -> None:
        """The request used ``used`` tokens: its reservation becomes that (in Redis)."""
        if not self._settled:
            self._settled = True
            self._used = max(int(used), 0)
            self._flush_soon()

    def release(self) -> None:
        """Free the concurrency slot (in Redis)."""
        if not self._released:
            self._released = True
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_pending:
            return
        self._flush_pending = True
        try:
            asyncio.get_running_loop().call_soon(self._flush)
        except RuntimeError:  # no loop here: write from a fresh one (CLI, sync callers)
            self._flush_pending = False

    def _flush(self) -> None:
        self._flush_pending = False
        used, self._used = self._used, -1
        self._limiter.shared.spawn(self._limiter._settle(
            self._keys, self._member, used, release=self._released))


class SharedLimiter(Limiter):
    """:class:`~stream_langchain.proxy.limits.Limiter` with its windows in Redis.

    :meth:`aadmit` is the admission the proxy awaits; while Redis is unreachable it is the
    per-process :meth:`Limiter.admit`. :meth:`headers` reports what the last admission in
    this process saw for that identity (Redis's count), else the per-process window.

    Args:
        shared: The Redis connection.
        defaults: Limits for identities without their own.
    """

    def __init__(self, shared: SharedState, defaults: Limits | None = None) -> None:
        super().__init__(defaults)
        self.shared = shared
        self._seen: dict[str, tuple[float, list[Any]]] = {}
        self._scripts: dict[int, dict[str, Any]] = {}

    def _keys(self, who: str) -> list[str]:
        tag = "{" + hashlib.sha256(who.encode()).hexdigest()[:16] + "}"  # one cluster slot
        return [self.shared.key("rl", tag, part) for part in ("req", "tok", "amt", "act")]

    async def aadmit(self, who: str, *, tokens: int, rpm: int | None = None,
                     tpm: int | None = None, max_concurrent: int | None = None) -> Permit:
        """Admit one request across all replicas, or raise 429 (as :meth:`Limiter.admit`)."""
        r_lim, t_lim, c_lim = self._limits(rpm, tpm, max_concurrent)
        keys = self._keys(who)
        member = secrets.token_hex(8)
        args = [r_lim, t_lim, c_lim, max(int(tokens), 0), member, int(WINDOW_S * 1000),
                LEASE_MS]
        try:
            res = await self.shared.run(lambda r: self._script(r, _ADMIT)(keys, args))
        except _Down:
            return self.admit(who, tokens=tokens, rpm=rpm, tpm=tpm,
                              max_concurrent=max_concurrent)
        self._seen[who] = (time.monotonic(), [int(x) for x in res])
        code, wait_ms = int(res[0]), int(res[1])
        if code:
            what, name = {
                1: (f"{r_lim} requests per minute", "rate_limit_requests"),
                2: (f"{t_lim} tokens per minute (this request: {tokens} input tokens)",
                    "rate_limit_tokens"),
                3: (f"{c_lim} concurrent requests", "rate_limit_concurrency"),
            }[code]
            raise self._refuse(who, what, name, max(wait_ms, 0) / 1000.0, r_lim, t_lim)
        return SharedPermit(self, keys, member, max(int(tokens), 0))

    def _script(self, client: Any, body: str) -> Any:
        """``client``'s handle on a Lua script (EVALSHA, loaded on first use)."""
        scripts = self._scripts.setdefault(id(client), {})
        if body not in scripts:
            scripts[body] = client.register_script(body)
        return scripts[body]

    async def _settle(self, keys: list[str], member: str, used: int, *,
                      release: bool) -> None:
        args = [member, used, int(WINDOW_S * 1000), "1" if release else "0"]
        try:
            await self.shared.run(
                lambda r: self._script(r, _SETTLE)([keys[1], keys[2], keys[3]], args))
        except _Down:
            pass

    def headers(self, who: str, *, rpm: int | None = None,
                tpm: int | None = None) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for ``who`` (Redis's count at its last admission
        here, aged by the time since)."""
        seen = self._seen.get(who)
        if seen is None or self.shared.degraded:
            return super().headers(who, rpm=rpm, tpm=tpm)
        at, (_, _, nreq, tsum, r_reset, t_reset) = seen
        age = (time.monotonic() - at) * 1000
        r_lim, t_lim, _ = self._limits(rpm, tpm, None)
        if age >= WINDOW_S * 1000:
            nreq = tsum = r_reset = t_reset = 0
        return {
            "x-ratelimit-limit-requests": str(r_lim),
            "x-ratelimit-remaining-requests": str(max(r_lim - nreq, 0)),
            "x-ratelimit-reset-requests": f"{max(r_reset - age, 0) / 1000:.3f}s",
            "x-ratelimit-limit-tokens": str(t_lim),
            "x-ratelimit-remaining-tokens": str(max(t_lim - tsum, 0)),
            "x-ratelimit-reset-tokens": f"{max(t_reset - age, 0) / 1000:.3f}s",
        }
