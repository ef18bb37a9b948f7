"""Command line of the relay server: ``python -m relay`` (also ``stream relay``).

The relay secret comes from the ``STREAM_RELAY_SECRET`` environment variable or from
``--secret-file``; never from a flag (flags show up in process listings). Without a
secret the relay refuses to start unless ``--insecure-dev`` is given.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> parser.parse_args(["--port", "9000"]).port
    9000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from relay.config import Limits, Timeouts
from relay.server import RelayServer

__all__ = ["SECRET_ENV", "add_arguments", "main", "run"]

#: Environment variable holding the relay secret.
SECRET_ENV = "STREAM_RELAY_SECRET"  # noqa: S105 - a variable name, not a secret
logger = logging.getLogger("relay.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the relay's options to ``parser`` (so ``stream relay`` can reuse them).

    Args:
        parser: The parser or sub-parser to extend.
    """
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 = any (default: 8765)")
    parser.add_argument(
        "--secret-file", type=Path, help=f"file holding the relay secret (else ${SECRET_ENV})"
    )
    parser.add_argument(
        "--insecure-dev",
        action="store_true",
        help="run without a secret: no authorization at all (local development only)",
    )
    parser.add_argument("--max-channels", type=int, default=10_000, help="channels at once")
    parser.add_argument(
        "--max-frame-bytes", type=int, default=1 << 20, help="largest frame accepted"
    )
    parser.add_argument(
        "--pair-timeout",
        type=float,
        default=120.0,
        help="seconds a channel may wait for its second peer",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=300.0, help="seconds a channel may go silent"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def _read_secret(args: argparse.Namespace) -> str | None:
    if args.secret_file is not None:
        try:
            secret = args.secret_file.read_text().strip()
        except OSError as exc:
            raise SystemExit(f"relay: cannot read --secret-file: {exc.strerror}") from None
        if not secret:
            raise SystemExit("relay: --secret-file is empty")
        return secret
    return os.environ.get(SECRET_ENV) or None


async def _serve(server: RelayServer) -> None:
    await server.start()
    # The first line on stdout names the URL (scripts and benchmarks read it).
    print(f"relay listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()


def run(args: argparse.Namespace) -> int:
    """Run a relay server with parsed arguments until SIGINT/SIGTERM.

    Args:
        args: Arguments parsed by a parser extended with :func:`add_arguments`.

    Returns:
        The process exit status.
    """
    secret = _read_secret(args)
    if secret is None and not args.insecure_dev:
        print(
            f"relay: no secret; set ${SECRET_ENV} or --secret-file "
            "(or --insecure-dev for local development)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if secret is None:
        logger.warning("running with --insecure-dev: every connection is authorized")
    try:
        server = RelayServer(
            secret,
            args.host,
            args.port,
            insecure=secret is None,
            timeouts=Timeouts(pair=args.pair_timeout, idle=args.idle_timeout),
            limits=Limits(max_channels=args.max_channels, max_frame_bytes=args.max_frame_bytes),
        )
    except ValueError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"relay: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m relay``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m relay", description="Run the STREAM relay server."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
