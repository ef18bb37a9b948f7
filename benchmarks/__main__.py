"""Run every benchmark in turn: ``python -m benchmarks`` (several minutes; see each one's doc).

Each writes JSON (and a PNG) under ``benchmarks/<name>/results/``. Run one alone with
``python -m benchmarks.<name>``: ``router_overhead``, ``relay``, ``hpc_ttft``, ``judge``,
``models``, ``summarize``, ``proxy``.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ["router_overhead", "relay", "judge", "hpc_ttft", "models", "summarize", "proxy"]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"== benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
