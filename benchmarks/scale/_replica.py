"""One proxy replica for the throughput row: ``python -m benchmarks.scale._replica``.

The proxy app over an instant tier (:class:`benchmarks.proxy._models.Ticking`, four tokens),
big limits, the given key store and Redis, served by uvicorn in the foreground.
"""

from __future__ import annotations

import argparse

__all__ = ["main"]


def main() -> None:
    """Serve one replica until SIGTERM."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--redis", default=None)
    args = ap.parse_args()

    from benchmarks.proxy._models import Ticking
    from stream_langchain import ChatStream, KeywordJudge
    from stream_langchain.proxy import ProxyConfig, Store, create_app, serve
    from stream_langchain.proxy.limits import Limits

    big = Limits(rpm=10**9, tpm=10**12, max_concurrent=10**6)
    chat = ChatStream(judge=KeywordJudge(), local=Ticking(n=4, delay=0.0))
    store = Store(args.db)
    try:
        app = create_app(chat, store=store, config=ProxyConfig(limits=big, redis_url=args.redis))
        serve(app, port=args.port, log_level="warning", graceful_timeout_s=5.0)
    finally:
        store.close()


if __name__ == "__main__":
    main()
