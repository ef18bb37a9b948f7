"""Would a cascade (embedded judge, then a fine-tuned transformer when unsure) meet the goals?

Combines two sets of out-of-fold predictions on the same stratified 5-fold split (seed 0):
the embedded judge's, computed here by ``judge_eval.cross_validate_embedded``, and the
fine-tuned MiniLM's, saved by ``scripts/judge_finetune_cv.py --probs-out``. For each
confidence threshold ``t`` a query whose embedded confidence is below ``t`` is "escalated"
and takes the transformer's label, as :class:`~stream_langchain.judges.CascadeJudge` does.
Latency per query is the embedded judge's measured latency, plus (when escalated) one draw
from the transformer's measured single-query latencies: an estimate built from
measurements; ``stream bench judge --judge auto`` times the deployed default judge.

Usage::

    .venv/bin/python scripts/judge_cascade_sim.py \\
        --finetuned benchmarks/judge/results/finetune_cv_oof.npy \\
        --finetuned-report benchmarks/judge/results/finetune_cv.json \\
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

from stream_langchain.judges.default import CASCADE_HIGH_THRESHOLD, ESCALATE_BELOW  # noqa: E402
from stream_langchain.judges.embedded import decide_label  # noqa: E402
from stream_langchain.judges.evaluate import (  # noqa: E402
    LABELS,
    cross_validate_embedded,
    default_dataset,
    load_queries,
    metrics,
)

HIGH = LABELS.index("HIGH")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints and writes the simulated trade-off table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--finetuned", type=Path, required=True,
                    help="out-of-fold calibrated probs (.npy) from judge_finetune_cv.py")
    ap.add_argument("--finetuned-report", type=Path, required=True,
                    help="its JSON report (for the HIGH threshold the exported judge uses)")
    ap.add_argument("--transformer-ms", type=Path, required=True,
                    help="JSON from judge_finetune_cv.py --latency-only (uses its samples)")
    ap.add_argument("--cascade-high-threshold", type=float, default=CASCADE_HIGH_THRESHOLD,
                    help="the transformer's P(HIGH) threshold inside the cascade "
                    "(default: the default judge's)")
    ap.add_argument("--group-by", default=None,
                    help="leave one group out (e.g. 'domain'), matching a finetune run made "
                    "with the same --group-by")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    rows = load_queries(args.data or default_dataset(), require_labels=True)
    truth = [r["ground_truth"] for r in rows]
    emb = cross_validate_embedded(rows, progress=False, group_by=args.group_by)
    p_emb = np.asarray(emb["_probs"])
    emb_pred = list(emb["_predictions"])  # thresholded inside each training fold
    emb_ms = np.asarray(emb["_latencies_ms"])
    p_ft = np.load(args.finetuned)
    if p_ft.shape != p_emb.shape:
        raise SystemExit(f"{args.finetuned}: shape {p_ft.shape}, expected {p_emb.shape}")
    thr = json.loads(args.finetuned_report.read_text())["calibration"]["high_threshold"]

    def ft_labels(high: float) -> list[str]:
        return [LABELS[decide_label(p, high)] for p in p_ft]

    # as default_judge does: the standalone threshold when always asked, else the cascade's
    alone, in_cascade = ft_labels(thr), ft_labels(args.cascade_high_threshold)
    tr_ms = np.asarray(json.loads(args.transformer_ms.read_text())["samples_ms"])
    rng = np.random.default_rng(0)
    conf = np.asarray([p_emb[i, LABELS.index(lbl)] for i, lbl in enumerate(emb_pred)])
    table = []
    for t in (0.0, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 1.0):
        esc = conf < t if t < 1.0 else np.ones(len(rows), dtype=bool)
        ft_pred = alone if t >= 1.0 else in_cascade
        pred = [ft_pred[i] if esc[i] else emb_pred[i] for i in range(len(rows))]
        lat = emb_ms + np.where(esc, rng.choice(tr_ms, size=len(rows)), 0.0)
        m = metrics(truth, pred, lat.tolist())
        table.append({"escalate_below": t, "escalated": round(float(esc.mean()), 4),
                      **{k: m[k] for k in ("accuracy", "macro_f1", "low_recall", "high_recall",
                                           "free_tier_retention")},
                      "p50_ms_est": m["latency_ms"]["p50"], "p95_ms_est": m["latency_ms"]["p95"]})
    split = (f"leave one {args.group_by} out" if args.group_by
             else "stratified 5-fold CV (seed 0)")
    out = {"protocol": f"{split}: out-of-fold decisions of both judges; "
           "the embedded judge's HIGH threshold chosen inside each training fold, the "
           "transformer's on its out-of-fold predictions",
           "transformer_high_threshold": {"alone": thr,
                                          "in_cascade": args.cascade_high_threshold},
           "default_judge_escalate_below": ESCALATE_BELOW, "rows": table}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
