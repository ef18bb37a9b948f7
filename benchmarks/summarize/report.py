"""README rows of the long-conversation benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]

_ARMS = (("full_history", "full history"), ("memory_fitter", "memory fitter (default)"),
         ("summarizing_fitter", "previous summarizing fitter"), ("truncation", "truncation"))


def _rate(arm: dict[str, Any]) -> str:
    return f"{arm['recalled']}/{arm['facts']} ({100.0 * arm['recalled'] / arm['facts']:.0f}%)"


def readme_rows(results_dir: Path) -> list[Row]:
    """Fact recall per arm, kept local as routed, added latency and the background work."""
    path = results_dir / "summarize.json"
    data = load_results(path)
    if "config" not in data or "routing" not in data:
        return [Row(claim="Long conversations (results file from before the current benchmark)",
                    figure="not measured yet: run the command",
                    reproduce="`python -m benchmarks.summarize`", sources=(path,))]
    cfg, rec, route = data["config"], data["recall"], data["routing"]
    lat, bg = data["latency_ms"], data["background_summarizer"]
    convs = data["conversations"]
    turns = [c["turns"] for c in convs]
    partial = "" if data.get("complete") else " (partial run)"
    work = (f"{cfg['conversations']}{partial} generated conversations of {min(turns)}-{max(turns)} "
            f"turns, {rec['full_history']['facts']} facts stated by the user, asked "
            f"in other words as the last turn; {cfg['model']}, local window "
            f"{cfg['local_window']}")
    recall = "; ".join(f"{label} {_rate(rec[arm])}" for arm, label in _ARMS)
    blocked = data["previous_fitter_blocking_ms"]["max"]
    return [
        Row(claim=f"Fact recall in long conversations ({work})",
            figure=recall + f"; memory fitter {data['gap_to_full_history']} facts behind "
                   "full history",
            reproduce="`python -m benchmarks.summarize`", sources=(path,)),
        Row(claim=f"Kept local as routed (keyword judge; a {cfg['big_window']}-token tier to "
                  "escalate to; nothing forced)",
            figure=f"with fitting {route['kept_local_with_fitting']}/{route['probes']}, "
                   f"without {route['kept_local_without_fitting']}/{route['probes']} "
                   f"(judged {route['complexity']})",
            reproduce="`python -m benchmarks.summarize`", sources=(path,)),
        Row(claim="Latency the memory fitter adds per turn, conversations replayed as a "
                  "stateless client",
            figure=f"p50 {lat['p50']:.1f} / p95 {lat['p95']:.1f} / max {lat['max']:.1f} ms "
                   f"over {lat['turns']} turns (goal p95 <= {lat['goal_p95']:.0f}); longest "
                   f"wait for a summary {lat['max_wait_ms']:.0f} ms (bound "
                   f"{lat['wait_bound_ms']:.0f}); background summarizer {bg['calls']} calls, "
                   f"p50 {bg['ms_p50'] or 0:.0f} / max {bg['ms_max'] or 0:.0f} ms each, "
                   f"off the request path; the previous fitter blocked a turn up to "
                   f"{blocked or 0:.0f} ms",
            reproduce="`python -m benchmarks.summarize`", sources=(path,)),
        *_contention_rows(data, path),
    ]


def _contention_rows(data: dict[str, Any], path: Path) -> list[Row]:
    busy = data.get("answer_during_summary") or {}
    if not busy.get("runs"):
        return []
    return [Row(claim="An answer that arrives while a summary is being written on the same "
                      "in-process model (time to first token; the summary yields between "
                      "tokens)",
                figure=f"p50 {busy['busy_first_token_ms_p50']:.0f} ms (max "
                       f"{busy['busy_first_token_ms_max']:.0f}) vs "
                       f"{busy['idle_first_token_ms_p50']:.0f} ms on an idle model; "
                       f"{busy['preempted']} summaries yielded over {busy['runs']} runs",
                reproduce="`python -m benchmarks.summarize`", sources=(path,))]
