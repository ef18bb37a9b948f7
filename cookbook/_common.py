"""Shared bits of the cookbook recipes: which engine to build, and how to show a routing record.

Every recipe runs offline by default on the embedded stack (Qwen2.5-Coder-0.5B-Instruct
in-process via llama.cpp: a small instruct model, so answers are short and plain, but real). Point
``STREAM_CONFIG`` at a settings file (see ``stream_langchain.settings``) to run the same recipe
on your own tiers (Ollama, an HPC endpoint, a cloud API).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stream_langchain import ChatStream

__all__ = ["DATA", "build_chat_stream", "show_record"]

DATA = Path(__file__).resolve().parent / "data"
"""The small document folder the RAG recipes index."""


def build_chat_stream(
    *, max_tokens: int, with_hpc: bool = False, temperature: float = 0.7
) -> ChatStream:
    """``ChatStream.from_settings()`` when ``STREAM_CONFIG`` is set, else the embedded stack.

    Args:
        max_tokens: answer length on the embedded stack (kept small so recipes run fast).
        with_hpc: also start the embedded HPC stack (a loopback relay, a process pool and a
            llama.cpp server standing in for vLLM); off by default because it takes seconds.
        temperature: sampling temperature on the embedded stack (the agents use 0: a small
            model picks tools and writes their arguments more reliably without sampling).
    """
    if os.environ.get("STREAM_CONFIG"):
        return ChatStream.from_settings()
    if with_hpc:
        return ChatStream.embedded(max_tokens=max_tokens, temperature=temperature)
    return ChatStream.embedded(hpc=None, max_tokens=max_tokens, temperature=temperature)


def show_record(
    record: dict[str, Any] | None, *, label: str = "routing record", full: bool = True
) -> None:
    """Print the routing record: a one-line summary, then (``full``) the whole record as JSON."""
    if record is None:
        print(f"{label}: none (the answer did not come through ChatStream)")
        return
    ttft = record.get("ttft_ms")
    print(f"{label}: tier={record['tier']} model={record['model']} "
          f"complexity={record['complexity']} judge={record['judge']} "
          f"override={record.get('override')} ttft_ms={ttft if ttft is None else round(ttft)} "
          f"fallbacks={len(record['fallbacks'])}")
    if full:
        print(json.dumps(record, indent=2, default=str))
