"""HPC tier TTFT: dual-channel streaming through the relay vs batch mode, same backend.

Setup (all on this machine, as ``EmbeddedHPC`` wires it): llama.cpp's OpenAI-compatible
server with the bundled Gemma 3 270M as the vLLM stand-in, a loopback relay, a forked
process pool as the Globus Compute stand-in, and ``ChatHPC`` over them.

Two measurements, each over varied prompts (every call gets its own prompt, tagged at the
start, so llama.cpp's prefix cache cannot serve one call from another):

1. **Stream vs batch** (``--runs`` each, alternating): ~``--max-tokens`` answers (EOS is
   logit-biased away so every answer has the same length). Streaming TTFT is the time to
   the first content chunk out of ``ChatHPC.stream``; batch TTFT is the time until the
   whole answer arrives (nothing is visible before). Medians and their ratio, plus the
   per-token rates that explain the ratio.
2. **Dual-channel overhead**, two ways. Per request: the client's TTFT through ``ChatHPC``
   (channel, key, tokens, consumer connect, submit, worker, producer connect, backend, seal,
   relay, verify) minus the backend's own TTFT for that same request, measured on the node
   from its HTTP request to the first token; this is exactly what the path adds, free of
   backend noise. Paired A/B (``--pairs``, alternating which goes first, short answers):
   ChatHPC TTFT minus the TTFT of a request sent straight to the backend with ``httpx``;
   honest but it carries the backend's own TTFT variance (tens of ms on a busy 2-core box).

Run: ``python -m benchmarks.hpc_ttft [--runs 20] [--pairs 30] [--max-tokens 300]``; writes
``benchmarks/hpc_ttft/results/hpc_ttft.{json,png}`` (``--quick``: a smoke run, ``_quick``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import TOPICS, add_run_args, pct, results_dir, write_results
from stream_langchain.tiers.hpc import ChatHPC
from stream_langchain.tiers.hpc_stack import EmbeddedHPC
from stream_langchain.tiers.llama_server import LlamaServer

OUT = Path(__file__).with_name("results")
FORMS = ["Explain {} in detail.", "Write an essay about {}.", "Tell me everything about {}.",
         "Describe the history of {}.", "Teach a beginner about {}."]
# Gemma's <eos> (1) and <end_of_turn> (106): biased away so every answer runs to max_tokens.
NO_EOS = {"1": -100.0, "106": -100.0}


def prompt(i: int, tag: str) -> str:
    topic = TOPICS[i % len(TOPICS)]
    form = FORMS[(i // len(TOPICS)) % len(FORMS)]
    return f"[{tag}-{i}] " + form.format(topic)



def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": statistics.median(xs), "p95": pct(xs, 0.95),
            "min": min(xs), "max": max(xs), "mean": statistics.fmean(xs)}


def hpc_stream(llm: ChatHPC, text: str) -> dict[str, Any]:
    """TTFT and decode timing of one streamed answer through ChatHPC."""
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    mode = None
    backend_ttft_ms = None
    for chunk in llm.stream(text):
        now = time.perf_counter()
        if chunk.content:
            tokens += 1
            if first is None:
                first = now
            last = now
        mode = chunk.response_metadata.get("hpc_mode", mode)
        backend_ttft_ms = chunk.response_metadata.get("hpc_backend_ttft_ms", backend_ttft_ms)
    if first is None or last is None:
        raise RuntimeError("no token streamed")
    if mode != "stream":
        raise RuntimeError(f"expected stream mode, got {mode!r}")
    if backend_ttft_ms is None:
        raise RuntimeError("the node did not report the backend's TTFT")
    return {"ttft_s": first - t0, "total_s": last - t0, "tokens": tokens,
            "decode_tok_s": (tokens - 1) / (last - first) if tokens > 1 else None,
            "backend_ttft_ms": backend_ttft_ms,
            # What the dual-channel path added to this very request: everything but the
            # backend's own TTFT (measured on the node from its HTTP request to 1st token).
            "path_ms": (first - t0) * 1000 - backend_ttft_ms}


def hpc_batch(llm: ChatHPC, text: str) -> dict[str, Any]:
    """Batch mode: the first token is visible only when the whole answer arrives."""
    t0 = time.perf_counter()
    msg = llm.invoke(text)
    total = time.perf_counter() - t0
    if msg.response_metadata.get("hpc_mode") != "batch":
        raise RuntimeError("expected batch mode")
    tokens = (msg.usage_metadata or {}).get("output_tokens", 0)
    return {"ttft_s": total, "total_s": total, "tokens": tokens,
            "throughput_tok_s": tokens / total}


def direct(client: httpx.Client, base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """TTFT of the same request sent straight to the backend (httpx, streaming)."""
    t0 = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", base_url + "/chat/completions",
                       json={**body, "stream": True}) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            delta = (json.loads(line[5:])["choices"] or [{}])[0].get("delta") or {}
            if delta.get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    if first is None:
        raise RuntimeError("backend streamed no token")
    return {"ttft_s": first - t0, "tokens": tokens}


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = LlamaServer(n_ctx=1024, n_threads=args.threads).start()
    stack = EmbeddedHPC(server=server, workers=1, max_tokens=args.max_tokens,
                        temperature=0.7).start()
    try:
        base = stack.chat_model
        long_kw = {"max_tokens": args.max_tokens, "model_kwargs": {"logit_bias": NO_EOS}}
        stream_llm = base.model_copy(update=long_kw)
        batch_llm = base.model_copy(update={**long_kw, "mode": "batch"})
        short_llm = base.model_copy(update={"max_tokens": args.short_tokens})
        client = httpx.Client(timeout=300)

        # Warm-up: first requests pay one-time costs (imports in the worker, model pages).
        hpc_stream(short_llm, prompt(0, "warm"))
        hpc_batch(batch_llm.model_copy(update={"max_tokens": 8}), prompt(1, "warm"))
        direct(client, server.base_url, {"model": base.model, "max_tokens": 8,
                                          "messages": [{"role": "user", "content": "hi"}]})

        pairs: list[dict[str, Any]] = []
        for i in range(args.pairs):
            body = {"model": base.model, "max_tokens": args.short_tokens,
                    "temperature": 0.7}
            texts = (prompt(i, "d"), prompt(i, "h"))
            order = ("direct", "hpc") if i % 2 == 0 else ("hpc", "direct")
            row: dict[str, Any] = {"order": order}
            for which in order:
                if which == "direct":
                    msgs = [{"role": "user", "content": texts[0]}]
                    row["direct"] = direct(client, server.base_url, {**body, "messages": msgs})
                else:
                    row["hpc"] = hpc_stream(short_llm, texts[1])
            row["overhead_ms"] = (row["hpc"]["ttft_s"] - row["direct"]["ttft_s"]) * 1000
            pairs.append(row)
            print(f"pair {i}: direct {row['direct']['ttft_s'] * 1000:.1f} ms, "
                  f"hpc {row['hpc']['ttft_s'] * 1000:.1f} ms", flush=True)

        streams: list[dict[str, Any]] = []
        batches: list[dict[str, Any]] = []
        for i in range(args.runs):
            order = ("stream", "batch") if i % 2 == 0 else ("batch", "stream")
            for which in order:
                if which == "stream":
                    streams.append(hpc_stream(stream_llm, prompt(i, "s")))
                else:
                    batches.append(hpc_batch(batch_llm, prompt(i, "b")))
            print(f"run {i}: stream ttft {streams[-1]['ttft_s']:.3f} s "
                  f"({streams[-1]['tokens']} tok), batch {batches[-1]['ttft_s']:.2f} s "
                  f"({batches[-1]['tokens']} tok)", flush=True)
        client.close()
    finally:
        stack.close()
        server.stop()

    s_ttft = [r["ttft_s"] for r in streams]
    b_ttft = [r["ttft_s"] for r in batches]
    over = [p["overhead_ms"] for p in pairs]
    path = [p["hpc"]["path_ms"] for p in pairs] + [r["path_ms"] for r in streams]
    result = {
        "benchmark": "hpc_ttft",
        "quick": args.quick,
        "config": {"runs": args.runs, "pairs": args.pairs, "max_tokens": args.max_tokens,
                   "short_tokens": args.short_tokens, "backend": "llama.cpp server, "
                   "gemma-3-270m Q4_K_M", "n_threads": args.threads,
                   "executor": "forked ProcessPoolExecutor (Globus Compute stand-in)",
                   "relay": "loopback relay (AES-256-GCM frames)"},
        "stream_vs_batch": {
            "stream_ttft_s": summary(s_ttft),
            "batch_ttft_s": summary(b_ttft),
            "ratio_of_medians": statistics.median(b_ttft) / statistics.median(s_ttft),
            "paper": {"stream_ttft_s": 0.54, "batch_ttft_s": 11.40, "ratio": 21.1},
            "stream_tokens": summary([float(r["tokens"]) for r in streams]),
            "batch_tokens": summary([float(r["tokens"]) for r in batches]),
            "stream_decode_tok_s": summary([r["decode_tok_s"] for r in streams]),
            "batch_throughput_tok_s": summary([r["throughput_tok_s"] for r in batches]),
            "stream_total_s": summary([r["total_s"] for r in streams]),
        },
        "overhead": {
            "path_ms": summary(path),
            "path_ms_note": "per request: client TTFT minus the backend TTFT measured on the "
            "node for that same request (dispatch + relay connect + seal/relay/verify)",
            "overhead_ms": summary(over),
            "overhead_ms_note": "paired A/B: HPC TTFT minus direct-backend TTFT of a "
            "different prompt; carries the backend's TTFT noise",
            "direct_ttft_ms": summary([p["direct"]["ttft_s"] * 1000 for p in pairs]),
            "hpc_ttft_ms": summary([p["hpc"]["ttft_s"] * 1000 for p in pairs]),
        "backend_ttft_ms_on_node": summary([p["hpc"]["backend_ttft_ms"] for p in pairs]),
            "goal_p50_ms": 10.0,
        },
        "runs": {"stream": streams, "batch": batches, "pairs": pairs},
    }
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.4))
    data = [[r["ttft_s"] for r in runs["stream"]], [r["ttft_s"] for r in runs["batch"]]]
    a.boxplot(data, showfliers=True)
    a.set_xticks([1, 2], ["HPC stream\n(relay)", "HPC batch"])
    for k, xs in enumerate(data, start=1):
        a.scatter([k] * len(xs), xs, s=10, alpha=0.5)
    a.set_yscale("log")
    a.set_ylabel("TTFT (s, log)")
    svb = result["stream_vs_batch"]
    a.set_title(f"TTFT, {result['config']['max_tokens']}-token answers: "
                f"{svb['ratio_of_medians']:.0f}x (medians)")

    added = [p["hpc"]["path_ms"] for p in runs["pairs"]] + [r["path_ms"] for r in runs["stream"]]
    b.hist(added, bins=30)
    p50 = result["overhead"]["path_ms"]["p50"]
    b.axvline(p50, color="k", linestyle="--", label=f"p50 {p50:.1f} ms")
    b.axvline(10.0, color="r", linestyle=":", label="goal 10 ms")
    b.set_xlabel("client TTFT - backend TTFT on the node (ms)")
    b.set_ylabel("requests")
    b.set_title("What the dual-channel path adds, per request")
    b.legend()

    d = [p["direct"]["ttft_s"] * 1000 for p in runs["pairs"]]
    h = [p["hpc"]["ttft_s"] * 1000 for p in runs["pairs"]]
    c.scatter(d, h, s=14)
    lo, hi = min(d + h) * 0.9, max(d + h) * 1.1
    c.plot([lo, hi], [lo, hi], color="k", linewidth=0.8, label="y = x")
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_xlabel("direct backend TTFT (ms)")
    c.set_ylabel("HPC (relay) TTFT (ms)")
    ov = result["overhead"]["overhead_ms"]
    c.set_title(f"Paired A/B: median difference {ov['p50']:.1f} ms")
    c.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hpc_ttft", description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="stream and batch runs (each)")
    parser.add_argument("--pairs", type=int, default=30, help="overhead pairs")
    parser.add_argument("--max-tokens", type=int, default=300, help="answer length")
    parser.add_argument("--short-tokens", type=int, default=16, help="answers in the pairs")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    args = add_run_args(parser).parse_args(argv)
    if args.quick:
        args.runs, args.pairs, args.max_tokens = 3, 5, 40
    result = run(args)
    out = results_dir(args, OUT)
    stem = "hpc_ttft"
    write_results(out / f"{stem}.json", result)
    plot(result, out / f"{stem}.png")
    svb, ov = result["stream_vs_batch"], result["overhead"]
    print(json.dumps({
        "stream_ttft_p50_s": round(svb["stream_ttft_s"]["p50"], 4),
        "batch_ttft_p50_s": round(svb["batch_ttft_s"]["p50"], 3),
        "ratio": round(svb["ratio_of_medians"], 1),
        "stream_decode_tok_s_p50": round(svb["stream_decode_tok_s"]["p50"], 1),
        "batch_throughput_tok_s_p50": round(svb["batch_throughput_tok_s"]["p50"], 1),
        "path_ms_p50": round(ov["path_ms"]["p50"], 2),
        "path_ms_p95": round(ov["path_ms"]["p95"], 2),
        "overhead_ms_p50": round(ov["overhead_ms"]["p50"], 2),
        "overhead_ms_p95": round(ov["overhead_ms"]["p95"], 2),
        "direct_ttft_ms_p50": round(ov["direct_ttft_ms"]["p50"], 1),
    }, indent=2))
    print(f"wrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()
