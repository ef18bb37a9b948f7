"""Routing policy: pure functions, no models."""

from __future__ import annotations

import pytest

from stream_langchain.routing import CircuitBreaker, CloudBudget, plan_route, validate_tier

ALL = {"local", "hpc", "cloud"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("label", "order"), [
    ("LOW", ["local", "hpc", "cloud"]),
    ("MEDIUM", ["hpc", "cloud", "local"]),
    ("HIGH", ["cloud", "hpc", "local"]),
])
def test_paper_orders(label: str, order: list[str]) -> None:
    """Each complexity gets the paper's tier order."""
    assert plan_route(label, available=ALL, breaker=CircuitBreaker()).order == order


def test_unconfigured_tiers_are_skipped_with_reason() -> None:
    plan = plan_route("MEDIUM", available={"local"}, breaker=CircuitBreaker())
    assert plan.order == ["local"]
    assert plan.skipped == [{"tier": "hpc", "reason": "not configured"},
                            {"tier": "cloud", "reason": "not configured"}]


def test_privacy_removes_cloud() -> None:
    plan = plan_route("HIGH", available=ALL, breaker=CircuitBreaker(), allow_cloud=False)
    assert plan.order == ["hpc", "local"]


def test_override_wins_but_not_over_privacy() -> None:
    """An override tries only that tier; it cannot lift allow_cloud=False."""
    assert plan_route("HIGH", available=ALL, breaker=CircuitBreaker(),
                      override="local").order == ["local"]
    with pytest.raises(ValueError, match="privacy"):
        plan_route("LOW", available=ALL, breaker=CircuitBreaker(), override="cloud",
                   allow_cloud=False)
    with pytest.raises(ValueError, match="not configured"):
        plan_route("LOW", available={"local"}, breaker=CircuitBreaker(), override="hpc")


def test_unknown_tier_is_named() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gpu'.*local, hpc, cloud"):
        validate_tier("gpu")
    with pytest.raises(ValueError, match="unknown tier"):
        plan_route("LOW", available=ALL, breaker=CircuitBreaker(), override="gpu")


def test_context_fit_skips_small_windows() -> None:
    plan = plan_route("LOW", available=ALL, breaker=CircuitBreaker(), context_tokens=5000,
                      context_windows={"local": 2048, "hpc": 32768, "cloud": 128000})
    assert plan.order == ["hpc", "cloud"]
    assert plan.skipped == [{"tier": "local", "reason": "context 5000 tokens > window 2048"}]


def test_context_fit_keeps_tiers_when_none_fits() -> None:
    """If no tier fits, none is dropped for it: a tier's own error is better than nothing."""
    plan = plan_route("LOW", available={"local"}, breaker=CircuitBreaker(),
                      context_tokens=10**6, context_windows={"local": 10})
    assert plan.order == ["local"]


def test_breaker_opens_after_threshold_within_window() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=3, window=10, cooldown=5, clock=clock)
    b.record_failure("hpc")
    clock.now = 11  # the first failure has left the window
    b.record_failure("hpc")
    b.record_failure("hpc")
    assert b.state("hpc") == "closed"
    b.record_failure("hpc")
    assert b.state("hpc") == "open" and not b.allow("hpc")


def test_breaker_half_open_then_closes_or_reopens() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=1, window=10, cooldown=5, clock=clock)
    b.record_failure("cloud")
    assert b.state("cloud") == "open"
    clock.now = 5.1
    assert b.state("cloud") == "half-open" and b.allow("cloud")
    b.record_failure("cloud")
    assert b.state("cloud") == "open", "a failure while half-open reopens at once"
    clock.now = 10.2
    assert b.state("cloud") == "half-open"
    b.record_success("cloud")
    assert b.state("cloud") == "closed"


def test_open_circuit_is_skipped_unless_it_is_the_last_hope() -> None:
    b = CircuitBreaker(threshold=1)
    b.record_failure("hpc")
    plan = plan_route("MEDIUM", available=ALL, breaker=b)
    assert plan.order == ["cloud", "local"]
    only = plan_route("MEDIUM", available={"hpc"}, breaker=b)
    assert only.order == ["hpc"]


def test_budget_exhaustion_skips_cloud() -> None:
    budget = CloudBudget(0.01, {"m": {"input": 1000.0, "output": 1000.0}})
    assert plan_route("HIGH", available=ALL, breaker=CircuitBreaker(),
                      budget=budget).order[0] == "cloud"
    budget.charge("m", input_tokens=10, output_tokens=0)
    plan = plan_route("HIGH", available=ALL, breaker=CircuitBreaker(), budget=budget)
    assert plan.order == ["hpc", "local"]
    assert {"tier": "cloud", "reason": "cloud budget exhausted"} in plan.skipped


def test_unpriced_model_is_not_free() -> None:
    assert CloudBudget(1.0).cost("unknown-model", 1000, 1000) > 0


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"window": 0}, {"cooldown": -1}])
def test_breaker_rejects_bad_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
