"""``python -m benchmarks.judge``: the complexity-judge benchmark on the 1,200-query file.

Runs ``stream bench judge`` for the embedded judge (5-fold cross-validation, trained only on
the other folds), the keyword judge (no training) and the shipped artifact (trained on this
very file: a training-set figure, reported only as such), then measures what the CLI does
not: the embedded judge's cold load time in a fresh interpreter, and its trade-off curve of
free-tier retention against HIGH recall (out-of-fold P(HIGH) thresholds) beside the
published judges. Writes ``results/judge_report.json``, ``results/confusion_*.png``,
``results/load_and_tradeoff.json`` and ``results/tradeoff.png``.

Usage::

    .venv/bin/python -m benchmarks.judge [PATH] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks._common import add_run_args, load_results, results_dir, write_results
from stream_langchain.cli.judge import PUBLISHED
from stream_langchain.cli.judge import main as cli_main
from stream_langchain.judges.evaluate import default_dataset

__all__: list[str] = []

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parents[1]


def _cold_load_s(runs: int = 3, *, default: bool = False) -> list[float]:
    """Seconds to import, load the artifact(s) and judge once, in a new process.

    ``default``: the default judge (it loads both artifacts), else the embedded one.
    """
    build = ("from stream_langchain.chat_model import default_judge; j = default_judge()"
             if default else
             "from stream_langchain.judges.embedded import EmbeddedJudge; j = EmbeddedJudge()")
    code = (f"import time; t = time.perf_counter(); {build}; "
            "j.judge('warm up'); print(time.perf_counter() - t)")
    out = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, check=True, timeout=120)
        out.append(round(float(proc.stdout.strip()), 3))
    return out


def _plot_tradeoff(sweep: list[dict[str, float]], chosen: dict[str, float], path: Path,
                   quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=120)
    ax.plot([s["free_tier_retention"] for s in sweep], [s["high_recall"] for s in sweep],
            "o-", label="embedded, P(HIGH) threshold sweep (out-of-fold)")
    for s in sweep:
        ax.annotate(f"{s['threshold']:.2f}", (s["free_tier_retention"], s["high_recall"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([chosen["free_tier_retention"]], [chosen["high_recall"]], "r*", ms=12,
            label="embedded, threshold chosen inside each training fold")
    ft = RESULTS / "finetune_cv.json"
    # written by scripts/judge_finetune_cv.py (needs torch to regenerate)
    if ft.is_file() and not quick:
        sw = json.loads(ft.read_text())["numpy_int8_sweep"]
        ax.plot([s["retention"] for s in sw], [s["high_recall"] for s in sw], "-", lw=1.5,
                label="fine-tuned MiniLM (numpy int8), P(HIGH) sweep, 5-fold CV")
    sim = RESULTS / "cascade_sim.json"
    # scripts/judge_cascade_sim.py: the default judge's out-of-fold point
    if sim.is_file() and not quick:
        cs = json.loads(sim.read_text())
        row = next(r for r in cs["rows"]
                   if r["escalate_below"] == cs["default_judge_escalate_below"])
        ax.plot([row["free_tier_retention"]], [row["high_recall"]], "D", ms=8,
                label=f"default judge (cascade, {row['escalated']:.0%} escalated), 5-fold CV")
    for name, m in PUBLISHED.items():
        ax.plot([m["free_tier_retention"]], [m["high_recall"]], "s", label=name)
    ax.axvline(0.85, color="grey", ls=":", lw=1)
    ax.axhline(0.75, color="grey", ls=":", lw=1)
    ax.set_xlabel("free-tier retention (non-HIGH kept off cloud)")
    ax.set_ylabel("HIGH recall")
    ax.set_title("Retention vs HIGH recall, 1,200 queries (5-fold CV)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    ap = argparse.ArgumentParser(description="complexity-judge benchmark")
    ap.add_argument("path", nargs="?", help="labelled JSONL (default: the 1,200 queries)")
    args = add_run_args(ap).parse_args(argv)  # --quick: first 150 queries, 3 folds
    out = results_dir(args, RESULTS)
    path = Path(args.path) if args.path else default_dataset()
    print(f"data: {path}")
    cmd = ["bench", "judge", str(path), "--judge", "embedded", "--judge", "keyword",
           "--judge", "embedded-shipped", "--judge", "transformer", "--judge", "auto",
           "--out", str(out)]
    if args.quick:
        cmd += ["--limit", "150", "--folds", "3"]
    rc = cli_main(cmd)
    if rc:
        return rc
    report = load_results(out / "judge_report.json")
    write_results(out / "judge_report.json", report)  # the CLI's report, with provenance
    emb = report["judges"]["embedded"]
    load = _cold_load_s(1 if args.quick else 3)
    load_default = _cold_load_s(1 if args.quick else 3, default=True)
    extra = {
        "cold_load_s": {"runs": load, "max": max(load)},
        "cold_load_default_judge_s": {"runs": load_default, "max": max(load_default)},
        "embedded_latency_ms": emb["latency_ms"],
        "transformer_latency_ms": report["judges"]["transformer"]["latency_ms"],
        "default_judge_latency_ms": report["judges"]["auto"]["latency_ms"],
        "keyword_latency_ms": report["judges"]["keyword"]["latency_ms"],
        "tradeoff_sweep": emb["high_threshold_sweep"],
        "chosen": {k: emb[k] for k in ("free_tier_retention", "high_recall", "accuracy")},
    }
    write_results(out / "load_and_tradeoff.json", extra)
    _plot_tradeoff(emb["high_threshold_sweep"], extra["chosen"], out / "tradeoff.png",
                   args.quick)
    print(f"cold load (import + artifact + first judgement): embedded {load} s, "
          f"default judge {load_default} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
