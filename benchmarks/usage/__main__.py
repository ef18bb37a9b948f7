"""Usage reconciliation: what the proxy's usage rows say against what the backends counted.

The embedded stack (local: Qwen2.5-Coder-0.5B in-process; HPC: the loopback relay, a process
pool and llama.cpp's server with the 1.5B) behind the proxy, driven by the official ``openai``
client: local, HPC, auto-routed, streamed, non-streamed, tool-calling, aborted and refused
requests. For every request the backend's own count is taken independently:

- prompt tokens: the same messages (and tools) sent to the same llama.cpp model with
  ``max_tokens=1``, non-streamed, whose ``usage.prompt_tokens`` is llama.cpp's count of the
  templated prompt;
- completion tokens: ``max_tokens`` when the answer stopped for length, else the answer's
  text in the model's own tokenizer (tool calls: llama.cpp's non-streamed usage);
- refused requests (400 before any tier ran): zero.

Run: ``python -m benchmarks.usage [--quick] [--out DIR]``; writes
``benchmarks/usage/results/usage.json``: per request the row and the truth, and the totals.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from benchmarks._common import add_run_args, results_dir, write_results
from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.proxy import KeyRing, ProxyServer, Store, create_app

MAX_TOKENS = 8
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
       "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _local_truth(chat: ChatStream, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None, text: str, finish: str | None,
                 ) -> tuple[int, int]:
    """llama.cpp's own count on the in-process model (the same object the tier uses)."""
    from stream_langchain.tiers._llama_tools import prepare_messages

    local: Any = chat.tiers["local"]
    llm, lock = local._llm, local._lock
    with lock:
        if tools:
            out = llm.create_chat_completion(messages=prepare_messages(messages), tools=tools,
                                             max_tokens=1)
        else:
            out = llm.create_chat_completion(messages=messages, max_tokens=1)
        prompt = int(out["usage"]["prompt_tokens"])
        completion = (MAX_TOKENS if finish == "length" else
                      len(llm.tokenize(text.encode(), add_bos=False, special=True)))
    return prompt, completion


def _hpc_truth(chat: ChatStream, messages: list[dict[str, Any]], text: str,
               finish: str | None) -> tuple[int, int]:
    """The HPC backend's (llama.cpp server's) own count for the same messages."""
    hpc: Any = chat.tiers["hpc"]
    base = hpc.backend_url.rstrip("/")
    resp = httpx.post(base + "/chat/completions", timeout=300,
                      json={"model": hpc.model, "messages": messages, "max_tokens": 1})
    prompt = int(resp.json()["usage"]["prompt_tokens"])
    if finish == "length":
        return prompt, MAX_TOKENS
    tok = httpx.post(base.removesuffix("/v1") + "/extras/tokenize", timeout=60,
                     json={"model": hpc.model, "input": text}).json()["tokens"]
    return prompt, len(tok)


def _case(client: openai.OpenAI, name: str, model: str, messages: list[dict[str, Any]], *,
          stream: bool = False, tools: list[dict[str, Any]] | None = None,
          abort_after: int | None = None) -> dict[str, Any]:
    """One request through the proxy; what the client saw."""
    kw: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS,
                          "temperature": 0}
    if tools:
        kw.update(tools=tools, tool_choice="required")
    out: dict[str, Any] = {"name": name, "model": model, "stream": stream, "text": "",
                           "finish": None, "status": 200, "tier": None}
    try:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(**kw)
            resp = raw.parse()
            out["tier"] = json.loads(raw.headers.get("x-stream-route", "{}")).get("tier")
            msg = resp.choices[0].message
            out["text"] = msg.content or ""
            out["finish"] = resp.choices[0].finish_reason
            out["tool_calls"] = len(msg.tool_calls or [])
            return out
        with client.chat.completions.with_streaming_response.create(
                stream=True, stream_options={"include_usage": True}, **kw) as raw:
            out["tier"] = json.loads(raw.headers.get("x-stream-route", "{}")).get("tier")
            seen = 0
            for chunk in raw.parse():
                for choice in chunk.choices:
                    out["text"] += choice.delta.content or ""
                    out["finish"] = choice.finish_reason or out["finish"]
                    if choice.delta.content:
                        seen += 1
                if abort_after is not None and seen >= abort_after:
                    out["aborted"] = True
                    break
    except openai.APIStatusError as exc:
        out["status"] = exc.status_code
        out["code"] = (exc.body or {}).get("code") if isinstance(exc.body, dict) else None
    return out


def run(chat: ChatStream, *, quick: bool = False) -> dict[str, Any]:
    """Drive the mix through a proxy over ``chat``; rows against truth, and totals."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/usage.db")
        key = KeyRing(store).create("reconcile")[0]
        server = ProxyServer(create_app(chat, store=store)).start()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        try:
            cases = _drive(client, chat, quick=quick)
            deadline = time.monotonic() + 60
            while len(store.rows()) < len(cases) and time.monotonic() < deadline:
                time.sleep(0.05)
            store.flush()
            rows = store.rows()
        finally:
            server.stop()
            store.close()
    return _reconcile(chat, cases, rows)


def _drive(client: openai.OpenAI, chat: ChatStream, *, quick: bool) -> list[dict[str, Any]]:
    hpc = "hpc" in chat.tiers
    long_text = "word " * 5000
    plan: list[tuple[str, str, list[dict[str, Any]], dict[str, Any]]] = [
        ("local", "stream-local", _user("What is the capital of France?"), {}),
        ("local-stream", "stream-local", _user("Name a colour."), {"stream": True}),
        ("auto-stream", "stream", _user("Say hi."), {"stream": True}),
        ("local-tools", "stream-local", _user("What is the weather in Paris?"),
         {"tools": [TOOL]}),
        ("refused-image", "stream-local",
         [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                       {"type": "image_url", "image_url": {"url": PNG}}]}], {}),
        ("refused-too-long", "stream", _user(long_text), {}),
    ]
    if hpc:
        plan += [
            ("hpc", "stream-hpc", _user("What is 2 + 2?"), {}),
            ("hpc-stream", "stream-hpc", _user("Name a planet."), {"stream": True}),
        ]
        if not quick:
            plan += [("hpc-aborted", "stream-hpc", _user("Count from one to twenty."),
                      {"stream": True, "abort_after": 1})]
    cases = []
    for name, model, messages, kw in plan:
        case = _case(client, name, model, messages, **kw)
        case["messages"] = messages
        case["tools"] = kw.get("tools")
        cases.append(case)
    return cases


def _reconcile(chat: ChatStream, cases: list[dict[str, Any]],
               rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = []
    for case, row in zip(cases, rows, strict=False):
        truth: tuple[int, int] | None
        if case["status"] != 200:
            truth = (0, 0)
        elif case.get("aborted"):
            truth = None  # what ran before the abort is not reproducible independently
        elif row["tier"] == "local":
            truth = _local_truth(chat, case["messages"], case["tools"], case["text"],
                                 case["finish"])
        elif row["tier"] == "hpc":
            truth = _hpc_truth(chat, case["messages"], case["text"], case["finish"])
        else:
            truth = None
        out.append({
            "name": case["name"], "http_status": case["status"], "code": case.get("code"),
            "tier": row["tier"], "status": row["status"], "finish": case["finish"],
            "row": [row["input_tokens"], row["output_tokens"]],
            "truth": None if truth is None else list(truth),
            "exact": None if truth is None else [row["input_tokens"], row["output_tokens"]]
            == list(truth),
        })
    checked = [r for r in out if r["truth"] is not None]
    return {
        "requests": out,
        "rows": len(rows),
        "totals": {
            "row_input": sum(r["row"][0] for r in checked),
            "row_output": sum(r["row"][1] for r in checked),
            "truth_input": sum(r["truth"][0] for r in checked),
            "truth_output": sum(r["truth"][1] for r in checked),
            "refused_charged": sum(sum(r["row"]) for r in checked if r["http_status"] != 200),
            "exact": sum(bool(r["exact"]) for r in checked),
            "checked": len(checked),
        },
    }


def main() -> None:
    ap = add_run_args(argparse.ArgumentParser(description=__doc__))
    args = ap.parse_args()
    out = results_dir(args, Path(__file__).parent / "results")
    with ChatStream.embedded(max_tokens=MAX_TOKENS, temperature=0.0,
                             judge=KeywordJudge()) as chat:
        data = run(chat, quick=args.quick)
    path = write_results(out / "usage.json", data)
    print(json.dumps(data["totals"], indent=2))
    for r in data["requests"]:
        print(f"{r['name']:<18} {r['http_status']} {r['tier']!s:<6} {r['status']:<8} "
              f"row={r['row']} truth={r['truth']} exact={r['exact']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
