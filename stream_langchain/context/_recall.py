"""Recall of evicted turns: a small BM25 index (plus embeddings when configured) over messages.

Turns that leave the verbatim window stay retrievable. Each message is tokenized once and its
terms are cached under a hash of its content (:func:`message_key`), in the same store as the
summaries (the in-process LRU or the SQLite file), so a stateless client that resends the
whole history every request, or another process sharing the SQLite file, does not index a
turn twice. Scoring is Okapi BM25 over the evicted turns of this conversation, with the
latest user message as the query; when an embedding model is configured its cosine
similarity is added (vectors cached the same way).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage

from stream_langchain.context._cache import SummaryCache, canonical

__all__ = ["Embedder", "RecallIndex", "bm25_scores", "message_key", "terms"]

_WORD = re.compile(r"[a-z0-9]+(?:[-_.@][a-z0-9]+)*")
_STOP = frozenset("""a about above after again all am an and any are as at be because been
before being below between both but by can could did do does doing done down during each
few for from further had has have having he her here hers him his how i if in into is it its
itself just let me more most my myself no nor not now of off on once only or other our ours
out over own please same she should so some such tell than that the their them then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself again also okay ok thanks thank
know like get got one two use used using remember said say sure""".split())

K1 = 1.2
B = 0.75


def _stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed, then a final -e), so that the forms of
    one word meet: 'deadline' and 'deadlines' -> 'deadlin', 'move' and 'moved' -> 'mov'.

    Example:
        >>> [_stem(w) for w in ("deadline", "deadlines", "move", "moved", "moving",
        ...                     "class", "classes", "dates", "date")]
        ['deadlin', 'deadlin', 'mov', 'mov', 'mov', 'class', 'class', 'dat', 'dat']
    """
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix, keep in (("sses", "ss"), ("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""),
                         ("s", "")):
        if suffix == "s" and word.endswith("ss"):
            break
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + keep
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Index terms of ``text``: lower-cased words and identifiers, stop words out, stemmed;
    an identifier with inner punctuation (``gs-ml-2``) also yields its parts.

    Example:
        >>> terms("Our bucket is gs-ml-2, the deadlines moved.")
        ['bucket', 'gs-ml-2', 'gs', 'ml', '2', 'deadlin', 'mov']
    """
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        if any(c in word for c in "-_.@"):
            out.append(word)
            out += [_stem(p) for p in re.split(r"[-_.@]", word) if p and p not in _STOP]
        else:
            out.append(_stem(word))
    return out


def message_key(message: BaseMessage) -> str:
    """A message's identity for the recall index: a hash of its role and content."""
    return hashlib.sha256(b"stream-recall-v1\0" + canonical(message)).hexdigest()


def bm25_scores(query: Sequence[str], docs: Sequence[Sequence[str]]) -> list[float]:
    """Okapi BM25 (k1 1.2, b 0.75) of ``query`` against each of ``docs`` (term lists).

    Example:
        >>> s = bm25_scores(["bucket"], [["bucket", "name"], ["weather"]])
        >>> s[0] > 0 == s[1]
        True
    """
    n = len(docs)
    if not n or not query:
        return [0.0] * n
    avg = sum(len(d) for d in docs) / n or 1.0
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    q = Counter(query)
    scores = []
    for d in docs:
        tf = Counter(d)
        norm = K1 * (1 - B + B * len(d) / avg)
        s = 0.0
        for term, qn in q.items():
            f = tf.get(term, 0)
            if f:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                s += qn * idf * f * (K1 + 1) / (f + norm)
        scores.append(s)
    return scores


@runtime_checkable
class Embedder(Protocol):
    """What recall needs from an embedding model (LangChain's ``Embeddings`` has both)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class RecallIndex:
    """Terms (and vectors) of messages, cached by :func:`message_key` in ``store``.

    Args:
        store: where entries live between requests (any summary cache: LRU or SQLite).
        embedder: an embedding model; ``None``: lexical recall only.
        embedding_weight: how much the cosine similarity adds to the normalized BM25 score.
    """

    def __init__(self, store: SummaryCache, *, embedder: Embedder | None = None,
                 embedding_weight: float = 1.0) -> None:
        self.store = store
        self.embedder = embedder
        self.embedding_weight = embedding_weight
        self.indexed = 0
        """Messages tokenized by this index (a cache hit does not count)."""
        self._name = type(embedder).__name__ if embedder is not None else ""

    def _terms(self, key: str, text: str) -> list[str]:
        hit = self.store.get(f"terms:{key}")
        if hit is not None:
            cached: list[str] = json.loads(hit)
            return cached
        found = terms(text)
        self.store.put(f"terms:{key}", json.dumps(found))
        self.indexed += 1
        return found

    def _vectors(self, keys: list[str], texts: list[str]) -> list[list[float]]:
        assert self.embedder is not None
        out: list[list[float] | None] = []
        missing: list[int] = []
        for i, key in enumerate(keys):
            hit = self.store.get(f"emb:{self._name}:{key}")
            out.append(json.loads(hit) if hit is not None else None)
            if hit is None:
                missing.append(i)
        if missing:
            made = self.embedder.embed_documents([texts[i] for i in missing])
            for i, vec in zip(missing, made, strict=True):
                out[i] = list(vec)
                self.store.put(f"emb:{self._name}:{keys[i]}", json.dumps(out[i]))
        return [v if v is not None else [] for v in out]

    def scores(self, query: str, keys: list[str], texts: list[str]) -> list[float]:
        """Relevance of each document (``keys[i]`` identifies ``texts[i]``) to ``query``."""
        docs = [self._terms(k, t) for k, t in zip(keys, texts, strict=True)]
        lexical = bm25_scores(terms(query), docs)
        top = max(lexical, default=0.0)
        scores = [s / top if top > 0 else 0.0 for s in lexical]
        if self.embedder is not None and keys:
            try:
                q = self.embedder.embed_query(query)
                vecs = self._vectors(keys, texts)
            except Exception:  # an embedding failure leaves lexical recall working
                return scores
            scores = [s + self.embedding_weight * max(_cosine(q, v), 0.0)
                      for s, v in zip(scores, vecs, strict=True)]
        return scores

    def describe(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "embedder": self._name or None}
