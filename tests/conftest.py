"""Shared pytest fixtures. Each owner appends its fixtures under its own marked section."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stream_langchain.tiers.llama_server import LlamaServer

# ---------------------------------------------------------------------------------------------
# HPC tier fixtures (owner: HPC helper; stream_langchain/tiers/llama_server.py, hpc_stack.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """One running llama.cpp OpenAI-compatible server (bundled model) for the whole session.

    Starting it costs seconds and a few hundred MB, so tests share it. Yields a
    :class:`stream_langchain.tiers.llama_server.LlamaServer`; use ``.base_url``.
    """
    from stream_langchain.tiers.llama_server import LlamaServer

    server = LlamaServer(n_ctx=2048, n_threads=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hpc_relay() -> Iterator[tuple[str, str]]:
    """One loopback relay for the session's HPC tests: yields ``(url, secret)``."""
    import secrets

    import relay

    secret = secrets.token_urlsafe(32)
    handle = relay.run_in_thread(secret=secret, host="127.0.0.1", port=0)
    try:
        yield handle.url, secret
    finally:
        handle.stop()


# ---------------------------------------------------------------------------------------------
# end of HPC tier fixtures
# ---------------------------------------------------------------------------------------------
