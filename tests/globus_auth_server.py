"""A loopback stand-in for Globus Auth and Globus Groups (the real services cannot be reached
here), speaking their documented HTTP API so the unmodified ``globus_sdk`` talks to it:

- ``POST /v2/oauth2/token/introspect`` (client Basic auth, form ``token``, ``include``):
  RFC 7662 plus Globus' fields (``active``, ``scope``, ``client_id``, ``sub``, ``username``,
  ``aud``, ``iss``, ``exp``, ``iat``, ``nbf``, ``identity_set`` and ``identity_set_detail``
  when included); ``{"active": false}`` for unknown, revoked or expired tokens;
- ``POST /v2/oauth2/token`` with ``grant_type=urn:globus:auth:grant_type:dependent_token``:
  a JSON list of token objects, one per dependent resource server of the token's scopes;
  with ``grant_type=authorization_code`` (a native app's login, :meth:`authorize` gives the
  code a user would paste): the token response for this resource server;
- ``GET /v2/groups/my_groups`` (Bearer: a Groups token from the dependent grant): the
  groups the user has memberships in, with ``my_memberships``.

Point ``globus_sdk`` at it with ``GLOBUS_SDK_SERVICE_URL_AUTH`` / ``..._GROUPS`` = :attr:`url`.
:meth:`stop` makes Globus unreachable (connection refused); :meth:`start` brings it back on
the same port; ``fail_status`` answers every call with that HTTP status instead.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["DEPENDENT_GRANT", "GlobusAuthServer", "GlobusUser"]

DEPENDENT_GRANT = "urn:globus:auth:grant_type:dependent_token"
GROUPS_RS = "groups.api.globus.org"
GROUPS_SCOPE = "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships"


@dataclass
class GlobusUser:
    """A Globus account: its primary identity and linked ones (``(username, id)``), and the
    ids of the groups it is an active member of."""

    username: str
    linked: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    linked_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.linked:
            self.linked_ids.setdefault(name, str(uuid.uuid4()))

    def identities(self) -> list[dict[str, Any]]:
        """``identity_set_detail`` entries, the primary identity first."""
        out = []
        for name, ident in [(self.username, self.id), *self.linked_ids.items()]:
            out.append({"sub": ident, "username": name, "name": name.split("@")[0],
                        "email": name, "identity_provider": str(uuid.uuid5(
                            uuid.NAMESPACE_DNS, name.rpartition("@")[2])),
                        "identity_provider_display_name": name.rpartition("@")[2],
                        "organization": name.rpartition("@")[2], "status": "used",
                        "identity_type": "login", "last_authentication": 1764900000})
        return out


@dataclass
class _Token:
    user: GlobusUser
    scopes: list[str]
    aud: list[str]
    client_id: str
    iat: float
    exp: float
    revoked: bool = False
    groups_consent: bool = True


class GlobusAuthServer:
    """Globus Auth + Groups on ``127.0.0.1:<port>``.

    Args:
        client_id: the resource server (the proxy) allowed to introspect.
        client_secret: its secret.
        scope: the resource server's scope, given to tokens by default.
        clock: seconds since the epoch (share it with the proxy's ``GlobusAuth``).
    """

    def __init__(self, client_id: str, client_secret: str, scope: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.clock = clock
        self.tokens: dict[str, _Token] = {}
        self.group_tokens: dict[str, GlobusUser] = {}
        self.codes: dict[str, GlobusUser] = {}
        self.calls: list[tuple[str, str]] = []
        """``(method, path)`` of every request answered."""
        self.seen_tokens: list[str] = []
        """Every token sent for introspection (to check STREAM keys never arrive here)."""
        self.fail_status: int | None = None
        self.report_expired_active = False
        """Say ``active: true`` for expired tokens (a clock skewed against the proxy's)."""
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def introspections(self) -> int:
        return sum(1 for _, p in self.calls if p == "/v2/oauth2/token/introspect")

    # ------------------------------------------------------------------ tokens

    def issue(self, user: GlobusUser, *, scopes: list[str] | None = None,
              aud: list[str] | None = None, expires_in: float = 3600.0,
              groups_consent: bool = True) -> str:
        """A new access token for ``user`` (default: this resource server's scope)."""
        token = "Ag" + secrets.token_urlsafe(40)
        now = self.clock()
        with self._lock:
            self.tokens[token] = _Token(
                user=user, scopes=list(scopes if scopes is not None else [self.scope]),
                aud=list(aud if aud is not None else [self.client_id]),
                client_id=str(uuid.uuid4()), iat=now, exp=now + expires_in,
                groups_consent=groups_consent)
        return token

    def authorize(self, user: GlobusUser) -> str:
        """The code ``user`` would get by logging in (exchanged at ``/v2/oauth2/token``)."""
        code = secrets.token_urlsafe(16)
        with self._lock:
            self.codes[code] = user
        return code

    def exchange(self, form: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            user = self.codes.pop(form.get("code", ""), None)
        if user is None or not form.get("client_id"):
            return 400, {"error": "invalid_grant"}
        token = self.issue(user)
        return 200, {"access_token": token, "scope": self.scope,
                     "resource_server": self.client_id, "expires_in": 172800,
                     "token_type": "Bearer", "state": "_default", "other_tokens": []}

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens[token].revoked = True

    # ------------------------------------------------------------------ lifetime

    def start(self) -> GlobusAuthServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fake-globus-auth")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Unreachable from now on: stop listening and cut kept-alive connections."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # ------------------------------------------------------------------ answers

    def introspect(self, form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.seen_tokens.append(form.get("token", ""))
            tok = self.tokens.get(form.get("token", ""))
        now = self.clock()
        if tok is None or tok.revoked or (tok.exp <= now and not self.report_expired_active):
            return {"active": False}
        include = {i.strip() for i in form.get("include", "").split(",")}
        user = tok.user
        out: dict[str, Any] = {
            "active": True, "token_type": "Bearer", "scope": " ".join(tok.scopes),
            "client_id": tok.client_id, "sub": user.id, "username": user.username,
            "name": user.username.split("@")[0], "email": user.username,
            "aud": tok.aud, "iss": "https://auth.globus.org", "exp": int(tok.exp),
            "iat": int(tok.iat), "nbf": int(tok.iat)}
        if "identity_set" in include:
            out["identity_set"] = [i["sub"] for i in user.identities()]
        if "identity_set_detail" in include:
            out["identity_set_detail"] = user.identities()
        return out

    def dependent(self, form: dict[str, str]) -> tuple[int, Any]:
        if form.get("grant_type") != DEPENDENT_GRANT:
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            tok = self.tokens.get(form.get("token", ""))
        if tok is None or tok.revoked or tok.exp <= self.clock():
            return 400, {"error": "invalid_grant"}
        if not tok.groups_consent:
            return 200, []
        group_token = "grp-" + secrets.token_urlsafe(24)
        with self._lock:
            self.group_tokens[group_token] = tok.user
        return 200, [{"scope": GROUPS_SCOPE, "access_token": group_token,
                      "token_type": "bearer", "expires_in": 172800,
                      "resource_server": GROUPS_RS}]

    def my_groups(self, bearer: str | None) -> tuple[int, Any]:
        user = self.group_tokens.get(bearer or "")
        if user is None:
            return 401, {"code": "AUTHENTICATION_ERROR", "detail": "invalid token"}
        return 200, [{"name": f"group {gid[:8]}", "parent_id": None, "id": gid,
                      "group_type": "regular", "enforce_session": False,
                      "session_limit": 28800, "session_timeouts": {},
                      "my_memberships": [{"group_id": gid, "identity_id": user.id,
                                          "username": user.username, "role": "member",
                                          "status": "active"}],
                      "policies": {"group_visibility": "private",
                                   "group_members_visibility": "managers"}}
                     for gid in user.groups]

    def client_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            raw = base64.b64decode(header[6:]).decode()
        except ValueError:
            return False
        return raw == f"{self.client_id}:{self.client_secret}"


class _Handler(BaseHTTPRequestHandler):
    fake: GlobusAuthServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._conns.discard(self.connection)
        super().finish()

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode()
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        fake = self.fake
        form = self._form()
        fake.calls.append(("POST", self.path))
        if fake.fail_status is not None:
            return self._send(fake.fail_status, {"error": "unavailable"})
        if self.path == "/v2/oauth2/token" and form.get("grant_type") == "authorization_code":
            return self._send(*fake.exchange(form))  # a native app: no client secret
        if not fake.client_ok(self.headers.get("Authorization")):
            return self._send(401, {"error": "invalid_client", "errors": [
                {"status": "401", "code": "UNAUTHORIZED", "detail": "bad client credentials"}]})
        if self.path == "/v2/oauth2/token/introspect":
            return self._send(200, fake.introspect(form))
        if self.path == "/v2/oauth2/token":
            return self._send(*fake.dependent(form))
        return self._send(404, {"error": "not_found"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        fake = self.fake
        fake.calls.append(("GET", self.path))
        if fake.fail_status is not None:
            return self._send(fake.fail_status, {"error": "unavailable"})
        if self.path.split("?")[0] == "/v2/groups/my_groups":
            auth = self.headers.get("Authorization") or ""
            return self._send(*fake.my_groups(auth[7:] if auth.startswith("Bearer ") else None))
        return self._send(404, {"error": "not_found"})
