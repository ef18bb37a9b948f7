"""Benchmarks of STREAM: each writes JSON and a PNG plot under its results/ folder."""
