"""The fine-tuned MiniLM encoder judge, run by ONNX Runtime with Hugging Face ``tokenizers``.

The judge is one ONNX file (``judges/data/minilm_judge_v1.onnx``, 23 MB): all-MiniLM-L6-v2's
architecture (6 layers, 384 wide, 12 heads, mean pooling) plus a linear head over LOW / MEDIUM /
HIGH, fine-tuned end to end on labelled queries by ``scripts/judge_finetune_cv.py`` and written
by :mod:`stream_langchain.judges.export`: int8 matrices with one scale per column, its WordPiece
tokenizer and its calibration (temperature, P(HIGH) threshold) in the file's metadata.
:class:`TransformerModel` runs it; :class:`TransformerJudge` wraps it as a
:class:`~stream_langchain.judges.Judge`.

ONNX Runtime widens the int8 matrices into float32 once, when the session is built
(``session.disable_quant_qdq``: otherwise it runs them as int8 kernels that quantize the
activations too and move logits by up to 0.1), so the logits are those of the trained model.
One intra-op thread: a single query is too small to gain from more, and a router shares its
CPU with the tiers.

Example:
    >>> from stream_langchain.judges.transformer import TransformerJudge
    >>> j = TransformerJudge()
    >>> j.judge("What is the capital of France?").complexity.value
    'LOW'
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream_langchain.judges.base import Judge, JudgeError, Judgement
from stream_langchain.judges.embedded import decide_label, judgement_from_probs, load_cached

__all__ = ["TRANSFORMER_ARTIFACT", "TransformerJudge", "TransformerModel"]

TRANSFORMER_ARTIFACT = Path(__file__).resolve().parent / "data" / "minilm_judge_v1.onnx"
_FORMAT = "stream-encoder-judge/2"


class TransformerModel:
    """The encoder judge of one ONNX file: tokenizer, session and calibration.

    Use :meth:`load` (a file) or :meth:`from_bytes` (what
    :func:`~stream_langchain.judges.export.build_onnx` returns).

    Args:
        session: an ``onnxruntime.InferenceSession`` over the judge's graph.
        tokenizer: a ``tokenizers.Tokenizer`` that adds ``[CLS]``/``[SEP]`` and truncates.
        meta: the file's ``stream_meta`` (``temperature``, ``high_threshold``, ``max_len``...).
    """

    def __init__(self, session: Any, tokenizer: Any, meta: dict[str, Any]) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.meta = meta
        self.temperature = float(meta.get("temperature", 1.0))
        self.high_threshold = float(meta.get("high_threshold", 0.5))
        self.max_len = int(meta.get("max_len", 128))

    def token_ids(self, text: str) -> list[int]:
        """``[CLS] pieces [SEP]``, truncated to ``max_len`` like the training tokenizer."""
        return list(self.tokenizer.encode(text).ids)

    def logits_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Head logits (before temperature), shape ``(len(texts), 3)``; padded and masked."""
        if not texts:
            return np.zeros((0, 3), dtype=np.float32)
        seqs = [self.token_ids(t) for t in texts]
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, seq in enumerate(seqs):
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
        out = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32)

    def logits(self, text: str) -> np.ndarray:
        """Head logits (before temperature) for one query."""
        return self.logits_batch([text])[0]

    def proba_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities of LOW, MEDIUM, HIGH per query (float64, rows sum to 1)."""
        z = self.logits_batch(texts).astype(np.float64) / self.temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, text: str) -> np.ndarray:
        """Calibrated probabilities of LOW, MEDIUM, HIGH (float64, sum to 1)."""
        return self.proba_batch([text])[0]

    def decide(self, probs: np.ndarray) -> int:
        """Label index from probabilities (:func:`decide_label` at this model's threshold)."""
        return decide_label(probs, self.high_threshold)

    # ---- loading

    @classmethod
    def from_bytes(cls, blob: bytes, *, threads: int = 1, origin: str = "<bytes>"
                   ) -> TransformerModel:
        """The session for a judge written by :func:`.export.build_onnx`.

        Raises:
            JudgeError: not an ONNX encoder judge, or ONNX Runtime cannot run it.
        """
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are dependencies
            raise JudgeError(f"the transformer judge needs onnxruntime and tokenizers: {exc}"
                             ) from exc
        try:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            so.add_session_config_entry("session.disable_quant_qdq", "1")
            session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
            props = session.get_modelmeta().custom_metadata_map
            if "stream_meta" not in props:
                raise ValueError("no stream_meta in the model's metadata")
            meta = json.loads(props["stream_meta"])
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {_FORMAT!r}")
            tokenizer = Tokenizer.from_str(props["stream_tokenizer"])
        except Exception as exc:
            raise JudgeError(f"transformer judge artifact {origin} is unreadable: {exc}"
                             ) from exc
        return cls(session, tokenizer, meta)

    @classmethod
    def load(cls, path: str | Path = TRANSFORMER_ARTIFACT, *, threads: int = 1
             ) -> TransformerModel:
        """Read a judge file (see :mod:`stream_langchain.judges.export`).

        Raises:
            JudgeError: the file is missing, truncated or not an encoder-judge artifact.
        """
        p = Path(path)
        try:
            blob = p.read_bytes()
        except FileNotFoundError as exc:
            raise JudgeError(f"transformer judge artifact not found: {p}") from exc
        except OSError as exc:
            raise JudgeError(f"transformer judge artifact {p} is unreadable: {exc}") from exc
        return cls.from_bytes(blob, threads=threads, origin=str(p))


class TransformerJudge(Judge):
    """The fine-tuned MiniLM judge (ONNX Runtime, offline): stronger than the embedded one.

    Args:
        path: an artifact written by ``scripts/judge_finetune_cv.py --export``
            (default: the shipped one).
        model: an already loaded :class:`TransformerModel` (wins over ``path``).
        high_threshold: override the artifact's P(HIGH) decision threshold.
        name: the judge's name in routing records.

    Raises:
        JudgeError: the artifact is missing or unreadable.
    """

    def __init__(self, path: str | Path | None = None, *, model: TransformerModel | None = None,
                 high_threshold: float | None = None, name: str = "transformer") -> None:
        if high_threshold is not None and not 0.0 <= high_threshold <= 1.0:
            raise ValueError("TransformerJudge high_threshold must be within [0, 1]")
        self.model = model if model is not None else _load_cached(path or TRANSFORMER_ARTIFACT)
        self.high_threshold = (self.model.high_threshold if high_threshold is None
                               else high_threshold)
        self.name = name

    def _judge(self, text: str) -> Judgement:
        return judgement_from_probs(self.model.predict_proba(text), self.high_threshold,
                                    self.name)

    async def _ajudge(self, text: str) -> Judgement:
        # milliseconds of ONNX Runtime (which releases the GIL): keep the event loop free
        return await asyncio.to_thread(self._judge, text)


def _load_cached(path: str | Path) -> TransformerModel:
    return load_cached(TransformerModel.load, path)
