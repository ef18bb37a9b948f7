"""Every refusal is an OpenAI-style error with the right status; failures after streaming
began arrive as an SSE error event, never as a fake finish_reason 'stop'."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from stream_langchain.proxy import KeyRing, Limits, MessageLimits, ProxyConfig, Store
from stream_langchain.tiers.llama_server import free_port

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat

MSG = [{"role": "user", "content": "hi"}]


def post(url: str, key: str | None, body: Any, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + "/v1/chat/completions", content=data,
                      headers={**headers, "content-type": "application/json"}, timeout=30, **kw)


def assert_error(r: httpx.Response, status: int, code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return dict(err)


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ({"model": "stream", "messages": MSG, "seed": 1, "logit_bias": {"1": 1}}, "logit_bias",
     "logit_bias={'1': 1} ("),
    ({"model": "stream", "messages": MSG, "n": 2}, "n", "n=2"),
    ({"model": "stream", "messages": MSG, "reasoning_effort": "high", "store": True},
     "reasoning_effort", "reasoning_effort, store=True"),
    ({"model": "stream", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role",
     "'robot'"),
    ({"model": "stream", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[0].type", "'input_audio', which STREAM does not support"),
    ({"model": "stream", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url", "http(s)"),
    ({"model": "stream", "messages": [{"role": "tool", "content": "x"}]},
     "messages[0].tool_call_id", "tool_call_id"),
    ({"model": "stream", "messages": MSG, "max_tokens": 5, "max_completion_tokens": 6},
     "max_tokens", "disagree"),
])
def test_400_names_the_parameter(serve: ServeFn, keys: dict[str, str], body: dict[str, Any],
                                 param: str, fragment: str) -> None:
    """Unsupported or invalid parameters get 400 naming them (never silently dropped)."""
    server = serve(make_chat())
    err = assert_error(post(server.url, keys["user"], body), 400, param=param)
    assert fragment in err["message"]
    assert err["type"] == "invalid_request_error"


def test_400_not_json(serve: ServeFn, keys: dict[str, str]) -> None:
    """A body that is not JSON is a 400 saying so."""
    server = serve(make_chat())
    err = assert_error(post(server.url, keys["user"], b"{nope"), 400, code="invalid_json")
    assert "not valid JSON" in err["message"]


def test_400_when_no_tier_can_call_tools(serve: ServeFn, keys: dict[str, str]) -> None:
    """Tools sent to a proxy whose tiers cannot call tools: 400 naming tools, not a 503."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    server = serve(make_chat(GenericFakeChatModel(messages=iter(["x"]))))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    err = assert_error(post(server.url, keys["user"], {"model": "stream", "messages": MSG,
                                                       "tools": tools}), 400, param="tools")
    assert "tool calling" in err["message"]


def test_401_missing_invalid_and_revoked(serve: ServeFn, keys: dict[str, str],
                                         store: Store) -> None:
    """No key, a wrong key and a revoked key all get 401 with an authentication_error."""
    server = serve(make_chat())
    body = {"model": "stream", "messages": MSG}
    assert_error(post(server.url, None, body), 401, code="missing_api_key")
    assert_error(post(server.url, "sk-stream-00000000-nope", body), 401, code="invalid_api_key")
    key, rec = KeyRing(store).create("carol")
    assert post(server.url, key, body).status_code == 200
    app: Any = server.server.config.app
    assert app.state.proxy.keys.revoke(rec.key_id)  # the app's own key ring: effective at once
    err = assert_error(post(server.url, key, body), 401, code="invalid_api_key")
    assert err["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong",
                      max_retries=0).models.list()


def test_empty_key_store_starts_and_answers_401(serve: ServeFn, store: Store,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """With no keys the proxy still starts, logs that it has none, and answers 401."""
    with caplog.at_level("WARNING", logger="stream_langchain.proxy.app"):
        server = serve(make_chat())
    assert any("has no API keys" in r.getMessage() for r in caplog.records)
    err = assert_error(post(server.url, "sk-stream-12345678-whatever",
                            {"model": "stream", "messages": MSG}), 401, code="no_api_keys")
    assert "stream keys create" in err["message"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_403_admin_endpoint_needs_an_admin_key(serve: ServeFn, keys: dict[str, str]) -> None:
    """A user key reading /v1/admin/usage gets 403; an admin key gets the data."""
    server = serve(make_chat())
    r = httpx.get(server.url + "/v1/admin/usage",
                  headers={"authorization": f"Bearer {keys['user']}"})
    assert_error(r, 403, code="admin_required")
    r = httpx.get(server.url + "/v1/admin/usage",
                  headers={"authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 200 and r.json()["object"] == "list"


def test_404_unknown_model_and_route(serve: ServeFn, keys: dict[str, str]) -> None:
    """An unknown model is 404 model_not_found listing what is served; an unknown path 404;
    a tier not configured is an unknown model."""
    server = serve(make_chat())
    r = post(server.url, keys["user"], {"model": "gpt-4o", "messages": MSG})
    err = assert_error(r, 404, code="model_not_found", param="model")
    assert r.headers["x-ratelimit-limit-requests"] == "60"  # on errors too, once authenticated
    assert "stream-local" in err["message"]
    assert_error(post(server.url, keys["user"], {"model": "stream-cloud", "messages": MSG}), 404)
    assert_error(httpx.get(server.url + "/v1/nothing"), 404)
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0
                      ).chat.completions.create(model="gpt-4o", messages=MSG)  # type: ignore[arg-type]


def test_413_body_messages_and_length(serve: ServeFn, keys: dict[str, str]) -> None:
    """Past the body size, message count or message length limit: 413 naming the limit."""
    config = ProxyConfig(max_body_bytes=2000,
                         messages=MessageLimits(max_messages=3, max_message_chars=100))
    server = serve(make_chat(), config)
    big = {"model": "stream", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(post(server.url, keys["user"], big), 413, code="body_too_large")
    many = {"model": "stream", "messages": MSG * 4}
    assert_error(post(server.url, keys["user"], many), 413, code="too_many_messages")
    long = {"model": "stream", "messages": [{"role": "user", "content": "y" * 101}]}
    err = assert_error(post(server.url, keys["user"], long), 413, code="message_too_long",
                       param="messages[0].content")
    assert "101 characters" in err["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "stream", "messages": MSG, "temperature": 7}, "temperature"),
    ({"model": "stream", "messages": MSG, "max_tokens": "many"}, "max_tokens"),
    ({"model": "stream", "messages": []}, "messages"),
    ({"messages": MSG}, "model"),
])
def test_422_wrong_type_or_range(serve: ServeFn, keys: dict[str, str], body: dict[str, Any],
                                 param: str) -> None:
    """A field of the wrong type or out of range: 422 naming the field."""
    server = serve(make_chat())
    assert_error(post(server.url, keys["user"], body), 422, code="invalid_value", param=param)


def test_429_requests_per_minute_with_retry_after(serve: ServeFn, keys: dict[str, str]) -> None:
    """Past the identity's requests/min: 429 rate_limit_error with Retry-After and
    x-ratelimit-* headers; another identity is unaffected."""
    server = serve(make_chat(), ProxyConfig(limits=Limits(rpm=2)))
    body = {"model": "stream", "messages": MSG}
    ok = post(server.url, keys["user"], body)
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    post(server.url, keys["user"], body)
    r = post(server.url, keys["user"], body)
    err = assert_error(r, 429, code="rate_limit_requests")
    assert err["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert post(server.url, keys["admin"], body).status_code == 200


def test_429_tokens_per_minute(serve: ServeFn, keys: dict[str, str]) -> None:
    """Past the identity's tokens/min: 429 rate_limit_tokens. The minute is charged what
    the tier used (11 + 6 per request), not the admission's estimate of the input."""
    server = serve(make_chat(), ProxyConfig(limits=Limits(tpm=30)))
    body = {"model": "stream", "messages": [{"role": "user", "content": "one two three " * 7}]}
    for _ in range(2):  # 17 used, then 34: past 30
        ok = post(server.url, keys["user"], body)
        assert ok.status_code == 200
    r = post(server.url, keys["user"], body)
    assert_error(r, 429, code="rate_limit_tokens")
    assert "retry-after" in r.headers


def test_429_concurrent_streams(serve: ServeFn, keys: dict[str, str]) -> None:
    """A second stream while the first runs, with max_concurrent=1: 429; after it ends, OK."""
    slow = ScriptedModel(script=WORDS * 20, delay=0.02)
    server = serve(make_chat(slow), ProxyConfig(limits=Limits(max_concurrent=1)))
    headers = {"authorization": f"Bearer {keys['user']}"}
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=headers,
                      json={"model": "stream", "messages": MSG, "stream": True}) as first:
        lines = first.iter_lines()  # one iterator: dropping it would close the response
        next(lines)
        r = post(server.url, keys["user"], {"model": "stream", "messages": MSG})
        assert_error(r, 429, code="rate_limit_concurrency")
        for _ in lines:
            pass
    assert post(server.url, keys["user"], {"model": "stream", "messages": MSG}).status_code == 200


def test_503_when_no_tier_can_serve(serve: ServeFn, keys: dict[str, str]) -> None:
    """Every tier failing before the first token: 503 all_tiers_failed naming the errors."""
    from langchain_openai import ChatOpenAI

    dead = ChatOpenAI(base_url=f"http://127.0.0.1:{free_port()}/v1", model="nobody",
                      api_key="sk-test-not-a-secret", max_retries=0, timeout=5)  # type: ignore[arg-type]
    server = serve(make_chat(dead))
    err = assert_error(post(server.url, keys["user"], {"model": "stream", "messages": MSG,
                                                       "stream": True}), 503,
                       code="all_tiers_failed")
    assert "local" in err["message"] and "sk-test" not in err["message"]
    with pytest.raises(openai.InternalServerError) as info:
        openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0
                      ).chat.completions.create(model="stream", messages=MSG)  # type: ignore[arg-type]
    assert info.value.status_code == 503


def test_failure_after_streaming_began_is_an_sse_error(serve: ServeFn,
                                                       keys: dict[str, str]) -> None:
    """A tier dying mid-answer with nowhere to fail over: the stream ends with an error event
    (the openai client raises), no finish_reason, no [DONE]."""
    chat = make_chat(ScriptedModel(script=WORDS, fail_after=3), failover=False)
    server = serve(chat)
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "messages": MSG, "stream": True}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-2] == "event: error"
    err = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert err["code"] == "tier_failed" and "connection reset" in err["message"]
    assert "data: [DONE]" not in lines
    assert not any('"finish_reason":"stop"' in line for line in lines)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="connection reset"):
        for c in openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"],
                               max_retries=0).chat.completions.create(
                model="stream", messages=MSG, stream=True):  # type: ignore[arg-type]
            assert not c.choices[0].finish_reason
            seen.append(c.choices[0].delta.content or "")
    assert "".join(seen) == "".join(WORDS[:3])
