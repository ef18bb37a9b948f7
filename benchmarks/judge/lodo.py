"""Leave-one-domain-out next to 5-fold CV: how the judges generalize to a domain they never saw.

The paper's authors checked ModernBERT this way (train on nine domains, test on the tenth).
Every judge that learns is retrained per held-out domain; the keyword judge learns nothing and
is scored as is. Nothing is tuned on these figures.

    .venv/bin/python -m benchmarks.judge.lodo          # about 2 minutes; JSON + PNG out

The fine-tuned encoder needs torch to retrain per domain, so it is not part of this run (its
shipped model saw every domain: scoring it here would not be held out); its leave-one-domain-out
figures come from ``scripts/judge_finetune_cv.py --group-by domain`` (``finetune_lodo.json``)
and the default cascade's from ``scripts/judge_cascade_sim.py --group-by domain``
(``cascade_sim_lodo.json``); benchmarks/judge/README.md puts them side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import add_run_args, results_dir, write_results
from stream_langchain.judges import KeywordJudge
from stream_langchain.judges.evaluate import (
    cross_validate_embedded,
    default_dataset,
    evaluate_judge,
    load_queries,
    metrics,
)

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("accuracy", "macro_f1", "high_recall", "free_tier_retention")


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in KEYS}


def _per_domain(rows: list[dict[str, Any]], preds: list[str]) -> dict[str, Any]:
    out = {}
    for dom in sorted({r["domain"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["domain"] == dom]
        m = metrics([rows[i]["ground_truth"] for i in idx], [preds[i] for i in idx])
        out[dom] = _summary(m)
    return out


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doms = list(report["embedded"]["lodo_per_domain"])
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (name, style) in enumerate((("embedded", "o"), ("keyword", "s"))):
        accs = [report[name]["lodo_per_domain"][d]["accuracy"] for d in doms]
        ax.plot([x + 0.1 * i for x in range(len(doms))], accs, style, label=name)
        ax.axhline(report[name]["kfold"]["accuracy"], ls="--", lw=0.8,
                   color=ax.lines[-1].get_color())
    ax.set_xticks(range(len(doms)), doms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy on the held-out domain")
    ax.set_title("leave-one-domain-out (dashed: 5-fold CV)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run LODO and 5-fold for the embedded and keyword judges; write JSON and a PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help="labelled JSONL with a domain key "
                    "(default: the 1,200 queries)")
    args = add_run_args(ap).parse_args(argv)
    rows = load_queries(Path(args.path) if args.path else default_dataset(),
                        require_labels=True)
    if args.quick:  # the first 5 queries of each domain x label cell
        seen: Counter[tuple[str, str]] = Counter()
        for r in rows:
            seen[r["domain"], r["ground_truth"]] += 1
            r["_keep"] = seen[r["domain"], r["ground_truth"]] <= 5
        rows = [r for r in rows if r.pop("_keep")]
    report: dict[str, Any] = {"n": len(rows), "domains": len({r["domain"] for r in rows})}
    kfold = cross_validate_embedded(rows, progress=False)
    lodo = cross_validate_embedded(rows, group_by="domain", progress=False)
    report["embedded"] = {"kfold": _summary(kfold), "lodo": _summary(lodo),
                          "lodo_per_domain": _per_domain(rows, lodo["_predictions"])}
    kw = evaluate_judge(KeywordJudge(), rows, progress=False)
    kw_preds = kw["_predictions"]
    report["keyword"] = {"kfold": _summary(kw), "lodo": _summary(kw),
                         "lodo_per_domain": _per_domain(rows, kw_preds),
                         "note": "no training: the same figures either way"}
    out = results_dir(args, RESULTS)
    write_results(out / "lodo.json", report)
    _plot(report, out / "lodo.png")
    for name in ("embedded", "keyword"):
        k, lo = report[name]["kfold"], report[name]["lodo"]
        print(f"{name:9s} 5-fold acc {k['accuracy']} F1 {k['macro_f1']} | "
              f"LODO acc {lo['accuracy']} F1 {lo['macro_f1']} HIGH recall {lo['high_recall']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
