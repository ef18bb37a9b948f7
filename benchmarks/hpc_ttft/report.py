"""README rows of the HPC TTFT benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def readme_rows(results_dir: Path) -> list[Row]:
    """Stream vs batch (named for what it is) and the dual-channel path's overhead."""
    path = results_dir / "hpc_ttft.json"
    data = load_results(path)
    svb, ov, cfg = data["stream_vs_batch"], data["overhead"], data["config"]
    paper = svb["paper"]
    s, b = svb["stream_ttft_s"]["p50"], svb["batch_ttft_s"]["p50"]
    tokens = int(svb["batch_tokens"]["p50"])
    whole = svb["stream_total_s"]["p50"]
    reproduce = "`python -m benchmarks.hpc_ttft`"
    return [
        Row(claim=f"HPC tier, first visible token: streamed through the relay vs batch mode "
                  f"(the whole answer comes back through the control plane, nothing shows "
                  f"before it: the paper's batch TTFT), {tokens}-token answers, "
                  f"{cfg['runs']} runs each, {cfg['backend']}",
            figure=f"p50 {s:.3f} s vs {b:.2f} s: {svb['ratio_of_medians']:.1f}x. The ratio is "
                   f"the answer's generation time over the streamed TTFT, so it grows with "
                   f"answer length and backend speed (paper: {paper['stream_ttft_s']} s vs "
                   f"{paper['batch_ttft_s']} s, {paper['ratio']}x, a 70B model on vLLM). The "
                   f"whole answer: streamed p50 {whole:.2f} s vs batch {b:.2f} s",
            reproduce=reproduce, sources=(path,)),
        Row(claim="dual-channel path overhead: client TTFT minus the backend's own TTFT "
                  "measured on the node for the same request",
            figure=f"p50 {ov['path_ms']['p50']:.1f} ms, p95 {ov['path_ms']['p95']:.1f} ms "
                   f"(n {ov['path_ms']['n']}); paired A/B against the backend called directly: "
                   f"p50 {ov['overhead_ms']['p50']:.1f} ms, p95 {ov['overhead_ms']['p95']:.1f} "
                   f"ms (carries the backend's TTFT noise); goal p50 <= "
                   f"{ov['goal_p50_ms']:.0f} ms",
            reproduce="same", sources=(path,)),
    ]
