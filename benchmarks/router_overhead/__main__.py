"""Router overhead: TTFT through ChatStream minus TTFT of the same sub-model called directly.

Same process, the two calls alternate (which goes first alternates too), every run uses a
new query (so the judge's cache never answers), and the llama.cpp KV cache is reset before
every call (so neither call reuses the other's prompt). Two sub-models:

- ``llamacpp``: the bundled Gemma 3 270M in-process (the embedded local tier);
- ``instant``: a chat model that streams a fixed reply at once, which isolates the router's
  own cost (judge + token count + planning + chunk re-emission) from model noise.

Run: ``python -m benchmarks.router_overhead [--runs 60] [--quick] [--out DIR]``; writes
``benchmarks/router_overhead/results/router_overhead.{json,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage

from benchmarks._common import TOPICS, add_run_args, pct, results_dir, write_results
from stream_langchain import ChatStream
from stream_langchain.chat_model import default_judge

OUT = Path(__file__).with_name("results")
FORMS = ["What is {}?", "Explain {} briefly.", "Give one fact about {}.",
         "Why do people study {}?", "Summarize {} in a sentence."]


def queries(n: int) -> list[str]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        form = FORMS[(i // len(TOPICS)) % len(FORMS)]
        out.append(form.format(topic) + f" (#{i})")
    return out


def ttft(model: BaseChatModel, text: str, reset: Any) -> float:
    reset()
    t0 = time.perf_counter()
    for chunk in model.stream([HumanMessage(text)]):
        if chunk.content:
            return (time.perf_counter() - t0) * 1000.0
    raise RuntimeError("no token")



def measure(name: str, sub: BaseChatModel, reset: Any, runs: int) -> dict[str, Any]:
    router = ChatStream(local=sub, judge=default_judge())
    for q in queries(3):  # warm both paths (model pages, judge artifact, tiktoken)
        ttft(sub, "warm " + q, reset)
        ttft(router, "warm " + q, reset)
    direct, routed, diffs = [], [], []
    for i, q in enumerate(queries(runs)):
        if i % 2 == 0:
            d = ttft(sub, q, reset)
            r = ttft(router, q, reset)
        else:
            r = ttft(router, q, reset)
            d = ttft(sub, q, reset)
        direct.append(d)
        routed.append(r)
        diffs.append(r - d)
    return {
        "sub_model": name,
        "judge": router.active_judge.name,
        "runs": runs,
        "direct_ttft_ms": {"p50": pct(direct, .5), "p95": pct(direct, .95)},
        "router_ttft_ms": {"p50": pct(routed, .5), "p95": pct(routed, .95)},
        "overhead_ms": {"p50": pct(diffs, .5), "p95": pct(diffs, .95),
                        "mean": statistics.fmean(diffs)},
        "samples": {"direct": direct, "router": routed},
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
    for ax, res in zip(axes if len(results) > 1 else [axes], results, strict=True):
        ax.boxplot([res["samples"]["direct"], res["samples"]["router"]])
        ax.set_xticks([1, 2], ["direct", "ChatStream"])
        ax.set_ylabel("TTFT (ms)")
        ax.set_title(f"{res['sub_model']}: overhead p50 {res['overhead_ms']['p50']:.2f} ms")
    fig.suptitle(f"Router overhead, judge = {results[0]['judge']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    args = add_run_args(ap).parse_args()
    if args.quick:
        args.runs = 6
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    local = ChatLlamaCpp(max_tokens=4, temperature=0.0)
    instant = GenericFakeChatModel(messages=iter([]))

    def reset_local() -> None:
        local._llm.reset()

    def reset_instant() -> None:
        instant.messages = iter([AIMessage("The answer is short.")])

    results = [measure("instant", instant, reset_instant, args.runs),
               measure("llamacpp-gemma3-270m", local, reset_local, args.runs)]
    out = results_dir(args, OUT)
    report = {"benchmark": "router_overhead", "goal": "p50 overhead <= 5 ms", "quick": args.quick,
              "results": results}
    write_results(out / "router_overhead.json", report)
    plot(results, out / "router_overhead.png")
    for r in results:
        print(f"{r['sub_model']:>22}: judge={r['judge']} "
              f"direct p50 {r['direct_ttft_ms']['p50']:.2f} ms, "
              f"router p50 {r['router_ttft_ms']['p50']:.2f} ms, overhead p50 "
              f"{r['overhead_ms']['p50']:.2f} ms p95 {r['overhead_ms']['p95']:.2f} ms")


if __name__ == "__main__":
    main()
