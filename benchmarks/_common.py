"""Helpers shared by the benchmarks: results files with provenance, CLI flags, topics, a percentile.

Every benchmark writes its results through :func:`write_results`, which adds a ``meta`` block:
the git commit (and whether the tracked tree differed from it), the CPU model and the
instruction-set flags that change llama.cpp's and ONNX Runtime's kernels, the core count, the
load average when the process started and when it wrote the file, the UTC dates and the exact
command. ``python -m benchmarks.report`` shows that block next to every README row.

Every benchmark takes ``--quick`` (a CI-sized run) and ``--out DIR`` (where results go); see
:func:`add_run_args` and :func:`results_dir`. A quick run never writes to the committed
``results/`` folders: without ``--out`` it goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "TOPICS", "Row", "add_run_args", "load_results", "machine_meta", "pct",
           "results_dir", "write_results"]

ROOT = Path(__file__).resolve().parent.parent

# Varied topics, so no two runs share a prompt (defeats prefix and judge caches).
TOPICS = ["rivers", "prime numbers", "the French revolution", "photosynthesis", "hash tables",
          "black holes", "sourdough bread", "the immune system", "TCP handshakes", "volcanoes",
          "jazz harmony", "glaciers", "compilers", "honey bees", "tax policy", "quantum dots"]

# Flags that select different kernels in llama.cpp / ONNX Runtime / numpy (greedy decoding and
# timings differ between machines that differ here).
_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
          "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

# What the process saw when this module was first imported: the start of the benchmark run.
_STARTED = (time.time(), os.getloadavg())


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` with linear interpolation (numpy's default method)."""
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def add_run_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--quick`` and ``--out`` to a benchmark's parser (every benchmark takes both)."""
    ap.add_argument("--quick", action="store_true",
                    help="CI-sized run (seconds to a minute); results go to --out or a temp dir")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default: the benchmark's results/, or a temp dir "
                         "with --quick)")
    return ap


def results_dir(args: argparse.Namespace, default: Path) -> Path:
    """Where a run writes: ``--out``, else a fresh temp dir for ``--quick``, else ``default``."""
    out: Path | None = getattr(args, "out", None)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="stream-bench-")) if args.quick else default
    out.mkdir(parents=True, exist_ok=True)
    return out


def _git(*cmd: str) -> str:
    try:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu() -> dict[str, Any]:
    model: str = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [f for f in _FLAGS if f in flags],
            "cores": os.cpu_count() or 0}


def _command() -> str:
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv:
        argv[0] = "python"
    return shlex.join(argv)


def machine_meta() -> dict[str, Any]:
    """Provenance of a results file: commit, CPU, cores, load before/after, dates, command."""
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--",
                 "stream_langchain", "stream_llamaindex", "relay", "hpc_functions",
                 "benchmarks", "scripts").splitlines()
    started, load_before = _STARTED
    return {
        "commit": _git("rev-parse", "HEAD") or None,
        "dirty": bool(dirty),
        "dirty_paths": [line.split(maxsplit=1)[-1] for line in dirty[:20]],
        "cpu": _cpu(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "command": _command(),
    }


def write_results(path: Path | str, data: dict[str, Any], *,
                  command: str | None = None) -> Path:
    """Write ``data`` as JSON at ``path`` with a ``meta`` provenance block (see module doc).

    Args:
        path: the results file; its folder is created.
        data: the benchmark's results (a ``meta`` key in it is replaced).
        command: the command to record, when it is not this process's own (for example a
            script that post-processes another run); default: this process's command line.

    Returns:
        ``path``.
    """
    path = Path(path)
    meta = machine_meta()
    if command is not None:
        meta["command"] = command
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, **{k: v for k, v in data.items() if k != "meta"}},
                               indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Row:
    """One row of the README's Measured table, contributed by a benchmark's ``report.py``.

    Each ``benchmarks/<name>/report.py`` exposes ``readme_rows(results_dir: Path) -> list[Row]``;
    ``python -m benchmarks.report`` renders them, adding the provenance (commit, CPU, load)
    from the ``meta`` of every file in ``sources``.

    Attributes:
        claim: what is measured, and how (workload, sizes, the comparison).
        figure: the numbers, every one formatted from the results file (unfavourable ones too).
        reproduce: the command that writes the file(s), e.g. ``python -m benchmarks.relay``.
        sources: the results files the figures come from.
    """

    claim: str
    figure: str
    reproduce: str
    sources: tuple[Path, ...]


def load_results(path: Path | str) -> dict[str, Any]:
    """Read one results JSON (``FileNotFoundError`` names the command to run when missing)."""
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data
