"""The proxy's database: API keys (hashes only) and usage rows, through SQLAlchemy.

SQLite by default (one file, no server); PostgreSQL with the same code when the URL says so
(``postgresql://user:pass@host/db``, driven by psycopg 3), so several proxy replicas share
keys and usage. Writes from the request path never wait on the database: :meth:`Store.record`
queues the row for a writer thread, :meth:`Store.flush` waits until it is written.

Example:
    >>> store = Store("sqlite://")
    >>> store.record(UsageRow(identity="alice", key_id="k1", model="stream", tier="local",
    ...                       status="ok", stream=True, input_tokens=12, output_tokens=30))
    >>> store.flush()
    >>> [(r["identity"], r["tier"], r["requests"], r["output_tokens"]) for r in store.summary()]
    [('alice', 'local', 1, 30)]
    >>> store.close()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from stream_langchain.errors import StoreError

__all__ = ["DB_ENV", "KeyRecord", "Store", "StoreError", "UsageRow", "cost_avoided",
           "default_db_url", "safe_url"]

logger = logging.getLogger(__name__)

DB_ENV = "STREAM_PROXY_DB"
"""Environment variable with the database URL (default: a SQLite file in the user's data dir)."""

metadata = MetaData()

api_keys = Table(
    "stream_api_keys", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("key_hash", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("admin", Boolean, nullable=False, default=False),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrent", Integer, nullable=True),
    Column("created", Float, nullable=False),
    Column("revoked", Float, nullable=True),
)

usage = Table(
    "stream_usage", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("identity", String(200), nullable=False, index=True),
    Column("key_id", String(32), nullable=True),
    Column("model", String(100), nullable=False),
    Column("tier", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("output_chunks", Integer, nullable=False, default=0),
    Column("cloud_cost_usd", Float, nullable=False, default=0.0),
    Column("hpc_seconds", Float, nullable=False, default=0.0),
    Column("duration_ms", Float, nullable=False, default=0.0),
    Column("ttft_ms", Float, nullable=True),
    Column("error", String(500), nullable=True),
)


def default_db_url() -> str:
    """``$STREAM_PROXY_DB``, else ``sqlite:///<XDG data dir>/stream/proxy.db``."""
    env = os.environ.get(DB_ENV)
    if env:
        return env
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'stream' / 'proxy.db'}"


def _normalize(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _one_line(exc: BaseException, url: str) -> str:
    """The error's first line, with the URL's password (if any) masked."""
    orig = getattr(exc, "orig", None) or exc
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]
    try:
        password = make_url(url).password
    except Exception:  # unparsable: nothing to take the password from
        password = None
        text = "not a database URL (expected dialect://user:password@host/db or sqlite:///path)"
    if password:
        text = text.replace(str(password), "***")
    return f"{type(orig).__name__}: {text}"


def safe_url(url: str) -> str:
    """The URL with its password masked (for logs and messages)."""
    try:
        return _normalize(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say so without echoing it
        return "<unparsable database URL>"


def cost_avoided(rows: list[dict[str, Any]], *, input_usd_per_m: float,
                 output_usd_per_m: float) -> list[dict[str, Any]]:
    """``rows`` (from :meth:`Store.summary`) with ``cost_avoided_usd``: what the tokens served
    by the free tiers (local, HPC) would have cost on the cloud model at these prices (USD per
    million tokens); zero for the cloud tier's own rows and for requests no tier answered.

    Example:
        >>> rows = [{"tier": "local", "input_tokens": 1_000_000, "output_tokens": 500_000},
        ...         {"tier": "cloud", "input_tokens": 10, "output_tokens": 10}]
        >>> [r["cost_avoided_usd"] for r in cost_avoided(rows, input_usd_per_m=0.15,
        ...                                                output_usd_per_m=0.6)]
        [0.45, 0.0]
    """
    out = []
    for row in rows:
        saved = 0.0
        if row.get("tier") in ("local", "hpc"):
            saved = (row["input_tokens"] * input_usd_per_m
                     + row["output_tokens"] * output_usd_per_m) / 1e6
        out.append({**row, "cost_avoided_usd": round(saved, 6)})
    return out


@dataclass
class UsageRow:
    """One request's usage (written once, when the request ends however it ends)."""

    identity: str
    key_id: str | None
    model: str
    tier: str | None
    status: str
    """``ok``, ``error`` (refused, or failed after starting: ``error`` says with which HTTP
    status and code) or ``aborted`` (the client left)."""
    stream: bool
    input_tokens: int
    output_tokens: int
    output_chunks: int = 0
    cloud_cost_usd: float = 0.0
    hpc_seconds: float = 0.0
    duration_ms: float = 0.0
    ttft_ms: float | None = None
    error: str | None = None
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True)
class KeyRecord:
    """An API key as stored: never the key itself, only its SHA-256."""

    key_id: str
    key_hash: str
    name: str
    admin: bool
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    created: float
    revoked: float | None


class Store:
    """Keys and usage in one SQL database.

    Args:
        url: SQLAlchemy URL (``sqlite:///path``, ``sqlite://`` in memory,
            ``postgresql://...``).
        create: create the tables when missing.
    """

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        url = url or default_db_url()
        try:
            self._open(_normalize(url), create)
        except (SQLAlchemyError, ImportError, OSError) as exc:
            # One line, the password masked: SQLAlchemy's messages can echo the URL.
            raise StoreError(f"cannot open the database {safe_url(url)}: "
                             f"{_one_line(exc, url)}") from None
        self._pending: deque[UsageRow | threading.Event | None] = deque()
        self._hurry = threading.Event()  # a flush or close waits: write now
        self._writer = threading.Thread(target=self._write_loop, name="stream-usage-writer",
                                        daemon=True)
        self._writer.start()
        self._closed = False

    def _open(self, parsed: URL, create: bool) -> None:
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                # A relative path is relative to the current directory: say which file.
                path = Path(db).expanduser().resolve()
                parsed = parsed.set(database=str(path))
                path.parent.mkdir(parents=True, exist_ok=True)
                logger.info("keys and usage in the SQLite file %s", path)
            else:
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        self.url_safe = parsed.render_as_string(hide_password=True)
        if create:
            metadata.create_all(self.engine)

    def __repr__(self) -> str:
        return f"Store({self.url_safe!r})"

    # ------------------------------------------------------------------ usage

    BATCH_S = 0.1
    """How often the writer writes what gathered, in one transaction: a row per request each
    in its own transaction cost the proxy ~3 ms of CPU per request, and the writer thread
    woken per row took the GIL from the event loop. Recording only appends to a deque (no
    lock, no wake-up); flush() and close() do not wait for the period."""

    def record(self, row: UsageRow) -> None:
        """Queue ``row`` for writing (returns at once; written within :attr:`BATCH_S`)."""
        self._pending.append(row)

    def flush(self) -> None:
        """Wait until every queued row is in the database."""
        if not self._writer.is_alive():
            return
        done = threading.Event()
        self._pending.append(done)
        self._hurry.set()
        while not done.wait(1.0):
            if not self._writer.is_alive():
                return

    def _write_loop(self) -> None:
        while True:
            self._hurry.wait(self.BATCH_S)
            self._hurry.clear()
            if self._pending and self._write_pending():
                return

    def _write_pending(self) -> bool:
        """Write every pending row in one transaction, then release the flushes waiting on
        them; ``True`` when the store is closing."""
        batch: list[UsageRow] = []
        marks: list[threading.Event] = []
        stop = False
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, UsageRow):
                batch.append(item)
            elif item is None:
                stop = True
            else:
                marks.append(item)
        if batch:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(usage), [asdict(r) for r in batch])
            except Exception:
                logger.exception("could not write %d usage row(s) to %s", len(batch),
                                 self.url_safe)
        for mark in marks:
            mark.set()
        return stop

    def rows(self, *, identity: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Raw usage rows, oldest first."""
        q = select(usage).where(usage.c.ts >= since).order_by(usage.c.id)
        if identity is not None:
            q = q.where(usage.c.identity == identity)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def summary(self, *, identity: str | None = None, since: float = 0.0,
                by: str = "identity") -> list[dict[str, Any]]:
        """Totals per identity and tier (``by="tier"``: per tier only): requests, tokens,
        cloud cost, HPC seconds, and how many requests ended ``aborted`` or ``error``
        (refused requests are rows with zero tokens and one of these statuses)."""
        if by not in ("identity", "tier"):
            raise ValueError(f"by must be 'identity' or 'tier', not {by!r}")
        keys = [usage.c.identity, usage.c.tier] if by == "identity" else [usage.c.tier]
        q = (select(*keys,
                    func.count().label("requests"),
                    func.sum(usage.c.input_tokens).label("input_tokens"),
                    func.sum(usage.c.output_tokens).label("output_tokens"),
                    func.sum(usage.c.cloud_cost_usd).label("cloud_cost_usd"),
                    func.sum(usage.c.hpc_seconds).label("hpc_seconds"),
                    func.sum((usage.c.status == "aborted").cast(Integer)).label("aborted"),
                    func.sum((usage.c.status == "error").cast(Integer)).label("errors"))
             .where(usage.c.ts >= since)
             .group_by(*keys)
             .order_by(*keys))
        if identity is not None:
            q = q.where(usage.c.identity == identity)
        with self.engine.connect() as conn:
            out = []
            for r in conn.execute(q):
                d = dict(r._mapping)
                for k in ("requests", "input_tokens", "output_tokens", "aborted", "errors"):
                    d[k] = int(d[k] or 0)
                d["cloud_cost_usd"] = float(d["cloud_cost_usd"] or 0.0)
                d["hpc_seconds"] = round(float(d["hpc_seconds"] or 0.0), 6)
                out.append(d)
            return out

    # ------------------------------------------------------------------ keys

    def add_key(self, rec: KeyRecord) -> None:
        """Store a new key record."""
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(**asdict(rec)))

    def get_key(self, key_id: str) -> KeyRecord | None:
        """The record for ``key_id`` (revoked ones included), or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        return None if row is None else KeyRecord(**dict(row._mapping))

    def list_keys(self) -> list[KeyRecord]:
        """Every key record, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created)).all()
        return [KeyRecord(**dict(r._mapping)) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Mark ``key_id`` revoked; ``False`` when there is no such active key."""
        with self.engine.begin() as conn:
            res = conn.execute(update(api_keys)
                               .where(api_keys.c.key_id == key_id, api_keys.c.revoked.is_(None))
                               .values(revoked=time.time()))
        return bool(res.rowcount)

    def active_key_count(self) -> int:
        """How many keys can authenticate."""
        with self.engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(api_keys)
                             .where(api_keys.c.revoked.is_(None))).scalar_one()
        return int(n)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Write what is queued, stop the writer, release connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._pending.append(None)
        self._hurry.set()
        self._writer.join(timeout=30)
        self.engine.dispose()
