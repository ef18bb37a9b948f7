"""Globus identities on the proxy: bearer tokens introspected through Globus Auth.

A research centre registers the proxy as a Globus Auth resource server (see
``docs/globus.md``); its users log in with their institution through Globus and send the
access token as ``Authorization: Bearer <token>``. A token that is not a STREAM key is
introspected with the official ``globus_sdk``
(``ConfidentialAppAuthClient.oauth2_token_introspect``) and accepted when it is active, not
expired, issued for this resource server (its client id is in the token's audience, and the
token carries ``required_scope`` when one is set), and one of the user's linked identities has
a username in an allowed domain. With ``required_group`` the user must also be an active member
of that Globus group, read through a dependent token and the Groups API.

The accepted identity (its username and id) is who the request is: usage rows, rate limits and
``stream usage`` name it like a key's name. Verdicts are cached under the token's SHA-256, never
past the token's expiry nor ``cache_s``; when Globus Auth cannot be reached and nothing is
cached the request is refused with 503 ``auth_unavailable`` (fail-closed). The token itself is
never logged, put in an error or stored.

Example:
    >>> auth = GlobusAuth(client_id="0b5d2e4c-1111-2222-3333-444455556666",
    ...                   client_secret="s3cret", allowed_domains=["uchicago.edu"])
    >>> auth.claims("sk-stream-0123abcd-xyz"), auth.claims("AgBv...globus-token")
    (False, True)
    >>> "s3cret" in repr(auth)
    False
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from stream_langchain.proxy.auth import PREFIX, Identity
from stream_langchain.proxy.errors import APIError

if TYPE_CHECKING:
    from stream_langchain.settings import GlobusSettings

__all__ = ["GROUPS_RESOURCE_SERVER", "GROUPS_SCOPE", "GlobusAuth", "token_hash"]

logger = logging.getLogger(__name__)

GROUPS_RESOURCE_SERVER = "groups.api.globus.org"
INCLUDE = "identity_set,identity_set_detail"
"""What introspection returns besides the token's own identity: the linked identities' ids
and their details (usernames), so a user who logged in with another identity still matches."""
GROUPS_SCOPE = "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships"
"""The dependent scope the proxy's scope needs for ``required_group`` / ``admin_groups``."""


def token_hash(token: str) -> str:
    """The cache key of a token: hex SHA-256 (the token itself is never kept)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class _Verdict:
    """A cached answer: an identity, or the refusal to repeat, until ``until`` (epoch s)."""

    until: float
    identity: Identity | None = None
    refusal: tuple[int, str, str] | None = None

    def result(self) -> Identity:
        if self.identity is not None:
            return self.identity
        assert self.refusal is not None
        status, message, code = self.refusal
        raise APIError(status, message, code=code)


class _Refused(Exception):
    """A token refused for a reason worth telling the caller (and caching)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.refusal = (status, message, code)


def _unavailable(what: str) -> APIError:
    return APIError(503, f"Globus Auth could not be reached to check the token ({what}); "
                         "retry shortly", code="auth_unavailable", headers={"Retry-After": "5"})


def _client_options(timeout_s: float) -> dict[str, Any]:
    """No retries (the caller is waiting; the cache and the client's own retry cover it) and
    a bounded timeout, in the form this ``globus_sdk`` takes (v4: ``retry_config``, v3:
    ``transport_params``)."""
    try:
        from globus_sdk.transport import RequestsTransport, RetryConfig  # type: ignore[attr-defined]
    except ImportError:  # globus-sdk 3.x
        return {"transport_params": {"http_timeout": timeout_s, "max_retries": 0}}
    return {"transport": RequestsTransport(http_timeout=timeout_s),
            "retry_config": RetryConfig(max_retries=0)}


def _domain(username: str) -> str:
    return username.rpartition("@")[2].lower() if "@" in username else ""


class GlobusAuth:
    """Accepts Globus Auth access tokens issued for this proxy (an authenticator for
    :class:`~stream_langchain.proxy.auth.Authenticators`).

    Args:
        client_id: the proxy's Globus Auth client id (the resource server).
        client_secret: its secret.
        allowed_domains: identities whose username ends in ``@<domain>`` are let in.
        required_scope: the token must carry this scope (default: its audience is checked).
        required_group: a Globus group id the user must be an active member of.
        admin_identities: usernames or identity ids with admin rights (``/v1/admin/usage``).
        admin_groups: Globus group ids whose members have admin rights.
        cache_s: longest a verdict is reused (never past the token's expiry).
        timeout_s: HTTP timeout of one call to Globus Auth or Groups.
        environment: the ``globus_sdk`` environment (default: ``$GLOBUS_SDK_ENVIRONMENT``,
            else production; ``$GLOBUS_SDK_SERVICE_URL_AUTH`` / ``..._GROUPS`` override URLs).
        clock: seconds since the epoch (injectable for tests).
    """

    name = "globus"

    def __init__(self, *, client_id: str, client_secret: str | SecretStr,
                 allowed_domains: Iterable[str], required_scope: str | None = None,
                 required_group: str | None = None, admin_identities: Iterable[str] = (),
                 admin_groups: Iterable[str] = (),
                 # Timeouts
                 cache_s: float = 60.0, timeout_s: float = 10.0,
                 # Limits
                 max_entries: int = 10_000,
                 environment: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        domains = {d.strip().lstrip("@").lower() for d in allowed_domains if d.strip()}
        if not domains:
            raise ValueError("Globus sign-in needs at least one allowed domain")
        if cache_s <= 0 or timeout_s <= 0 or max_entries < 1:
            raise ValueError("cache_s and timeout_s must be > 0 and max_entries >= 1")
        self.client_id = client_id
        self._secret = (client_secret if isinstance(client_secret, SecretStr)
                        else SecretStr(client_secret))
        self.allowed_domains = frozenset(domains)
        self.required_scope = required_scope
        self.required_group = required_group
        self.admin_identities = frozenset(a.lower() for a in admin_identities)
        self.admin_groups = frozenset(admin_groups)
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self.max_entries = max_entries
        self.environment = environment
        self.clock = clock
        self._cache: dict[str, _Verdict] = {}
        self._lock = threading.Lock()
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: GlobusSettings,
                      env: Mapping[str, str] | None = None) -> GlobusAuth:
        """Built from ``[proxy.globus]``; the secret comes from ``client_secret_env``."""
        return cls(client_id=settings.client_id, client_secret=settings.client_secret(env),
                   allowed_domains=settings.allowed_domains,
                   required_scope=settings.required_scope,
                   required_group=settings.required_group,
                   admin_identities=settings.admin_identities,
                   admin_groups=settings.admin_groups, cache_s=settings.cache_s,
                   timeout_s=settings.timeout_s)

    def __repr__(self) -> str:
        return (f"GlobusAuth(client_id={self.client_id!r}, "
                f"allowed_domains={sorted(self.allowed_domains)!r}, "
                f"required_group={self.required_group!r})")

    def describe(self) -> str:
        """One line for the startup log."""
        group = f", group {self.required_group}" if self.required_group else ""
        return (f"Globus identities from {', '.join(sorted(self.allowed_domains))}{group} "
                f"(resource server {self.client_id})")

    # ------------------------------------------------------------------ seam

    def claims(self, token: str) -> bool:
        """Every bearer token that is not a STREAM key (those never leave the proxy)."""
        return not token.startswith(PREFIX)

    def cached(self, token: str) -> Identity | None:
        """The cached identity (``None``: nothing cached); a cached refusal is raised."""
        hit = self._cache.get(token_hash(token))
        if hit is None or hit.until <= self.clock():
            return None
        return hit.result()

    async def identify(self, token: str) -> Identity | None:
        """The token's identity, from the cache or Globus Auth.

        Raises:
            APIError: 401/403 naming why the token is refused, 503 ``auth_unavailable``.
        """
        ident = self.cached(token)
        if ident is not None:
            return ident
        return await asyncio.to_thread(self.verify, token)

    def verify(self, token: str) -> Identity:
        """Introspect ``token`` (unless a verdict is cached) and cache the verdict.

        Raises:
            APIError: the refusal (401 ``invalid_token``, 403 ``identity_not_allowed`` or
                ``group_required``) or 503 ``auth_unavailable`` (never cached).
        """
        ident = self.cached(token)
        if ident is not None:
            return ident
        now = self.clock()
        try:
            ident, exp = self._check(token, now)
        except _Refused as refused:
            self._remember(token, _Verdict(until=now + self.cache_s, refusal=refused.refusal))
            raise APIError(*refused.refusal[:2], code=refused.refusal[2]) from None
        except APIError:
            raise
        except Exception as exc:  # fail-closed: whatever went wrong, the token is not accepted
            logger.error("Globus token check failed: %s", type(exc).__name__)
            raise _unavailable(type(exc).__name__) from None
        self._remember(token, _Verdict(until=min(now + self.cache_s, exp), identity=ident))
        return ident

    def _remember(self, token: str, verdict: _Verdict) -> None:
        with self._lock:
            if len(self._cache) >= self.max_entries:
                now = self.clock()
                for k in [k for k, v in self._cache.items() if v.until <= now]:
                    del self._cache[k]
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[token_hash(token)] = verdict

    # ------------------------------------------------------------------ Globus calls

    def _auth_client(self) -> Any:
        if self._client is None:
            import globus_sdk

            self._client = globus_sdk.ConfidentialAppAuthClient(
                self.client_id, self._secret.get_secret_value(), environment=self.environment,
                **_client_options(self.timeout_s))
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one Globus call; unreachable, timed out or 5xx -> 503 (fail-closed)."""
        import globus_sdk

        try:
            return fn()
        except globus_sdk.NetworkError as exc:
            logger.warning("Globus %s failed: %s", what, type(exc).__name__)
            raise _unavailable(f"{what}: {type(exc).__name__}") from None
        except globus_sdk.GlobusAPIError as exc:
            status = exc.http_status
            if status == 401 and what == "token introspection":
                logger.error("Globus Auth refused the proxy's client credentials (client %s)",
                             self.client_id)
                raise _unavailable("the proxy's Globus client credentials were refused"
                                   ) from None
            if status >= 500 or status == 429:
                logger.warning("Globus %s failed: HTTP %s", what, status)
                raise _unavailable(f"{what}: HTTP {status}") from None
            raise

    def _check(self, token: str, now: float) -> tuple[Identity, float]:
        import globus_sdk

        try:
            info = self._call("token introspection", lambda: self._auth_client()
                              .oauth2_token_introspect(token, include=INCLUDE).data)
        except globus_sdk.GlobusAPIError as exc:
            raise _Refused(401, f"Globus Auth refused to introspect the token (HTTP "
                                f"{exc.http_status})", "invalid_token") from None
        if not isinstance(info, dict) or info.get("active") is not True:
            raise _Refused(401, "the Globus token is not active (expired, revoked or "
                                "unknown): log in again", "invalid_token")
        exp = info.get("exp")
        if not isinstance(exp, int | float) or exp <= now:
            raise _Refused(401, "the Globus token has expired: log in again", "invalid_token")
        self._check_audience(info)
        sub, username = self._pick_identity(info)
        groups: set[str] = set()
        if self.required_group or self.admin_groups:
            try:
                groups = self._groups(token)
            except _Refused:
                if self.required_group:
                    raise  # without a required group, unreadable groups only mean "no admin"
        if self.required_group and self.required_group not in groups:
            raise _Refused(403, f"{username} is not an active member of the Globus group "
                                f"{self.required_group} this proxy requires",
                           "group_required")
        admin = (username.lower() in self.admin_identities or sub.lower()
                 in self.admin_identities or bool(groups & self.admin_groups))
        return Identity(key_id=uuid.UUID(sub).hex, name=username, admin=admin,
                        source="globus"), float(exp)

    def _check_audience(self, info: Mapping[str, Any]) -> None:
        aud = info.get("aud") or []
        aud = [aud] if isinstance(aud, str) else list(aud)
        scopes = str(info.get("scope") or "").split()
        if self.client_id not in aud:
            raise _Refused(401, "the Globus token was not issued for this proxy (its "
                                f"audience does not include {self.client_id}): request "
                                "this proxy's scope when logging in", "invalid_token")
        if self.required_scope and self.required_scope not in scopes:
            raise _Refused(401, "the Globus token lacks the scope this proxy requires "
                                f"({self.required_scope}): log in requesting it",
                           "invalid_token")

    def _pick_identity(self, info: Mapping[str, Any]) -> tuple[str, str]:
        """``(identity id, username)`` of the linked identity in an allowed domain (the
        token's own identity first)."""
        sub = str(info.get("sub") or "")
        linked: list[tuple[str, str]] = [(sub, str(info.get("username") or ""))]
        for d in info.get("identity_set_detail") or []:
            if isinstance(d, Mapping) and d.get("status") != "closed":
                linked.append((str(d.get("sub") or d.get("id") or ""),
                               str(d.get("username") or "")))
        for ident_id, username in linked:
            if _domain(username) in self.allowed_domains and _is_uuid(ident_id):
                return ident_id, username
        names = sorted({u for _, u in linked if u})
        raise _Refused(403, f"no identity linked to this Globus account ({', '.join(names)}) "
                            "is in an allowed domain ("
                            + ", ".join(sorted(self.allowed_domains)) + ")",
                       "identity_not_allowed")

    def _groups(self, token: str) -> set[str]:
        """Ids of the groups the user is an active member of (dependent token + Groups)."""
        import globus_sdk

        try:
            dep = self._call("dependent token grant",
                             lambda: self._auth_client().oauth2_get_dependent_tokens(token))
            rs = dep.by_resource_server.get(GROUPS_RESOURCE_SERVER)
            if not rs:
                raise _Refused(403, "the Globus token does not allow reading your groups: "
                                    f"log in again (the proxy's scope needs {GROUPS_SCOPE})",
                               "group_required")
            groups = globus_sdk.GroupsClient(
                authorizer=globus_sdk.AccessTokenAuthorizer(rs["access_token"]),
                environment=self.environment, **_client_options(self.timeout_s))
            data = self._call("Groups lookup", lambda: groups.get_my_groups().data)
        except globus_sdk.GlobusAPIError as exc:
            raise _Refused(403, f"Globus refused the group lookup (HTTP {exc.http_status}): "
                                "log in again", "group_required") from None
        out = set()
        for g in data if isinstance(data, list) else []:
            members = g.get("my_memberships") or [{"status": "active"}]
            if any(m.get("status") == "active" for m in members):
                out.add(str(g.get("id")))
        return out


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
