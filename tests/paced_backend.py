"""An OpenAI-compatible chat-completions server on loopback that streams a known, long answer
at a fixed pace and records, per request, how many tokens it generated and why it stopped.

Cancellation tests need a backend whose output does not depend on a model (a real model may
emit its end-of-sequence token after three tokens on one CPU and after three hundred on the
next) and that counts what it generated, so "at most two tokens after the client left" is
measured where the tokens are made. This is a real HTTP server (``http.server`` on
``127.0.0.1``) speaking the streaming chat-completions protocol (``chat.completion.chunk``
events, ``finish_reason``, usage when ``stream_options.include_usage``, ``data: [DONE]``).

Like vLLM it stops generating when its client disconnects: between tokens it waits on the
connection's socket, so a closed connection ends the request before the next token is made.
With ``interrupt_requests=True`` it behaves like llama-cpp-python's server with the setting
of the same name: a request that arrives while another streams ends the running stream with a
bare ``data: [DONE]`` (no ``finish_reason``).

Example:
    >>> with PacedBackend(interval=0.001) as backend:
    ...     import httpx
    ...     r = httpx.post(backend.base_url + "/chat/completions", json={
    ...         "model": "m", "max_tokens": 3, "stream": True,
    ...         "messages": [{"role": "user", "content": "go"}]})
    ...     (backend.streams[0].emitted, backend.streams[0].reason)
    (3, 'length')
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PacedBackend", "PacedStream"]


@dataclass
class PacedStream:
    """What the backend did for one streamed request.

    Attributes:
        emitted: content tokens generated (and written) so far.
        reason: why it stopped: ``"length"`` (max_tokens), ``"stop"`` (the script ended),
            ``"disconnected"`` (the client closed the connection), ``"interrupted"``
            (another request arrived, ``interrupt_requests=True``); ``None`` while running.
        ended: set once the request is over (whatever the reason).
    """

    emitted: int = 0
    reason: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class PacedBackend:
    """The server; ``with PacedBackend() as backend:`` starts and stops it.

    Args:
        tokens: length of the answer when ``max_tokens`` does not cut it.
        interval: seconds between two tokens (the backend's generation time).
        interrupt_requests: end a running stream with a bare ``[DONE]`` when another
            request arrives (llama-cpp-python's ``interrupt_requests``).
        model: the model name reported in chunks.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1``.
        streams: one :class:`PacedStream` per streamed request, in arrival order.
    """

    def __init__(self, *, tokens: int = 1000, interval: float = 0.05,
                 interrupt_requests: bool = False, model: str = "paced-1") -> None:
        self.tokens = tokens
        self.interval = interval
        self.interrupt_requests = interrupt_requests
        self.model = model
        self.streams: list[PacedStream] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PacedBackend:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="paced-backend")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def wait_ended(self, index: int = 0, timeout: float = 30.0) -> PacedStream:
        """The ``index``-th stream once it is over; raises AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                stream = self.streams[index] if index < len(self.streams) else None
            if stream is not None:
                left = deadline - time.monotonic()
                if stream.ended.wait(max(left, 0.0)):
                    return stream
            if time.monotonic() > deadline:
                raise AssertionError(f"backend stream {index} did not end within {timeout}s")
            time.sleep(0.01)

    def _open(self) -> tuple[PacedStream, int]:
        with self._lock:
            stream = PacedStream()
            self.streams.append(stream)
            return stream, len(self.streams)

    def _superseded(self, generation: int) -> bool:
        with self._lock:
            return self.interrupt_requests and len(self.streams) > generation

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not body.get("stream"):
                    data = json.dumps({"error": {"message": "this backend only streams"}})
                    self.send_response(400)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data.encode())
                    return
                stream, generation = backend._open()
                try:
                    self._stream(body, stream, generation)
                except OSError:  # the client went away while a token was being written
                    stream.reason = stream.reason or "disconnected"
                finally:
                    stream.reason = stream.reason or "error"
                    stream.ended.set()
                    self.close_connection = True

            def _client_gone(self, wait: float) -> bool:
                """Wait up to ``wait`` seconds (the next token's generation time); True as
                soon as the client closes its side of the connection."""
                conn: socket.socket = self.connection
                readable, _, _ = select.select([conn], [], [], wait)
                if not readable:
                    return False
                try:
                    return conn.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _send(self, obj: dict[str, Any] | str) -> None:
                data = obj if isinstance(obj, str) else json.dumps(obj)
                self.wfile.write(b"data: " + data.encode() + b"\n\n")
                self.wfile.flush()

            def _stream(self, body: dict[str, Any], stream: PacedStream, generation: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": f"chatcmpl-paced-{generation}", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": backend.model}
                self._send({**base, "choices": [{"index": 0, "finish_reason": None,
                                                 "delta": {"role": "assistant", "content": ""}}]})
                limit = body.get("max_tokens") or body.get("max_completion_tokens")
                n = min(backend.tokens, limit) if isinstance(limit, int) else backend.tokens
                for i in range(n):
                    if self._client_gone(backend.interval):
                        stream.reason = "disconnected"
                        return
                    if backend._superseded(generation):
                        stream.reason = "interrupted"
                        self._send("[DONE]")
                        return
                    stream.emitted += 1
                    self._send({**base, "choices": [{"index": 0, "finish_reason": None,
                                                     "delta": {"content": f" t{i}"}}]})
                stream.reason = "length" if n < backend.tokens else "stop"
                self._send({**base, "choices": [{"index": 0, "finish_reason": stream.reason,
                                                 "delta": {}}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": 5, "completion_tokens": stream.emitted,
                             "total_tokens": 5 + stream.emitted}
                    self._send({**base, "choices": [], "usage": usage})
                self._send("[DONE]")

        return Handler
