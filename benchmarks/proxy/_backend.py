"""An instant OpenAI-compatible backend: ``python -m benchmarks.proxy._backend PORT``.

A bare asyncio HTTP/1.1 server (keep-alive, ``Content-Length`` bodies) answering
``POST /v1/chat/completions`` at once: streamed as five one-word ``chat.completion.chunk``
events, a finish chunk, a usage chunk when ``stream_options.include_usage`` asks for it, and
``[DONE]``; or one ``chat.completion``. ``GET /v1/models`` and ``GET /health`` answer too.
It does no work worth measuring, so what a proxy in front of it adds is the proxy's own cost.
Prints ``ready`` on stdout once listening.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

__all__ = ["TOKENS", "answer"]

TOKENS = [" w0", " w1", " w2", " w3", " w4"]


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-instant", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 10, "completion_tokens": len(TOKENS),
            "total_tokens": 10 + len(TOKENS)}


def answer(request: dict[str, Any]) -> tuple[bytes, bytes]:
    """The content type and body answering one chat-completions request."""
    model = str(request.get("model") or "instant")
    if not request.get("stream"):
        body = {"id": "chatcmpl-instant", "object": "chat.completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(TOKENS)}}],
                "usage": _usage()}
        return b"application/json", json.dumps(body).encode()
    out = [_chunk(model, {"role": "assistant", "content": ""})]
    out += [_chunk(model, {"content": t}) for t in TOKENS]
    out.append(_chunk(model, {}, "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        usage = {"id": "chatcmpl-instant", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": model, "choices": [],
                 "usage": _usage()}
        out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"text/event-stream", b"".join(out)


def _response(status: str, ctype: bytes, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n".encode()
            + b"content-type: " + ctype + b"\r\nconnection: keep-alive\r\n\r\n" + body)


def _route(method: str, path: str, body: bytes) -> bytes:
    if method == "POST" and path.endswith("/chat/completions"):
        try:
            ctype, out = answer(json.loads(body or b"{}"))
        except ValueError:
            return _response("400 Bad Request", b"application/json", b'{"error":"bad json"}')
        return _response("200 OK", ctype, out)
    if method == "GET" and path.endswith("/models"):
        return _response("200 OK", b"application/json",
                         b'{"object":"list","data":[{"id":"instant","object":"model"}]}')
    if method == "GET":
        return _response("200 OK", b"application/json", b'{"status":"ok"}')
    return _response("404 Not Found", b"application/json", b'{"error":"no route"}')


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            writer.write(_route(method, path, body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
