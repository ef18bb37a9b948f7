"""``python -m stream_langchain.tiers._llama_server_main ARGS``: llama.cpp's server, safe to run.

What :class:`~stream_langchain.tiers.llama_server.LlamaServer` starts instead of
``python -m llama_cpp.server``, with the same arguments. Before the server loads its model it

- turns llama.cpp's extra buffer types off (AMX crashes on Q4_K_M weights; see
  :mod:`stream_langchain.tiers._llama_cpu`), unless ``STREAM_LLAMA_EXTRA_BUFTS=1``;
- checks the loaded model's parameters and says in its log what it loaded with, and which CPU
  features llama.cpp sees (``stream: ...`` lines);
- exits by itself when the process named by ``STREAM_PARENT_PID`` dies, however it died;
- ends every streamed chat completion with a ``usage`` chunk (no choices), as vLLM does for
  ``stream_options={"include_usage": true}``: the prompt as llama.cpp tokenized it after the
  chat template, and the completion tokens it generated (llama-cpp-python's own server
  reports usage only on non-streamed answers). The HPC node forwards these numbers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from stream_langchain.tiers._lifetime import PARENT_PID_ENV, watch_parent
from stream_langchain.tiers._llama_cpu import (
    check_loaded,
    extra_bufts_default,
    patched_model_params,
    system_info,
)


def _say(text: str) -> None:
    print(f"stream: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run llama.cpp's OpenAI-compatible server with STREAM's load settings."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        watch_parent(int(parent))
    extra = extra_bufts_default()

    import llama_cpp.server.model as server_model
    from llama_cpp.server.__main__ import main as server_main

    load = server_model.LlamaProxy.load_llama_from_model_settings

    def checked_load(settings: Any) -> Any:
        llm = load(settings)
        check_loaded(llm, extra)
        _say(f"loaded {os.path.basename(settings.model)} with "
             f"use_extra_bufts={bool(getattr(llm.model_params, 'use_extra_bufts', False))}")
        return llm

    server_model.LlamaProxy.load_llama_from_model_settings = staticmethod(  # type: ignore[method-assign]
        checked_load)
    _report_stream_usage()
    _say(f"llama.cpp extra buffer types {'on' if extra else 'off'} "
         f"(STREAM_LLAMA_EXTRA_BUFTS); system: {system_info().strip()}")
    sys.argv = ["llama_cpp.server", *(sys.argv[1:] if argv is None else argv)]
    with patched_model_params(extra):
        server_main()


def _report_stream_usage() -> None:
    """Make streamed chat completions end with their usage (see the module docstring)."""
    import llama_cpp

    from stream_langchain.tiers._llama_usage import stream_with_usage

    original = llama_cpp.Llama.create_chat_completion

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        return stream_with_usage(self, out) if kwargs.get("stream") else out

    llama_cpp.Llama.create_chat_completion = create_chat_completion  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
