"""Score complexity judges on a labelled query file: metrics, cross-validation, reports.

A judge that does not learn from the file (keyword, LLM, the shipped embedded artifact when
the file is not its training data) is scored directly. The trainable embedded judge is scored
by stratified k-fold cross-validation: for each fold its heads, calibration and HIGH
threshold are trained on the other folds only, then the fold is labelled. The report says
which protocol produced each figure.

Example:
    >>> from stream_langchain.judges.evaluate import metrics
    >>> m = metrics(["LOW", "HIGH", "MEDIUM"], ["LOW", "HIGH", "HIGH"], [1.0, 2.0, 3.0])
    >>> m["accuracy"], m["free_tier_retention"]
    (0.6667, 0.5)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream_langchain.judges.base import Judge, JudgeError

__all__ = [
    "LABELS",
    "cross_validate_embedded",
    "default_dataset",
    "evaluate_judge",
    "load_queries",
    "metrics",
    "plot_confusion",
    "write_report",
]

LABELS: tuple[str, str, str] = ("LOW", "MEDIUM", "HIGH")
_REPO = Path(__file__).resolve().parents[2]
_SHARED = _REPO.parent / "shared" / "data" / "stream_balanced_test.jsonl"
_PACKAGED = Path(__file__).with_name("data") / "stream_balanced_test.jsonl"


def default_dataset() -> Path:
    """The 1,200-query benchmark: ``../shared/data`` beside the repo, else the packaged copy.

    Raises:
        FileNotFoundError: neither exists; pass a PATH explicitly.
    """
    for p in (_SHARED, _PACKAGED):
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no benchmark file at {_SHARED} or {_PACKAGED}; pass PATH to a JSONL file of "
        '{"text": ..., "ground_truth": "LOW|MEDIUM|HIGH"} lines'
    )


def load_queries(path: str | Path, *, require_labels: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file of ``{"text": ...}`` objects (``ground_truth`` optional).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not JSON, lacks a string ``text``, or (with
            ``require_labels``) lacks a LOW/MEDIUM/HIGH ``ground_truth``; the line is named.
    """
    p = Path(path)
    rows: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f'{p}:{n}: expected an object with a string "text"')
            gt = obj.get("ground_truth")
            if gt is not None:
                gt = str(gt).upper()
                if gt not in LABELS:
                    raise ValueError(f"{p}:{n}: ground_truth {obj['ground_truth']!r} is not "
                                     "LOW, MEDIUM or HIGH")
                obj["ground_truth"] = gt
            elif require_labels:
                raise ValueError(f'{p}:{n}: no "ground_truth" label')
            rows.append(obj)
    if not rows:
        raise ValueError(f"{p}: no queries")
    return rows


def _r(x: float) -> float:
    return round(float(x), 4)


def metrics(y_true: Sequence[str], y_pred: Sequence[str],
            latencies_ms: Sequence[float] = ()) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion, retention, latency.

    ``free_tier_retention`` = 1 - (non-HIGH queries labelled HIGH) / (non-HIGH queries); it is
    reported beside ``high_recall`` because retention alone rewards never escalating.
    """
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    t = np.asarray([LABELS.index(v) for v in y_true])
    p = np.asarray([LABELS.index(v) for v in y_pred])
    cm = np.zeros((3, 3), dtype=int)
    np.add.at(cm, (t, p), 1)
    per: dict[str, dict[str, float]] = {}
    f1s = []
    for i, lbl in enumerate(LABELS):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        per[lbl] = {"precision": _r(prec), "recall": _r(rec), "f1": _r(f1),
                    "support": int(cm[i].sum())}
    non_high = t != 2
    escalated = int(((p == 2) & non_high).sum())
    out: dict[str, Any] = {
        "n": int(len(t)),
        "accuracy": _r((t == p).mean()) if len(t) else 0.0,
        "macro_f1": _r(np.mean(f1s)),
        "per_class": per,
        "confusion": {"labels": list(LABELS), "rows_true_cols_pred": cm.tolist()},
        "free_tier_retention": _r(1 - escalated / non_high.sum()) if non_high.any() else None,
        "high_recall": per["HIGH"]["recall"],
        "low_recall": per["LOW"]["recall"],
    }
    if len(latencies_ms):
        lat = np.asarray(latencies_ms, dtype=float)
        out["latency_ms"] = {"p50": _r(np.percentile(lat, 50)), "p95": _r(np.percentile(lat, 95)),
                             "mean": _r(lat.mean()), "max": _r(lat.max())}
    return out


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled,
                    transient=False, console=Console(stderr=True))


def evaluate_judge(
    judge: Judge,
    rows: Sequence[dict[str, Any]],
    *,
    progress: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """Label every row with ``judge`` (no training) and score it.

    A :class:`JudgeError` on a query counts as a wrong answer and is tallied in ``errors``.
    """
    preds: list[str] = []
    lat: list[float] = []
    probs: list[list[float] | None] = []
    errors = 0
    with _progress(progress) as bar:
        task = bar.add_task(description or judge.name, total=len(rows))
        for r in rows:
            t0 = time.perf_counter()
            try:
                out = judge.judge(r["text"])
                label = out.complexity.value
                probs.append([out.prob(lbl) for lbl in LABELS] if out.probs else None)
            except JudgeError:
                errors += 1
                label = "__error__"
                probs.append(None)
            lat.append((time.perf_counter() - t0) * 1000.0)
            preds.append(label)
            bar.advance(task)
    truth = [r["ground_truth"] for r in rows]
    wrong = {"LOW": "HIGH", "MEDIUM": "HIGH", "HIGH": "LOW"}
    scored = [p if p != "__error__" else wrong[t] for p, t in zip(preds, truth, strict=True)]
    m = metrics(truth, scored, lat)
    m["errors"] = errors
    m["_predictions"] = scored
    m["_probs"] = probs
    return m


def cross_validate_embedded(
    rows: Sequence[dict[str, Any]],
    *,
    folds: int = 5,
    seed: int = 0,
    progress: bool = True,
    static: Any = None,
    wrap: Callable[[Judge], Judge] | None = None,
    group_by: str | None = None,
) -> dict[str, Any]:
    """Stratified k-fold CV of the embedded judge: each fold's model never saw that fold.

    With ``group_by`` (a row key such as ``"domain"``) the folds are the groups instead:
    leave-one-group-out, each model trained on every other group and scored on the one it
    never saw (``folds`` is then ignored; ``per_fold_accuracy`` follows ``fold_names``).

    The static word vectors (label-free, distilled from all-MiniLM-L6-v2) are reused from the
    shipped artifact; everything that learns from labels (the three heads, the calibration
    temperature and the HIGH threshold) is refit on the other folds only. Needs
    scikit-learn (the ``judge-train`` extra). ``wrap`` turns each fold's embedded judge into
    the judge actually scored (for example a :class:`~stream_langchain.judges.CascadeJudge`
    with the fold's model as primary).
    """
    try:
        from sklearn.model_selection import StratifiedKFold
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("cross-validation trains the judge: pip install "
                           "'stream-tiered[judge-train]' (scikit-learn)") from exc
    from stream_langchain.judges.embedded import EmbeddedJudge, EmbeddedModel, HeadConfig, fit_heads

    if static is None:
        static = EmbeddedModel.load().static
    texts = [r["text"] for r in rows]
    y = np.asarray([LABELS.index(r["ground_truth"]) for r in rows])
    preds = [""] * len(rows)
    lat = [0.0] * len(rows)
    probs = np.zeros((len(rows), 3))
    fold_of = np.zeros(len(rows), dtype=int)
    thresholds: list[float] = []
    if group_by is None:
        skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
        splits = list(skf.split(np.zeros(len(y)), y))
        names = [f"fold {k}" for k in range(folds)]
    else:
        groups = np.asarray([str(r[group_by]) for r in rows])
        names = sorted(set(groups.tolist()))
        splits = [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in names]
        folds = len(names)
    with _progress(progress) as bar:
        task = bar.add_task(f"embedded, {folds}-fold CV", total=len(rows))
        for k, (tr, te) in enumerate(splits):
            model = fit_heads([texts[i] for i in tr], [LABELS[y[i]] for i in tr], static,
                              HeadConfig(seed=seed))
            thresholds.append(model.high_threshold)
            judge: Judge = EmbeddedJudge(model=model)
            if wrap is not None:
                judge = wrap(judge)
            for i in te:
                t0 = time.perf_counter()
                out = judge.judge(texts[i])
                lat[i] = (time.perf_counter() - t0) * 1000.0
                preds[i] = out.complexity.value
                probs[i] = [out.prob(lbl) for lbl in LABELS]
                fold_of[i] = k
                bar.advance(task)
    m = metrics([LABELS[v] for v in y], preds, lat)
    m["errors"] = 0
    m["fold_high_thresholds"] = [_r(t) for t in thresholds]
    m["fold_names"] = names
    m["per_fold_accuracy"] = [
        _r(float(np.mean([preds[i] == LABELS[y[i]] for i in np.flatnonzero(fold_of == k)])))
        for k in range(folds)
    ]
    m["high_threshold_sweep"] = _sweep(probs, y)
    m["_predictions"] = preds
    m["_probs"] = probs.tolist()
    m["_latencies_ms"] = lat
    return m


def _sweep(probs: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Retention / HIGH recall / accuracy if P(HIGH) >= t decided HIGH (out-of-fold probs)."""
    out = []
    for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6):
        pred = np.where(probs[:, 2] >= t, 2, np.where(probs[:, 0] >= probs[:, 1], 0, 1))
        nh = y != 2
        out.append({"threshold": t,
                    "accuracy": _r((pred == y).mean()),
                    "high_recall": _r((pred[y == 2] == 2).mean()) if (y == 2).any() else 0.0,
                    "free_tier_retention": _r(1 - (pred[nh] == 2).mean()) if nh.any() else 0.0})
    return out


def plot_confusion(cm: Sequence[Sequence[int]], title: str, path: str | Path) -> Path:
    """Write a confusion-matrix heat map (rows: true label, columns: predicted) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=120)
    ax.imshow(a, cmap="Blues")
    ax.set_xticks(range(3), LABELS)
    ax.set_yticks(range(3), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (LLM label)")
    ax.set_title(title, fontsize=9)
    hi = a.max() if a.size else 1
    for i in range(3):
        for j in range(3):
            ax.text(j, i, str(a[i, j]), ha="center", va="center",
                    color="white" if a[i, j] > hi / 2 else "black")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_report(results: dict[str, dict[str, Any]], out_dir: str | Path,
                 meta: dict[str, Any]) -> tuple[Path, list[Path]]:
    """Write ``judge_report.json`` and one ``confusion_<judge>.png`` per judge into ``out_dir``.

    Keys starting with ``_`` (per-query predictions) are left out of the JSON.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    pngs = []
    clean: dict[str, Any] = {}
    for name, m in results.items():
        clean[name] = {k: v for k, v in m.items() if not k.startswith("_")}
        title = (f"{name}: acc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}\n"
                 f"{m.get('protocol_short', '')} (n={m['n']})")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        pngs.append(plot_confusion(m["confusion"]["rows_true_cols_pred"], title,
                                   d / f"confusion_{safe}.png"))
    report = dict(meta, judges=clean)
    path = d / "judge_report.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path, pngs
