"""The proxy charges what ran: refused requests are rows with zero tokens and the status the
client got; tokens per minute are reserved at admission and settled to the tier's own count;
a prompt no tier can take is a 400 ``context_length_exceeded`` the SDK does not retry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from stream_langchain.proxy import Limits, ProxyConfig, Store
from stream_langchain.proxy.limits import Limiter

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat, wait_for

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
       "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class TooLong(ScriptedModel):
    """Refuses every prompt as llama.cpp does when it exceeds the context window."""

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> Any:
        raise ValueError("Requested tokens (5123) exceed context window of 2048")
        yield  # pragma: no cover - an async generator

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise ValueError("Requested tokens (5123) exceed context window of 2048")


def _client(server: Any, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=retries)


def test_refused_request_is_recorded_with_zero_tokens(serve: ServeFn, keys: dict[str, str],
                                                      store: Store) -> None:
    """An image for a text-only tier: 400, a row with status error, zero tokens, the status
    and code the client got; the identity's minute is not charged for it."""
    server = serve(make_chat(), ProxyConfig(limits=Limits(tpm=1000)))
    c = _client(server, keys["user"])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="stream", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PNG}}]}])
    wait_for(lambda: len(store.rows()) == 1)
    (row,) = store.rows()
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("error", 0, 0)
    assert row["error"].startswith("400 unsupported_capability")
    r = httpx.get(server.url + "/v1/models", headers={"authorization": f"Bearer {keys['user']}"})
    assert r.headers["x-ratelimit-remaining-tokens"] == "1000"


def test_tokens_per_minute_settle_to_the_tier_count(serve: ServeFn, keys: dict[str, str],
                                                   store: Store) -> None:
    """After a request, the minute holds the tier's 11 + 6 tokens, not the admission's
    estimate of a long prompt."""
    server = serve(make_chat(), ProxyConfig(limits=Limits(tpm=10_000)))
    c = _client(server, keys["user"])
    c.chat.completions.create(model="stream",
                              messages=[{"role": "user", "content": "word " * 400}])
    wait_for(lambda: len(store.rows()) == 1)
    assert (store.rows()[0]["input_tokens"], store.rows()[0]["output_tokens"]) == (11, 6)
    r = httpx.get(server.url + "/v1/models", headers={"authorization": f"Bearer {keys['user']}"})
    assert r.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 17)


def test_prompt_too_long_for_every_tier_is_400_not_retried(serve: ServeFn, keys: dict[str, str],
                                                         store: Store) -> None:
    """The SDK (with its default retries) makes one request: 400 context_length_exceeded
    naming the tokens and the window; one row, zero tokens."""
    server = serve(make_chat(TooLong(script=[]), summarize=False))
    c = _client(server, keys["user"], retries=2)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="stream", messages=[{"role": "user", "content": "x"}])
    body: Any = info.value.body
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert "5123 tokens" in body["message"] and "2048" in body["message"]
    wait_for(lambda: len(store.rows()) >= 1)
    store.flush()
    (row,) = store.rows()
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)


def test_aborted_forced_tier_names_the_tier_and_the_client_close(
        serve: ServeFn, keys: dict[str, str], store: Store) -> None:
    """A client that leaves before the first token of a forced tier: the row names that tier,
    says 499 client_closed (not an internal class name) and charges nothing."""
    slow = ScriptedModel(script=["late"], delay=5.0)
    server = serve(make_chat(slow))
    headers = {"authorization": f"Bearer {keys['user']}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=0.5,
                   json={"model": "stream-local",
                         "messages": [{"role": "user", "content": "hi"}]})
    wait_for(lambda: len(store.rows()) == 1)
    (row,) = store.rows()
    assert (row["tier"], row["status"], row["input_tokens"]) == ("local", "aborted", 0)
    assert row["error"].startswith("499 client_closed")


def test_settle_replaces_the_reservation() -> None:
    """A reservation settles in place; past the window it is charged anew."""
    now = [0.0]
    lim = Limiter(Limits(tpm=100), clock=lambda: now[0])
    p = lim.admit("a", tokens=80)
    assert lim.headers("a")["x-ratelimit-remaining-tokens"] == "20"
    p.settle(30)
    p.settle(99)  # idempotent
    assert lim.headers("a")["x-ratelimit-remaining-tokens"] == "70"
    q = lim.admit("a", tokens=50)
    now[0] = 61.0  # both entries left the window
    q.settle(40)
    assert lim.headers("a")["x-ratelimit-remaining-tokens"] == "60"


def test_stream_route_header_lists_fallbacks(serve: ServeFn, keys: dict[str, str]) -> None:
    """The streaming x-stream-route header has ``fallbacks`` as the record has it: a list
    of ``{"tier", "error"}``, not a count."""
    dead = ScriptedModel(script=WORDS, fail_after=0)
    server = serve(make_chat(dead, hpc=ScriptedModel(script=WORDS)))
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {keys['user']}"},
                      json={"model": "stream", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as r:
        route = json.loads(r.headers["x-stream-route"])
        r.read()
    assert route["tier"] == "hpc"
    assert route["fallbacks"] == [{"tier": "local",
                                   "error": "ConnectionResetError: backend connection reset"}]


def test_metrics_open_by_default_and_keyed_on_request(serve: ServeFn,
                                                      keys: dict[str, str]) -> None:
    """/metrics answers without a key by default; with metrics_key it needs a valid one."""
    open_server = serve(make_chat())
    assert httpx.get(open_server.url + "/metrics").status_code == 200
    keyed = serve(make_chat(), ProxyConfig(metrics_key=True))
    assert httpx.get(keyed.url + "/metrics").status_code == 401
    ok = httpx.get(keyed.url + "/metrics", headers={"authorization": f"Bearer {keys['user']}"})
    assert ok.status_code == 200 and "stream_" in ok.text


def test_union_parameter_error_names_the_parameter(serve: ServeFn, keys: dict[str, str]) -> None:
    """``stop: 5`` is reported as param ``stop`` (not pydantic's ``stop.str``)."""
    server = serve(make_chat())
    r = httpx.post(server.url + "/v1/chat/completions",
                   headers={"authorization": f"Bearer {keys['user']}"},
                   json={"model": "stream", "stop": 5,
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "stop"


def test_admin_usage_by_tier_with_cost_avoided(serve: ServeFn, keys: dict[str, str],
                                               store: Store) -> None:
    """GET /v1/admin/usage?by=tier: per tier, with what the local tier's tokens would have
    cost on the configured cloud model (prices from the ChatStream's settings)."""
    chat = make_chat(ScriptedModel(script=WORDS), cloud=ScriptedModel(script=WORDS, name_="gpt-x"),
                     prices={"gpt-x": {"input": 1.0, "output": 2.0}})
    server = serve(chat)
    _client(server, keys["user"]).chat.completions.create(
        model="stream-local", messages=[{"role": "user", "content": "hi"}])
    wait_for(lambda: len(store.rows()) == 1)
    r = httpx.get(server.url + "/v1/admin/usage", params={"by": "tier"},
                  headers={"authorization": f"Bearer {keys['admin']}"})
    (row,) = r.json()["data"]
    assert row["tier"] == "local" and "identity" not in row
    assert row["cost_avoided_usd"] == pytest.approx((11 * 1.0 + 6 * 2.0) / 1e6)
