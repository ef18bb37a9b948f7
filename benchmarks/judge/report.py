"""README rows of the judge benchmarks (see :mod:`benchmarks.report`).

Held-out figures only, each named for its protocol: 5-fold CV with every threshold chosen
inside the training folds (``cascade_nested.json``), leave-one-domain-out, and latencies of the
deployed judges. The files come from ``python -m benchmarks.judge`` (``judge_report.json``),
``python -m benchmarks.judge.runtime``, ``python -m benchmarks.judge.lodo``,
``scripts/judge_finetune_cv.py``, ``scripts/judge_cascade_sim.py [--nested]`` and
``scripts/judge_onnx_vs_torch.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def _acc(m: dict[str, Any]) -> str:
    return f"{m['accuracy']:.3f} / {m['macro_f1']:.3f}"


def _default_row(d: Path) -> Row:
    nested = load_results(d / "cascade_nested.json")
    sim = load_results(d / "cascade_sim.json")
    report = load_results(d / "judge_report.json")
    c = nested["default_cascade"]
    shipped = next(r for r in sim["rows"]
                   if r["escalate_below"] == sim["default_judge_escalate_below"])
    lat = report["judges"]["auto"]["latency_ms"]
    paper = report["published_on_this_file"]
    pub = "; ".join(f"{name}: {m['accuracy']:.3f}, p50 {m['latency_p50_ms']} ms"
                    for name, m in paper.items())
    chosen = nested["chosen_per_fold"]
    esc = sorted({f["escalate_below"] for f in chosen})
    high = sorted({f["cascade_high_threshold"] for f in chosen})
    return Row(
        claim=f"default judge (embedded, fine-tuned MiniLM when unsure), nested 5-fold CV on "
              f"the paper's {report['n']:,} queries: every threshold chosen on the training "
              "folds only",
        figure=f"accuracy / macro-F1 {_acc(c)}, retention {c['free_tier_retention']:.1%} with "
               f"HIGH recall {c['high_recall']:.3f}, {c['escalated']:.0%} escalated (per fold: "
               f"escalate below {', '.join(map(str, esc))}; HIGH from "
               f"{', '.join(map(str, high))}). Not held out (the shipped thresholds, chosen on "
               f"these predictions): {_acc(shipped)}, retention "
               f"{shipped['free_tier_retention']:.1%}, HIGH recall "
               f"{shipped['high_recall']:.3f}. Deployed judge on all {report['n']:,} queries: "
               f"p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.1f} ms. Paper: {pub}",
        reproduce="`python scripts/judge_cascade_sim.py --nested ...` (see "
                  "benchmarks/judge/README.md), `python -m benchmarks.judge`",
        sources=(d / "cascade_nested.json", d / "cascade_sim.json", d / "judge_report.json"))


def _parts_row(d: Path) -> Row:
    report = load_results(d / "judge_report.json")
    ft = load_results(d / "finetune_cv.json")
    nested = load_results(d / "cascade_nested.json")
    emb = report["judges"]["embedded"]
    alone = nested["transformer_alone"]
    sources = [d / "judge_report.json", d / "finetune_cv.json", d / "cascade_nested.json"]
    figure = (f"embedded: {_acc(emb)}, p50 {emb['latency_ms']['p50']:.2f} ms; fine-tuned "
              f"MiniLM, argmax (no threshold): {_acc(ft['numpy_int8_argmax'])}, with its "
              f"HIGH threshold chosen in the training folds: {_acc(alone)}, retention "
              f"{alone['free_tier_retention']:.1%}, HIGH recall {alone['high_recall']:.3f}")
    onnx = d / "onnx_vs_torch.json"
    if onnx.is_file():
        o = load_results(onnx)
        figure += (f"; exported ONNX graph vs torch on {o['queries']:,} queries: max |logit "
                   f"difference| {o['graph_max_abs_diff']:.1e} with the same int8-rounded "
                   f"weights, {o['int8_max_abs_diff']:.3f} against float32 torch (same label "
                   f"on {o['int8_argmax_agreement']:.2%})")
        sources.append(onnx)
    return Row(claim="its parts alone, same folds (accuracy / macro-F1)", figure=figure,
               reproduce="`python -m benchmarks.judge`, `scripts/judge_finetune_cv.py`, "
                         "`scripts/judge_onnx_vs_torch.py`",
               sources=tuple(sources))


def _runtime_row(d: Path) -> Row:
    rt = load_results(d / "runtime.json")
    lat = rt["latency_ms"]
    names = {"embedded": "embedded", "transformer_ort_1_thread": "encoder, ONNX Runtime, "
             "1 thread", "transformer_ort_2_threads": "encoder, 2 threads",
             "transformer_int8_kernels_1_thread": "encoder on int8 kernels, 1 thread",
             "transformer_int8_kernels_2_threads": "int8 kernels, 2 threads",
             "default": "default cascade"}
    parts = [f"{names.get(k, k)} {v['p50']:.2f} / {v['p95']:.2f} ms"
             + (f" ({rt['ratio_to_embedded_p50'][k]:.1f}x embedded)"
                if k.startswith("transformer_ort_1") else "")
             for k, v in lat.items()]
    int8 = rt.get("int8_kernels_vs_float32")
    tail = (f"; int8 kernels change logits by up to {int8['max_abs_logit_diff']} (same label on "
            f"{int8['argmax_agreement']:.2%})" if int8 else "")
    return Row(claim=f"judge latency, single query, warm, p50 / p95, {rt['n']} unique queries "
                     "interleaved (goal for the encoder alone: 5 / 10 ms)",
               figure="; ".join(parts) + tail,
               reproduce="`python -m benchmarks.judge.runtime`", sources=(d / "runtime.json",))


def _lodo_row(d: Path) -> Row:
    lodo = load_results(d / "lodo.json")
    ft = load_results(d / "finetune_lodo.json")
    sim = load_results(d / "cascade_sim_lodo.json")
    casc = next(r for r in sim["rows"]
                if r["escalate_below"] == sim["default_judge_escalate_below"])
    return Row(
        claim="leave one domain out (train on nine domains, test on the tenth), accuracy / "
              "macro-F1 (5-fold in brackets)",
        figure=f"encoder (argmax) {_acc(ft['numpy_int8_argmax'])}; default cascade "
               f"{_acc(casc)} (retention {casc['free_tier_retention']:.1%}; its transformer "
               f"threshold fitted on these out-of-fold predictions); embedded "
               f"{_acc(lodo['embedded']['lodo'])} ({_acc(lodo['embedded']['kfold'])}); keyword "
               f"{_acc(lodo['keyword']['lodo'])} (no training)",
        reproduce="`python -m benchmarks.judge.lodo`, `scripts/judge_finetune_cv.py --group-by "
                  "domain`, `scripts/judge_cascade_sim.py --group-by domain`",
        sources=(d / "lodo.json", d / "finetune_lodo.json", d / "cascade_sim_lodo.json"))


def readme_rows(results_dir: Path) -> list[Row]:
    """Default judge (nested CV), its parts, latency, leave-one-domain-out."""
    return [_default_row(results_dir), _parts_row(results_dir), _runtime_row(results_dir),
            _lodo_row(results_dir)]


def _cells(m: dict[str, Any]) -> str:
    return (f"{m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['low_recall']:.3f} | "
            f"{m['high_recall']:.3f} | {m['free_tier_retention']:.1%}")


def _ms(report: dict[str, Any], judge: str) -> str:
    lat = report["judges"][judge]["latency_ms"]
    return f"{lat['p50']:.2f} ms | {lat['p95']:.1f} ms"


def judge_table(results_dir: Path) -> str:
    """The results table of benchmarks/judge/README.md (every cell from a results file)."""
    d = results_dir
    report = load_results(d / "judge_report.json")
    nested = load_results(d / "cascade_nested.json")
    sim = load_results(d / "cascade_sim.json")
    ft = load_results(d / "finetune_cv.json")
    j = report["judges"]
    shipped = next(r for r in sim["rows"]
                   if r["escalate_below"] == sim["default_judge_escalate_below"])
    rows = [
        ("**default** (`auto`: embedded, transformer when unsure)", "nested 5-fold CV, held "
         "out", _cells(nested["default_cascade"]), _ms(report, "auto")),
        ("default, shipped thresholds", "5-fold CV, thresholds chosen on these predictions "
         "(not held out)", _cells(shipped), "|"),
        ("transformer (MiniLM fine-tuned), HIGH threshold", "nested 5-fold CV, held out",
         _cells(nested["transformer_alone"]), _ms(report, "transformer")),
        ("transformer, argmax", "5-fold CV, held out", _cells(ft["numpy_int8_argmax"]), "|"),
        ("embedded", "5-fold CV, held out", _cells(j["embedded"]), _ms(report, "embedded")),
        ("keyword", "no training", _cells(j["keyword"]), _ms(report, "keyword")),
        ("embedded-shipped", "trained on this file (not held out)",
         _cells(j["embedded-shipped"]), _ms(report, "embedded-shipped")),
        ("transformer shipped", "trained on this file (not held out)", _cells(j["transformer"]),
         "|"),
    ]
    for name, m in report["published_on_this_file"].items():
        rows.append((name, "published", _cells(m), f"{m['latency_p50_ms']} ms |"))
    lines = ["| judge | protocol | accuracy | macro-F1 | LOW recall | HIGH recall | retention | "
             "p50 | p95 |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
    n = report["n"]
    if "meta" in report:
        lines += ["", f"Latencies: the deployed judges (ONNX Runtime for the transformer) on all "
              f"{n:,} queries, one at a time, `python -m benchmarks.judge` "
              f"(`results/judge_report.json`, load average "
              f"{report['meta']['load_before'][0]:.1f} -> "
              f"{report['meta']['load_after'][0]:.1f} on {report['meta']['cpu']['cores']} "
              "cores)."]
    return "\n".join(lines)
