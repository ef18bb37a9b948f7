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

The table's rows score every setting on the same predictions the setting is read from, so the
row of the shipped setting is **not a held-out figure** (its thresholds were chosen on these
predictions). ``--nested`` gives the held-out one: for each outer fold, the transformer's
temperature, its HIGH threshold (alone and in the cascade) and the escalation threshold are
chosen on the other folds' out-of-fold predictions only, by the same rules that chose the
shipped values, then applied to the held-out fold::

    .venv/bin/python scripts/judge_cascade_sim.py --nested \
        --finetuned benchmarks/judge/results/finetune_cv_oof.npy \
        --finetuned-report benchmarks/judge/results/finetune_cv.json \
        --transformer-ms benchmarks/judge/results/finetune_latency.json \
        --out benchmarks/judge/results/cascade_nested.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import write_results  # noqa: E402
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
    ap.add_argument("--nested", action="store_true",
                    help="choose every threshold inside each training fold (held-out figure)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.nested:
        return _nested_main(args)

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
    print(json.dumps(out, indent=2))
    if args.out:
        write_results(args.out, out)
    return 0


# Grids and rules of the nested selection: the rules that chose the shipped values.
ESCALATE_GRID = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
MAX_ESCALATED = 0.5  # the largest setting that keeps the median query on the embedded path
CASCADE_RETENTION = 0.85  # the transformer's P(HIGH) threshold inside the cascade
ALONE_RETENTION = 0.87  # the transformer alone (judge_finetune_cv.py's --min-retention)


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the log-loss of ``softmax(logits / T)`` (as the finetune script)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.arange(0.5, 3.001, 0.05):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        nll = float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())
        if nll < best_nll:
            best_t, best_nll = float(round(t, 2)), nll
    return best_t


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def _labels(p: np.ndarray, high: float) -> np.ndarray:
    return np.asarray([decide_label(row, high) for row in p])


def _retention(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred[y != HIGH] != HIGH).mean())


def _high_for(p_ft: np.ndarray, y: np.ndarray, mask: np.ndarray, base: np.ndarray,
              min_retention: float) -> float:
    """Lowest P(HIGH) threshold whose decisions (on ``mask``; ``base`` elsewhere) keep
    ``min_retention`` of the non-HIGH queries off HIGH."""
    for t in np.arange(0.2, 0.9001, 0.005):
        pred = np.where(mask, _labels(p_ft, float(t)), base)
        if _retention(pred, y) >= min_retention:
            return float(round(t, 3))
    return 0.9


def _choose(conf: np.ndarray, emb: np.ndarray, logits: np.ndarray,
            y: np.ndarray) -> dict[str, float]:
    """Every setting of the default judge, chosen on these (training-fold) predictions only."""
    temperature = _fit_temperature(logits, y)
    p_ft = _softmax(logits / temperature)
    everyone = np.ones(len(y), dtype=bool)
    escalate = max((t for t in ESCALATE_GRID if (conf < t).mean() < MAX_ESCALATED),
                   default=ESCALATE_GRID[0])
    esc = conf < escalate
    return {"temperature": temperature, "escalate_below": escalate,
            "cascade_high_threshold": _high_for(p_ft, y, esc, emb, CASCADE_RETENTION),
            "alone_high_threshold": _high_for(p_ft, y, everyone, emb, ALONE_RETENTION)}


def _nested_main(args: argparse.Namespace) -> int:
    """Outer 5-fold (or leave-one-group-out) loop: choose on the other folds, score this one."""
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold

    rows = load_queries(args.data or default_dataset(), require_labels=True)
    y = np.asarray([LABELS.index(r["ground_truth"]) for r in rows])
    emb = cross_validate_embedded(rows, progress=False, group_by=args.group_by)
    p_emb = np.asarray(emb["_probs"])
    emb_pred = np.asarray([LABELS.index(lbl) for lbl in emb["_predictions"]])
    conf = p_emb[np.arange(len(y)), emb_pred]
    p_saved = np.load(args.finetuned).astype(np.float64)
    saved_t = json.loads(args.finetuned_report.read_text())["calibration"]["temperature"]
    # The saved probabilities are softmax(logits / saved_t): recover logits up to a constant.
    logits = saved_t * np.log(np.clip(p_saved, 1e-12, None))
    if args.group_by:
        groups = [r[args.group_by] for r in rows]
        splits = list(LeaveOneGroupOut().split(y, y, groups))
    else:
        splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y))
    cascade, alone = np.zeros(len(y), dtype=int), np.zeros(len(y), dtype=int)
    escalated = np.zeros(len(y), dtype=bool)
    chosen = []
    for tr, te in splits:
        c = _choose(conf[tr], emb_pred[tr], logits[tr], y[tr])
        chosen.append(c)
        p_te = _softmax(logits[te] / c["temperature"])
        escalated[te] = conf[te] < c["escalate_below"]
        cascade[te] = np.where(escalated[te], _labels(p_te, c["cascade_high_threshold"]),
                               emb_pred[te])
        alone[te] = _labels(p_te, c["alone_high_threshold"])
    truth = [LABELS[i] for i in y]
    keys = ("accuracy", "macro_f1", "low_recall", "high_recall", "free_tier_retention")

    def score(pred: np.ndarray) -> dict[str, float]:
        m = metrics(truth, [LABELS[i] for i in pred])
        return {k: m[k] for k in keys}

    split = (f"leave one {args.group_by} out" if args.group_by
             else "stratified 5-fold CV (seed 0)")
    out = {"protocol": f"nested, {split}: for each outer fold, the transformer's temperature, "
           "its HIGH thresholds and the cascade's escalation threshold are chosen on the other "
           "folds' out-of-fold predictions only and applied to the held-out fold (the "
           "embedded judge's own threshold is chosen inside each training fold as before); "
           "the fine-tuned models are those of judge_finetune_cv.py's folds",
           "rules": {"escalate_below": f"largest of {list(ESCALATE_GRID)} escalating under "
                     f"{MAX_ESCALATED:.0%} of the training folds' queries",
                     "cascade_high_threshold": f"lowest keeping {CASCADE_RETENTION:.0%} "
                     "retention on the training folds",
                     "alone_high_threshold": f"lowest keeping {ALONE_RETENTION:.0%} retention "
                     "on the training folds", "temperature": "minimum log-loss, 0.5-3.0"},
           "chosen_per_fold": chosen,
           "default_cascade": {**score(cascade), "escalated": round(float(escalated.mean()), 4)},
           "transformer_alone": score(alone),
           "embedded": score(emb_pred),
           "shipped": {"escalate_below": ESCALATE_BELOW,
                       "cascade_high_threshold": args.cascade_high_threshold}}
    print(json.dumps(out, indent=2))
    if args.out:
        write_results(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
