"""README rows of the embedded-models benchmark (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._common import Row, load_results

__all__ = ["readme_rows"]


def _speed(name: str, m: dict[str, Any]) -> str:
    ip, sv = m["in_process"], m["server"]
    return (f"{name}: first use {m['assemble_s']:.1f} s (join + SHA-256), in process TTFT p50 "
            f"{ip['ttft_s']['p50']:.2f} s, {ip['tokens_per_s']['p50']:.1f} tokens/s; through "
            f"llama.cpp's server TTFT p50 {sv['ttft_s']['p50']:.2f} s, "
            f"{sv['tokens_per_s']['p50']:.1f} tokens/s")


def readme_rows(results_dir: Path) -> list[Row]:
    """Install cost and speed of each embedded model; tool calling when measured."""
    path = results_dir / "models.json"
    data = load_results(path)
    rows = [Row(claim=f"embedded models (Q4_K_M, llama.cpp, threads: {data['threads']}): "
                      f"{data['runs']} streamed answers of {data['max_tokens']} tokens each",
                figure="; ".join(_speed(k, v) for k, v in data["models"].items()),
                reproduce="`python -m benchmarks.models`", sources=(path,))]
    tools = results_dir / "tool_calling.json"
    if tools.is_file():
        t = load_results(tools)["models"]
        rows.append(Row(
            claim="tool calling: prompts that need one of three tools or none, temperature 0",
            figure="; ".join(f"{name}: {how.replace('_', ' ')} {r['passed']} of {r['of']}"
                             for name, m in t.items() for how, r in m.items()),
            reproduce="`python -m benchmarks.models --tools-only`", sources=(tools,)))
    return rows
