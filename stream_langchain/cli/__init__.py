"""The ``stream`` command: one module per command group.

- :mod:`~stream_langchain.cli.main`: the parser and entry point; ``stream relay``.
- :mod:`~stream_langchain.cli.chat`: ``stream chat`` and ``stream demo``.
- :mod:`~stream_langchain.cli.judge`: ``stream judge`` and ``stream bench judge``.

A new command goes in a module of its own with an ``add_..._commands(subparsers)`` function,
called from :func:`~stream_langchain.cli.main.build_parser`. Nothing in the package imports
this one (only the ``stream`` console script does).
"""

from __future__ import annotations

from stream_langchain.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
