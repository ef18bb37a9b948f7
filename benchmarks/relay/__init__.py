"""Relay benchmark: this relay vs streamrelay 0.3.1 (``python -m benchmarks.relay``)."""

from __future__ import annotations

from benchmarks.relay.bench import main, run

__all__ = ["main", "run"]
