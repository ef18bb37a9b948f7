"""Summary caches keyed by a hash of the exact message prefix a summary covers.

A client that resends the whole history every request (every OpenAI client does) sends the
same prefix again, so the summary written last turn is found by hashing the prefix: the next
request summarizes only what was added since. :class:`LRUSummaryCache` lives in the process;
:class:`SQLiteSummaryCache` is a file that separate processes share.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

__all__ = ["LRUSummaryCache", "RedisSummaryCache", "SQLiteSummaryCache", "SummaryCache",
           "canonical", "prefix_hashes"]


def canonical(message: BaseMessage) -> bytes:
    """What identifies a message for the cache: role, content, tool ids (and call args)."""
    data: dict[str, object] = {"role": message.type, "content": message.content}
    if isinstance(message, AIMessage) and message.tool_calls:
        data["tool_calls"] = [[c.get("id"), c["name"], c["args"]] for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        data["tool_call_id"] = message.tool_call_id
    if message.name:
        data["name"] = message.name
    return json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()


def prefix_hashes(messages: Sequence[BaseMessage], namespace: str = "") -> list[str]:
    """``out[i]`` identifies ``messages[:i]`` (chained SHA-256; ``namespace`` separates
    summaries written by different summarizers or prompts).

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> a = prefix_hashes([HumanMessage("hi"), HumanMessage("there")])
        >>> b = prefix_hashes([HumanMessage("hi"), HumanMessage("you")])
        >>> len(a), a[1] == b[1], a[2] == b[2]
        (3, True, False)
    """
    h = hashlib.sha256(b"stream-summary-v1\0" + namespace.encode()).digest()
    out = [h.hex()]
    for m in messages:
        h = hashlib.sha256(h + canonical(m)).digest()
        out.append(h.hex())
    return out


@runtime_checkable
class SummaryCache(Protocol):
    """Where summaries are kept between requests: ``get`` returns ``None`` on a miss."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, summary: str) -> None: ...


class LRUSummaryCache:
    """In-process cache, least recently used entries evicted past ``maxsize``.

    Example:
        >>> c = LRUSummaryCache(maxsize=1)
        >>> c.put("a", "x"); c.put("b", "y")
        >>> c.get("a"), c.get("b"), len(c)
        (None, 'y', 1)
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError(f"summary cache maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, summary: str) -> None:
        with self._lock:
            self._data[key] = summary
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class SQLiteSummaryCache:
    """A summary cache in an SQLite file (stdlib ``sqlite3``, WAL mode), shared by every
    process that opens the same path; the least recently used rows go past ``max_entries``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "summaries.sqlite")
        >>> SQLiteSummaryCache(path).put("k", "the summary")
        >>> SQLiteSummaryCache(path).get("k")
        'the summary'
    """

    def __init__(self, path: str | os.PathLike[str], *, max_entries: int = 100_000,
                 timeout_s: float = 10.0) -> None:
        if max_entries < 1:
            raise ValueError(f"summary cache max_entries must be >= 1, got {max_entries}")
        self.path = os.fspath(path)
        self.max_entries = max_entries
        self._timeout = timeout_s
        self._local = threading.local()
        with self._conn() as db:
            db.execute("CREATE TABLE IF NOT EXISTS summaries (key TEXT PRIMARY KEY, "
                       "summary TEXT NOT NULL, used REAL NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=self._timeout)
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as exc:
                raise ValueError(f"cannot open summary cache {self.path}: {exc}") from exc
            self._local.db = db
        return db

    def get(self, key: str) -> str | None:
        db = self._conn()
        with db:
            row = db.execute("SELECT summary FROM summaries WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE summaries SET used = ? WHERE key = ?", (time.time(), key))
        return str(row[0])

    def put(self, key: str, summary: str) -> None:
        db = self._conn()
        with db:
            db.execute("INSERT OR REPLACE INTO summaries (key, summary, used) VALUES (?, ?, ?)",
                       (key, summary, time.time()))
            (n,) = db.execute("SELECT COUNT(*) FROM summaries").fetchone()
            if n > self.max_entries:
                db.execute("DELETE FROM summaries WHERE key IN (SELECT key FROM summaries "
                           "ORDER BY used LIMIT ?)", (n - self.max_entries,))


class RedisSummaryCache:
    """Summaries in Redis, shared by proxy replicas (settings ``[shared] redis_url``): a
    conversation that moves between replicas finds its summary. Entries expire ``ttl_s``
    after their last use. Redis being unreachable is a miss (and a dropped write), logged
    once per outage: summaries are an optimisation, never a reason to fail a request.

    Args:
        url: ``redis://`` URL (redis-py, the ``proxy`` extra).
        ttl_s: Seconds an unused summary is kept.
        prefix: Key prefix.
        timeout_s: Connect and command timeout.
    """

    def __init__(self, url: str, *, ttl_s: float = 7 * 24 * 3600, prefix: str = "stream:sum:",
                 timeout_s: float = 0.5) -> None:
        import redis

        self._redis = redis
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                            socket_connect_timeout=timeout_s)
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.down = False

    def _fail(self, exc: Exception) -> None:
        if not self.down:
            self.down = True
            import logging

            logging.getLogger("stream.context").warning(
                "summary cache: Redis unreachable (%s); summaries are not shared until it "
                "is back", type(exc).__name__)

    def get(self, key: str) -> str | None:
        try:
            value = self._client.getex(self.prefix + key, ex=int(self.ttl_s))
        except (OSError, self._redis.RedisError) as exc:
            self._fail(exc)
            return None
        self.down = False
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def put(self, key: str, summary: str) -> None:
        try:
            self._client.set(self.prefix + key, summary.encode(), ex=int(self.ttl_s))
        except (OSError, self._redis.RedisError) as exc:
            self._fail(exc)
            return
        self.down = False
