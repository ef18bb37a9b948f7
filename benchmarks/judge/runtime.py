"""Single-query judge latency, warm: the encoder on ONNX Runtime against the embedded judge.

Each query is judged once by every judge, interleaved so machine load hits all alike; queries
are made unique so no cache answers. Writes ``results/runtime.json``.

    .venv/bin/python -m benchmarks.judge.runtime [--n 400]

Goal (issue 17): the encoder alone at p50 <= 5 ms and p95 <= 10 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream_langchain.judges import default_judge
from stream_langchain.judges.embedded import EmbeddedJudge
from stream_langchain.judges.evaluate import default_dataset, load_queries
from stream_langchain.judges.transformer import TransformerJudge, TransformerModel

RESULTS = Path(__file__).resolve().parent / "results"


def _pct(v: list[float]) -> dict[str, float]:
    a = np.asarray(v)
    return {"p50": round(float(np.percentile(a, 50)), 2),
            "p95": round(float(np.percentile(a, 95)), 2)}


def main(argv: list[str] | None = None) -> int:
    """Time every judge on the same unique queries; print and write the percentiles."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="queries timed per judge")
    args = ap.parse_args(argv)
    texts = [r["text"] for r in load_queries(default_dataset())]
    judges: dict[str, Any] = {
        "embedded": EmbeddedJudge(),
        "transformer_ort_1_thread": TransformerJudge(),
        "transformer_ort_2_threads": TransformerJudge(model=TransformerModel.load(threads=2)),
        "default": default_judge(),
    }
    for j in judges.values():  # warm-up
        for t in texts[:10]:
            j.judge(t + " (warm-up)")
    lat: dict[str, list[float]] = {k: [] for k in judges}
    order = np.random.default_rng(0).permutation(len(texts))[: args.n]
    for n, i in enumerate(order):
        for name, j in judges.items():
            text = f"{texts[i]} [{n}]"
            t0 = time.perf_counter()
            j.judge(text)
            lat[name].append((time.perf_counter() - t0) * 1000.0)
    report = {"n": len(order), "load_avg_1min": round(os.getloadavg()[0], 2),
              "cpus": os.cpu_count(), "latency_ms": {k: _pct(v) for k, v in lat.items()},
              "ratio_to_embedded_p50": {k: round(_pct(v)["p50"] / _pct(lat["embedded"])["p50"],
                                                 1) for k, v in lat.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "runtime.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
