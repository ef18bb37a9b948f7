"""Context summarization: the paper's compression test, incremental cost, fact recall, latency.

Five conversations of 40 turns (user filler ~25 tokens, canned assistant filler ~40 tokens; two
distinct facts planted in turns 1-2 of each) are replayed turn by turn, the way a stateless
client resends its whole history. The local tier is the embedded one: llama.cpp in-process,
``n_ctx`` 2048, the default model of :class:`~stream_langchain.tiers.llamacpp.ChatLlamaCpp`
(which also writes the summaries).

- compression (the paper's test): at turns 10/20/30/35/40 the user turn is the probe "What is
  2 + 2?" forced to the local tier (``tier="local"``), once with summarization and once
  without; "kept local" means the local tier answered.
- incremental cost: summarizer calls and input tokens at every turn, next to what a
  non-incremental summarizer (the seed system: the whole old segment every request past the
  threshold) would send.
- fact recall: after turn 40 each planted fact is asked on the local tier with the full history
  (the same model with ``n_ctx`` 4096, where it fits), the summarized context, and plain
  truncation (the fitter with its summarizer's breaker open).
- latency added by fitting per turn: in-session (the cache holds the previous turns'
  summaries), warm (the same requests again: everything cached) and cold (a fresh cache at
  turn 40: summarized from scratch).

Run: ``python -m benchmarks.summarize [--conversations 5] [--cold 2]``; writes
``benchmarks/summarize/results/summarize.{json,png}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from benchmarks._common import TOPICS, pct
from stream_langchain import ChatStream
from stream_langchain.context import (
    SUMMARIZER_KEY,
    LRUSummaryCache,
    SummarizingFitter,
    count_tokens,
    model_counter,
)
from stream_langchain.judges import KeywordJudge
from stream_langchain.routing import CircuitBreaker

OUT = Path(__file__).with_name("results")
TURNS = 40
PROBE_TURNS = (10, 20, 30, 35, 40)
TIMEOUT_S = 900.0  # this 2-core machine is shared: a summary can take minutes
PROBE = "What is 2 + 2?"
ANSWER_TOKENS = 16
SUMMARY_TOKENS = 128
SYSTEM = "You are a helpful assistant. Answer briefly."

# (statement, assistant acknowledgement, question, accepted answers as a regex)
FACTS = [
    [("My name is Priya Raman.", "Nice to meet you, Priya.",
      "What is my name?", r"priya"),
     ("Our project is code-named Bluefin.", "Bluefin, noted.",
      "What is our project's code name?", r"bluefin")],
    [("Our budget is 42,000 dollars.", "A budget of 42,000 dollars, understood.",
      "What is our budget?", r"42[, ]?000"),
     ("We decided to deploy in Oslo.", "Oslo it is.",
      "Where did we decide to deploy?", r"oslo")],
    [("The deadline is March 14.", "March 14, noted.",
      "What is the deadline?", r"march\s*14|14(th)? (of )?march"),
     ("My manager is called Tomas Varga.", "Tomas Varga, got it.",
      "What is my manager called?", r"tomas|varga")],
    [("The server room is number 318.", "Room 318, noted.",
      "What is the server room number?", r"318"),
     ("We chose PostgreSQL as the database.", "PostgreSQL, good choice.",
      "Which database did we choose?", r"postgre")],
    [("My dog's name is Biscuit.", "Biscuit is a lovely name.",
      "What is my dog's name?", r"biscuit"),
     ("The launch moved to the 9th of October.", "The 9th of October, noted.",
      "When is the launch?", r"october|10/9|9/10")],
]


def user_turn(conv: int, turn: int) -> str:
    topic = TOPICS[(conv * 3 + turn) % len(TOPICS)]
    return (f"({turn}) Tell me more about {topic}: how it works, why it matters to people, "
            f"and what changed in the news this week.")


def assistant_turn(conv: int, turn: int) -> str:
    topic = TOPICS[(conv * 3 + turn) % len(TOPICS)]
    return (f"({turn}) In short, {topic} is studied because it shapes everyday life in small "
            f"ways; this week's news added a few details, but the basic picture stays the "
            f"same as before.")


def fitted_record(fitted: Any, ms: float) -> dict[str, Any]:
    rec = fitted.record()
    return {"fit_ms": ms, "calls": fitted.summarizer_calls,
            "input_tokens": fitted.summarizer_input_tokens,
            "cached": rec["summary_cached"], "summarized": rec["summarized"],
            "truncated": rec["fallback_truncated"], "tokens_before": fitted.tokens_before,
            "tokens_after": fitted.tokens_after, "error": fitted.error}


def seed_input(history: list[BaseMessage], budget: int, counter: Any) -> int:
    """Tokens a non-incremental summarizer sends at this turn (the seed system: past 80% of
    the budget, the whole old segment except the last 3 turn pairs, every request)."""
    if counter(history) <= 0.8 * budget:
        return 0
    body = [m for m in history if not isinstance(m, SystemMessage)]
    return count_tokens(body[:-7]) if len(body) > 7 else 0


def run_conversation(conv: int, local: Any, budget: int, with_llm: ChatStream,
                     without_llm: ChatStream, fitter: SummarizingFitter) -> dict[str, Any]:
    history: list[BaseMessage] = [SystemMessage(SYSTEM)]
    turns: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    counter = fitter.counter("local")
    requests: list[list[BaseMessage]] = []
    for turn in range(1, TURNS + 1):
        if turn <= 2:
            statement, ack, _, _ = FACTS[conv][turn - 1]
            user, reply = statement, ack
        elif turn in PROBE_TURNS:
            user, reply = PROBE, ""
        else:
            user, reply = user_turn(conv, turn), assistant_turn(conv, turn)
        history = [*history, HumanMessage(user)]
        requests.append(history)
        seed = seed_input(history, budget, counter)
        if turn in PROBE_TURNS:
            t0 = time.perf_counter()
            msg = with_llm.invoke(history, tier="local")
            ms = (time.perf_counter() - t0) * 1000.0
            rec = msg.response_metadata["stream"]
            reply = str(msg.content).strip() or "4"
            try:
                without_llm.invoke(history, tier="local")
                without, error = True, None
            except Exception as exc:  # the paper's "upgrades" were errors like this one
                without, error = False, f"{type(exc).__name__}: {str(exc)[:160]}"
            probes.append({"turn": turn, "with_kept_local": rec["tier"] == "local",
                           "with_summarized": rec["summarized"],
                           "with_answer": reply, "with_ms": ms,
                           "without_kept_local": without, "without_error": error,
                           "context_tokens_before": rec["context_tokens_before"],
                           "context_tokens_after": rec["context_tokens_after"]})
            turns.append({"turn": turn, "seed_input_tokens": seed, "fit_ms": None,
                          "calls": rec.get("summarizer_calls", 0),
                          "input_tokens": rec.get("summarizer_input_tokens", 0),
                          "cached": rec["summary_cached"], "summarized": rec["summarized"],
                          "truncated": rec["fallback_truncated"],
                          "tokens_before": rec["context_tokens_before"],
                          "tokens_after": rec["context_tokens_after"],
                          "summarizer_ms": rec["summarizer_ms"]})
        else:
            t0 = time.perf_counter()
            fitted = fitter.fit_detailed(history, budget_tokens=budget, tier="local")
            ms = (time.perf_counter() - t0) * 1000.0
            turns.append({"turn": turn, "seed_input_tokens": seed, **fitted_record(fitted, ms)})
        history = [*history, AIMessage(reply)]
        t = turns[-1]
        flag = f" TRUNCATED: {t.get('error')}" if t["truncated"] else ""
        print(f"  conv {conv} turn {turn:2d}: {t['tokens_before']:5d} -> "
              f"{t['tokens_after']:5d} tokens, calls {t['calls']}, summarizer input "
              f"{t['input_tokens']}{flag}", flush=True)
    warm: list[dict[str, Any]] = []
    for request in requests:  # the same requests again: a stateless client resending
        t0 = time.perf_counter()
        fitted = fitter.fit_detailed(request, budget_tokens=budget, tier="local")
        warm.append({"turn": len(warm) + 1, "fit_ms": (time.perf_counter() - t0) * 1000.0,
                     "calls": fitted.summarizer_calls})
    return {"conversation": conv, "turns": turns, "probes": probes, "warm": warm,
            "history": history}


def recall(conv_results: list[dict[str, Any]], local: Any, full_model: Any,
           fitter: SummarizingFitter, budget: int) -> dict[str, Any]:
    breaker = CircuitBreaker(threshold=1, window=3600, cooldown=3600)
    breaker.record_failure(SUMMARIZER_KEY)  # open: this fitter only ever truncates
    truncator = SummarizingFitter(local, breaker=breaker, counters=fitter.counters,
                                  summary_tokens=SUMMARY_TOKENS, timeout_s=TIMEOUT_S)
    rows = []
    for res in conv_results:
        conv = res["conversation"]
        asks = [(question, pattern, [*res["history"],
                                     HumanMessage(question + " Answer in a few words.")])
                for _statement, _ack, question, pattern in FACTS[conv]]
        conv_rows: list[dict[str, Any]] = [{"conversation": conv, "question": q}
                                           for q, _, _ in asks]
        # One arm at a time, so llama.cpp reuses the shared prefix between the questions.
        for arm in ("full", "summarized", "truncated"):
            for row, (_question, pattern, msgs) in zip(conv_rows, asks, strict=True):
                if arm == "full":
                    row["full_tokens"] = model_counter(full_model)(msgs)
                    fits = row["full_tokens"] <= full_model.n_ctx - ANSWER_TOKENS
                    context, model = (msgs if fits else None), full_model
                else:
                    f = fitter if arm == "summarized" else truncator
                    context = f.fit_detailed(msgs, budget_tokens=budget, tier="local").messages
                    model = local
                    if arm == "summarized":  # what the model was given, to judge misses
                        row["summary"] = next((str(m.content) for m in context
                                               if m.id == "stream-summary"), None)
                if context is None:
                    row[arm] = None
                    continue
                answer = str(model.invoke(context).content)
                row[arm] = bool(re.search(pattern, answer, re.IGNORECASE))
                row[f"{arm}_answer"] = answer.strip()[:120]
        for row in conv_rows:
            print(f"  recall conv {conv}: {row['question']!r} full={row['full']} "
                  f"summarized={row['summarized']} truncated={row['truncated']}", flush=True)
        rows += conv_rows
    out: dict[str, Any] = {"rows": rows}
    for arm in ("full", "summarized", "truncated"):
        scored = [r[arm] for r in rows if r[arm] is not None]
        out[arm] = {"correct": sum(scored), "asked": len(scored),
                    "fraction": sum(scored) / len(scored) if scored else None}
    return out


def cold(conv_results: list[dict[str, Any]], local: Any, budget: int,
         n: int) -> list[dict[str, Any]]:
    """Turn 40 of the first ``n`` conversations with an empty cache (summarized from
    scratch, as a new process without the SQLite store would)."""
    out = []
    for res in conv_results[:n]:
        fresh = SummarizingFitter(local, summary_tokens=SUMMARY_TOKENS, cache=LRUSummaryCache(),
                                  timeout_s=TIMEOUT_S, counters={"local": model_counter(local)})
        request = res["history"][:-1]
        t0 = time.perf_counter()
        fitted = fresh.fit_detailed(request, budget_tokens=budget, tier="local")
        out.append({"conversation": res["conversation"],
                    **fitted_record(fitted, (time.perf_counter() - t0) * 1000.0)})
        print(f"  cold conv {res['conversation']}: {out[-1]['fit_ms']:.0f} ms, "
              f"{fitted.summarizer_calls} calls", flush=True)
    return out


def summarize_results(convs: list[dict[str, Any]], rec: dict[str, Any],
                      colds: list[dict[str, Any]], model: str, budget: int) -> dict[str, Any]:
    probes = [p for c in convs for p in c["probes"]]
    session = [t["fit_ms"] for c in convs for t in c["turns"] if t["fit_ms"] is not None]
    warm = [w["fit_ms"] for c in convs for w in c["warm"]]
    calls = [(t["turn"], t["input_tokens"]) for c in convs for t in c["turns"] if t["calls"]]
    incremental = [n for c in convs for t in c["turns"] if t["calls"] == 1
                   for n in [t["input_tokens"]]]
    per_turn = {turn: sum(t["input_tokens"] for c in convs for t in c["turns"]
                          if t["turn"] == turn) / len(convs) for turn in range(1, TURNS + 1)}
    seed = {turn: sum(t["seed_input_tokens"] for c in convs for t in c["turns"]
                      if t["turn"] == turn) / len(convs) for turn in range(1, TURNS + 1)}
    first_seed = next((t for t in range(1, TURNS + 1) if seed[t]), None)
    return {
        "model": model,
        "instruct_model": "instruct" in model.lower(),
        "local_budget_tokens": budget,
        "compression": {
            "probes": len(probes),
            "kept_local_with_summarization": sum(p["with_kept_local"] for p in probes),
            "kept_local_without": sum(p["without_kept_local"] for p in probes),
            "goal": "25/25 with summarization (paper 25/25; paper without: 10/25)",
        },
        "incremental": {
            "summarizer_calls": len(calls),
            "calls_per_conversation": len(calls) / len(convs),
            "input_tokens_per_call": [n for _, n in calls],
            "single_call_input_tokens": {"min": min(incremental, default=0),
                                         "max": max(incremental, default=0)},
            "mean_input_tokens_per_turn": per_turn,
            "seed_input_tokens_per_turn": seed,
            "ours_last_10_turns_over_previous_10": (
                sum(per_turn.get(t, 0) for t in range(TURNS - 9, TURNS + 1))
                / max(sum(per_turn.get(t, 0) for t in range(TURNS - 19, TURNS - 9)), 1)),
            "seed_turn40_over_first_trigger_turn": (seed[TURNS] / seed[first_seed]
                                                    if first_seed else None),
            "goal": "flat: turn 40 / turn 10 <= 1.5 (seed grows linearly)",
        },
        "fact_recall": {k: v for k, v in rec.items() if k != "rows"},
        "fact_recall_rows": rec["rows"],
        "latency_ms": {
            "in_session": {"p50": pct(session, .5), "p95": pct(session, .95),
                           "n": len(session)},
            "warm": {"p50": pct(warm, .5), "p95": pct(warm, .95), "n": len(warm)},
            "cold_turn40": ({"p50": pct([c["fit_ms"] for c in colds], .5),
                             "p95": pct([c["fit_ms"] for c in colds], .95), "n": len(colds)}
                            if colds else None),
        },
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    c = report["summary"]["compression"]
    ax[0][0].bar(["with summarization", "without"],
                 [c["kept_local_with_summarization"], c["kept_local_without"]],
                 color=["tab:green", "tab:gray"])
    ax[0][0].set_ylim(0, c["probes"])
    ax[0][0].set_title(f"probes kept local (of {c['probes']})")
    inc = report["summary"]["incremental"]
    turns = list(range(1, TURNS + 1))
    ax[0][1].plot(turns, [inc["mean_input_tokens_per_turn"][t] for t in turns],
                  marker="o", label="incremental (ours)")
    ax[0][1].plot(turns, [inc["seed_input_tokens_per_turn"][t] for t in turns],
                  linestyle="--", label="whole old segment each turn (seed)")
    ax[0][1].set_xlabel("turn")
    ax[0][1].set_ylabel("summarizer input tokens (mean over conversations)")
    ax[0][1].legend()
    ax[0][1].set_title("summarizer input per turn")
    r = report["summary"]["fact_recall"]
    arms = ["full", "summarized", "truncated"]
    vals = [(r[a]["fraction"] or 0.0) for a in arms]
    ax[1][0].bar([f"{a}\n({r[a]['correct']}/{r[a]['asked']})" for a in arms], vals,
                 color=["tab:blue", "tab:green", "tab:red"])
    ax[1][0].set_ylim(0, 1)
    ax[1][0].set_title("fact recall after turn 40 (local tier)")
    lat = report["summary"]["latency_ms"]
    names = [k for k in ("warm", "in_session", "cold_turn40") if lat.get(k)]
    ax[1][1].bar([f"{k} p50" for k in names], [lat[k]["p50"] for k in names])
    ax[1][1].bar([f"{k} p95" for k in names], [lat[k]["p95"] for k in names])
    ax[1][1].set_yscale("log")
    ax[1][1].set_ylabel("ms added by fitting")
    ax[1][1].tick_params(axis="x", rotation=30)
    ax[1][1].set_title("latency added per turn")
    fig.suptitle(f"Context summarization, local = {report['summary']['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    global TURNS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=5)
    ap.add_argument("--cold", type=int, default=2, help="conversations measured cold")
    ap.add_argument("--turns", type=int, default=TURNS, help="turns per conversation")
    ap.add_argument("--window", type=int, default=0,
                    help="local window to fit to (default: the model's n_ctx, 2048)")
    args = ap.parse_args()
    TURNS = args.turns
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    started = time.perf_counter()
    local = ChatLlamaCpp(max_tokens=ANSWER_TOKENS, temperature=0.0)
    full_model = ChatLlamaCpp(max_tokens=ANSWER_TOKENS, temperature=0.0, n_ctx=4096)
    fitter = SummarizingFitter(local, summary_tokens=SUMMARY_TOKENS, timeout_s=TIMEOUT_S,
                               counters={"local": model_counter(local)})
    judge = KeywordJudge()
    windows = {"local": args.window} if args.window else {}
    with_llm = ChatStream(local=local, judge=judge, summarizer=fitter, context_windows=windows)
    without_llm = ChatStream(local=local, judge=judge, summarize=False,
                             context_windows=windows)
    budget = with_llm._budget_tokens("local")
    convs = []
    for conv in range(args.conversations):
        print(f"conversation {conv}", flush=True)
        convs.append(run_conversation(conv, local, budget, with_llm, without_llm, fitter))
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "summarize.partial.json").write_text(json.dumps(
            [{k: v for k, v in c.items() if k != "history"} for c in convs], default=str))
    print("fact recall", flush=True)
    rec = recall(convs, local, full_model, fitter, budget)
    print("cold cache", flush=True)
    colds = cold(convs, local, budget, args.cold)
    summary = summarize_results(convs, rec, colds, local.model_name, budget)
    for c in convs:
        c.pop("history")
    report = {"benchmark": "summarize", "python": platform.python_version(),
              "machine": platform.machine(), "wall_s": time.perf_counter() - started,
              "summary_tokens": SUMMARY_TOKENS, "answer_tokens": ANSWER_TOKENS,
              "summary": summary, "conversations": convs, "cold": colds}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summarize.json").write_text(json.dumps(report, indent=2, default=str))
    plot(report, OUT / "summarize.png")
    s = summary
    print(json.dumps({k: s[k] for k in ("model", "compression", "fact_recall", "latency_ms")},
                     indent=2, default=str))
    print("incremental:", {k: v for k, v in s["incremental"].items()
                           if not k.endswith("per_turn") and k != "input_tokens_per_call"})


if __name__ == "__main__":
    main()
