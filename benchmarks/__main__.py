"""Run every benchmark in turn: ``python -m benchmarks [--quick] [--out DIR] [--only NAME ...]``.

Full runs write JSON (and a PNG) under ``benchmarks/<name>/results/``, the files the README's
Measured table is generated from (``python -m benchmarks.report``); on a busy 2-core machine a
full run takes about an hour. ``--quick`` is the CI-sized run of each (a few minutes in all):
its results go to ``--out`` (default: a fresh temp dir) and never over the committed ones.
``--train`` also re-runs the judge's fine-tuning scripts (torch: the ``judge-train`` extra;
about 20 minutes for 5-fold CV and 80 for leave-one-domain-out).

Run one alone with ``python -m benchmarks.<name>`` (each takes ``--quick`` and ``--out``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT

__all__ = ["STEPS", "main"]

_J = "benchmarks/judge/results/"
# (name, command after the interpreter, takes --quick/--out). Order: cheap and independent first.
STEPS: list[tuple[str, list[str], bool]] = [
    ("router_overhead", ["-m", "benchmarks.router_overhead"], True),
    ("relay", ["-m", "benchmarks.relay"], True),
    ("judge", ["-m", "benchmarks.judge"], True),
    ("judge_runtime", ["-m", "benchmarks.judge.runtime"], True),
    ("judge_lodo", ["-m", "benchmarks.judge.lodo"], True),
    ("judge_cascade", ["scripts/judge_cascade_sim.py", "--finetuned", _J + "finetune_cv_oof.npy",
                       "--finetuned-report", _J + "finetune_cv.json", "--transformer-ms",
                       _J + "finetune_latency.json", "--out", _J + "cascade_sim.json"], False),
    ("judge_cascade_nested", ["scripts/judge_cascade_sim.py", "--nested", "--finetuned",
                              _J + "finetune_cv_oof.npy", "--finetuned-report",
                              _J + "finetune_cv.json", "--transformer-ms",
                              _J + "finetune_latency.json", "--out",
                              _J + "cascade_nested.json"], False),
    ("hpc_ttft", ["-m", "benchmarks.hpc_ttft"], True),
    ("proxy", ["-m", "benchmarks.proxy"], True),
    ("scale", ["-m", "benchmarks.scale"], True),   # needs Redis (STREAM_TEST_REDIS_URL)
    ("models", ["-m", "benchmarks.models", "--no-download"], True),
    ("summarize", ["-m", "benchmarks.summarize"], True),
]
# Fine-tuning (torch); the nested cascade above reads the out-of-fold predictions they write.
TRAIN: list[tuple[str, list[str], bool]] = [
    ("judge_finetune_cv", ["scripts/judge_finetune_cv.py", "--out", _J + "finetune_cv.json",
                           "--probs-out", _J + "finetune_cv_oof.npy"], False),
    ("judge_onnx_vs_torch", ["scripts/judge_onnx_vs_torch.py", "--out",
                             _J + "onnx_vs_torch.json"], False),
]


def _takes_quick(argv: list[str]) -> bool:
    """Whether a ``-m benchmarks.x`` module parses the shared ``--quick``/``--out`` flags."""
    module = argv[1].replace(".", "/")
    for path in (ROOT / f"{module}.py", ROOT / module / "__main__.py", ROOT / module / "bench.py"):
        if path.is_file() and "add_run_args" in path.read_text(encoding="utf-8"):
            return True
    return False


def _command(name: str, argv: list[str], takes_flags: bool, args: argparse.Namespace,
             out: Path | None) -> list[str] | None:
    """The step's command line, or None when this mode skips it (said on stderr)."""
    if not args.quick:
        return [sys.executable, *argv]
    if not takes_flags:
        print(f"-- {name}: no quick mode (reads committed results only), skipped", flush=True)
        return None
    if not _takes_quick(argv):
        print(f"-- {name}: does not take --quick yet, SKIPPED", file=sys.stderr, flush=True)
        return None
    assert out is not None
    return [sys.executable, *argv, "--quick", "--out", str(out / name)]


def main(argv: list[str] | None = None) -> int:
    """Run the steps; returns 1 when any failed (the others still run)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="CI-sized runs into --out")
    ap.add_argument("--out", type=Path, default=None, help="with --quick: results folder")
    ap.add_argument("--train", action="store_true", help="also the fine-tuning scripts")
    ap.add_argument("--only", nargs="*", default=None, help="step names to run")
    args = ap.parse_args(argv)
    out = None
    if args.quick:
        out = args.out or Path(tempfile.mkdtemp(prefix="stream-bench-quick-"))
        print(f"quick results in {out}", flush=True)
    steps = (TRAIN if args.train else []) + STEPS
    failed, timings = [], []
    for name, step, takes_flags in steps:
        if args.only is not None and name not in args.only:
            continue
        cmd = _command(name, step, takes_flags, args, out)
        if cmd is None:
            continue
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        if subprocess.run(cmd, cwd=ROOT, check=False).returncode:
            failed.append(name)
        timings.append(f"{name} {time.monotonic() - t0:.0f} s")
    print("timings: " + ", ".join(timings), flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
