"""A vision-capable OpenAI-compatible chat-completions server on loopback, for image tests.

No vision model installs on these machines (no model hub, no GPU), so the tests that carry
images need a stand-in for gemma3 / Qwen2.5-VL behind an OpenAI-compatible API. This is a
real HTTP server (``http.server`` on ``127.0.0.1``) speaking the chat-completions protocol the
real clients use: ``POST /v1/chat/completions`` with ``stream`` true (server-sent events,
``chat.completion.chunk`` objects, ``data: [DONE]``, usage when
``stream_options.include_usage``) or false (one ``chat.completion``), and ``GET /v1/models``.

What it adds over a model: it **records the image parts it receives** and answers with what
it saw, so a test can assert that the image bytes arrived intact wherever they travelled
(through ChatStream, the relay, the proxy, LlamaIndex, the CLI):

    I see 1 image: png 3x2 sha256=1a2b3c4d5e6f.

(``url <address>`` for an image given by URL, which it does not fetch). A malformed image part
gets HTTP 400 with an OpenAI-style error body, as a real server answers. ``GET /files/<name>``
serves bytes registered with :meth:`VisionBackend.serve` (images "downloaded" by a test,
with no internet here).

Example:
    >>> with VisionBackend() as vb:
    ...     import httpx
    ...     r = httpx.post(vb.base_url + "/chat/completions", json={"model": "m",
    ...         "messages": [{"role": "user", "content": [
    ...             {"type": "text", "text": "what is this?"},
    ...             {"type": "image_url", "image_url": {"url": png_data_url(3, 2)}}]}]})
    ...     r.json()["choices"][0]["message"]["content"].startswith("I see 1 image: png 3x2")
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["VisionBackend", "describe_image_url", "png_bytes", "png_data_url"]


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid PNG of one colour (real bytes any decoder opens)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def png_data_url(width: int, height: int) -> str:
    """``data:image/png;base64,...`` of :func:`png_bytes`."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height)).decode()


def describe_image_url(url: str) -> str:
    """What the server reports for one image: ``png WxH sha256=<12 hex>`` for inline PNG data,
    ``<subtype> <n> bytes sha256=...`` for other inline data, ``url <address>`` otherwise.

    Raises:
        ValueError: a ``data:`` URL that is not base64 image data.
    """
    if not url.startswith("data:"):
        return f"url {url}"
    head, _, payload = url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError(f"image data URL must be data:image/<type>;base64,...; got {head!r}")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image data is not valid base64: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()[:12]
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR":
        w, h = struct.unpack(">II", raw[16:24])
        return f"png {w}x{h} sha256={digest}"
    return f"{head[11:-7]} {len(raw)} bytes sha256={digest}"


class _Bad(ValueError):
    pass


def _images(body: dict[str, Any]) -> list[str]:
    """The image URLs of every message, in order; raises :class:`_Bad` for a malformed part."""
    out: list[str] = []
    for i, msg in enumerate(body.get("messages") or []):
        content = msg.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url:
                raise _Bad(f"messages[{i}].content[{j}].image_url.url is required")
            out.append(url)
    return out


class VisionBackend:
    """The server; ``with VisionBackend() as vb:`` starts and stops it.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1``.
        requests: every chat-completions request body received, in order.
        images: per request, the image URLs it carried (data URLs in full).
    """

    def __init__(self, model: str = "vision-stub", *, chunk_words: int = 1) -> None:
        self.model = model
        self.chunk_words = chunk_words
        self.requests: list[dict[str, Any]] = []
        self.images: list[list[str]] = []
        self.files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> VisionBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="vision-backend")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``GET /files/<name>``; returns its URL."""
        self.files[name] = data
        return f"{self.base_url.removesuffix('/v1')}/files/{name}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.images.clear()

    @property
    def last_images(self) -> list[str]:
        """The image URLs of the latest request (``[]`` when none came)."""
        with self._lock:
            return list(self.images[-1]) if self.images else []

    def answer(self, body: dict[str, Any], images: list[str]) -> str:
        """The reply text for one request."""
        if not images:
            return "I see no image."
        seen = "; ".join(describe_image_url(u) for u in images)
        return f"I see {len(images)} image{'s' if len(images) > 1 else ''}: {seen}."

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                self._json(status, {"error": {"message": message,
                                              "type": "invalid_request_error",
                                              "param": None, "code": None}})

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.startswith("/files/"):
                    data = backend.files.get(self.path[len("/files/"):])
                    if data is None:
                        self._error(404, f"no file {self.path}")
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [
                        {"id": backend.model, "object": "model", "owned_by": "tests"}]})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self) -> None:  # noqa: N802
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._error(404, f"no route {self.path}")
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    images = _images(body)
                    text = backend.answer(body, images)
                except (_Bad, ValueError) as exc:
                    self._error(400, str(exc))
                    return
                with backend._lock:
                    backend.requests.append(body)
                    backend.images.append(images)
                limit = body.get("max_tokens") or body.get("max_completion_tokens")
                words = text.split(" ")
                if isinstance(limit, int) and limit > 0:
                    words = words[:limit]
                if body.get("stream"):
                    self._stream(body, words)
                else:
                    self._whole(body, " ".join(words))

            def _usage(self, body: dict[str, Any], n_out: int) -> dict[str, int]:
                n_in = sum(len(str(m.get("content", "")).split())
                           for m in body.get("messages") or [])
                return {"prompt_tokens": n_in, "completion_tokens": n_out,
                        "total_tokens": n_in + n_out}

            def _whole(self, body: dict[str, Any], text: str) -> None:
                self._json(200, {
                    "id": "chatcmpl-vision", "object": "chat.completion",
                    "created": int(time.time()), "model": backend.model,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": text}}],
                    "usage": self._usage(body, len(text.split()))})

            def _stream(self, body: dict[str, Any], words: list[str]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-vision", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": backend.model}

                def send(obj: dict[str, Any]) -> None:
                    self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                    self.wfile.flush()

                send({**base, "choices": [{"index": 0, "finish_reason": None,
                                           "delta": {"role": "assistant", "content": ""}}]})
                step = max(backend.chunk_words, 1)
                for i in range(0, len(words), step):
                    piece = " ".join(words[i:i + step])
                    piece = piece if i == 0 else " " + piece
                    send({**base, "choices": [{"index": 0, "finish_reason": None,
                                               "delta": {"content": piece}}]})
                send({**base, "choices": [{"index": 0, "finish_reason": "stop",
                                           "delta": {}}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    send({**base, "choices": [], "usage": self._usage(body, len(words))})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler
