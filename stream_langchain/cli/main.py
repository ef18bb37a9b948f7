"""The ``stream`` command.

``stream chat "question"``   stream one answer (header: routing; footer: TTFT, tokens/s)
``stream chat``              interactive multi-turn chat
``stream chat --json -``     read the question from stdin, print one JSON object
``stream demo``              sample questions of each complexity through the embedded stack
``stream relay``             run the WebSocket relay (the HPC data plane)
``stream proxy``             the OpenAI-compatible API (``stream keys``, ``stream usage``)
``stream judge`` / ``stream bench judge``   label queries / evaluate a judge

Settings come from ``--config PATH``, else ``$STREAM_CONFIG``, ``./stream.toml`` or
``~/.config/stream/stream.toml``; with none, the embedded default runs (offline).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stream_langchain.cli.chat import add_chat_commands
from stream_langchain.cli.proxy import add_proxy_commands

__all__ = ["build_parser", "main"]

def _cmd_relay(args: argparse.Namespace) -> int:
    from relay.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    add_chat_commands(sub)
    add_proxy_commands(sub)

    try:
        from relay.cli import add_arguments as relay_arguments
    except ImportError:  # pragma: no cover - relay is part of the distribution
        pass
    else:
        relay = sub.add_parser("relay", help="run the WebSocket relay (HPC data plane)")
        relay_arguments(relay)
        relay.set_defaults(func=_cmd_relay)

    try:
        from stream_langchain.cli.judge import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stream`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"stream: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
