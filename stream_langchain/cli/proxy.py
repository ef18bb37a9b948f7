"""``stream proxy``, ``stream keys create|list|revoke`` and ``stream usage``.

The database (keys and usage) is ``--db URL``, else ``$STREAM_PROXY_DB``, else a SQLite file
in the user's data directory; ``postgresql://user:pass@host/db`` lets several proxies share it.

Example:
    >>> import subprocess, sys, tempfile, os
    >>> db = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "p.db")
    >>> out = subprocess.run([sys.executable, "-m", "stream_langchain.cli.main", "keys", "create",
    ...                       "--name", "alice", "--db", db], capture_output=True, text=True)
    >>> out.stdout.startswith("sk-stream-")
    True
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

__all__ = ["DEFAULTS", "add_proxy_commands"]

DEFAULTS = {"rpm": 60, "tpm": 200_000, "max_concurrent": 4, "max_messages": 500,
            "max_message_chars": 100_000, "max_body_bytes": 32 * 1024 * 1024}
"""The proxy's default limits, as the options show them (kept equal to ``Limits`` and
``MessageLimits`` by a test; written out so ``stream --help`` does not import the server)."""


def _missing_extra(exc: ImportError) -> RuntimeError:
    """One line naming what is missing and the pip command that installs it."""
    return RuntimeError(f"the proxy needs the [proxy] extra ({exc.name or exc} is not "
                        "installed): pip install 'stream-tiered[proxy]'")


def _store(args: argparse.Namespace) -> Any:
    try:
        from stream_langchain.proxy.usage import Store
    except ImportError as exc:
        raise _missing_extra(exc) from None
    return Store(args.db)  # StoreError (a RuntimeError): one line, password masked


def _auth_methods(value: str) -> tuple[str, ...]:
    """``--auth keys,globus`` -> ``("keys", "globus")``."""
    methods = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    bad = [m for m in methods if m not in ("keys", "globus")]
    if not methods or bad:
        raise argparse.ArgumentTypeError(f"expected keys, globus or keys,globus; got {value!r}")
    return methods


def _globus(args: argparse.Namespace) -> Any:
    """The Globus authenticator from the settings' ``[proxy.globus]`` (``--auth globus``)."""
    from stream_langchain.proxy.globus import GlobusAuth
    from stream_langchain.settings import Settings, default_config_path

    path = args.config or default_config_path()
    settings = Settings.load(path) if path is not None else None
    if settings is None or settings.proxy.globus is None:
        raise ValueError("--auth globus needs a [proxy.globus] section in the settings file "
                         f"({path or 'none found: pass --config'}); see docs/globus.md")
    return GlobusAuth.from_settings(settings.proxy.globus)


def _redis_url(args: argparse.Namespace) -> str | None:
    """``--redis``, else the settings' ``[shared] redis_url`` (``None``: nothing shared)."""
    if getattr(args, "redis", None):
        return str(args.redis)
    from stream_langchain.settings import Settings, default_config_path

    path = getattr(args, "config", None) or default_config_path()
    return Settings.load(path).shared.redis_url if path is not None else None


def _cmd_proxy(args: argparse.Namespace) -> int:
    try:
        from stream_langchain.proxy import (
            Limits,
            MessageLimits,
            ProxyConfig,
            create_app,
            serve,
        )
        from stream_langchain.proxy.server import bind
    except ImportError as exc:
        raise _missing_extra(exc) from None

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ProxyConfig(
        limits=Limits(rpm=args.rpm, tpm=args.tpm, max_concurrent=args.concurrency),
        metrics_key=args.metrics_key,
        messages=MessageLimits(max_messages=args.max_messages,
                               max_message_chars=args.max_message_chars),
        max_body_bytes=args.max_body_bytes, auth=args.auth, redis_url=_redis_url(args))
    globus = _globus(args) if "globus" in args.auth else None
    try:  # before loading any model, and before saying "serving"
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise RuntimeError(f"cannot listen on {args.host}:{args.port}: "
                           f"{exc.strerror or exc} (another server on that port? pick one "
                           "with --port)") from None
    try:
        store = _store(args)
    except BaseException:
        sock.close()
        raise
    try:
        from stream_langchain.cli.chat import build_chat

        with build_chat(args) as chat:
            app = create_app(chat, store=store, config=config, globus=globus)
            print(f"stream proxy: http://{args.host}:{args.port}/v1 (models: "
                  f"{', '.join(['stream'] + [f'stream-{t}' for t in chat.tiers])}); "
                  f"keys and usage in {store.url_safe}", file=sys.stderr, flush=True)
            try:
                serve(app, host=args.host, port=args.port, sock=sock,
                      graceful_timeout_s=args.graceful_timeout, log_level=args.log_level)
            except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
                pass
    finally:
        sock.close()
        store.close()
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from stream_langchain.proxy.auth import KeyRing

    store = _store(args)
    try:
        key, rec = KeyRing(store).create(args.name, admin=args.admin, rpm=args.rpm,
                                         tpm=args.tpm, max_concurrent=args.concurrency)
    finally:
        store.close()
    print(key)
    print(f"key id {rec.key_id} for {rec.name!r}{' (admin)' if rec.admin else ''}: shown "
          "once, store it now (only its SHA-256 is kept)", file=sys.stderr)
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        keys = store.list_keys()
    finally:
        store.close()
    rows = [{"key_id": k.key_id, "name": k.name, "admin": k.admin, "rpm": k.rpm, "tpm": k.tpm,
             "max_concurrent": k.max_concurrent,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.created)),
             "revoked": None if k.revoked is None else
             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.revoked))} for k in keys]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no keys (create one with `stream keys create --name NAME`)")
    for r in rows:
        state = f"revoked {r['revoked']}" if r["revoked"] else "active"
        print(f"{r['key_id']}  {r['name']:<20} {'admin ' if r['admin'] else ''}{state}  "
              f"created {r['created']}")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from stream_langchain.proxy.auth import KeyRing

    store = _store(args)
    try:
        done = KeyRing(store).revoke(args.key_id)
    finally:
        store.close()
    url = _redis_url(args)
    if done and url:  # every replica sharing this Redis refuses the key at once
        import asyncio

        from stream_langchain.proxy.shared import SharedState

        async def tell() -> bool:
            shared = SharedState(url)
            try:
                return await shared.revoke(args.key_id)
            finally:
                await shared.close()
        if not asyncio.run(tell()):
            print("stream: warning: Redis unreachable; other replicas refuse the key once "
                  "their key cache expires", file=sys.stderr)
    if not done:
        print(f"stream: error: no active key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id} (proxies sharing Redis refuse it at once; others within "
          "their key cache time, 5 s by default)")
    return 0


def _cloud_price(args: argparse.Namespace) -> tuple[str, Any] | None:
    """The configured cloud model and its price (settings ``[cloud] model`` and
    ``[budget.prices."<model>"]``), or ``None`` when either is missing."""
    from stream_langchain.settings import Settings, default_config_path

    path = args.config or default_config_path()
    if path is None:
        return None
    s = Settings.load(path)
    price = s.budget.prices.get(s.cloud.model or "")
    return None if price is None or s.cloud.model is None else (s.cloud.model, price)


def _cmd_usage(args: argparse.Namespace) -> int:
    store = _store(args)
    since = time.time() - args.hours * 3600 if args.hours else 0.0
    try:
        from stream_langchain.proxy.usage import cost_avoided

        priced = _cloud_price(args)
        rows = store.summary(identity=args.identity, since=since, by=args.by)
    finally:
        store.close()
    if priced is not None:
        rows = cost_avoided(rows, input_usd_per_m=priced[1].input,
                            output_usd_per_m=priced[1].output)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no usage recorded")
        return 0
    saved = f" {'avoided $':>9}" if priced is not None else ""
    who = f"{'identity':<20} " if args.by == "identity" else ""
    print(f"{who}{'tier':<6} {'requests':>8} {'in tok':>9} {'out tok':>9} "
          f"{'cloud $':>9}{saved} {'hpc s':>9} {'errors':>6} {'aborted':>7}")
    for r in rows:
        who = f"{r['identity']:<20} " if args.by == "identity" else ""
        saved = f" {r['cost_avoided_usd']:>9.4f}" if priced is not None else ""
        print(f"{who}{str(r['tier'] or '-'):<6} {r['requests']:>8} "
              f"{r['input_tokens']:>9} {r['output_tokens']:>9} {r['cloud_cost_usd']:>9.4f}"
              f"{saved} {r['hpc_seconds']:>9.2f} {r['errors']:>6} {r['aborted']:>7}")
    if priced is not None:
        print(f"avoided $: what the local and HPC tokens would have cost on {priced[0]} "
              f"(${priced[1].input}/M in, ${priced[1].output}/M out)", file=sys.stderr)
    else:
        print("(no avoided-cost column: set [cloud] model and its [budget.prices] in the "
              "settings file, --config)", file=sys.stderr)
    return 0


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="database URL (default: $STREAM_PROXY_DB or a SQLite file in "
                   "the user's data directory)")


def _limit_args(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    p.add_argument("--rpm", type=int, default=DEFAULTS["rpm"] if defaults else None,
                   help="requests per minute per identity")
    p.add_argument("--tpm", type=int, default=DEFAULTS["tpm"] if defaults else None,
                   help="tokens per minute per identity")
    p.add_argument("--concurrency", type=int,
                   default=DEFAULTS["max_concurrent"] if defaults else None,
                   help="concurrent requests per identity")


def add_proxy_commands(sub: Any) -> None:
    """Add ``proxy``, ``keys`` and ``usage`` to the ``stream`` command's subparsers."""
    proxy = sub.add_parser("proxy", help="serve the OpenAI-compatible API (HPC-as-API)")
    proxy.add_argument("--host", default="127.0.0.1")
    proxy.add_argument("--port", type=int, default=8000)
    proxy.add_argument("--config", help="settings file (TOML); default: the embedded stack")
    proxy.add_argument("--no-hpc", action="store_true", help="embedded stack without HPC")
    proxy.add_argument("--max-tokens", type=int, default=256,
                       help="answer length for the embedded stack")
    _db_arg(proxy)
    _limit_args(proxy, defaults=True)
    proxy.add_argument("--max-messages", type=int, default=DEFAULTS["max_messages"])
    proxy.add_argument("--max-message-chars", type=int, default=DEFAULTS["max_message_chars"])
    proxy.add_argument("--max-body-bytes", type=int, default=DEFAULTS["max_body_bytes"],
                       help="largest request body (inline base64 images count in full)")
    proxy.add_argument("--auth", type=_auth_methods, default=("keys",), metavar="METHODS",
                       help="who may call: keys (STREAM API keys, the default), globus (Globus "
                       "Auth tokens, settings [proxy.globus]) or keys,globus")
    proxy.add_argument("--redis", metavar="URL",
                       help="Redis shared by proxy replicas: rate limits, key revocation, "
                       "circuit breakers (default: settings [shared] redis_url; none: "
                       "per-process)")
    proxy.add_argument("--graceful-timeout", type=float, default=30.0,
                       help="seconds running streams get to finish at shutdown (then they "
                       "end with an error event server_shutting_down)")
    proxy.add_argument("--metrics-key", action="store_true",
                       help="GET /metrics asks for an API key (default: open, no identities "
                       "or content in it)")
    proxy.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    proxy.set_defaults(func=_cmd_proxy)

    keys = sub.add_parser("keys", help="manage the proxy's API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True, help="who the key is for (usage identity)")
    create.add_argument("--admin", action="store_true", help="may read /v1/admin/usage")
    _limit_args(create, defaults=False)
    _db_arg(create)
    create.set_defaults(func=_cmd_keys_create)
    lst = ksub.add_parser("list", help="list keys (ids and names, never the keys)")
    lst.add_argument("--json", action="store_true")
    _db_arg(lst)
    lst.set_defaults(func=_cmd_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.add_argument("--redis", metavar="URL",
                        help="also tell the replicas sharing this Redis (default: settings "
                        "[shared] redis_url)")
    _db_arg(revoke)
    revoke.set_defaults(func=_cmd_keys_revoke)

    usage = sub.add_parser("usage", help="usage per identity and tier")
    usage.add_argument("--identity", help="one identity only")
    usage.add_argument("--hours", type=float, help="only the last N hours")
    usage.add_argument("--by", choices=["identity", "tier"], default="identity",
                       help="group by identity and tier (default) or by tier only")
    usage.add_argument("--config", help="settings file whose cloud model and prices give the "
                       "avoided-cost column (default: the usual settings file, if any)")
    usage.add_argument("--json", action="store_true")
    _db_arg(usage)
    usage.set_defaults(func=_cmd_usage)
