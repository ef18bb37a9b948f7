"""Helpers shared by the benchmarks: query topics and a percentile."""

from __future__ import annotations

__all__ = ["TOPICS", "pct"]

# Varied topics, so no two runs share a prompt (defeats prefix and judge caches).
TOPICS = ["rivers", "prime numbers", "the French revolution", "photosynthesis", "hash tables",
          "black holes", "sourdough bread", "the immune system", "TCP handshakes", "volcanoes",
          "jazz harmony", "glaciers", "compilers", "honey bees", "tax policy", "quantum dots"]


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` with linear interpolation (numpy's default method)."""
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
