"""Offline text embeddings from a GGUF model run by llama.cpp (no torch, no model hub).

:class:`LlamaCppEmbedding` is a LlamaIndex ``BaseEmbedding``; by default it mean-pools the
hidden states of the bundled Gemma 3 270M (installed with the `local` extra, like the chat models)
into 640-dimensional, L2-normalized vectors. :func:`embed_texts` is the framework-free core,
for use from LangChain or plain Python.

Example:
    >>> from stream_llamaindex.embeddings import LlamaCppEmbedding
    >>> emb = LlamaCppEmbedding()                       # doctest: +SKIP
    >>> len(emb.get_text_embedding("hello"))            # doctest: +SKIP
    640
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator

from stream_langchain._priority import ModelLock

__all__ = ["LlamaCppEmbedding", "embed_texts", "load_embedder"]


def _default_model_path() -> str:
    from stream_langchain.tiers.llama_server import bundled_model_path

    return bundled_model_path()


def load_embedder(
    model_path: str | None = None, *, n_ctx: int = 512, n_threads: int | None = None
) -> tuple[Any, ModelLock]:
    """A ``llama_cpp.Llama`` in embedding mode (mean pooling) and the lock that guards it.

    Loaded once per ``(model_path, n_ctx, n_threads)`` and shared.

    Raises:
        RuntimeError: llama-cpp-python is not installed.
    """
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "LlamaCppEmbedding needs llama-cpp-python: pip install 'stream-tiered[local]'"
        ) from exc

    from stream_langchain.tiers.llamacpp import load_llama

    return load_llama(
        model_path or _default_model_path(),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=n_threads,
    )


def _normalize(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        raise ValueError("llama.cpp returned an all-zero embedding")
    return [x / norm for x in vector]


def embed_texts(
    texts: Sequence[str],
    *,
    model_path: str | None = None,
    n_ctx: int = 512,
    n_threads: int | None = None,
) -> list[list[float]]:
    """Embed ``texts`` (each truncated to ``n_ctx`` tokens) as L2-normalized vectors.

    Raises:
        TypeError: an item is not a string.
    """
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, not str")
    if not texts:
        return []
    model, lock = load_embedder(model_path, n_ctx=n_ctx, n_threads=n_threads)
    # llama.cpp cannot embed an empty string (no tokens); a space embeds as "nothing".
    inputs = [t if t.strip() else " " for t in texts]
    with lock:
        vectors = model.embed(inputs, truncate=True)
    return [_normalize(v) for v in vectors]


class LlamaCppEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from a GGUF model in-process (llama.cpp, mean pooling).

    Runs offline on CPU with no torch; defaults to the bundled Gemma 3 270M, so it is always
    there when the embedded stack is. Vectors are L2-normalized (cosine = dot product).
    """

    model_path: str = Field(
        default_factory=_default_model_path, description="Path of the GGUF file."
    )
    n_ctx: int = Field(default=512, gt=0, description="Tokens per text; longer is truncated.")
    n_threads: int | None = Field(default=None, description="CPU threads (None: llama.cpp's).")

    _model: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self) -> LlamaCppEmbedding:
        if self.model_name == "unknown":
            self.model_name = self.model_path.rsplit("/", 1)[-1]
        self._model = load_embedder(self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads)
        return self

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "LlamaCppEmbedding"

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        return embed_texts(texts, model_path=self.model_path, n_ctx=self.n_ctx,
                           n_threads=self.n_threads)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await asyncio.to_thread(self._embed, [query]))[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await asyncio.to_thread(self._embed, [text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._embed, texts)
