"""Would a cascade (embedded judge, then a fine-tuned transformer when unsure) meet the goals?

Combines two sets of out-of-fold predictions on the same stratified 5-fold split (seed 0):
the embedded judge's, computed here by :func:`~stream_langchain.judge_eval.cross_validate_embedded`,
and the fine-tuned MiniLM's, saved by ``scripts/judge_finetune_cv.py --probs-out``. For each
confidence threshold ``t`` a query whose embedded confidence is below ``t`` is "escalated" and
takes the transformer's probabilities. Latency per query is the embedded judge's measured
latency, plus (when escalated) one draw from the transformer's measured single-query
latencies: an estimate built from measurements, not a timing of a deployed cascade.

Usage::

    .venv/bin/python scripts/judge_cascade_sim.py \\
        --finetuned benchmarks/judge/results/finetune_cv_oof.npy \\
        --transformer-ms benchmarks/judge/results/finetune_latency.json \\
        --out benchmarks/judge/results/cascade_sim.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_langchain.judge_eval import (  # noqa: E402
    LABELS,
    cross_validate_embedded,
    default_dataset,
    load_queries,
)

HIGH = LABELS.index("HIGH")


def _scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    pred = probs.argmax(1)
    f1s = []
    for c in range(3):
        tp = float(((pred == c) & (y == c)).sum())
        prec = tp / max((pred == c).sum(), 1)
        rec = tp / max((y == c).sum(), 1)
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    non_high = y != HIGH
    best = None
    for t in np.linspace(0.05, 0.95, 181):  # best HIGH recall at >= 85% retention
        judged = probs[:, HIGH] >= t
        if 1 - judged[non_high].mean() >= 0.85:
            r = float(judged[~non_high].mean())
            best = r if best is None else max(best, r)
    return {"accuracy": round(float((pred == y).mean()), 4),
            "macro_f1": round(float(np.mean(f1s)), 4),
            "high_recall_at_85pct_retention": None if best is None else round(best, 4)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints and writes the simulated trade-off table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--finetuned", type=Path, required=True, help="out-of-fold probs (.npy)")
    ap.add_argument("--transformer-ms", type=Path, required=True,
                    help="JSON from judge_finetune_cv.py --latency-only (uses its samples)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    rows = load_queries(args.data or default_dataset(), require_labels=True)
    y = np.asarray([LABELS.index(r["ground_truth"]) for r in rows])
    emb = cross_validate_embedded(rows, progress=False)
    p_emb = np.asarray(emb["_probs"])
    emb_ms = np.asarray(emb["_latencies_ms"])
    p_ft = np.load(args.finetuned)
    if p_ft.shape != p_emb.shape:
        raise SystemExit(f"{args.finetuned}: shape {p_ft.shape}, expected {p_emb.shape}")
    tr_ms = np.asarray(json.loads(args.transformer_ms.read_text())["samples_ms"])
    rng = np.random.default_rng(0)
    conf = p_emb.max(1)
    table = []
    for t in (0.0, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 1.01):
        esc = conf < t
        probs = np.where(esc[:, None], p_ft, p_emb)
        lat = emb_ms + np.where(esc, rng.choice(tr_ms, size=len(y)), 0.0)
        table.append({"confidence_threshold": t, "escalated": round(float(esc.mean()), 4),
                      **_scores(probs, y),
                      "p50_ms_est": round(float(np.percentile(lat, 50)), 2),
                      "p95_ms_est": round(float(np.percentile(lat, 95)), 2)})
    out = {"protocol": "stratified 5-fold CV (seed 0), out-of-fold predictions of both judges",
           "rows": table}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
