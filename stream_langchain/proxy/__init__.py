"""HPC-as-API: an OpenAI-compatible HTTP server over a ChatStream (any tier or the router).

Any OpenAI client (the ``openai`` SDK, ``ChatOpenAI``, curl, an IDE plugin) talks to STREAM
with no HPC knowledge. Start it with ``stream proxy``; make keys with ``stream keys create``.

- :func:`create_app`: the FastAPI app over a ``ChatStream`` and a :class:`Store`;
- :class:`ProxyServer`: uvicorn in a thread (tests, notebooks); :func:`serve`: foreground;
- :class:`Store`: keys (hashes only) and usage, SQLite or PostgreSQL via SQLAlchemy;
- :class:`KeyRing`, :class:`Limiter`: API keys and per-identity limits.

The proxy imports the engine; the engine never imports the proxy.

Example:
    >>> from stream_langchain.proxy import ProxyConfig, Limits
    >>> ProxyConfig(limits=Limits(rpm=10)).limits.rpm
    10
"""

from __future__ import annotations

from stream_langchain.proxy.app import ProxyConfig, create_app
from stream_langchain.proxy.auth import Identity, KeyRing
from stream_langchain.proxy.errors import APIError
from stream_langchain.proxy.limits import Limiter, Limits
from stream_langchain.proxy.schema import MessageLimits
from stream_langchain.proxy.server import ProxyServer, serve
from stream_langchain.proxy.usage import Store, UsageRow

__all__ = [
    "APIError",
    "Identity",
    "KeyRing",
    "Limiter",
    "Limits",
    "MessageLimits",
    "ProxyConfig",
    "ProxyServer",
    "Store",
    "UsageRow",
    "create_app",
    "serve",
]
