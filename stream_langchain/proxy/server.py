"""Running the proxy: uvicorn in the foreground (``stream proxy``) or in a thread (tests,
benchmarks, notebooks), with graceful shutdown.

On SIGINT/SIGTERM (or :meth:`ProxyServer.stop`) uvicorn stops accepting connections and lets
running requests, streams included, finish for up to ``graceful_timeout_s``; streams still
running then are cancelled (their usage rows say ``aborted``).

Example:
    >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    >>> from stream_langchain import ChatStream, KeywordJudge
    >>> from stream_langchain.proxy.usage import Store
    >>> chat = ChatStream(local=GenericFakeChatModel(messages=iter(["hi"])),
    ...                   judge=KeywordJudge())
    >>> store = Store("sqlite://")
    >>> with ProxyServer(create_app(chat, store=store)) as server:
    ...     import httpx
    ...     httpx.get(server.url + "/health").json()["status"]
    'ok'
    >>> store.close()
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from stream_langchain.proxy.app import create_app

__all__ = ["ProxyServer", "bind", "create_app", "serve"]


class _Server(uvicorn.Server):
    """uvicorn, telling the app (``app.state.on_drain``) when graceful shutdown begins and
    how long running requests have, so it can end them itself, with an error and a usage
    row, a moment before uvicorn would cancel them (which cuts a stream mid-event)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        on_drain = getattr(getattr(self.config.app, "state", None), "on_drain", None)
        if callable(on_drain):
            timeout = float(self.config.timeout_graceful_shutdown or 0)
            on_drain(max(timeout - min(1.0, timeout / 4), 0.0))
        await super().shutdown(sockets)


def _config(app: ASGIApp, *, graceful_timeout_s: float, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(app, lifespan="on", access_log=False, log_level=log_level,
                          timeout_graceful_shutdown=max(int(graceful_timeout_s), 1),
                          log_config=None)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP; without it Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (for :func:`serve`'s ``sock``: bind first, so a
    port in use is known before anything says it is serving).

    Raises:
        OSError: The address cannot be bound (in use, not local, no permission).
    """
    return _bind(host, port)


def serve(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 8000,
          graceful_timeout_s: float = 30.0, log_level: str = "info",
          sock: socket.socket | None = None) -> None:
    """Serve ``app`` in the foreground until SIGINT/SIGTERM, then shut down gracefully
    (on ``sock`` when given, from :func:`bind`; else on a socket bound here)."""
    sock = sock if sock is not None else _bind(host, port)
    server = _Server(_config(app, graceful_timeout_s=graceful_timeout_s,
                             log_level=log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class ProxyServer:
    """The proxy on a loopback port, served by uvicorn in a background thread.

    Args:
        app: the ASGI app (:func:`create_app`).
        host / port: where to listen (port 0: any free port; see :attr:`url`).
        graceful_timeout_s: how long :meth:`stop` lets running requests finish.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0,
                 graceful_timeout_s: float = 10.0, log_level: str = "warning") -> None:
        self._sock = _bind(host, port)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = _Server(_config(app, graceful_timeout_s=graceful_timeout_s,
                                      log_level=log_level))
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name="stream-proxy", daemon=True)

    def start(self, timeout: float = 30.0) -> ProxyServer:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the proxy did not start within {timeout:g} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown: stop accepting, let running requests finish (up to the app's
        graceful timeout), then return."""
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
