"""Per-identity limits: requests per minute, tokens per minute, concurrent requests.

Sliding 60-second windows kept in memory (one proxy process; replicas each enforce their own
share). :meth:`Limiter.admit` either returns a :class:`Permit` or raises a 429
:class:`~stream_langchain.proxy.errors.APIError` with ``Retry-After``; every response carries
the ``x-ratelimit-*`` headers OpenAI sends (:meth:`Limiter.headers`).

Tokens per minute are charged for what ran: admission reserves the request's estimated input,
and :meth:`Permit.settle` replaces that reservation with the tokens the request actually
used when it ends (zero for a request refused before any tier ran).

Example:
    >>> lim = Limiter(Limits(rpm=2, tpm=1000, max_concurrent=5))
    >>> p1 = lim.admit("alice", tokens=10); p2 = lim.admit("alice", tokens=10)
    >>> try:
    ...     lim.admit("alice", tokens=10)
    ... except Exception as e:
    ...     print(e.status, e.code, "Retry-After" in e.headers)
    429 rate_limit_requests True
    >>> lim.headers("alice")["x-ratelimit-remaining-requests"]
    '0'
    >>> p1.settle(0); p2.settle(25)  # refused, and one that used 25 tokens
    >>> lim.headers("alice")["x-ratelimit-remaining-tokens"]
    '975'
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stream_langchain.proxy.errors import APIError

__all__ = ["Limiter", "Limits", "Permit"]

WINDOW_S = 60.0
_GONE = float("-inf")
"""The time of a token entry pruned out of its window (so a permit knows without a scan)."""


@dataclass(frozen=True)
class Limits:
    """Default per-identity limits (a key may carry its own)."""

    # Limits
    rpm: int = 60
    """Requests per minute."""
    tpm: int = 200_000
    """Tokens (input + output) per minute."""
    max_concurrent: int = 4
    """Requests in flight at once (streams included)."""


@dataclass
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[list[float]] = field(default_factory=deque)
    """``[time, tokens]`` entries, oldest first (mutable: a reservation is settled in place)."""
    token_sum: int = 0
    active: int = 0

    def prune(self, now: float) -> None:
        edge = now - WINDOW_S
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= edge:
            gone = self.tokens.popleft()
            self.token_sum -= int(gone[1])
            gone[0] = _GONE

    def charge(self, now: float, n: int) -> list[float]:
        entry = [now, float(n)]
        self.tokens.append(entry)
        self.token_sum += n
        return entry


class Permit:
    """One admitted request: :meth:`settle` its actual tokens, then :meth:`release` (both
    idempotent)."""

    def __init__(self, window: _Window, clock: Callable[[], float], reserved: int) -> None:
        self._window = window
        self._clock = clock
        self._released = False
        self._settled = False
        self.reserved = reserved
        """Tokens reserved at admission (the input estimate)."""
        self._entry = window.charge(clock(), reserved) if reserved > 0 else None

    def add_tokens(self, n: int) -> None:
        """Charge ``n`` more tokens to the identity's minute."""
        if n > 0:
            self._window.charge(self._clock(), n)

    def settle(self, used: int) -> None:
        """The request ended having used ``used`` tokens (input + output): its reservation
        becomes that. A reservation already out of the window (a request longer than a
        minute) is replaced by a new charge now."""
        if self._settled:
            return
        self._settled = True
        used = max(int(used), 0)
        entry, self._entry = self._entry, None
        w = self._window
        now = self._clock()
        if entry is not None and entry[0] != _GONE:  # still in the window's deque
            w.token_sum -= int(entry[1])
            entry[1] = 0.0
            if entry[0] > now - WINDOW_S:  # still in the minute: settle in place
                entry[1] = float(used)
                w.token_sum += used
                return
        if used:
            w.charge(now, used)

    def release(self) -> None:
        """The request ended: free its concurrency slot."""
        if not self._released:
            self._released = True
            self._window.active -= 1


def _reset(seconds: float) -> str:
    return f"{max(seconds, 0.0):.3f}s"


class Limiter:
    """Sliding-window limits per identity name.

    Args:
        defaults: limits for identities without their own.
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(self, defaults: Limits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.defaults = defaults or Limits()
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def _limits(self, rpm: int | None, tpm: int | None,
                conc: int | None) -> tuple[int, int, int]:
        d = self.defaults
        return rpm or d.rpm, tpm or d.tpm, conc or d.max_concurrent

    def admit(self, who: str, *, tokens: int, rpm: int | None = None, tpm: int | None = None,
              max_concurrent: int | None = None) -> Permit:
        """Admit one request of ``tokens`` input tokens, or raise 429.

        Raises:
            APIError: 429 with ``Retry-After`` and ``x-ratelimit-*`` headers, naming the limit.
        """
        now = self._clock()
        w = self._windows.setdefault(who, _Window())
        w.prune(now)
        r_lim, t_lim, c_lim = self._limits(rpm, tpm, max_concurrent)
        if len(w.requests) >= r_lim:
            wait = w.requests[0] + WINDOW_S - now
            raise self._refuse(who, f"{r_lim} requests per minute", "rate_limit_requests",
                               wait, r_lim, t_lim)
        if w.token_sum >= t_lim or (tokens > t_lim):
            wait = (w.tokens[0][0] + WINDOW_S - now) if w.tokens else WINDOW_S
            raise self._refuse(who, f"{t_lim} tokens per minute (this request: {tokens} input "
                                    "tokens)", "rate_limit_tokens", wait, r_lim, t_lim)
        if w.active >= c_lim:
            raise self._refuse(who, f"{c_lim} concurrent requests", "rate_limit_concurrency",
                               1.0, r_lim, t_lim)
        w.requests.append(now)
        w.active += 1
        return Permit(w, self._clock, tokens)

    def _refuse(self, who: str, what: str, code: str, wait: float, r_lim: int,
                t_lim: int) -> APIError:
        headers = self.headers(who, rpm=r_lim, tpm=t_lim)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return APIError(429, f"rate limit reached for {who!r}: {what}; retry after "
                             f"{max(wait, 0.0):.1f} s", code=code, headers=headers)

    def headers(self, who: str, *, rpm: int | None = None,
                tpm: int | None = None) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for ``who`` now."""
        now = self._clock()
        w = self._windows.setdefault(who, _Window())
        w.prune(now)
        r_lim, t_lim, _ = self._limits(rpm, tpm, None)
        r_reset = (w.requests[0] + WINDOW_S - now) if w.requests else 0.0
        t_reset = (w.tokens[0][0] + WINDOW_S - now) if w.tokens else 0.0
        return {
            "x-ratelimit-limit-requests": str(r_lim),
            "x-ratelimit-remaining-requests": str(max(r_lim - len(w.requests), 0)),
            "x-ratelimit-reset-requests": _reset(r_reset),
            "x-ratelimit-limit-tokens": str(t_lim),
            "x-ratelimit-remaining-tokens": str(max(t_lim - w.token_sum, 0)),
            "x-ratelimit-reset-tokens": _reset(t_reset),
        }
