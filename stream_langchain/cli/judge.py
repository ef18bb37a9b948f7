"""``stream judge`` and ``stream bench judge``: label queries, evaluate judges.

``stream_langchain.cli`` calls :func:`register` with its sub-parsers.

- ``stream judge "question"``: one label (``--json`` for a JSON object).
- ``stream judge --file queries.jsonl --json``: one JSON object per ``{"text": ...}`` line:
  ``text``, ``complexity``, ``confidence``, ``judge``, ``ms`` (and ``probs`` when known).
- ``stream bench judge [PATH]``: accuracy, macro-F1, per-class precision/recall, confusion,
  free-tier retention with HIGH recall, latency p50/p95; a JSON report and one confusion
  PNG per judge under ``--out``. The embedded judge is scored by k-fold cross-validation
  (trained on the other folds only); judges that do not learn are scored directly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream_langchain.judges import CachedJudge, CascadeJudge, Judge, KeywordJudge, LLMJudge

__all__ = ["build_judge", "register"]

JUDGES = ("auto", "embedded", "transformer", "keyword", "llm", "cascade")
BENCH_JUDGES = ("embedded", "embedded-shipped", "transformer", "auto", "keyword", "llm",
                "cascade")
# judges built from shipped artifacts, scored as they are (their CV figures come from
# scripts/judge_finetune_cv.py and scripts/judge_cascade_sim.py, which need torch)
_SHIPPED = ("embedded-shipped", "transformer", "auto")

PUBLISHED = {
    "llama3.2-3b (paper)": {"accuracy": 0.490, "macro_f1": 0.436, "low_recall": 0.083,
                            "high_recall": 0.603, "free_tier_retention": 0.851,
                            "latency_p50_ms": 163.6},
    "modernbert-finetuned (paper repo)": {"accuracy": 0.642, "macro_f1": 0.640,
                                          "low_recall": 0.708, "high_recall": 0.725,
                                          "free_tier_retention": 0.854,
                                          "latency_p50_ms": 32.5},
}
GOAL = {"accuracy": 0.70, "macro_f1": 0.70, "free_tier_retention": 0.85, "high_recall": 0.75,
        "latency_p50_ms": 5.0}


# --------------------------------------------------------------------------- judges


def _llm_model(args: argparse.Namespace) -> Any:
    """The chat model behind ``--judge llm|cascade``."""
    if getattr(args, "ollama", None):
        from langchain_ollama import ChatOllama

        return ChatOllama(model=args.ollama, temperature=0, num_predict=8)
    if getattr(args, "llm_base_url", None):
        from langchain_openai import ChatOpenAI
        from pydantic import SecretStr

        key = SecretStr(os.environ.get("OPENAI_API_KEY", "not-needed"))
        # llama.cpp's server reads max_tokens only (see DESIGN.md), hence extra_body too
        return ChatOpenAI(base_url=args.llm_base_url, model=args.llm_model, api_key=key,
                          temperature=0, max_tokens=8,  # type: ignore[call-arg]
                          extra_body={"max_tokens": 8})
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    return ChatLlamaCpp(temperature=0, max_tokens=4)  # type: ignore[call-arg]


def _llm_judge(args: argparse.Namespace) -> LLMJudge:
    from stream_langchain.judges import FEW_SHOT_EXAMPLES

    few = FEW_SHOT_EXAMPLES if getattr(args, "few_shot", False) else ()
    return LLMJudge(_llm_model(args), timeout=args.llm_timeout, few_shot=few,
                    structured=getattr(args, "structured", False))


def build_judge(kind: str, args: argparse.Namespace) -> Judge:
    """The judge named by ``--judge`` (the embedded one from the shipped artifact)."""
    if kind == "keyword":
        return KeywordJudge()
    if kind in ("embedded", "embedded-shipped"):
        from stream_langchain.judges.embedded import EmbeddedJudge

        return EmbeddedJudge()
    if kind == "transformer":
        from stream_langchain.judges.transformer import TransformerJudge

        return TransformerJudge()
    if kind == "auto":
        from stream_langchain.judges.default import default_judge

        return default_judge()
    if kind == "llm":
        return _llm_judge(args)
    if kind == "cascade":
        from stream_langchain.judges.embedded import EmbeddedJudge

        return CascadeJudge(EmbeddedJudge(), _llm_judge(args), threshold=args.threshold)
    raise ValueError(f"unknown judge {kind!r}; choose from {', '.join(BENCH_JUDGES)}")


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "LLM judge (--judge llm|cascade)",
        "Default LLM: Qwen2.5-Coder-0.5B-Instruct through llama.cpp (in-process).")
    g.add_argument("--ollama", metavar="MODEL", help="Ollama model, e.g. llama3.2:3b")
    g.add_argument("--llm-base-url", metavar="URL", help="OpenAI-compatible server")
    g.add_argument("--llm-model", default="local", help="model name at --llm-base-url")
    g.add_argument("--llm-timeout", type=float, default=10.0, help="seconds per query")
    g.add_argument("--few-shot", action="store_true", help="show labelled examples first")
    g.add_argument("--structured", action="store_true",
                   help="ask for structured output where the model supports it")
    g.add_argument("--threshold", type=float, default=0.6,
                   help="cascade: consult the LLM below this embedded confidence")


# --------------------------------------------------------------------------- stream judge


def _record(text: str, out: Any) -> dict[str, Any]:
    rec = {"text": text, "complexity": out.complexity.value,
           "confidence": round(float(out.confidence), 4), "judge": out.judge,
           "ms": round(float(out.ms), 3)}
    if out.probs is not None:
        rec["probs"] = {k: round(float(v), 4) for k, v in out.probs.items()}
    if out.errors:
        rec["errors"] = list(out.errors)
    return rec


def _cmd_judge(args: argparse.Namespace) -> int:
    from stream_langchain.judges.evaluate import load_queries

    if (args.question is None) == (args.file is None):
        raise ValueError('give one question or --file queries.jsonl (lines of {"text": ...})')
    judge = CachedJudge(build_judge(args.judge, args))
    texts = [args.question] if args.question is not None else [
        r["text"] for r in load_queries(args.file)]
    for text in texts:
        rec = _record(text, judge.judge(text))
        if args.json:
            print(json.dumps(rec, ensure_ascii=False), flush=True)
        else:
            probs = " ".join(f"{k}={v:.2f}" for k, v in rec.get("probs", {}).items())
            short = text if len(text) <= 60 else text[:57] + "..."
            print(f"{rec['complexity']:<6} {rec['confidence']:.2f}  {rec['judge']}  "
                  f"{rec['ms']:.2f} ms  {probs}  {short}", flush=True)
    return 0


# --------------------------------------------------------------------------- stream bench judge


def _protocol(kind: str, folds: int, trained_on_file: bool) -> str:
    if kind == "embedded":
        return (f"{folds}-fold stratified cross-validation: heads, calibration and HIGH "
                f"threshold trained only on the other {folds - 1} folds each time "
                "(static word vectors are label-free, distilled from all-MiniLM-L6-v2)")
    if kind == "cascade":
        return (f"{folds}-fold CV for the embedded primary (as above); the LLM is not trained")
    if kind in _SHIPPED:
        if trained_on_file:
            return ("shipped artifact scored directly: it was TRAINED ON THIS FILE, so this "
                    "is training-set accuracy, not a held-out figure")
        return "shipped artifact scored directly (not trained on this file)"
    return "no training on this file: scored directly"


def _trained_on(kind: str, sha: str) -> bool:
    """Whether the shipped artifacts behind ``kind`` were trained on the file with ``sha``."""
    from stream_langchain.judges.embedded import EmbeddedModel
    from stream_langchain.judges.transformer import TransformerModel

    metas = []
    if kind in ("embedded-shipped", "auto"):
        metas.append(EmbeddedModel.load().meta)
    if kind in ("transformer", "auto"):
        metas.append(TransformerModel.load().meta)
    return any(m.get("data_sha256") == sha and not m.get("limit") for m in metas)


def _cmd_bench_judge(args: argparse.Namespace) -> int:
    from stream_langchain.judges.evaluate import (
        cross_validate_embedded,
        default_dataset,
        evaluate_judge,
        load_queries,
        write_report,
    )

    path = Path(args.path) if args.path else default_dataset()
    rows = load_queries(path, require_labels=True)
    if args.limit:
        rows = rows[: args.limit]
    if args.folds < 2:
        raise ValueError("--folds must be >= 2")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    kinds = list(dict.fromkeys(args.judge or ["embedded", "keyword"]))
    progress = not args.no_progress
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        trained_on_file = False
        if kind == "embedded":
            m = cross_validate_embedded(rows, folds=args.folds, seed=args.seed, progress=progress)
        elif kind == "cascade":
            llm = _llm_judge(args)

            def wrap(j: Judge, llm: Judge = llm) -> Judge:
                return CascadeJudge(j, llm, threshold=args.threshold)

            m = cross_validate_embedded(rows, folds=args.folds, seed=args.seed,
                                        progress=progress, wrap=wrap)
        else:
            judge = build_judge(kind, args)
            if kind in _SHIPPED:
                trained_on_file = _trained_on(kind, sha)
            m = evaluate_judge(judge, rows, progress=progress, description=kind)
        m["protocol"] = _protocol(kind, args.folds, trained_on_file)
        m["protocol_short"] = (
            f"{args.folds}-fold CV, held out" if kind in ("embedded", "cascade")
            else "TRAINING DATA, not held out" if trained_on_file else "no training")
        m["wall_s"] = round(time.perf_counter() - t0, 2)
        results[kind] = m
        _print_summary(kind, m)
    meta = {
        "dataset": str(path), "dataset_sha256": sha, "n": len(rows), "folds": args.folds,
        "seed": args.seed, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "command": "stream " + " ".join(getattr(args, "_argv", sys.argv[1:])),
        "published_on_this_file": PUBLISHED, "goal": GOAL,
        "notes": ("free_tier_retention = 1 - (non-HIGH judged HIGH)/(non-HIGH); read it with "
                  "high_recall. Labels are an LLM's (noisy)."),
    }
    if "keyword" in results:
        base = results["keyword"].get("latency_ms", {}).get("p50")
        for m in results.values():
            p50 = m.get("latency_ms", {}).get("p50")
            if base and p50:
                m["latency_p50_vs_keyword"] = round(p50 / base, 2)
    report, pngs = write_report(results, args.out, meta)
    print(f"report: {report}")
    for p in pngs:
        print(f"confusion: {p}")
    return 0


def _print_summary(kind: str, m: dict[str, Any]) -> None:
    lat = m.get("latency_ms", {})
    print(f"{kind}: accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
          f"LOW recall {m['low_recall']:.3f}  HIGH recall {m['high_recall']:.3f}  "
          f"retention {m['free_tier_retention']:.3f}  "
          f"p50 {lat.get('p50', float('nan')):.2f} ms  p95 {lat.get('p95', float('nan')):.2f} ms"
          f"  [{m['protocol']}]", flush=True)


# --------------------------------------------------------------------------- registration


def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="bench_command", required=True)


def register(subparsers: Any) -> None:
    """Add ``judge`` and ``bench judge`` to the ``stream`` command's sub-parsers.

    Each sub-command stores its handler in ``func`` (called with the parsed arguments,
    returning the exit status).
    """
    judge = subparsers.add_parser("judge", help="label queries LOW / MEDIUM / HIGH")
    judge.add_argument("question", nargs="?", help="the query to label")
    judge.add_argument("--file", type=Path, help='JSONL file of {"text": ...} lines')
    judge.add_argument("--json", action="store_true", help="one JSON object per line")
    judge.add_argument("--judge", choices=JUDGES, default="auto",
                       help="auto (default): the embedded judge, asking the fine-tuned "
                       "transformer when unsure")
    _add_llm_options(judge)
    judge.set_defaults(func=_cmd_judge)

    choices = getattr(subparsers, "choices", {}) or {}
    bench = choices.get("bench") or subparsers.add_parser("bench", help="measured claims")
    bench_sub = _subparsers_of(bench)
    bj = bench_sub.add_parser(
        "judge", help="evaluate complexity judges on a labelled JSONL file",
        description="Accuracy, macro-F1, per-class precision/recall, confusion, free-tier "
        "retention with HIGH recall and latency, with a JSON report and confusion PNGs. "
        "The embedded judge is scored by k-fold cross-validation (trained on the other folds "
        "only); 'embedded-shipped', 'transformer' and 'auto' (the default judge) score the "
        "shipped artifacts as they are.")
    bj.add_argument("path", nargs="?", help="JSONL with text + ground_truth (default: the "
                    "1,200-query benchmark in ../shared/data, else the packaged copy)")
    bj.add_argument("--judge", action="append", choices=BENCH_JUDGES,
                    help="judge to score; repeat for several (default: embedded, keyword)")
    bj.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    bj.add_argument("--seed", type=int, default=0, help="fold shuffling seed")
    bj.add_argument("--limit", type=int, default=0, help="only the first N queries")
    bj.add_argument("--out", default="stream-bench-judge", help="report directory")
    bj.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_llm_options(bj)
    bj.set_defaults(func=_cmd_bench_judge)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the two sub-commands without the rest of ``stream`` (tests, ``python -m``)."""
    parser = argparse.ArgumentParser(prog="stream")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
