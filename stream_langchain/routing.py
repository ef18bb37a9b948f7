"""Routing policy: complexity -> an ordered list of tiers, filtered by what is allowed and healthy.

The paper's orders are the defaults:

============  ==========================
complexity    tier order
============  ==========================
``LOW``       local > hpc > cloud
``MEDIUM``    hpc > cloud > local
``HIGH``      cloud > hpc > local
============  ==========================

:func:`plan_route` filters that order by an explicit override, privacy (``allow_cloud``),
the cloud budget, tier health (:class:`CircuitBreaker`) and context fit, and says why each
skipped tier was skipped. Everything here is pure policy: no I/O, no models.

Example:
    >>> from stream_langchain.routing import plan_route, CircuitBreaker
    >>> plan = plan_route("LOW", available={"local", "cloud"}, breaker=CircuitBreaker())
    >>> plan.order
    ['local', 'cloud']
    >>> [s["tier"] + ": " + s["reason"] for s in plan.skipped]
    ['hpc: not configured']
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from stream_langchain.capabilities import Capabilities, Needs
from stream_langchain.errors import CapabilityError
from stream_langchain.judges import Complexity

__all__ = [
    "DEFAULT_ORDER",
    "TIERS",
    "CapabilityError",
    "CircuitBreaker",
    "CloudBudget",
    "RoutePlan",
    "Tier",
    "plan_route",
    "validate_tier",
]

Tier = Literal["local", "hpc", "cloud"]
TIERS: tuple[Tier, ...] = ("local", "hpc", "cloud")

DEFAULT_ORDER: dict[Complexity, tuple[Tier, ...]] = {
    Complexity.LOW: ("local", "hpc", "cloud"),
    Complexity.MEDIUM: ("hpc", "cloud", "local"),
    Complexity.HIGH: ("cloud", "hpc", "local"),
}


def validate_tier(name: object) -> Tier:
    """Return ``name`` as a tier, or raise ``ValueError`` naming the valid tiers.

    Example:
        >>> validate_tier("hpc")
        'hpc'
    """
    if not isinstance(name, str) or name not in TIERS:
        raise ValueError(f"unknown tier {name!r}: expected one of {', '.join(TIERS)}")
    return cast(Tier, name)


class CircuitBreaker:
    """Per-tier health: a tier that failed ``threshold`` times within ``window`` seconds is
    skipped for ``cooldown`` seconds, then allowed again (half-open); one success closes it,
    one failure while half-open opens it again.

    Args:
        threshold: failures within ``window`` that open the circuit.
        window: seconds over which failures are counted.
        cooldown: seconds an open circuit stays open.
        clock: time source (``time.monotonic``); injectable for tests.
    """

    def __init__(
        self,
        *,
        threshold: int = 3,
        window: float = 60.0,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("circuit breaker threshold must be >= 1")
        if window <= 0 or cooldown <= 0:
            raise ValueError("circuit breaker window and cooldown must be > 0 seconds")
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._open_until: dict[str, float] = {}
        self._half_open: set[str] = set()
        self._lock = threading.Lock()
        self.listener: Callable[[str, bool, float], None] | None = None
        """Called as ``listener(tier, opened, seconds)`` after this breaker opens a circuit
        (``True``, its cooldown) or closes one that was open (``False``, 0): the hook through
        which replicas share breaker state (:mod:`stream_langchain.proxy.shared`)."""

    def open_for(self, tier: str, seconds: float) -> None:
        """Open ``tier``'s circuit for ``seconds`` because it was opened elsewhere (another
        replica); the listener is not called."""
        with self._lock:
            until = self._clock() + seconds
            if until > self._open_until.get(tier, float("-inf")):
                self._open_until[tier] = until
                self._half_open.discard(tier)

    def state(self, tier: str) -> Literal["closed", "open", "half-open"]:
        """The circuit's state for ``tier`` now."""
        with self._lock:
            return self._state(tier)

    def _state(self, tier: str) -> Literal["closed", "open", "half-open"]:
        until = self._open_until.get(tier)
        if until is None:
            return "closed"
        if self._clock() < until:
            return "open"
        self._half_open.add(tier)
        return "half-open"

    def allow(self, tier: str) -> bool:
        """Whether a request may go to ``tier`` now."""
        return self.state(tier) != "open"

    def record_success(self, tier: str) -> None:
        """A request to ``tier`` succeeded: close its circuit and forget old failures."""
        with self._lock:
            self._failures.pop(tier, None)
            was_open = self._open_until.pop(tier, None) is not None
            self._half_open.discard(tier)
        if was_open and self.listener is not None:
            self.listener(tier, False, 0.0)

    def record_failure(self, tier: str) -> None:
        """A request to ``tier`` failed; may open its circuit."""
        with self._lock:
            opened = self._fail_locked(tier)
        if opened and self.listener is not None:
            self.listener(tier, True, self.cooldown)

    def _fail_locked(self, tier: str) -> bool:
        now = self._clock()
        if tier in self._half_open:
            self._half_open.discard(tier)
            self._open_until[tier] = now + self.cooldown
            return True
        q = self._failures.setdefault(tier, deque())
        q.append(now)
        while q and q[0] < now - self.window:
            q.popleft()
        if len(q) >= self.threshold:
            self._open_until[tier] = now + self.cooldown
            q.clear()
            return True
        return False

    def reset(self) -> None:
        """Close every circuit."""
        with self._lock:
            self._failures.clear()
            self._open_until.clear()
            self._half_open.clear()


class CloudBudget:
    """Spend on the cloud tier, from usage metadata and configured prices.

    Args:
        limit_usd: the budget; ``float("inf")`` for none.
        prices: per model, USD per million ``input`` and ``output`` tokens, for example
            ``{"gpt-4o-mini": {"input": 0.15, "output": 0.60}}``. A model without a price
            costs ``default_price`` (so an unknown model never spends for free by accident).

    Example:
        >>> b = CloudBudget(1.0, {"m": {"input": 1.0, "output": 2.0}})
        >>> b.charge("m", input_tokens=500_000, output_tokens=100_000)
        0.7
        >>> b.exhausted
        False
    """

    def __init__(
        self,
        limit_usd: float = float("inf"),
        prices: Mapping[str, Mapping[str, float]] | None = None,
        *,
        default_price: Mapping[str, float] | None = None,
    ) -> None:
        if limit_usd < 0:
            raise ValueError("cloud budget must be >= 0 USD")
        self.limit_usd = float(limit_usd)
        self.prices = {k: dict(v) for k, v in (prices or {}).items()}
        self.default_price = dict(default_price or {"input": 10.0, "output": 30.0})
        self.spent_usd = 0.0
        self._lock = threading.Lock()

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """USD cost of one call."""
        p = self.prices.get(model, self.default_price)
        return (input_tokens * p.get("input", 0.0) + output_tokens * p.get("output", 0.0)) / 1e6

    def charge(self, model: str, *, input_tokens: int, output_tokens: int) -> float:
        """Add one call's cost to the spend; returns the cost."""
        c = self.cost(model, input_tokens, output_tokens)
        with self._lock:
            self.spent_usd += c
        return round(c, 10)

    @property
    def remaining_usd(self) -> float:
        return max(self.limit_usd - self.spent_usd, 0.0)

    @property
    def exhausted(self) -> bool:
        return self.spent_usd >= self.limit_usd


def _capability_filter(
    candidates: list[Tier], caps: Mapping[str, Capabilities], needs: Needs,
    skipped: list[dict[str, str]],
) -> list[Tier]:
    """Keep the tiers that can serve ``needs``; tool-capable tiers first when tools are bound.

    Raises:
        CapabilityError: none can (``skipped`` then lists every tier and why).
    """
    keep: list[Tier] = []
    for t in candidates:
        c = caps.get(t, Capabilities())
        if needs.images and c.vision is not True:
            skipped.append({"tier": t, "reason": f"no image input: {c.why('vision')}"})
        elif needs.image_urls and c.image_urls is False:
            skipped.append({"tier": t, "reason": f"cannot fetch image URLs: "
                                                 f"{c.why('image_urls')}"})
        elif needs.tools and c.tools is False:
            skipped.append({"tier": t, "reason": f"no tool calling: {c.why('tools')}"})
        else:
            keep.append(t)
    if not keep:
        if needs.images:
            n = needs.images
            raise CapabilityError("image input", skipped,
                                  f" ({n} image{'s' if n > 1 else ''} in the conversation)")
        raise CapabilityError("tool calling", skipped)
    if needs.tools:  # known tool callers first, in the complexity order; unknown ones after
        keep = ([t for t in keep if caps.get(t, Capabilities()).tools]
                + [t for t in keep if not caps.get(t, Capabilities()).tools])
    return keep


@dataclass
class RoutePlan:
    """The tiers to try, in order, and why the others are not tried."""

    complexity: Complexity
    order: list[Tier]
    skipped: list[dict[str, str]] = field(default_factory=list)
    override: Tier | None = None


def plan_route(
    complexity: Complexity | str,
    *,
    available: Iterable[str],
    breaker: CircuitBreaker,
    override: str | None = None,
    allow_cloud: bool = True,
    budget: CloudBudget | None = None,
    context_tokens: int = 0,
    context_windows: Mapping[str, int] | None = None,
    fitted_tokens: Mapping[str, int] | None = None,
    order: Mapping[Complexity, tuple[Tier, ...]] = DEFAULT_ORDER,
    capabilities: Mapping[str, Capabilities] | None = None,
    needs: Needs | None = None,
) -> RoutePlan:
    """Order the tiers for one request.

    Args:
        complexity: the judge's label.
        available: tiers that are configured.
        breaker: tier health; open circuits are skipped unless that leaves nothing.
        override: a tier forced by the caller; only that tier is tried (still subject to
            ``allow_cloud``, which is a privacy guarantee, not a preference).
        allow_cloud: ``False`` never routes to cloud.
        budget: when exhausted, cloud is skipped.
        context_tokens: the conversation's size; tiers whose window is smaller are skipped
            (when at least one tier fits).
        context_windows: per tier, its context window (or prompt budget) in tokens.
        fitted_tokens: per tier, the context's size after fitting it to that tier
            (summarization): a tier whose fitted size still exceeds its window is skipped,
            even when that leaves no tier (it would fail there).
        capabilities: per tier, what it can take (:func:`~stream_langchain.capabilities.
            tier_capabilities`).
        needs: what the request needs: images go only to tiers known to take them; with
            tools bound, tiers known not to call tools are skipped and known tool callers
            come first.

    Raises:
        ValueError: unknown override tier, or an override to cloud with ``allow_cloud=False``,
            or an override to a tier that is not configured.
        CapabilityError: no allowed tier has what ``needs`` asks for (or the override tier
            lacks it).

    Example:
        >>> from stream_langchain.capabilities import Capabilities, Needs
        >>> caps = {"local": Capabilities(vision=False), "cloud": Capabilities(vision=True)}
        >>> plan = plan_route("LOW", available={"local", "cloud"}, breaker=CircuitBreaker(),
        ...                   capabilities=caps, needs=Needs(images=1))
        >>> plan.order, plan.skipped[-1]["reason"]
        (['cloud'], 'no image input: vision=False (profile)')
        >>> plan_route("LOW", available={"local", "cloud"}, breaker=CircuitBreaker(),
        ...            capabilities=caps, needs=Needs(images=1), allow_cloud=False)
        Traceback (most recent call last):
        ...
        stream_langchain.errors.CapabilityError: no tier can serve this request: it needs image
        input (1 image in the conversation) (hpc: not configured; cloud: privacy:
        allow_cloud=False; local: no image input: vision=False (profile))
    """
    caps = capabilities or {}
    need = needs or Needs()
    c = Complexity(complexity)
    avail = set(available)
    skipped: list[dict[str, str]] = []
    if override is not None:
        tier = validate_tier(override)
        if tier == "cloud" and not allow_cloud:
            raise ValueError("tier override 'cloud' refused: allow_cloud=False (privacy)")
        if tier not in avail:
            raise ValueError(f"tier override {tier!r}: that tier is not configured")
        _capability_filter([tier], caps, need, skipped)
        return RoutePlan(c, [tier], [], override=tier)

    candidates: list[Tier] = []
    for tier in order[c]:
        if tier not in avail:
            skipped.append({"tier": tier, "reason": "not configured"})
        elif tier == "cloud" and not allow_cloud:
            skipped.append({"tier": tier, "reason": "privacy: allow_cloud=False"})
        elif tier == "cloud" and budget is not None and budget.exhausted:
            skipped.append({"tier": tier, "reason": "cloud budget exhausted"})
        else:
            candidates.append(tier)
    if need.images or need.tools:
        candidates = _capability_filter(candidates, caps, need, skipped)

    candidates = _by_size(candidates, context_tokens, context_windows or {}, fitted_tokens,
                          skipped)
    healthy = [t for t in candidates if breaker.allow(t)]
    if healthy and len(healthy) < len(candidates):
        for t in candidates:
            if t not in healthy:
                skipped.append({"tier": t, "reason": "circuit open after repeated failures"})
        candidates = healthy
    return RoutePlan(c, candidates, skipped)


def _by_size(candidates: list[Tier], context_tokens: int, windows: Mapping[str, int],
             fitted_tokens: Mapping[str, int] | None,
             skipped: list[dict[str, str]]) -> list[Tier]:
    """The tiers the conversation fits: after fitting when ``fitted_tokens`` is known (a tier
    it still does not fit is skipped, even if none is left), else by its raw size (skipped
    only while another tier fits)."""
    if fitted_tokens is not None:
        fitting = [t for t in candidates
                   if fitted_tokens.get(t, context_tokens) <= windows.get(t, 1 << 62)]
        for t in candidates:
            if t not in fitting:
                skipped.append({"tier": t, "reason": (
                    f"context {context_tokens} tokens, {fitted_tokens.get(t, context_tokens)} "
                    f"after fitting > budget {windows[t]}")})
        return fitting
    fits = [t for t in candidates if context_tokens <= windows.get(t, 1 << 62)]
    if not fits or len(fits) == len(candidates):
        return candidates
    for t in candidates:
        if t not in fits:
            skipped.append(
                {"tier": t, "reason": f"context {context_tokens} tokens > window {windows[t]}"})
    return fits
