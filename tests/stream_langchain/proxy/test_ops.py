"""Operations: /health, Prometheus /metrics, structured access logs without secrets, and
graceful shutdown that lets running streams finish within the deadline."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import openai
import pytest

from stream_langchain.proxy import ProxyServer, Store, create_app
from stream_langchain.proxy.ops import ACCESS_LOGGER

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat, wait_for

MSG = [{"role": "user", "content": "hello"}]


def test_health_reports_tiers_without_auth(serve: ServeFn) -> None:
    """/health answers without a key and names each tier's circuit state."""
    server = serve(make_chat(ScriptedModel(script=WORDS), hpc=ScriptedModel(script=WORDS)))
    body = httpx.get(server.url + "/health").json()
    assert body["status"] == "ok"
    assert body["tiers"] == {"local": "closed", "hpc": "closed"}


def test_metrics_count_requests_tokens_and_statuses(serve: ServeFn,
                                                    keys: dict[str, str]) -> None:
    """/metrics (Prometheus text) counts chat requests by tier and outcome, tokens, TTFT and
    HTTP statuses, 401s included."""
    server = serve(make_chat())
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    c.chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    httpx.get(server.url + "/v1/models")  # 401
    text = httpx.get(server.url + "/metrics").text
    assert 'stream_proxy_requests_total{model="stream",status="ok",tier="local"} 1.0' in text
    assert f'stream_proxy_tokens_total{{direction="output",tier="local"}} {len(WORDS)}.0' in text
    assert 'stream_proxy_ttft_seconds_count{tier="local"} 1.0' in text
    assert 'stream_proxy_http_responses_total{path="/v1/models",status="401"} 1.0' in text
    assert "stream_proxy_in_flight 0.0" in text


def test_access_log_is_structured_and_has_no_secrets(serve: ServeFn, keys: dict[str, str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """One JSON line per request with identity, model, tier, status and tokens; neither the
    key nor the prompt appears in any log record."""
    server = serve(make_chat())
    secret_prompt = "my password is swordfish-42"
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
        list(c.chat.completions.create(model="stream", stream=True, messages=[  # type: ignore[arg-type]
            {"role": "user", "content": secret_prompt}]))
        httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer sk-bad"})
        wait_for(lambda: len([r for r in caplog.records if r.name == ACCESS_LOGGER]) >= 2)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    chat = next(line for line in lines if line["path"] == "/v1/chat/completions")
    assert chat["status"] == 200 and chat["identity"] == "alice" and chat["tier"] == "local"
    assert chat["outcome"] == "ok" and chat["output_tokens"] == len(WORDS)
    assert chat["model"] == "stream" and chat["stream"] is True
    assert any(line["status"] == 401 for line in lines)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert keys["user"] not in everything and "sk-bad" not in everything
    assert "swordfish" not in everything


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_graceful_shutdown_lets_a_running_stream_finish(store: Store,
                                                        keys: dict[str, str]) -> None:
    """Stopping the server mid-stream lets the stream end normally ([DONE]) within the
    deadline, and the request is recorded as ok."""
    model = ScriptedModel(script=WORDS * 25, delay=0.02)  # about 3 s of streaming
    server = ProxyServer(create_app(make_chat(model), store=store), graceful_timeout_s=30)
    server.start()
    lines: list[str] = []
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "messages": MSG, "stream": True}) as r:
        it = r.iter_lines()
        lines.append(next(it))
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        wait_for(lambda: _refuses_connections(server.url))  # no new connections ...
        assert not model.stopped  # ... while the running stream is still being generated
        lines.extend(it)
    stopper.join(30)
    assert [line for line in lines if line][-1] == "data: [DONE]"
    store.flush()
    assert [r["status"] for r in store.rows()] == ["ok"]


def test_graceful_shutdown_deadline_cuts_long_streams(store: Store,
                                                      keys: dict[str, str]) -> None:
    """A stream still running near the deadline is ended by the app itself: an SSE error
    event ``server_shutting_down`` (no [DONE], no cut mid-event), the tier stops, and the
    usage row says error with that code and the tokens generated so far."""
    model = ScriptedModel(script=[" x"] * 2000, delay=0.01)  # 20 s: far past the deadline
    server = ProxyServer(create_app(make_chat(model), store=store), graceful_timeout_s=1)
    server.start()
    lines: list[str] = []
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "messages": MSG, "stream": True}) as r:
        it = r.iter_lines()
        lines.append(next(it))
        threading.Thread(target=server.stop).start()
        lines.extend(it)  # the server ends the stream: no transport error
    assert "data: [DONE]" not in lines
    assert "event: error" in lines
    error = json.loads(lines[lines.index("event: error") + 1].removeprefix("data: "))
    assert error["error"]["code"] == "server_shutting_down"
    wait_for(lambda: len(store.rows()) == 1)
    row = store.rows()[0]
    assert row["status"] == "error" and row["error"].startswith("503 server_shutting_down")
    assert row["output_tokens"] > 0
    wait_for(lambda: model.stopped)  # cancelled: it generates nothing more
    assert model.generated < 2000



def test_accepted_connections_have_tcp_nodelay(serve: ServeFn) -> None:
    """Server-side sockets have TCP_NODELAY (else Nagle + delayed ACK stall every response
    by ~40 ms): the listening socket is created as TCP so asyncio sets it."""
    import socket

    server = serve(make_chat())
    with httpx.Client() as client:
        assert client.get(server.url + "/health").status_code == 200
        conns = list(server.server.server_state.connections)
        assert conns
        for conn in conns:
            sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
