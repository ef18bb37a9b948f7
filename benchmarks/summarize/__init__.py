"""Benchmark: tier-aware context summarization (``python -m benchmarks.summarize``)."""
