"""hpc_functions called directly, as plain functions, against a real relay and backend."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from typing import Any

import pytest

import relay
from hpc_functions import batch_chat, ping, stream_chat
from stream_langchain.tiers.llama_server import LlamaServer, free_port


def _channel(hpc_relay: tuple[str, str]) -> tuple[dict[str, Any], relay.SyncConsumer]:
    url, secret = hpc_relay
    channel, key = relay.new_channel(), relay.new_key()
    tokens = relay.mint_tokens(secret, channel, ttl=60)
    info = {"url": url, "channel": channel, "token": tokens.producer, "key": key}
    consumer = relay.SyncConsumer(
        url, channel, tokens.consumer, key, first_frame_timeout=60, idle_timeout=60
    )
    return info, consumer


def _request(backend_url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 6,
        "backend_url": backend_url,
    }
    body.update(extra)
    return body


def test_package_does_not_import_the_client() -> None:
    """Importing hpc_functions loads neither stream_langchain nor langchain (node install)."""
    code = (
        "import sys, hpc_functions; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('stream_langchain', 'langchain_core', 'httpx', 'relay')]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_ping_reports_dependencies() -> None:
    """ping() says whether httpx and relay import on this worker."""
    assert ping()["ok"] is True


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "backend_url"),
        ({"backend_url": "ftp://x", "messages": [{"role": "user", "content": "x"}]}, "http"),
        ({"backend_url": "http://127.0.0.1:9/v1", "messages": []}, "messages"),
    ],
)
def test_batch_chat_rejects_bad_requests(request_: dict[str, Any], message: str) -> None:
    """A malformed request is a ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        batch_chat(request_)


def test_batch_chat_backend_down_is_a_runtime_error() -> None:
    """An unreachable backend raises RuntimeError naming the failure."""
    with pytest.raises(RuntimeError, match="backend failed"):
        batch_chat(_request(f"http://127.0.0.1:{free_port()}/v1"))


def test_stream_chat_bad_request_reaches_consumer(hpc_relay: tuple[str, str]) -> None:
    """A malformed request is reported in the summary and as an error frame."""
    info, consumer = _channel(hpc_relay)
    summary = stream_chat({"backend_url": "http://127.0.0.1:9/v1", "messages": []}, info)
    assert summary["error_kind"] == "request" and "messages" in summary["error"]
    with consumer, pytest.raises(relay.RemoteError, match="messages"):
        list(consumer)


def test_stream_chat_backend_down_sends_error_frame(hpc_relay: tuple[str, str]) -> None:
    """Backend unreachable: the consumer gets 'start', then an authentic error frame."""
    info, consumer = _channel(hpc_relay)
    summary = stream_chat(_request(f"http://127.0.0.1:{free_port()}/v1"), info)
    assert summary["ok"] is False and summary["error_kind"] == "backend"
    got: list[Any] = []
    with consumer, pytest.raises(relay.RemoteError, match="backend failed"):
        for payload in consumer:
            got.append(payload)
    assert [p["type"] for p in got] == ["start"]


def test_stream_chat_relay_unreachable_without_fallback() -> None:
    """No relay and no batch fallback: the summary says the relay was unreachable."""
    info = {
        "url": f"ws://127.0.0.1:{free_port()}",
        "channel": relay.new_channel(),
        "token": "t",
        "key": relay.new_key(),
    }
    summary = stream_chat(_request("http://127.0.0.1:9/v1"), info)
    assert summary["ok"] is False and summary["error_kind"] == "relay"
    assert "relay unreachable" in summary["error"]


@pytest.mark.slow
def test_batch_chat_returns_whole_completion(llama_server: LlamaServer) -> None:
    """batch_chat returns the backend's full completion and its token counts."""
    out = batch_chat(_request(llama_server.base_url))
    assert out["ok"] and out["completion"]["choices"][0]["message"]["content"]
    assert 1 <= out["completion_tokens"] <= 6


@pytest.mark.slow
def test_stream_chat_backend_http_error_is_reported(
    hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """An error status from the backend (invalid body) becomes an error frame naming it."""
    info, consumer = _channel(hpc_relay)
    bad = _request(llama_server.base_url, messages=[{"role": "nobody", "content": "x"}])
    summary = stream_chat(bad, info)
    assert summary["error_kind"] == "backend"
    assert "backend returned HTTP 500" in summary["error"]  # llama.cpp: 500 on a bad body
    with consumer, pytest.raises(relay.RemoteError, match=r"backend returned HTTP \d{3}"):
        list(consumer)


@pytest.mark.slow
def test_stream_chat_streams_sealed_deltas(
    hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """Consumer sees start, every delta in order, usage; the end frame counts them all."""
    info, consumer = _channel(hpc_relay)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(stream_chat, _request(llama_server.base_url, max_tokens=10), info)
        with consumer:
            payloads = list(consumer)
        summary = fut.result(timeout=60)
    assert summary["ok"] and summary["mode"] == "stream"
    kinds = [p["type"] for p in payloads]
    assert kinds[0] == "start" and kinds[-1] == "usage"
    deltas = [p for p in payloads if p["type"] == "delta"]
    content = [p for p in deltas if p.get("content")]
    assert len(content) == summary["completion_tokens"] <= 10
    assert consumer.frames == len(payloads)
    assert consumer.usage == payloads[-1]["usage"]
    assert deltas[-1].get("finish_reason") in ("length", "stop")
    assert summary["backend_ttft_s"] is not None


@pytest.mark.slow
def test_stream_chat_relay_unreachable_runs_batch(llama_server: LlamaServer) -> None:
    """With batch_on_relay_error the node answers in batch mode when the relay is down."""
    info = {
        "url": f"ws://127.0.0.1:{free_port()}",
        "channel": relay.new_channel(),
        "token": "t",
        "key": relay.new_key(),
        "batch_on_relay_error": True,
    }
    summary = stream_chat(_request(llama_server.base_url), info)
    assert summary["ok"] and summary["mode"] == "batch"
    assert summary["completion"]["choices"][0]["message"]["content"]
    assert "RelayUnreachable" in summary["relay_error"]


@pytest.mark.slow
def test_batch_answers_are_not_cut_by_the_stream_idle_timeout(llama_server: LlamaServer) -> None:
    """A whole-answer wait uses backend_batch_timeout, not the per-byte stream timeout."""
    out = batch_chat(
        _request(
            llama_server.base_url, max_tokens=20, backend_timeout=0.001, backend_batch_timeout=120
        )
    )
    assert out["ok"] and out["completion_tokens"] >= 1


@pytest.mark.slow
def test_stream_chat_forwards_the_backends_prompt_tokens(
    hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """The node asks the backend for usage in the stream and forwards it: the prompt tokens
    are the backend's own count of the templated prompt (the same request, non-streamed),
    not zero, and the end frame carries them too."""
    import httpx

    request = _request(llama_server.base_url, max_tokens=6)
    info, consumer = _channel(hpc_relay)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(stream_chat, request, info)
        with consumer:
            payloads = list(consumer)
        summary = fut.result(timeout=60)
    body = {k: v for k, v in request.items() if not k.startswith("backend_")}
    counted = httpx.post(llama_server.base_url + "/chat/completions", timeout=120,
                         json={**body, "max_tokens": 1}).json()["usage"]["prompt_tokens"]
    assert summary["prompt_tokens"] == counted > 0
    assert consumer.usage is not None
    assert payloads[-1]["usage"]["prompt_tokens"] == counted == consumer.usage["prompt_tokens"]
    assert 0 < summary["completion_tokens"] <= 6
