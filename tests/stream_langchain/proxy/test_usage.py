"""Usage rows are exact for streamed, non-streamed, aborted and failed requests; the store
works on SQLite and on a real PostgreSQL server; keys are stored only as hashes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stream_langchain.context import count_text_tokens, count_tokens
from stream_langchain.proxy import KeyRing, ProxyServer, Store, UsageRow, create_app
from stream_langchain.proxy.auth import hash_key
from stream_langchain.proxy.chat_completions import to_langchain
from stream_langchain.proxy.schema import MessageLimits

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat, wait_for

MSG = [{"role": "user", "content": "Tell me about rivers."}]
PG_ENV = "STREAM_TEST_POSTGRES_URL"


def rows_of(store: Store, n: int) -> list[dict[str, Any]]:
    wait_for(lambda: len(store.rows()) >= n)
    store.flush()
    return store.rows()


def test_non_streamed_and_streamed_rows_are_exact(serve: ServeFn, keys: dict[str, str],
                                                  store: Store) -> None:
    """A plain and a streamed request each write one row with the tier's own token counts."""
    server = serve(make_chat())
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    c.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    list(c.chat.completions.create(model="stream-local", messages=MSG,  # type: ignore[arg-type]
                                   stream=True))
    plain, streamed = rows_of(store, 2)
    for row, is_stream, model in ((plain, False, "stream"), (streamed, True, "stream-local")):
        assert row["identity"] == "alice" and row["tier"] == "local"
        assert row["status"] == "ok" and row["stream"] is is_stream and row["model"] == model
        assert (row["input_tokens"], row["output_tokens"]) == (11, len(WORDS))
        assert row["output_chunks"] == len(WORDS) and row["ttft_ms"] is not None
        assert row["cloud_cost_usd"] == 0.0 and row["hpc_seconds"] == 0.0


def test_aborted_stream_row_counts_what_was_generated(serve: ServeFn, keys: dict[str, str],
                                                      store: Store) -> None:
    """A client leaving mid-stream leaves an 'aborted' row whose output tokens are those of
    the text generated before the close, and whose input tokens are the prompt's."""
    model = ScriptedModel(script=[f" w{i}" for i in range(400)], delay=0.01)
    server = serve(make_chat(model))
    got = 0
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "messages": MSG, "stream": True}) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content"' in line:
                got += 1
            if got == 5:
                break
    (row,) = rows_of(store, 1)
    assert row["status"] == "aborted" and row["stream"] is True and row["tier"] == "local"
    assert got <= row["output_chunks"] < 400
    sent = "".join(model.script[: row["output_chunks"]])
    assert row["output_tokens"] == count_text_tokens(sent)
    assert row["input_tokens"] == count_tokens(to_langchain(MSG, MessageLimits()))


def test_failed_stream_row_says_error(serve: ServeFn, keys: dict[str, str], store: Store) -> None:
    """A stream that fails after its first tokens is recorded as 'error' with the cause."""
    server = serve(make_chat(ScriptedModel(script=WORDS, fail_after=2), failover=False))
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "messages": MSG, "stream": True}) as r:
        list(r.iter_lines())
    (row,) = rows_of(store, 1)
    assert row["status"] == "error" and "connection reset" in row["error"]
    assert row["output_tokens"] == count_text_tokens("".join(WORDS[:2]))


def test_admin_usage_endpoint_sums_per_identity_and_tier(serve: ServeFn, keys: dict[str, str],
                                                          store: Store) -> None:
    """/v1/admin/usage returns requests and tokens per identity and tier."""
    server = serve(make_chat())
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    r = httpx.get(server.url + "/v1/admin/usage", params={"identity": "alice"},
                  headers={"authorization": f"Bearer {keys['admin']}"})
    (summary,) = r.json()["data"]
    assert summary["identity"] == "alice" and summary["tier"] == "local"
    assert summary["requests"] == 3
    assert (summary["input_tokens"], summary["output_tokens"]) == (33, 3 * len(WORDS))


def test_keys_are_stored_as_hashes_only(store: Store) -> None:
    """The database holds the key's SHA-256 and id, never the key; reprs show no secret."""
    key, rec = KeyRing(store).create("dave", rpm=5)
    (stored,) = [k for k in store.list_keys() if k.key_id == rec.key_id]
    assert stored.key_hash == hash_key(key) and key not in repr(stored)
    with store.engine.connect() as conn:
        dump = "\n".join(str(tuple(r)) for r in conn.exec_driver_sql(
            "SELECT * FROM stream_api_keys"))
    secret = key.removeprefix(f"sk-stream-{rec.key_id}-")  # url-safe base64: may hold "-"
    assert len(secret) >= 40 and key not in dump and secret not in dump
    assert "proxy.db" in repr(store)


def test_bad_key_options_are_refused(store: Store) -> None:
    """An empty name or a limit below 1 is refused with the reason."""
    with pytest.raises(ValueError, match="non-empty name"):
        KeyRing(store).create("  ")
    with pytest.raises(ValueError, match="rpm must be >= 1"):
        KeyRing(store).create("eve", rpm=0)


def test_password_is_masked_in_the_store_repr() -> None:
    """A database password never appears in the store's repr or its url_safe."""
    from stream_langchain.proxy.usage import safe_url

    url = "postgresql://u:hunter2secret@db.example/x"
    assert "hunter2secret" not in safe_url(url) and "***" in safe_url(url)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_url() -> str:
    """The test database's URL. Skips only where none is set, and not in CI (``CI=true``),
    where .ci/run starts a server and sets it: there a missing URL fails. A URL that is set
    but unreachable fails everywhere, never skips."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {PG_ENV} is unset: .ci/run should have started "
                        "PostgreSQL and set it", pytrace=False)
        pytest.skip(f"no PostgreSQL server: set {PG_ENV} (.ci/run starts one and sets it)")
    import sqlalchemy

    from stream_langchain.proxy.usage import _normalize

    engine = sqlalchemy.create_engine(_normalize(url))
    try:
        with engine.connect():
            pass
    except Exception as exc:  # say why without a traceback, whose locals hold the password
        pytest.fail(f"PostgreSQL at {PG_ENV} is unreachable: {type(exc).__name__}",
                    pytrace=False)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def pg_store() -> Iterator[Store]:
    s = Store(_pg_url())
    try:
        yield s
    finally:
        s.close()


def test_postgres_store_shares_keys_and_usage_between_replicas(pg_store: Store) -> None:
    """Two stores on one PostgreSQL database (two proxy replicas) see the same keys and
    usage; revocation in one is seen by the other."""
    other = Store(os.environ[PG_ENV])
    try:
        who = f"pg-{uuid.uuid4().hex[:8]}"
        key, rec = KeyRing(pg_store).create(who)
        ring = KeyRing(other, cache_s=0.0)
        ident = ring.verify(key)
        assert ident is not None and ident.name == who
        pg_store.record(UsageRow(identity=who, key_id=rec.key_id, model="stream", tier="hpc",
                                 status="ok", stream=True, input_tokens=7, output_tokens=9,
                                 hpc_seconds=1.25))
        pg_store.flush()
        (s,) = other.summary(identity=who)
        assert (s["requests"], s["input_tokens"], s["output_tokens"], s["hpc_seconds"]) == (
            1, 7, 9, 1.25)
        assert KeyRing(pg_store).revoke(rec.key_id)
        assert ring.verify(key) is None
    finally:
        other.close()


def test_proxy_on_postgres_records_usage(pg_store: Store) -> None:
    """The proxy served over a PostgreSQL store authenticates and writes exact rows."""
    who = f"pg-{uuid.uuid4().hex[:8]}"
    key, _ = KeyRing(pg_store).create(who)
    with ProxyServer(create_app(make_chat(), store=pg_store)) as server:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        list(c.chat.completions.create(model="stream", messages=MSG,  # type: ignore[arg-type]
                                       stream=True))
    pg_store.flush()
    (row,) = pg_store.rows(identity=who)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 11, len(WORDS))


def test_rows_are_written_in_batches_and_flush_and_close_write_them_all(tmp_path: Path) -> None:
    """Rows recorded together go in one transaction; flush() waits for every row queued
    before it, and close() writes what is still pending."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path}/usage.db"
    store = Store(url)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    row = UsageRow(identity="a", key_id=None, model="stream", tier="local", status="ok",
                   stream=True, input_tokens=1, output_tokens=2)
    for _ in range(20):
        store.record(row)
    store.flush()
    assert len(store.rows()) == 20 and len(commits) < 20
    store.record(row)
    store.close()
    reopened = Store(url)
    try:
        assert len(reopened.rows()) == 21
    finally:
        reopened.close()
