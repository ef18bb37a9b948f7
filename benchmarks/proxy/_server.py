"""The proxy in its own process, as deployed: ``python -m benchmarks.proxy._server KIND PORT DB
[BACKEND]``.

Prints an API key on stdout, then serves until terminated. ``KIND``: ``instant`` (5 tokens at
once), ``ticking`` (20 tokens, 10 ms apart), ``llamacpp`` (the embedded model, 4 tokens) or
``openai`` (``ChatOpenAI`` against the OpenAI-compatible server at ``BACKEND``, as the local
tier).
"""

from __future__ import annotations

import sys

from langchain_core.language_models import BaseChatModel

from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.proxy import KeyRing, Limits, ProxyConfig, Store, create_app, serve

BIG = ProxyConfig(limits=Limits(rpm=1_000_000, tpm=1_000_000_000, max_concurrent=1000))


def sub_model(kind: str, backend: str | None = None) -> BaseChatModel:
    """The tier model for ``kind`` (the same one the parent measures in process)."""
    from benchmarks.proxy._models import Ticking

    if kind == "instant":
        return Ticking(n=5, delay=0.0)
    if kind == "ticking":
        return Ticking(n=20, delay=0.01)
    if kind == "llamacpp":
        from stream_langchain.tiers.llamacpp import ChatLlamaCpp

        return ChatLlamaCpp(max_tokens=4, temperature=0.0)
    if kind == "openai" and backend:
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(base_url=backend + "/v1", api_key="bench",  # type: ignore[arg-type]
                          model="instant", max_retries=0)
    raise SystemExit(f"unknown kind {kind!r}")


def main() -> None:
    kind, port, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = Store(db)
    print(KeyRing(store).create("bench")[0], flush=True)
    backend = sys.argv[4] if len(sys.argv) > 4 else None
    chat = ChatStream(local=sub_model(kind, backend), judge=KeywordJudge())
    try:
        serve(create_app(chat, store=store, config=BIG), port=port, log_level="warning")
    finally:
        store.close()


if __name__ == "__main__":
    main()
