"""How STREAM loads GGUF models with llama.cpp so that they run on every x86 CPU.

llama.cpp's CPU backend offers "extra buffer types": on load it repacks quantized weights for
the CPU it finds (the AMX tile layout on Intel Xeons with ``amx_int8``, interleaved blocks on
AVX2/AVX-512). On AMX machines the AMX buffer type crashes with a segmentation fault in
``ggml_backend_amx_mul_mat`` on Q4_K_M weights (llama.cpp issue 20824), which kills the whole
Python process. Which wheel is installed does not matter: a native build on such a machine turns
AMX on, and so may a wheel in a pip cache built elsewhere. So STREAM decides at *load time*, the
one place that holds for every install: every ``Llama`` it creates (chat, embeddings, and the
llama.cpp server it starts) is loaded with ``llama_model_params.use_extra_bufts = False``. The
weights then stay in plain CPU buffers; generation is unchanged and a little slower on CPUs the
repacking would have helped.

Users who want the repacked kernels back (once upstream fixes the crash) set
``STREAM_LLAMA_EXTRA_BUFTS=1``, or pass ``extra_bufts=True`` to
:class:`~stream_langchain.tiers.llamacpp.ChatLlamaCpp` /
:class:`~stream_langchain.tiers.llama_server.LlamaServer`.

llama-cpp-python's ``Llama`` has no argument for that field, so :func:`patched_model_params`
wraps ``llama_model_default_params`` (which ``Llama.__init__`` calls) while a model loads;
:func:`check_loaded` then reads the parameters the model was really loaded with.

Example:
    >>> from stream_langchain.tiers._llama_cpu import extra_bufts_default
    >>> extra_bufts_default({})
    False
    >>> extra_bufts_default({"STREAM_LLAMA_EXTRA_BUFTS": "1"})
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "EXTRA_BUFTS_ENV",
    "check_loaded",
    "extra_bufts_default",
    "patched_model_params",
    "system_info",
]

logger = logging.getLogger(__name__)

EXTRA_BUFTS_ENV = "STREAM_LLAMA_EXTRA_BUFTS"
"""Set to ``1`` to let llama.cpp repack weights into its extra buffer types (AMX included)."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_PATCH_LOCK = threading.RLock()


def extra_bufts_default(env: Mapping[str, str] | None = None) -> bool:
    """Whether llama.cpp's extra buffer types are on: ``False`` unless the environment says so.

    Raises:
        ValueError: ``STREAM_LLAMA_EXTRA_BUFTS`` holds something that is not a boolean.
    """
    raw = (os.environ if env is None else env).get(EXTRA_BUFTS_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{EXTRA_BUFTS_ENV} must be 0 or 1, got {raw!r}")


@contextlib.contextmanager
def patched_model_params(extra_bufts: bool) -> Iterator[None]:
    """While active, a ``llama_cpp.Llama`` created in this process loads with
    ``use_extra_bufts = extra_bufts``.

    The patch is process-wide for its duration and guarded by a lock, so loads made through
    STREAM never interleave with each other.
    """
    import llama_cpp.llama_cpp as capi

    with _PATCH_LOCK:
        original = capi.llama_model_default_params

        def params() -> Any:
            p = original()
            if _has_field(p):
                p.use_extra_bufts = extra_bufts
            return p

        capi.llama_model_default_params = params
        try:
            yield
        finally:
            capi.llama_model_default_params = original


def check_loaded(llm: Any, extra_bufts: bool) -> None:
    """Verify that ``llm`` (a ``llama_cpp.Llama``) was loaded with the wanted setting.

    Raises:
        RuntimeError: The model was loaded with extra buffer types on when they were meant to
            be off (a llama-cpp-python that no longer reads its default parameters).
    """
    params = getattr(llm, "model_params", None)
    if params is None or not _has_field(params):
        # Older llama.cpp (before extra buffer types were optional): nothing to switch.
        logger.debug("llama.cpp has no use_extra_bufts parameter; nothing to switch off")
        return
    if bool(params.use_extra_bufts) != extra_bufts:
        raise RuntimeError(
            f"llama.cpp loaded the model with use_extra_bufts={bool(params.use_extra_bufts)}, "
            f"expected {extra_bufts}: this llama-cpp-python does not take the setting "
            f"(see {EXTRA_BUFTS_ENV} in the README)"
        )


def _has_field(params: Any) -> bool:
    return any(name == "use_extra_bufts" for name, *_ in getattr(type(params), "_fields_", ()))


def system_info() -> str:
    """llama.cpp's ``llama_print_system_info()``: the CPU features it will use (AMX among them)."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
