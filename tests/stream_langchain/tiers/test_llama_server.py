"""LlamaServer: llama.cpp's OpenAI-compatible server as a managed subprocess (real process)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stream_langchain.tiers.llama_server import (
    LlamaServer,
    LlamaServerError,
    bundled_model_path,
    free_port,
)
from stream_langchain.tiers.models import (
    GEMMA_270M,
    cache_dir,
    default_chat_format,
    model_path,
    spec_for_path,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bundled_model_path_is_a_gguf_file() -> None:
    """The bundled model resolves to a real GGUF file (magic bytes 'GGUF')."""
    path = Path(bundled_model_path())
    assert path.is_file()
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_the_bundled_model_is_assembled_like_every_model() -> None:
    """One GGUF assembly: the bundled Gemma comes from models.model_path (same cache, digest)."""
    path = Path(bundled_model_path())
    assert path == Path(model_path(GEMMA_270M, verify=True)).resolve()
    assert path.parent == cache_dir().resolve() and path.stat().st_size == GEMMA_270M.size
    assert spec_for_path(path) is GEMMA_270M and default_chat_format(path) == "gemma"


def test_free_port_is_bindable() -> None:
    """free_port returns a port that can be bound right away."""
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port"),
        ({"n_ctx": 0}, "n_ctx"),
        ({"startup_timeout": 0}, "startup_timeout"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, int], message: str) -> None:
    """Invalid constructor arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=message):
        LlamaServer(**kwargs)  # type: ignore[arg-type]


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    """A model path that does not exist is reported with the path, before spawning anything."""
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LlamaServerError, match="nope.gguf"):
        LlamaServer(missing).start()


def test_base_url_before_start_raises() -> None:
    """Asking a stopped server for its URL is an error, not a dangling URL."""
    with pytest.raises(LlamaServerError, match="not running"):
        _ = LlamaServer(model_path="unused.gguf").base_url


@pytest.mark.slow
def test_server_that_dies_during_startup_reports_its_log(tmp_path: Path) -> None:
    """A file that is not a model makes the server exit; the error carries the exit and log."""
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all" * 100)
    server = LlamaServer(bogus, startup_timeout=60)
    with pytest.raises(LlamaServerError, match="exited with code"):
        server.start()
    assert not server.running


@pytest.mark.slow
def test_start_serves_models_and_stop_reaps_the_process() -> None:
    """start() returns once /v1/models answers; stop() leaves no process (and no zombie)."""
    with LlamaServer(n_ctx=512) as server:
        pid = server.pid
        assert pid is not None and server.running
        resp = httpx.get(server.base_url + "/models", timeout=10)
        assert resp.status_code == 200
        assert resp.json()["data"][0]["id"] == "gemma-3-270m"
    assert not server.running
    assert not _pid_alive(pid)
    server.stop()  # idempotent


@pytest.mark.slow
def test_openai_client_streams_from_shared_server(llama_server: LlamaServer) -> None:
    """The real openai client streams a chat completion from the session server."""
    client = openai.OpenAI(base_url=llama_server.base_url, api_key="unused")
    stream = client.chat.completions.create(
        model="gemma-3-270m",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert sum(1 for p in pieces if p) >= 1
    assert len([p for p in pieces if p]) <= 8


_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
           "additionalProperties": False}


async def _no_send(message: Any) -> None:
    raise AssertionError("the app under test sends nothing")


async def test_json_schema_middleware_rewrites_only_chat_bodies() -> None:
    """The ASGI middleware hands the app llama-cpp-python's form, with a matching length."""
    from stream_langchain.tiers._llama_server_main import JsonSchemaFormat

    seen: list[tuple[str, dict[bytes, bytes], bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append((scope["path"], dict(scope["headers"]), message["body"]))

    body = json.dumps({"messages": [], "response_format": {
        "type": "json_schema", "json_schema": {"name": "r", "schema": _SCHEMA}}}).encode()
    parts = [body[:10], body[10:]]

    for path in ("/v1/chat/completions", "/v1/completions"):
        queue = [{"type": "http.request", "body": p, "more_body": i == 0}
                 for i, p in enumerate(parts)]

        async def receive(queue: list[dict[str, Any]] = queue) -> dict[str, Any]:
            return queue.pop(0)

        await JsonSchemaFormat(app)({"type": "http", "path": path, "headers": [
            (b"content-length", str(len(body)).encode())]}, receive, _no_send)
    (_, headers, rewritten), (_, _, untouched) = seen
    assert json.loads(rewritten)["response_format"] == {"type": "json_object", "schema": _SCHEMA}
    assert headers[b"content-length"] == str(len(rewritten)).encode()
    assert untouched == body[:10]  # not a chat path: passed through as it came


@pytest.mark.slow
def test_stand_in_server_accepts_openai_json_schema(llama_server: LlamaServer) -> None:
    """The embedded stand-in takes response_format json_schema (llama.cpp's 422 before) and
    constrains the answer to the schema, as vLLM does."""
    r = httpx.post(f"{llama_server.base_url}/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": "Is water wet? Answer in JSON."}],
        "max_tokens": 40, "temperature": 0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": _SCHEMA}}})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["message"]["content"]
    assert content.lstrip().startswith("{")
    if choice["finish_reason"] == "stop":
        assert set(json.loads(content)) == {"ok"}
