"""Single-query judge latency, warm: the encoder on ONNX Runtime against the embedded judge.

Each query is judged once by every judge, interleaved so machine load hits all alike; queries
are made unique so no cache answers. Writes ``results/runtime.json``.

    .venv/bin/python -m benchmarks.judge.runtime [--n 400] [--quick] [--out DIR]

Goal (issue 17): the encoder alone at p50 <= 5 ms and p95 <= 10 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import add_run_args, results_dir, write_results
from stream_langchain.judges import default_judge
from stream_langchain.judges.embedded import EmbeddedJudge
from stream_langchain.judges.evaluate import default_dataset, load_queries
from stream_langchain.judges.transformer import TransformerJudge, TransformerModel

RESULTS = Path(__file__).resolve().parent / "results"


def _pct(v: list[float]) -> dict[str, float]:
    a = np.asarray(v)
    return {"p50": round(float(np.percentile(a, 50)), 2),
            "p95": round(float(np.percentile(a, 95)), 2)}


def _int8_kernels(threads: int) -> TransformerModel:
    """The shipped file run with ONNX Runtime's int8 QDQ kernels (activations quantized too),
    the speed-for-logits trade the judge does not make by default."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from stream_langchain.judges.transformer import TRANSFORMER_ARTIFACT

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(TRANSFORMER_ARTIFACT.read_bytes(), so,
                                   providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    return TransformerModel(session, Tokenizer.from_str(props["stream_tokenizer"]),
                            json.loads(props["stream_meta"]))


def main(argv: list[str] | None = None) -> int:
    """Time every judge on the same unique queries; print and write the percentiles."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="queries timed per judge")
    args = add_run_args(ap).parse_args(argv)
    texts = [r["text"] for r in load_queries(default_dataset())]
    if args.quick:
        args.n, texts = 40, texts[:200]
    judges: dict[str, Any] = {
        "embedded": EmbeddedJudge(),
        "transformer_ort_1_thread": TransformerJudge(),
        "transformer_ort_2_threads": TransformerJudge(model=TransformerModel.load(threads=2)),
        "transformer_int8_kernels_1_thread": TransformerJudge(model=_int8_kernels(1)),
        "transformer_int8_kernels_2_threads": TransformerJudge(model=_int8_kernels(2)),
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
    # What the int8 kernels cost: logits and labels against the float32 session, every query.
    exact, fast = judges["transformer_ort_1_thread"], judges["transformer_int8_kernels_1_thread"]
    a = np.array([exact.model.logits(t) for t in texts])
    b = np.array([fast.model.logits(t) for t in texts])
    int8 = {"max_abs_logit_diff": round(float(np.abs(a - b).max()), 4),
            "argmax_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 4),
            "queries": len(texts)}
    report = {"n": len(order), "latency_ms": {k: _pct(v) for k, v in lat.items()},
              "ratio_to_embedded_p50": {k: round(_pct(v)["p50"] / _pct(lat["embedded"])["p50"],
                                                 1) for k, v in lat.items()},
              "int8_kernels_vs_float32": int8}
    write_results(results_dir(args, RESULTS) / "runtime.json", report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
