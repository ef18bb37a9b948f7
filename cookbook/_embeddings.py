"""LangChain ``Embeddings`` over llama.cpp's embedding mode (bundled GGUF, no torch).

The twin of :class:`stream_llamaindex.embeddings.LlamaCppEmbedding`, sharing its core
(:func:`stream_llamaindex.embeddings.embed_texts`), so both RAG recipes retrieve with the same
vectors.
"""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from stream_llamaindex.embeddings import embed_texts

__all__ = ["LlamaCppEmbeddings"]


class LlamaCppEmbeddings(Embeddings):
    """Mean-pooled, L2-normalized llama.cpp embeddings for LangChain vector stores.

    Args:
        model_path: a GGUF file (default: the bundled Gemma 3 270M).
        n_ctx: tokens per text; longer texts are truncated.
    """

    def __init__(self, model_path: str | None = None, n_ctx: int = 512) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text."""
        return embed_texts(texts, model_path=self.model_path, n_ctx=self.n_ctx)

    def embed_query(self, text: str) -> list[float]:
        """The vector for a query."""
        return embed_texts([text], model_path=self.model_path, n_ctx=self.n_ctx)[0]
