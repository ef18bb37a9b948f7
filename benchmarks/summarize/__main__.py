"""Long conversations on the free tier: fact recall, routing, and the latency fitting adds.

Conversations come from :mod:`benchmarks.summarize.conversations` (research-assistant chats of
30-60 turns, eight facts each stated by the user in varied wording; questions worded
differently). The local tier is llama.cpp in-process with ``ChatLlamaCpp``'s default model
(Qwen2.5 0.5B instruct) and a 2048-token window; a bigger-window tier (the same model with
``n_ctx`` 16384, as ``hpc``) is there to escalate to. Nothing is forced: ``ChatStream`` routes.

Arms (each fact is asked as the last user turn after the whole conversation):

- ``full_history``: ``ChatStream`` without fitting. The history does not fit the local window,
  so routing sends it to the bigger tier: the full-history answer (and "kept local without
  fitting").
- ``memory_fitter``: ``ChatStream`` with the default :class:`MemoryFitter` (recall + a summary
  written in the background during the replay): "kept local with fitting". Its recall is
  scored on the local answer (a probe routed elsewhere is also answered locally from the same
  fitted prompt, and counted separately).
- ``summarizing_fitter``: the previous fitter (:class:`SummarizingFitter`, summaries written
  inline on the request path) on the local tier.
- ``truncation``: the most recent turns that fit the local budget, nothing else.

Latency: every conversation is replayed turn by turn as a stateless client sends it (fresh
message lists); each turn's fit time is the latency fitting adds (p50/p95/max), with the bounded
wait for a summary being written; the background summarizer's own time is reported apart.
Between turns the replay lets the background summary finish, as a user's typing would.

Run: ``python -m benchmarks.summarize`` (``--quick``: one short conversation, the bundled Gemma
270M and a scripted summarizer, to check the benchmark runs). Writes
``benchmarks/summarize/results/summarize.{json,png}``. On a shared machine the conversations
can run in parallel processes (``--seed S --conversations N --out DIR`` each), combined by
``--merge DIR1/summarize.json DIR2/summarize.json ...``.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from benchmarks._common import add_run_args, pct, results_dir, write_results
from benchmarks.summarize.conversations import Conversation, answer_ok, generate
from stream_langchain import ChatStream
from stream_langchain.context import (
    MemoryFitter,
    SummarizingFitter,
    TokenCounter,
    model_counter,
)
from stream_langchain.judges import KeywordJudge

OUT = Path(__file__).with_name("results")
WINDOW = 2048
BIG_WINDOW = 16384
ANSWER_TOKENS = 32
SUMMARY_TOKENS = 128  # both fitters; the default 256 doubles the summarizer's time here
SYSTEM = "You are a helpful research assistant. Answer briefly."
ARMS = ("full_history", "memory_fitter", "summarizing_fitter", "truncation")


def turn_messages(conv: Conversation, upto: int, latest: str) -> list[BaseMessage]:
    """Fresh message objects, as a stateless client resends them: ``upto`` exchanges, then
    ``latest``."""
    msgs: list[BaseMessage] = [SystemMessage(SYSTEM)]
    for user, reply in conv.turns[:upto]:
        msgs += [HumanMessage(user), AIMessage(reply)]
    return [*msgs, HumanMessage(latest)]


def truncated(msgs: list[BaseMessage], budget: int, count: TokenCounter) -> list[BaseMessage]:
    """System message, then the most recent whole exchanges that fit ``budget`` (``msgs``
    ends with an assistant turn)."""
    head, rest = msgs[:1], msgs[1:]
    keep: list[BaseMessage] = []
    for i in range(len(rest) - 2, -1, -2):
        trial = rest[i:]
        if count([*head, *trial]) > budget:
            break
        keep = trial
    return [*head, *keep]


def replay(conv: Conversation, fitter: MemoryFitter, budget: int) -> list[dict[str, Any]]:
    """Each turn as a stateless client sends it: fit (timed), then the answer arrives and
    the fitter prepares ahead; the background summary finishes before the next turn."""
    rows = []
    for k, (user, reply) in enumerate(conv.turns):
        msgs = turn_messages(conv, k, user)
        t0 = time.perf_counter()
        fitted = fitter.fit_detailed(msgs, budget_tokens=budget, tier="local")
        ms = (time.perf_counter() - t0) * 1000.0
        rows.append({"turn": k + 1, "fit_ms": round(ms, 3),
                     "wait_ms": round(fitted.summary_wait_ms, 3),
                     "pending": fitted.summary_pending, "cached": fitted.summary_cached,
                     "recalled": fitted.recalled_turns, "tokens_before": fitted.tokens_before,
                     "tokens_after": fitted.tokens_after, "fits": fitted.fits})
        fitter.prepare([*msgs, AIMessage(reply)], budget_tokens=budget, tier="local")
        fitter.wait_idle()
    return rows


def _first_token_ms(model: Any, msgs: list[BaseMessage]) -> float:
    t0 = time.perf_counter()
    for _ in model.stream(msgs):
        break
    return (time.perf_counter() - t0) * 1000.0


def contention(conv: Conversation, m: dict[str, Any], budget: int) -> dict[str, Any]:
    """An answer that arrives while a summary is being written on the same in-process model:
    its time to first token, against the same question on an idle model (the summarizer
    yields between tokens; a question that arrives during the summary's prompt prefill waits
    for the rest of it)."""
    local, fitter = m["local"], m["fresh_fitter"]
    question = [SystemMessage(SYSTEM), HumanMessage(conv.facts[0].question)]
    _first_token_ms(local, [SystemMessage(SYSTEM), HumanMessage("Hello.")])  # cold prefix
    idle = _first_token_ms(local, question)
    msgs = [*turn_messages(conv, len(conv.turns) - 1, conv.turns[-1][0]),
            AIMessage(conv.turns[-1][1])]
    before = fitter.preempted
    if not fitter.prepare(msgs, budget_tokens=budget, tier="local"):
        return {"skipped": "no summary to write"}
    deadline = time.monotonic() + 60.0
    while not local._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(2.0)  # the summary is past its prefill, generating
    busy = _first_token_ms(local, question)
    fitter.wait_idle()
    return {"idle_first_token_ms": round(idle, 1), "busy_first_token_ms": round(busy, 1),
            "ratio": round(busy / idle, 2) if idle else None,
            "preempted": fitter.preempted - before,
            "summary_ms": [e.get("ms") for e in fitter.log[-3:]]}


def _ask(model: Any, msgs: list[BaseMessage]) -> str:
    return str(model.invoke(msgs).content)


def probe(conv: Conversation, m: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """Every planted fact of ``conv`` asked in every arm (arm by arm, so llama.cpp reuses
    the prompt prefix the questions of one arm share)."""
    count = model_counter(m["local"])
    asks = [turn_messages(conv, len(conv.turns), f.question) for f in conv.facts]
    rows: list[dict[str, Any]] = [
        {"kind": f.kind, "value": f.value, "turn": f.turn + 1, "statement": f.statement,
         "question": f.question} for f in conv.facts]
    for row, msgs in zip(rows, asks, strict=True):
        res = m["plain"].invoke(msgs)
        rec = res.response_metadata["stream"]
        row["full_history"] = {"answer": str(res.content), "tier": rec["tier"],
                               "complexity": rec["complexity"]}
    for row, msgs in zip(rows, asks, strict=True):
        res = m["fitted"].invoke(msgs)
        rec = res.response_metadata["stream"]
        row["routed_with_fitting"] = {"tier": rec["tier"], "complexity": rec["complexity"],
                                      "answer": str(res.content)}
        fitted = m["probe_fitter"].fit_detailed(msgs, budget_tokens=budget, tier="local")
        answer = (str(res.content) if rec["tier"] == "local"
                  else _ask(m["local"], fitted.messages))
        text = "\n".join(str(x.content) for x in fitted.messages).lower()
        row["memory_fitter"] = {"answer": answer, "tokens": fitted.tokens_after,
                                "recalled": fitted.recalled_turns,
                                "summary": fitted.summary_cached,
                                "value_in_prompt": row["value"].lower() in text}
    for row, msgs in zip(rows, asks, strict=True):
        t0 = time.perf_counter()
        old = m["old"].fit_detailed(msgs, budget_tokens=budget, tier="local")
        old_ms = (time.perf_counter() - t0) * 1000.0
        text = "\n".join(str(x.content) for x in old.messages).lower()
        row["summarizing_fitter"] = {"answer": _ask(m["local"], old.messages),
                                     "fit_ms": round(old_ms, 1), "tokens": old.tokens_after,
                                     "truncated": old.fallback_truncated,
                                     "value_in_prompt": row["value"].lower() in text}
    room = budget - max(count([HumanMessage(f.question)]) for f in conv.facts)
    kept = truncated(asks[0][:-1], room, count)  # one cut for all questions
    for row, msgs in zip(rows, asks, strict=True):
        cut = [*kept, msgs[-1]]
        row["truncation"] = {"answer": _ask(m["local"], cut), "tokens": count(cut)}
    for row, fact in zip(rows, conv.facts, strict=True):
        for arm in ARMS:
            row[arm]["ok"] = answer_ok(row[arm]["answer"], fact.accept)
    return rows


def models(quick: bool) -> dict[str, Any]:
    """The tiers, fitters and routers of one run."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    kw: dict[str, Any] = {"max_tokens": ANSWER_TOKENS, "temperature": 0.0}
    if quick:
        kw["model_path"] = bundled_model_path()
    local = ChatLlamaCpp(n_ctx=WINDOW, **kw)
    big = ChatLlamaCpp(n_ctx=BIG_WINDOW // (4 if quick else 1), **kw)
    writer: BaseChatModel = local
    if quick:
        from langchain_core.language_models.fake_chat_models import FakeListChatModel

        writer = FakeListChatModel(responses=["The user and the assistant discussed research "
                                              "methods."])
    counters = {"local": model_counter(local), "hpc": model_counter(big)}
    mem = MemoryFitter(writer, counters=counters, summary_tokens=SUMMARY_TOKENS)
    probe_fitter = MemoryFitter(writer, counters=counters, cache=mem.cache, write=False,
                                summary_tokens=SUMMARY_TOKENS)
    old = SummarizingFitter(writer, counters=counters, timeout_s=900.0,
                            summary_tokens=SUMMARY_TOKENS)
    fresh = MemoryFitter(writer, counters=counters, summary_tokens=SUMMARY_TOKENS)
    judge = KeywordJudge()
    plain = ChatStream(local=local, hpc=big, judge=judge, summarize=False)
    fitted = ChatStream(local=local, hpc=big, judge=judge, summarizer=probe_fitter)
    return {"local": local, "big": big, "mem": mem, "probe_fitter": probe_fitter, "old": old,
            "plain": plain, "fitted": fitted, "fresh_fitter": fresh,
            "budget": fitted._budget_tokens("local"), "writer": type(writer).__name__}


def summarize(convs: list[dict[str, Any]], wait_s: float) -> dict[str, Any]:
    """Rates, routing counts, latency and background-summarizer figures over all runs."""
    rows = [r for c in convs for r in c["probes"]]
    n = len(rows)
    recall = {arm: {"recalled": sum(r[arm]["ok"] for r in rows), "facts": n,
                    "rate": round(sum(r[arm]["ok"] for r in rows) / n, 4) if n else None}
              for arm in ARMS}
    in_prompt = sum(r["memory_fitter"]["value_in_prompt"] for r in rows)
    old_in_prompt = sum(r["summarizing_fitter"]["value_in_prompt"] for r in rows)
    with_fit = collections.Counter(r["routed_with_fitting"]["tier"] for r in rows)
    without = collections.Counter(r["full_history"]["tier"] for r in rows)
    turns = [t for c in convs for t in c["replay"]]
    fit_ms = [t["fit_ms"] for t in turns]
    bg = [e for c in convs for e in c["background"] if "ms" in e]
    bg_ms = [e["ms"] for e in bg]
    old_ms = [c["probes"][0]["summarizing_fitter"]["fit_ms"] for c in convs if c["probes"]]
    return {
        "recall": recall,
        "value_in_prompt": {"facts": n, "memory_fitter": in_prompt,
                            "summarizing_fitter": old_in_prompt},
        "gap_to_full_history": (recall["full_history"]["recalled"]
                                - recall["memory_fitter"]["recalled"]),
        "routing": {
            "kept_local_with_fitting": with_fit.get("local", 0),
            "kept_local_without_fitting": without.get("local", 0),
            "probes": n, "tiers_with_fitting": dict(with_fit),
            "tiers_without_fitting": dict(without),
            "complexity": dict(collections.Counter(r["routed_with_fitting"]["complexity"]
                                                   for r in rows)),
        },
        "latency_ms": {
            "turns": len(fit_ms), "p50": round(pct(fit_ms, 0.5), 3),
            "p95": round(pct(fit_ms, 0.95), 3), "max": round(max(fit_ms), 3),
            "goal_p95": 50.0,
            "wait_bound_ms": wait_s * 1000.0,
            "max_wait_ms": max(t["wait_ms"] for t in turns),
            "turns_waiting": sum(1 for t in turns if t["wait_ms"] > 0),
            "turns_pending": sum(1 for t in turns if t["pending"]),
            "turns_fitted": sum(1 for t in turns if t["tokens_before"] > t["tokens_after"]),
            "turns_over_budget": sum(1 for t in turns if not t["fits"]),
        },
        "background_summarizer": {
            "calls": len(bg), "errors": sum(1 for e in bg if "error" in e),
            "ms_p50": round(pct(bg_ms, 0.5), 1) if bg_ms else None,
            "ms_p95": round(pct(bg_ms, 0.95), 1) if bg_ms else None,
            "ms_max": round(max(bg_ms), 1) if bg_ms else None,
            "total_s": round(sum(bg_ms) / 1000.0, 1),
            "supplemented_quotes": sum(e.get("supplemented", 0) for e in bg),
        },
        "answer_during_summary": _contention(convs),
        "previous_fitter_blocking_ms": {
            "first_probe_per_conversation": old_ms,
            "max": max(old_ms) if old_ms else None,
        },
    }


def _contention(convs: list[dict[str, Any]]) -> dict[str, Any]:
    got = [c["contention"] for c in convs if "busy_first_token_ms" in c.get("contention", {})]
    if not got:
        return {"runs": 0}
    return {"runs": len(got),
            "idle_first_token_ms_p50": round(pct([g["idle_first_token_ms"] for g in got], 0.5), 1),
            "busy_first_token_ms_p50": round(pct([g["busy_first_token_ms"] for g in got], 0.5), 1),
            "busy_first_token_ms_max": max(g["busy_first_token_ms"] for g in got),
            "preempted": sum(g["preempted"] for g in got)}


def plot(report: dict[str, Any], convs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    rec = report["recall"]
    labels = [a.replace("_", "\n") for a in ARMS]
    rates = [100.0 * (rec[a]["rate"] or 0.0) for a in ARMS]
    ax[0].bar(labels, rates, color=["#777", "#2a7", "#c84", "#b44"])
    for i, a in enumerate(ARMS):
        ax[0].text(i, rates[i] + 1, f"{rec[a]['recalled']}/{rec[a]['facts']}", ha="center")
    ax[0].set_ylim(0, 110)
    ax[0].set_ylabel("facts recalled (%)")
    ax[0].set_title(f"Fact recall, local window {WINDOW}")
    fit = [t["fit_ms"] for c in convs for t in c["replay"]]
    ax[1].hist(fit, bins=40, color="#2a7")
    lat = report["latency_ms"]
    ax[1].axvline(lat["p95"], color="k", ls="--", label=f"p95 {lat['p95']:.1f} ms")
    ax[1].set_xlabel("fit time per turn (ms), stateless replay")
    ax[1].set_ylabel("turns")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = add_run_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--conversations", type=int, default=5)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2026, help="first conversation's seed")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the conversations of these results files (runs of other "
                         "seeds, e.g. in parallel) into one results file; runs no model")
    args = ap.parse_args()
    out = results_dir(args, OUT)
    if args.merge:
        merge(args.merge, out)
        return
    n_convs, n_facts = (1, 2) if args.quick else (args.conversations, args.facts)
    m = models(args.quick)
    budget = m["budget"]
    convs = []
    for i in range(n_convs):
        conv = generate(args.seed + i, facts=n_facts,
                        **({"min_turns": 30, "max_turns": 30} if args.quick else {}))
        t0 = time.perf_counter()
        logged = len(m["mem"].log)
        rows = replay(conv, m["mem"], budget)
        probes = probe(conv, m, budget)
        busy = contention(conv, m, budget) if not args.quick else {"skipped": "quick"}
        convs.append({"seed": conv.seed, "turns": len(conv.turns), "replay": rows,
                      "probes": probes, "contention": busy,
                      "background": m["mem"].log[logged:],
                      "seconds": round(time.perf_counter() - t0, 1)})
        ok = {a: sum(p[a]["ok"] for p in probes) for a in ARMS}
        print(f"conversation {i + 1}/{n_convs} (seed {conv.seed}, {len(conv.turns)} turns): "
              f"{ok} of {len(probes)}", flush=True)
        path = write(out, args, m, convs, n_facts, done=i + 1 == n_convs)
    print(f"wrote {path}")


def merge(paths: list[Path], out: Path) -> None:
    """One results file from several runs of the same configuration (their commands kept)."""
    runs = [json.loads(p.read_text()) for p in paths]
    cfgs = [{k: v for k, v in r["config"].items() if k not in ("conversations", "first_seed")}
            for r in runs]
    if any(c != cfgs[0] for c in cfgs):
        raise SystemExit("merge: runs differ in configuration")
    convs = sorted((c for r in runs for c in r["conversations"]), key=lambda c: c["seed"])
    report = summarize(convs, runs[0]["config"]["wait_s"])
    data = {"benchmark": "summarize", "quick": any(r["quick"] for r in runs),
            "complete": all(r.get("complete") for r in runs),
            "config": {**runs[0]["config"], "conversations": len(convs),
                       "first_seed": convs[0]["seed"]},
            "runs": [{"command": r["meta"]["command"], "commit": r["meta"]["commit"],
                      "load_before": r["meta"]["load_before"],
                      "load_after": r["meta"]["load_after"], "complete": r.get("complete"),
                      "seeds": [c["seed"] for c in r["conversations"]]} for r in runs],
            **report, "conversations": convs}
    path = write_results(out / "summarize.json", data)
    plot(report, convs, out / "summarize.png")
    print(f"recall {report['recall']}\nrouting {report['routing']}\n"
          f"latency {report['latency_ms']}\nbackground {report['background_summarizer']}\n"
          f"wrote {path}")


def write(out: Path, args: argparse.Namespace, m: dict[str, Any], convs: list[dict[str, Any]],
          n_facts: int, *, done: bool) -> Path:
    """The results so far (after every conversation, so a long run leaves a partial file)."""
    report = summarize(convs, m["mem"].wait_s)
    data = {
        "benchmark": "summarize",
        "quick": args.quick,
        "complete": done,
        "config": {"local_window": WINDOW, "big_window": m["big"].n_ctx,
                   "budget_tokens": m["budget"], "answer_tokens": ANSWER_TOKENS,
                   "model": m["local"].model_name, "summarizer": m["writer"],
                   "judge": "keyword", "conversations": len(convs),
                   "facts_per_conversation": n_facts, "first_seed": args.seed,
                   "wait_s": m["mem"].wait_s, "summary_tokens": m["mem"].summary_tokens,
                   "min_span_tokens": m["mem"].min_span_tokens},
        **report,
        "conversations": convs,
    }
    path = write_results(out / "summarize.json", data)
    plot(report, convs, out / "summarize.png")
    if done:
        print(f"recall {report['recall']}\nrouting {report['routing']}\n"
              f"latency {report['latency_ms']}\n"
              f"background {report['background_summarizer']}")
    return path


if __name__ == "__main__":
    main()
