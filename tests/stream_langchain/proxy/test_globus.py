"""Globus identities on the proxy: the real proxy on loopback, the real ``openai`` client and
the unmodified ``globus_sdk`` talking to a loopback Globus Auth + Groups
(:mod:`tests.globus_auth_server`)."""

from __future__ import annotations

import json
import logging
import re
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stream_langchain.cli.main import main as stream_main
from stream_langchain.proxy import KeyRing, ProxyConfig, ProxyServer, Store, create_app
from stream_langchain.proxy.globus import GlobusAuth, token_hash
from stream_langchain.proxy.limits import Limits
from stream_langchain.settings import Settings, SettingsError
from tests.globus_auth_server import GlobusAuthServer, GlobusUser

from .conftest import make_chat, wait_for

pytest.importorskip("globus_sdk")

CLIENT_ID = "6c1f7f3e-5a0e-4c43-9d8b-2f1e0d6a7b11"
SECRET = "proxy-client-secret-" + "x" * 20
SCOPE = f"https://auth.globus.org/scopes/{CLIENT_ID}/inference"
GROUP = "a8b7c6d5-1111-4222-8333-944455556666"
MSG = [{"role": "user", "content": "Tell me about rivers."}]


class Clock:
    """Seconds since the epoch that a test moves forward (shared by proxy and fake)."""

    def __init__(self) -> None:
        self.now = time.time()  # starts true: a proxy in a subprocess uses the real clock

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def globus(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[GlobusAuthServer]:
    fake = GlobusAuthServer(CLIENT_ID, SECRET, SCOPE, clock=clock).start()
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", fake.url)
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_GROUPS", fake.url)
    try:
        yield fake
    finally:
        fake.stop()


ProxyFn = Callable[..., ProxyServer]


@pytest.fixture
def proxy(store: Store, clock: Clock) -> Iterator[ProxyFn]:
    """``proxy(auth=("keys", "globus"), limits=None, **globus_kw)``: the proxy over the
    scripted tier with a GlobusAuth allowing uchicago.edu."""
    servers: list[ProxyServer] = []

    def start(auth: tuple[str, ...] = ("keys", "globus"), limits: Limits | None = None,
              **kw: Any) -> ProxyServer:
        kw.setdefault("allowed_domains", ["uchicago.edu"])
        ga = GlobusAuth(client_id=CLIENT_ID, client_secret=SECRET, clock=clock, **kw)
        config = ProxyConfig(auth=auth, limits=limits or Limits())
        server = ProxyServer(create_app(make_chat(), store=store, config=config,
                                        globus=ga)).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def ask(server: ProxyServer, token: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json={"model": "stream",
                                                                "messages": MSG},
                      headers={"authorization": f"Bearer {token}"}, timeout=30)


def code_of(r: httpx.Response) -> str | None:
    return r.json()["error"]["code"]


def rows(store: Store, n: int) -> list[dict[str, Any]]:
    wait_for(lambda: len(store.rows()) >= n)
    store.flush()
    return store.rows()


ALICE = GlobusUser("alice@uchicago.edu")


def test_active_token_in_allowed_domain_is_served_as_that_identity(
        proxy: ProxyFn, globus: GlobusAuthServer, store: Store,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The openai client with a Globus token gets an answer; the usage row, and `stream
    usage`, name the Globus username and identity id."""
    server = proxy()
    token = globus.issue(ALICE)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
    out = client.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    assert out.choices[0].message.content == "Hello from the scripted tier."
    (row,) = rows(store, 1)
    assert row["identity"] == "alice@uchicago.edu" and row["status"] == "ok"
    assert row["key_id"] == uuid.UUID(ALICE.id).hex
    assert stream_main(["usage", "--db", str(store.engine.url), "--json",
                        "--identity", "alice@uchicago.edu"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["identity"] == "alice@uchicago.edu" and summary["requests"] == 1


def test_linked_identity_in_allowed_domain_is_the_identity(proxy: ProxyFn,
                                                           globus: GlobusAuthServer,
                                                           store: Store) -> None:
    """Logged in with a gmail identity linked to a uchicago one: accepted as the uchicago
    identity (from identity_set_detail)."""
    server = proxy()
    user = GlobusUser("bob@gmail.com", linked=["bob@uchicago.edu"])
    assert ask(server, globus.issue(user)).status_code == 200
    (row,) = rows(store, 1)
    assert row["identity"] == "bob@uchicago.edu"
    assert row["key_id"] == uuid.UUID(user.linked_ids["bob@uchicago.edu"]).hex


def test_other_domain_is_refused(proxy: ProxyFn, globus: GlobusAuthServer,
                                 store: Store) -> None:
    """No linked identity in an allowed domain: 403 identity_not_allowed (the openai client's
    PermissionDeniedError), no usage row."""
    server = proxy()
    token = globus.issue(GlobusUser("eve@evil.example", linked=["eve@gmail.com"]))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    assert err.value.code == "identity_not_allowed"
    assert "uchicago.edu" in err.value.message
    store.flush()
    assert store.rows() == []


def test_expired_token_is_refused(proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """An expired token is refused (Globus says inactive), and so is one Globus still calls
    active whose exp has passed by the proxy's clock."""
    server = proxy()
    r = ask(server, globus.issue(ALICE, expires_in=-5))
    assert r.status_code == 401 and code_of(r) == "invalid_token"
    globus.report_expired_active = True
    r = ask(server, globus.issue(ALICE, expires_in=-5))
    assert r.status_code == 401 and code_of(r) == "invalid_token"
    assert "expired" in r.json()["error"]["message"]


def test_inactive_token_is_refused(proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """Revoked and unknown tokens are inactive: 401 invalid_token (openai's
    AuthenticationError)."""
    server = proxy()
    token = globus.issue(ALICE)
    globus.revoke(token)
    for t in (token, "Ag-not-a-token-globus-knows"):
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=t, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            client.models.list()
        assert err.value.code == "invalid_token"


def test_token_for_another_resource_server_or_scope_is_refused(
        proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """A token issued for another resource server (audience), or lacking required_scope, is
    refused with 401; with the scope it is served."""
    server = proxy(required_scope=SCOPE)
    other = globus.issue(ALICE, scopes=["urn:globus:auth:scope:transfer.api.globus.org:all"],
                         aud=["transfer.api.globus.org"])
    r = ask(server, other)
    assert r.status_code == 401 and "not issued for this proxy" in r.json()["error"]["message"]
    lacking = globus.issue(ALICE, scopes=["openid", "email"])
    r = ask(server, lacking)
    assert r.status_code == 401 and SCOPE in r.json()["error"]["message"]
    assert ask(server, globus.issue(ALICE)).status_code == 200


def test_required_group_through_dependent_token_and_groups_api(
        proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """With required_group: a member is served (dependent token grant, then Groups'
    my_groups), a non-member and a token without groups consent get 403 group_required."""
    server = proxy(required_group=GROUP)
    member = GlobusUser("carol@uchicago.edu", groups=[GROUP])
    assert ask(server, globus.issue(member)).status_code == 200
    assert ("POST", "/v2/oauth2/token") in globus.calls
    assert ("GET", "/v2/groups/my_groups") in globus.calls
    outsider = GlobusUser("dave@uchicago.edu", groups=[str(uuid.uuid4())])
    r = ask(server, globus.issue(outsider))
    assert r.status_code == 403 and code_of(r) == "group_required"
    assert GROUP in r.json()["error"]["message"]
    r = ask(server, globus.issue(member, groups_consent=False))
    assert r.status_code == 403 and code_of(r) == "group_required"


def test_globus_down_fails_closed_unless_cached(proxy: ProxyFn,
                                                globus: GlobusAuthServer) -> None:
    """Globus Auth unreachable: a token verified before is still served from the cache, a new
    one is refused with 503 auth_unavailable (never accepted); a 5xx is the same 503."""
    server = proxy()
    known, new = globus.issue(ALICE), globus.issue(ALICE)
    assert ask(server, known).status_code == 200
    globus.stop()
    assert ask(server, known).status_code == 200
    r = ask(server, new)
    assert r.status_code == 503 and code_of(r) == "auth_unavailable"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=new, max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.models.list()
    assert err.value.status_code == 503
    globus.start()
    globus.fail_status = 502
    r = ask(server, new)
    assert r.status_code == 503 and code_of(r) == "auth_unavailable"
    globus.fail_status = None
    assert ask(server, new).status_code == 200


def test_cache_ends_at_its_ceiling_and_at_the_tokens_expiry(
        proxy: ProxyFn, globus: GlobusAuthServer, clock: Clock) -> None:
    """A verdict is reused within cache_s (no second introspection, even once revoked), and a
    revoked token is refused as soon as its entry ends; an entry never outlives the token."""
    server = proxy(cache_s=60.0)
    token = globus.issue(ALICE, expires_in=3600)
    assert ask(server, token).status_code == 200
    globus.revoke(token)
    clock.advance(59)
    assert ask(server, token).status_code == 200
    assert globus.introspections() == 1
    clock.advance(2)
    assert ask(server, token).status_code == 401
    assert globus.introspections() == 2

    short = globus.issue(ALICE, expires_in=10)
    assert ask(server, short).status_code == 200
    clock.advance(11)  # past exp, well within cache_s
    globus.stop()  # the entry must be gone: Globus is asked again (and is down)
    r = ask(server, short)
    assert r.status_code == 503 and code_of(r) == "auth_unavailable"


def test_stream_key_still_works_and_never_reaches_globus(
        proxy: ProxyFn, globus: GlobusAuthServer, store: Store) -> None:
    """With --auth keys,globus a STREAM key is checked by the key ring alone (valid: served as
    its name; wrong: invalid_api_key), never introspected."""
    server = proxy()
    key, _ = KeyRing(store).create("alice-key")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    r = ask(server, key[:-2] + "zz")
    assert r.status_code == 401 and code_of(r) == "invalid_api_key"
    assert globus.calls == [] and globus.seen_tokens == []
    (row,) = rows(store, 1)
    assert row["identity"] == "alice-key"
    globus.stop()  # Globus down does not touch key holders
    assert ask(server, key).status_code == 200


def test_keys_only_proxy_refuses_globus_tokens_without_asking(
        proxy: ProxyFn, globus: GlobusAuthServer, store: Store) -> None:
    """The default --auth keys: a Globus token is an invalid API key, Globus is never called."""
    KeyRing(store).create("someone")
    server = proxy(auth=("keys",))
    r = ask(server, globus.issue(ALICE))
    assert r.status_code == 401 and code_of(r) == "invalid_api_key"
    assert globus.calls == []


def test_globus_only_proxy_refuses_stream_keys(proxy: ProxyFn, globus: GlobusAuthServer,
                                               store: Store) -> None:
    """--auth globus: STREAM keys are not accepted (and not sent to Globus)."""
    server = proxy(auth=("globus",))
    key, _ = KeyRing(store).create("alice-key")
    assert ask(server, key).status_code == 401
    assert ask(server, globus.issue(ALICE)).status_code == 200
    assert key not in globus.seen_tokens


def test_rate_limits_are_per_globus_identity(proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """Two tokens of the same identity share its limit; another identity has its own."""
    server = proxy(limits=Limits(rpm=1))
    assert ask(server, globus.issue(ALICE)).status_code == 200
    r = ask(server, globus.issue(ALICE))
    assert r.status_code == 429 and "alice@uchicago.edu" in r.json()["error"]["message"]
    assert ask(server, globus.issue(GlobusUser("zoe@uchicago.edu"))).status_code == 200


def test_admin_by_identity_or_group(proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """admin_identities and admin_groups give /v1/admin/usage; other identities get 403."""
    admin_group = str(uuid.uuid4())
    server = proxy(admin_identities=["ops@uchicago.edu"], admin_groups=[admin_group])

    def usage(token: str) -> int:
        return httpx.get(server.url + "/v1/admin/usage",
                         headers={"authorization": f"Bearer {token}"}).status_code

    assert usage(globus.issue(GlobusUser("ops@uchicago.edu"))) == 200
    assert usage(globus.issue(GlobusUser("lead@uchicago.edu", groups=[admin_group]))) == 200
    assert usage(globus.issue(ALICE)) == 403
    r = httpx.get(server.url + "/v1/admin/usage",
                  headers={"authorization": f"Bearer {globus.issue(ALICE)}"})
    assert code_of(r) == "admin_required" and "alice@uchicago.edu" in r.text


def test_tokens_never_in_logs_errors_or_database(proxy: ProxyFn, globus: GlobusAuthServer,
                                                 store: Store, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Accepted, refused and unavailable tokens appear in no log record (DEBUG, globus_sdk's
    and urllib3's included), no error body and no byte of the database; only their hash is
    kept, in memory."""
    server = proxy(required_group=GROUP)
    good = globus.issue(GlobusUser("alice@uchicago.edu", groups=[GROUP]))
    refused = globus.issue(GlobusUser("eve@evil.example"))
    down = globus.issue(ALICE)
    bodies = []
    with caplog.at_level(logging.DEBUG):
        bodies.append(ask(server, good).text)
        bodies.append(ask(server, refused).text)
        globus.stop()
        bodies.append(ask(server, down).text)
        wait_for(lambda: len(store.rows()) >= 1)
    store.flush()
    assert any(r.name.startswith("globus_sdk") for r in caplog.records)  # it did log
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}"
                     for r in caplog.records)
    group_tokens = list(globus.group_tokens)
    assert group_tokens
    for secret in (good, refused, down, SECRET, *group_tokens):
        assert secret not in text
        assert all(secret not in b for b in bodies)
    db = Path(str(store.engine.url.database))
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert raw and b"alice@uchicago.edu" in raw
    for secret in (good, refused, down):
        assert secret.encode() not in raw and token_hash(secret).encode() not in raw


def test_missing_token_names_both_kinds(proxy: ProxyFn, globus: GlobusAuthServer) -> None:
    """No Authorization header: 401 that says a STREAM key or a Globus token is expected."""
    server = proxy()
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"model": "stream", "messages": MSG})
    assert r.status_code == 401 and "Globus" in r.json()["error"]["message"]


def test_globus_settings_and_secret_from_the_environment(tmp_path: Path) -> None:
    """[proxy.globus] loads; the secret comes from the named variable, whose absence is an
    error naming it (never a value); repr hides the secret."""
    path = tmp_path / "stream.toml"
    path.write_text(f'[proxy.globus]\nclient_id = "{CLIENT_ID}"\n'
                    'allowed_domains = ["uchicago.edu", "anl.gov"]\n'
                    f'required_group = "{GROUP}"\nclient_secret_env = "MY_GLOBUS_SECRET"\n')
    g = Settings.load(path, env={}).proxy.globus
    assert g is not None and g.allowed_domains == ("uchicago.edu", "anl.gov")
    with pytest.raises(SettingsError, match="MY_GLOBUS_SECRET"):
        g.client_secret({})
    auth = GlobusAuth.from_settings(g, env={"MY_GLOBUS_SECRET": SECRET})
    assert auth.required_group == GROUP and SECRET not in repr(auth)
    with pytest.raises(SettingsError, match="allowed_domains"):
        Settings.load({"proxy": {"globus": {"client_id": CLIENT_ID}}}, env={})


def test_cli_auth_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--auth takes keys, globus or both; globus without [proxy.globus] is an error naming the
    section."""
    from stream_langchain.cli.main import build_parser

    args = build_parser().parse_args(["proxy", "--auth", "keys,globus"])
    assert args.auth == ("keys", "globus")
    assert build_parser().parse_args(["proxy"]).auth == ("keys",)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--auth", "ldap"])
    empty = tmp_path / "stream.toml"
    empty.write_text("[stream]\njudge = \"keyword\"\n")
    code = stream_main(["proxy", "--auth", "globus", "--config", str(empty),
                        "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    assert code == 1 and "[proxy.globus]" in capsys.readouterr().err


DOC = Path(__file__).resolve().parents[3] / "docs" / "globus.md"


def test_docs_settings_and_client_example_run(proxy: ProxyFn, globus: GlobusAuthServer,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/globus.md: its [proxy.globus] block is valid settings, and its client example
    (globus_sdk native-app login, then the openai client) gets an answer from the proxy."""
    doc = DOC.read_text()
    (toml,) = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    assert Settings.load(tomllib.loads(toml), env={}).proxy.globus is not None
    (example,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    server = proxy(required_scope=SCOPE)
    code = globus.authorize(ALICE)
    monkeypatch.setattr("builtins.input", lambda _prompt="": code)
    example = (example.replace("<a native app client id>", str(uuid.uuid4()))
               .replace("<the proxy's client id>", CLIENT_ID)
               .replace("https://stream.example.edu/v1", server.url + "/v1"))
    exec(compile(example, str(DOC), "exec"), {})  # noqa: S102
    out = capsys.readouterr().out
    assert "Log in at: " + globus.url in out and "Hello from the scripted tier." in out


@pytest.mark.slow
def test_stream_proxy_command_with_globus_settings(globus: GlobusAuthServer, tmp_path: Path,
                                                   store: Store) -> None:
    """`stream proxy --auth keys,globus --config FILE`, run as a centre runs it: the secret
    from the named variable, globus_sdk pointed by its own environment variables; a token from
    another domain is refused, an allowed one passes authentication (no tier runs here: the
    settings' Ollama is absent) and a STREAM key too."""
    import os
    import socket
    import subprocess
    import sys

    cfg = tmp_path / "stream.toml"
    cfg.write_text(f'[stream]\njudge = "keyword"\n[local]\nbase_url = "http://127.0.0.1:9"\n'
                   f'[proxy.globus]\nclient_id = "{CLIENT_ID}"\n'
                   'allowed_domains = ["uchicago.edu"]\nclient_secret_env = "CENTRE_SECRET"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key, _ = KeyRing(store).create("ops")
    env = {**os.environ, "CENTRE_SECRET": SECRET, "GLOBUS_SDK_SERVICE_URL_AUTH": globus.url,
           "GLOBUS_SDK_SERVICE_URL_GROUPS": globus.url}
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "stream_langchain.cli.main", "proxy", "--auth", "keys,globus",
         "--config", str(cfg), "--port", str(port), "--db", str(store.engine.url),
         "--log-level", "warning"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return httpx.get(url + "/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=120)
        server = type("S", (), {"url": url})()
        r = ask(server, globus.issue(GlobusUser("eve@evil.example")))  # type: ignore[arg-type]
        assert r.status_code == 403 and code_of(r) == "identity_not_allowed"
        r = ask(server, globus.issue(ALICE))  # type: ignore[arg-type]
        assert r.status_code not in (401, 403), r.text
        assert globus.introspections() == 2
        assert [row["identity"] for row in rows(store, 1)] == ["alice@uchicago.edu"]
        r = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert SECRET not in (proc.stderr.read() if proc.stderr else "")


def test_cache_is_bounded_and_keyed_by_hash(globus: GlobusAuthServer, clock: Clock) -> None:
    """The cache holds at most max_entries verdicts, under the tokens' SHA-256 only."""
    auth = GlobusAuth(client_id=CLIENT_ID, client_secret=SECRET, clock=clock,
                      allowed_domains=["uchicago.edu"], max_entries=2)
    tokens = [globus.issue(ALICE) for _ in range(3)]
    for t in tokens:
        assert auth.verify(t).name == "alice@uchicago.edu"
    assert 1 <= len(auth._cache) <= 2
    assert set(auth._cache) <= {token_hash(t) for t in tokens}
    assert not any(t in repr(auth._cache) for t in tokens)
