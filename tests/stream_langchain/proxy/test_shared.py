"""Proxy replicas sharing Redis (#25): limits, revocation and breakers across two proxy apps
(each its own uvicorn server, event loop, ChatStream and memory) over one key store, a real
Redis server (``STREAM_TEST_REDIS_URL``; ``.ci/run`` starts one) and, for the outage test,
a private ``redis-server`` stopped and restarted mid-run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stream_langchain.proxy import KeyRing, ProxyConfig, ProxyServer, Store, create_app
from stream_langchain.tiers.llama_server import free_port
from tests.stream_langchain.proxy.conftest import WORDS, ScriptedModel, make_chat, wait_for

REDIS_ENV = "STREAM_TEST_REDIS_URL"
BODY = {"model": "stream", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REDIS_ENV} is unset under CI=true (.ci/run starts Redis)")
        pytest.skip(f"{REDIS_ENV} not set")
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()  # a test server: each test starts from empty shared state
    r.close()
    return url


Replicas = Callable[..., list[ProxyServer]]


@pytest.fixture
def replicas(store: Store) -> Iterator[Replicas]:
    """``replicas(redis_url, n=2, chat=..., **config)``: n proxy apps over one store."""
    servers: list[ProxyServer] = []

    def start(url: str, n: int = 2, chat: Callable[[], Any] = make_chat,
              **config: Any) -> list[ProxyServer]:
        out = []
        for _ in range(n):
            cfg = ProxyConfig(redis_url=url, **config)
            server = ProxyServer(create_app(chat(), store=store, config=cfg)).start()
            servers.append(server)
            out.append(server)
        return out

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def _post(server: ProxyServer, key: str, **kw: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json={**BODY, **kw},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_rate_limit_is_shared_across_replicas(redis_url: str, replicas: Replicas,
                                              store: Store) -> None:
    """A key allowed 10 requests/min gets exactly 10 accepted across both replicas."""
    key = KeyRing(store).create("bob", rpm=10)[0]
    a, b = replicas(redis_url)
    codes = [_post((a, b)[i % 2], key).status_code for i in range(24)]
    assert codes.count(200) == 10
    assert codes.count(429) == 14
    refused = _post(b, key)
    assert refused.json()["error"]["code"] == "rate_limit_requests"
    assert int(refused.headers["Retry-After"]) >= 1


def test_per_process_without_redis(replicas: Replicas, store: Store, serve: Any) -> None:
    """Without redis_url each replica keeps its own window (today's single-machine default)."""
    key = KeyRing(store).create("carol", rpm=3)[0]
    a = serve(make_chat())
    b = serve(make_chat())
    codes = [_post((a, b)[i % 2], key).status_code for i in range(8)]
    assert codes.count(200) == 6  # 3 each: N replicas, N times the limit
    assert "shared" not in httpx.get(a.url + "/health").json()


def test_revoke_through_one_is_refused_by_the_other(redis_url: str, replicas: Replicas,
                                                    store: Store) -> None:
    """A key revoked through replica A is refused by B on its next request, although B's key
    cache (60 s here) still holds it as valid."""
    ring = KeyRing(store)
    admin = ring.create("root", admin=True)[0]
    key, rec = ring.create("dave")
    a, b = replicas(redis_url, key_cache_s=60.0)
    assert _post(a, key).status_code == 200
    assert _post(b, key).status_code == 200  # now cached as valid in B
    r = httpx.post(f"{a.url}/v1/admin/keys/{rec.key_id}/revoke",
                   headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    refused = _post(b, key)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert _post(a, key).status_code == 401


def test_breaker_opened_through_one_is_skipped_by_the_other(
    redis_url: str, replicas: Replicas, store: Store,
) -> None:
    """The local tier fails on replica A (the cloud tier answers) and A's breaker opens;
    replica B then skips the local tier without calling it (its own breaker saw no failure)."""
    import redis

    key = KeyRing(store).create("erin")[0]
    models: list[ScriptedModel] = []

    def chat() -> Any:
        model = ScriptedModel(script=WORDS, fail_after=0)
        models.append(model)
        return make_chat(model, cloud=ScriptedModel(script=WORDS), failure_threshold=1,
                         cooldown_s=120.0)

    a, b = replicas(redis_url, chat=chat)
    first = _post(a, key)
    assert first.status_code == 200 and first.json()["stream"]["tier"] == "cloud"
    assert len(models[0].calls) == 1
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.exists("stream:breaker:local") == 1)
    r.close()
    assert httpx.get(b.url + "/health").json()["tiers"]["local"] == "closed"  # not asked yet
    second = _post(b, key)
    assert second.status_code == 200 and second.json()["stream"]["tier"] == "cloud"
    assert models[1].calls == []  # skipped, not tried
    assert httpx.get(b.url + "/health").json()["tiers"]["local"] == "open"


def test_settle_charges_what_ran_across_replicas(redis_url: str, replicas: Replicas,
                                                 store: Store) -> None:
    """Tokens per minute: what a request used (input + output, settled at its end) counts on
    the other replica."""
    key = KeyRing(store).create("fay", tpm=40)[0]
    a, b = replicas(redis_url)
    first = _post(a, key)  # ScriptedModel: 11 input + 6 output tokens
    assert first.status_code == 200
    import redis

    r = redis.Redis.from_url(redis_url)

    def settled() -> bool:
        return sum(int(v) for k in r.scan_iter("stream:rl:*:amt")
                   for v in r.hvals(k)) == 17
    wait_for(settled)
    r.close()
    assert _post(b, key).status_code == 200  # 17 + reservation < 40
    codes = [_post((a, b)[i % 2], key).status_code for i in range(3)]
    assert 429 in codes  # 17 + 17 = 34, then the window is full


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[Callable[[], Any]]:
    """A redis-server of our own on a free port: ``(url, start, stop)``."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed under CI=true (.ci/run installs it)")
        pytest.skip("redis-server not installed")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis(port=port, socket_timeout=0.2).ping())
            except redis.RedisError:
                return False
        wait_for(up)

    def stop() -> None:
        proc = procs.pop()
        proc.terminate()
        proc.wait(10)

    start()
    try:
        yield lambda: (f"redis://127.0.0.1:{port}/0", start, stop)
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def test_redis_outage_degrades_to_per_process_and_recovers(
    private_redis: Callable[[], Any], replicas: Replicas, store: Store,
) -> None:
    """Redis stopped mid-run: requests are still served (per-process limits) and /health
    says degraded; Redis back: /health ok and the limit is shared again."""
    url, start, stop = private_redis()
    key = KeyRing(store).create("gus", rpm=4)[0]
    a, b = replicas(url)
    assert [_post(a, key).status_code for _ in range(2)] == [200, 200]
    assert httpx.get(a.url + "/health").json()["status"] == "ok"
    stop()
    assert [_post(a, key).status_code for _ in range(3)] == [200] * 3  # per-process now
    health = httpx.get(a.url + "/health").json()
    assert health["status"] == "degraded"
    assert health["shared"]["redis"] == "unreachable"
    assert _post(b, key).status_code == 200
    start()  # an empty Redis: counts start again, shared
    wait_for(lambda: httpx.get(a.url + "/health").json()["status"] == "ok")
    wait_for(lambda: httpx.get(b.url + "/health").json()["status"] == "ok")
    codes = [_post((a, b)[i % 2], key).status_code for i in range(8)]
    assert codes.count(200) == 4 and codes.count(429) == 4


def test_health_never_shows_the_redis_password(replicas: Replicas, store: Store) -> None:
    """The Redis URL's password appears in neither /health nor its errors."""
    port = free_port()  # nothing listens: degraded from the start
    (a,) = replicas(f"redis://:hunter2secret@127.0.0.1:{port}/0", n=1)
    text = httpx.get(a.url + "/health").text
    assert "hunter2secret" not in text and '"degraded"' in text


def test_summary_made_in_one_process_is_a_hit_in_another(redis_url: str) -> None:
    """A summary written by another process (another replica) is found here by its
    conversation-prefix key; the settings' [shared] redis_url puts the fitter's cache there."""
    import sys

    from langchain_core.messages import AIMessage, HumanMessage

    from stream_langchain._factory import build_summarizer
    from stream_langchain.context import prefix_hashes
    from stream_langchain.context._cache import RedisSummaryCache
    from stream_langchain.settings import Settings

    history = [HumanMessage("plan a trip"), AIMessage("where to?"), HumanMessage("Lisbon")]
    key = prefix_hashes(history, "w")[3]
    code = ("import sys; from stream_langchain.context._cache import RedisSummaryCache; "
            "RedisSummaryCache(sys.argv[1]).put(sys.argv[2], 'user plans a Lisbon trip')")
    subprocess.run([sys.executable, "-c", code, redis_url, key], check=True, timeout=120)
    assert RedisSummaryCache(redis_url).get(key) == "user plans a Lisbon trip"
    assert RedisSummaryCache(redis_url).get(prefix_hashes(history, "w")[2]) is None
    settings = Settings.model_validate({"shared": {"redis_url": redis_url}})
    fitter = build_summarizer(settings, {"local": ScriptedModel(script=WORDS)})
    assert isinstance(getattr(fitter, "cache", None), RedisSummaryCache)


def test_summary_cache_outage_is_a_miss() -> None:
    """Redis unreachable: get is a miss and put is dropped, never an error."""
    from stream_langchain.context._cache import RedisSummaryCache

    cache = RedisSummaryCache(f"redis://127.0.0.1:{free_port()}/0")
    cache.put("k", "s")
    assert cache.get("k") is None and cache.down


def test_concurrency_is_shared_and_released(redis_url: str, replicas: Replicas,
                                            store: Store) -> None:
    """A key allowed one request at a time: while it streams on A, B refuses a second; once
    it ends, the slot is free on B."""
    import threading

    key = KeyRing(store).create("hal", max_concurrent=1)[0]
    models: list[ScriptedModel] = []

    def chat() -> Any:
        models.append(ScriptedModel(script=WORDS, delay=0.3))
        return make_chat(models[-1])

    a, b = replicas(redis_url, chat=chat)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(_post(a, key).status_code))
    t.start()
    wait_for(lambda: models[0].generated > 0)
    refused = _post(b, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_concurrency"
    t.join(30)
    assert done == [200]
    wait_for(lambda: _post(b, key).status_code == 200)


@pytest.mark.slow
def test_two_stream_proxy_processes_share_limits_and_revocation(
    redis_url: str, tmp_path: Any, store: Store,
) -> None:
    """Two `stream proxy` processes, one given `--redis`, the other `[shared] redis_url` in
    its settings file: a key allowed 5 requests/min gets 5 admitted across both (the tier
    behind them is down: admitted requests end in 503, refused ones in 429), and a key
    revoked with `stream keys revoke --redis` is refused by both at once."""
    import sys

    from stream_langchain.cli.main import main as stream_main

    base = '[stream]\njudge = "keyword"\n[local]\nbase_url = "http://127.0.0.1:9"\n'
    plain, shared = tmp_path / "plain.toml", tmp_path / "shared.toml"
    plain.write_text(base)
    shared.write_text(base + f'[shared]\nredis_url = "{redis_url}"\n')
    ring = KeyRing(store)
    limited = ring.create("ivy", rpm=5)[0]
    doomed, rec = ring.create("jon")
    procs, urls = [], []
    for cfg, extra in ((plain, ["--redis", redis_url]), (shared, [])):
        port = free_port()
        procs.append(subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "stream_langchain.cli.main", "proxy", "--config", str(cfg),
             "--port", str(port), "--db", str(store.engine.url), "--log-level", "warning",
             *extra], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True))
        urls.append(f"http://127.0.0.1:{port}")

    def up(i: int) -> bool:
        assert procs[i].poll() is None, procs[i].stderr.read() if procs[i].stderr else ""
        try:
            return httpx.get(urls[i] + "/health").json()["status"] == "ok"
        except httpx.TransportError:
            return False

    def post(i: int, key: str) -> int:
        return httpx.post(urls[i] + "/v1/chat/completions", json=BODY, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}).status_code

    try:
        for i in range(2):
            wait_for(lambda i=i: up(i), timeout=180)  # type: ignore[misc]
        codes = [post(i % 2, limited) for i in range(12)]
        assert codes.count(429) == 7 and 429 not in codes[:5], codes
        assert post(0, doomed) != 401 and post(1, doomed) != 401
        assert stream_main(["keys", "revoke", rec.key_id, "--db", str(store.engine.url),
                            "--redis", redis_url]) == 0
        assert post(0, doomed) == 401 and post(1, doomed) == 401
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
