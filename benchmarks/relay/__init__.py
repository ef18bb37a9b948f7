"""Relay benchmark: this relay vs streamrelay 0.3.1 (``python -m benchmarks.relay``).

The code is in :mod:`benchmarks.relay.bench` (``main``, ``run``); this package imports nothing
so that :mod:`benchmarks.relay.report` reads results without the relay's dependencies.
"""
