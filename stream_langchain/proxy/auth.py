"""Who is calling: API keys and the authenticator seam (keys, Globus identities).

:class:`Authenticators` asks each configured authenticator in turn whether a bearer token is
its kind (:meth:`Authenticator.claims`); the first that claims it decides. :class:`KeyAuth`
claims STREAM keys (``sk-stream-...``), :class:`~stream_langchain.proxy.globus.GlobusAuth`
every other token, so a STREAM key is never sent to Globus Auth.

API keys: created once, shown once, stored as SHA-256 hashes, checked in constant time.

A key looks like ``sk-stream-<key id>-<secret>``: the id (8 hex characters) finds the stored
record, the whole key's SHA-256 must match it. 32 random bytes of secret make a plain
(unsalted) SHA-256 safe to store. Verified identities are cached for a few seconds so the
request path does not read the database every time; a revocation made by another replica
takes effect within that time (at once in the process that revoked).

Example:
    >>> from stream_langchain.proxy.usage import Store
    >>> store = Store("sqlite://")
    >>> keys = KeyRing(store)
    >>> key, rec = keys.create("alice")
    >>> key.startswith("sk-stream-" + rec.key_id), rec.key_hash != key
    (True, True)
    >>> keys.verify(key).name
    'alice'
    >>> keys.verify(key[:-1] + "x") is None
    True
    >>> store.close()
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stream_langchain.proxy.usage import KeyRecord, Store

__all__ = ["PREFIX", "Authenticator", "Authenticators", "Identity", "KeyAuth", "KeyRing",
           "hash_key"]

PREFIX = "sk-stream-"


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who is calling: the key's id and name (a Globus identity: its id as 32 hex digits and
    its username), its role and its own limits (``None``: the proxy's defaults)."""

    key_id: str
    name: str
    admin: bool = False
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    source: str = "key"
    """``key`` (a STREAM API key) or ``globus`` (a Globus Auth token)."""


class KeyRing:
    """Creates, verifies and revokes keys over a :class:`Store`.

    Args:
        store: where the hashes live.
        cache_s: how long a verified (or unknown) key id is trusted without a database read.
    """

    def __init__(self, store: Store, *, cache_s: float = 5.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, *, admin: bool = False, rpm: int | None = None,
               tpm: int | None = None, max_concurrent: int | None = None
               ) -> tuple[str, KeyRecord]:
        """A new key: returns ``(key, record)``; the key is not stored and cannot be shown
        again."""
        if not name.strip():
            raise ValueError("a key needs a non-empty name")
        for limit, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)):
            if value is not None and value < 1:
                raise ValueError(f"{limit} must be >= 1, got {value}")
        key_id = secrets.token_hex(4)
        key = f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        rec = KeyRecord(key_id=key_id, key_hash=hash_key(key), name=name.strip(), admin=admin,
                        rpm=rpm, tpm=tpm, max_concurrent=max_concurrent, created=time.time(),
                        revoked=None)
        self.store.add_key(rec)
        return key, rec

    @staticmethod
    def key_id_of(key: str) -> str | None:
        """The id part of a well-formed key, else ``None``."""
        if not key.startswith(PREFIX):
            return None
        key_id, sep, secret = key[len(PREFIX):].partition("-")
        if not sep or len(key_id) != 8 or not secret:
            return None
        return key_id

    def cached(self, key: str) -> tuple[bool, Identity | None]:
        """``(known, identity)`` from the cache alone (no database read)."""
        key_id = self.key_id_of(key)
        if key_id is None:
            return True, None
        hit = self._cache.get(key_id)
        if hit is None or time.monotonic() - hit[0] > self.cache_s:
            return False, None
        return True, self._check(hit[1], key)

    def verify(self, key: str) -> Identity | None:
        """The identity a key authenticates, or ``None`` (unknown, wrong or revoked)."""
        known, ident = self.cached(key)
        if known:
            return ident
        key_id = self.key_id_of(key)
        assert key_id is not None
        rec = self.store.get_key(key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (time.monotonic(), rec)
        return self._check(rec, key)

    @staticmethod
    def _check(rec: KeyRecord | None, key: str) -> Identity | None:
        if rec is None or rec.revoked is not None:
            return None
        if not hmac.compare_digest(rec.key_hash, hash_key(key)):
            return None
        return Identity(key_id=rec.key_id, name=rec.name, admin=rec.admin, rpm=rec.rpm,
                        tpm=rec.tpm, max_concurrent=rec.max_concurrent)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by id (effective at once here, within ``cache_s`` elsewhere)."""
        done = self.store.revoke_key(key_id)
        with self._lock:
            self._cache.pop(key_id, None)
        return done


class Authenticator(Protocol):
    """One way to authenticate a bearer token."""

    name: str

    def claims(self, token: str) -> bool:
        """Whether ``token`` is this authenticator's kind (cheap, no I/O)."""
        ...

    async def identify(self, token: str) -> Identity | None:
        """The identity ``token`` proves, ``None`` when it proves none.

        Raises:
            APIError: a refusal this authenticator can explain (401/403), or 503 when what
                it checks against cannot be reached (never an acceptance).
        """
        ...


class KeyAuth:
    """STREAM API keys through a :class:`KeyRing` (cached; the database in a thread)."""

    name = "keys"

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def claims(self, token: str) -> bool:
        return token.startswith(PREFIX)

    async def identify(self, token: str) -> Identity | None:
        known, ident = self.ring.cached(token)
        if not known:
            ident = await asyncio.to_thread(self.ring.verify, token)
        return ident


class Authenticators:
    """The configured authenticators, in order; the first that claims a token decides.

    Args:
        methods: for example ``[KeyAuth(ring), GlobusAuth(...)]``.
    """

    def __init__(self, methods: Sequence[Authenticator]) -> None:
        if not methods:
            raise ValueError("the proxy needs at least one authenticator (keys, globus)")
        self.methods = list(methods)

    @property
    def names(self) -> list[str]:
        """The authenticators' names, in order."""
        return [m.name for m in self.methods]

    def __contains__(self, name: object) -> bool:
        return name in self.names

    async def identify(self, token: str) -> Identity | None:
        """The identity of ``token``, ``None`` when no authenticator accepts it."""
        for method in self.methods:
            if method.claims(token):
                return await method.identify(token)
        return None
