"""Complexity-judge benchmark (see __main__.py)."""
