"""The public surface of stream_llamaindex is pinned."""

from __future__ import annotations

import stream_llamaindex
import stream_llamaindex.embeddings


def test_public_surface() -> None:
    """stream_llamaindex exports exactly StreamLLM, the routing event and the tool check."""
    assert sorted(stream_llamaindex.__all__) == ["StreamLLM", "StreamRoutingEvent",
                                                 "can_call_tools"]
    for name in stream_llamaindex.__all__:
        assert getattr(stream_llamaindex, name) is not None


def test_embeddings_surface() -> None:
    """stream_llamaindex.embeddings exports the LlamaIndex class and the plain core."""
    assert sorted(stream_llamaindex.embeddings.__all__) == ["LlamaCppEmbedding", "embed_texts",
                                                            "load_embedder"]
