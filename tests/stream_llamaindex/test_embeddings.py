"""LlamaCppEmbedding: offline embeddings from the bundled GGUF (llama.cpp, no torch)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from stream_llamaindex.embeddings import LlamaCppEmbedding, embed_texts

pytestmark = pytest.mark.slow

CAT = "The cat sat on the mat."
KITTEN = "A kitten is resting on a rug."
SLURM = "Slurm schedules batch jobs on the compute nodes of the cluster."


@pytest.fixture(scope="module")
def emb() -> LlamaCppEmbedding:
    return LlamaCppEmbedding()


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_normalized_and_not_degenerate(emb: LlamaCppEmbedding) -> None:
    """640-dim unit vectors that differ between different texts."""
    a, b = emb.get_text_embedding_batch([CAT, SLURM])
    assert len(a) == len(b) == 640
    assert math.isclose(math.sqrt(_cos(a, a)), 1.0, rel_tol=1e-5)
    assert _cos(a, b) < 0.95
    assert len({round(x, 6) for x in a}) > 100


def test_similar_meaning_is_closer(emb: LlamaCppEmbedding) -> None:
    """A paraphrase is closer than an unrelated sentence, and a query finds its passage."""
    cat, kitten, slurm = emb.get_text_embedding_batch([CAT, KITTEN, SLURM])
    assert _cos(cat, kitten) > _cos(cat, slurm)
    query = emb.get_query_embedding("Which scheduler runs jobs on the cluster?")
    assert _cos(query, slurm) > _cos(query, cat)


def test_batch_matches_single(emb: LlamaCppEmbedding) -> None:
    """Embedding in a batch gives the same vector as alone."""
    single = emb.get_text_embedding(KITTEN)
    batch = emb.get_text_embedding_batch([CAT, KITTEN])[1]
    assert _cos(single, batch) > 0.999


async def test_async_matches_sync(emb: LlamaCppEmbedding) -> None:
    """The async methods return what the sync ones do."""
    sync = emb.get_query_embedding(CAT)
    assert _cos(await emb.aget_query_embedding(CAT), sync) > 0.999
    (vec,) = await emb.aget_text_embedding_batch([CAT])
    assert _cos(vec, sync) > 0.999


def test_core_handles_empty_inputs() -> None:
    """No texts -> no vectors; an empty string still embeds; a non-string is a TypeError."""
    assert embed_texts([]) == []
    (vec,) = embed_texts([""])
    assert len(vec) == 640
    with pytest.raises(TypeError, match="text 1 is int"):
        embed_texts(["a", 3])  # type: ignore[list-item]


def test_long_text_is_truncated_not_an_error(emb: LlamaCppEmbedding) -> None:
    """A text longer than n_ctx tokens is truncated."""
    assert len(emb.get_text_embedding("word " * 800)) == 640


def test_no_torch_needed() -> None:
    """Embedding never imports torch (checked in a fresh interpreter)."""
    code = ("import sys; from stream_llamaindex.embeddings import LlamaCppEmbedding; "
            "LlamaCppEmbedding().get_text_embedding('x'); "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
