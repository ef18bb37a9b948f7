"""ChatLlamaCpp: a GGUF model run in-process by llama.cpp, as a LangChain chat model.

The embedded default's local tier: no server, no network. Models are loaded once per
``(path, n_ctx, chat_format)`` and shared between instances; a lock serializes generation
(a ``llama_cpp.Llama`` is not thread-safe).

Example:
    >>> from stream_langchain.tiers.llamacpp import ChatLlamaCpp
    >>> llm = ChatLlamaCpp(max_tokens=4, temperature=0)          # bundled Gemma 3 270M
    >>> isinstance(llm.invoke("Say hi").content, str)
    True
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr, model_validator

from stream_langchain._messages import to_openai_messages
from stream_langchain.tiers._llama_cpu import (
    check_loaded,
    extra_bufts_default,
    patched_model_params,
)
from stream_langchain.tiers.llama_server import bundled_model_path

__all__ = ["ChatLlamaCpp", "bundled_model_path", "load_llama"]

_MODELS: dict[tuple[Any, ...], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


def load_llama(
    model_path: str, *, extra_bufts: bool | None = None, **kwargs: Any
) -> tuple[Any, threading.Lock]:
    """A shared ``llama_cpp.Llama`` for ``(model_path, kwargs)`` and the lock that guards it.

    Each distinct configuration is loaded once per process and closed at exit (before the
    interpreter tears down the modules llama.cpp's destructor needs). llama.cpp's extra
    buffer types (AMX and weight repacking) are off unless ``extra_bufts=True`` or
    ``STREAM_LLAMA_EXTRA_BUFTS=1``: they crash on AMX CPUs (see
    :mod:`stream_langchain.tiers._llama_cpu`).

    Raises:
        RuntimeError: llama-cpp-python is not installed, or ignored the extra-buffer setting.
    """
    if extra_bufts is None:
        extra_bufts = extra_bufts_default()
    key = (model_path, ("extra_bufts", extra_bufts), *sorted(kwargs.items()))
    with _MODELS_LOCK:
        hit = _MODELS.get(key)
        if hit is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError(
                    "llama.cpp models need llama-cpp-python: pip install 'stream-tiered[local]'"
                ) from exc
            if not _MODELS:
                atexit.register(_close_all)
            with patched_model_params(extra_bufts):
                llm = Llama(model_path=model_path, verbose=False, **kwargs)
            try:
                check_loaded(llm, extra_bufts)
            except RuntimeError:
                llm.close()
                raise
            hit = (llm, threading.Lock())
            _MODELS[key] = hit
        return hit


def _close_all() -> None:
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for llm, lock in models:
        with lock:
            llm.close()


class ChatLlamaCpp(BaseChatModel):
    """A GGUF chat model run in-process by llama.cpp (``llama-cpp-python``).

    Key init args:
        model_path: the GGUF file; defaults to the bundled Gemma 3 270M.
        chat_format: llama.cpp chat template name (``"gemma"`` for the bundled model,
            whose GGUF carries no template).
        n_ctx: context window in tokens.
        temperature, max_tokens, top_p, seed: sampling.

    Invoke:
        .. code-block:: python

            ChatLlamaCpp(max_tokens=32).invoke("Name a colour.")

    Stream:
        .. code-block:: python

            for chunk in ChatLlamaCpp().stream("Count to five."):
                print(chunk.content, end="")
    """

    model_path: str = Field(default_factory=bundled_model_path)
    """Path of the GGUF file."""
    chat_format: str = "gemma"
    """llama.cpp chat template."""
    n_ctx: int = Field(2048, gt=0)
    """Context window in tokens."""
    n_threads: int | None = None
    """CPU threads (llama.cpp's default when ``None``)."""
    temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature."""
    max_tokens: int = Field(256, gt=0)
    """Maximum tokens in one answer."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling."""
    seed: int | None = None
    """Sampling seed; ``None`` for llama.cpp's default."""
    extra_bufts: bool = Field(default_factory=extra_bufts_default)
    """llama.cpp's extra buffer types (AMX, weight repacking); off by default because AMX
    crashes on Q4_K_M weights (llama.cpp issue 20824). ``STREAM_LLAMA_EXTRA_BUFTS=1`` turns
    them on for every model."""

    _llm: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_model(self) -> ChatLlamaCpp:
        self._llm, self._lock = load_llama(self.model_path, n_ctx=self.n_ctx,
                                           chat_format=self.chat_format,
                                           n_threads=self.n_threads,
                                           extra_bufts=self.extra_bufts)
        return self

    @property
    def _llm_type(self) -> str:
        return "llamacpp-inprocess"

    @property
    def model_name(self) -> str:
        """File name of the GGUF, used as the model's name in routing records."""
        return self.model_path.rsplit("/", 1)[-1]

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` in this model's own tokenizer (LangChain's hook; context
        fitting counts prompts with it)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_name, "n_ctx": self.n_ctx,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "llamacpp"
        params["ls_model_name"] = self.model_name
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("tools"):
            raise NotImplementedError(
                f"{self.model_name} (in-process llama.cpp) does not support tool calling"
            )
        params = {
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "top_p": kwargs.get("top_p", self.top_p),
        }
        if self.seed is not None:
            params["seed"] = self.seed
        oa_messages = to_openai_messages(messages)
        prompt_tokens = sum(
            len(self._llm.tokenize(str(m.get("content") or "").encode(), add_bos=False))
            for m in oa_messages
        )
        completion_tokens = 0
        with self._lock:
            stream = self._llm.create_chat_completion(
                messages=oa_messages, stream=True, stop=stop or None, **params
            )
            finish: str | None = None
            for part in stream:
                choice = part["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
                if not text:
                    continue
                completion_tokens += 1
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        usage = UsageMetadata(
            input_tokens=prompt_tokens,
            output_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata={"finish_reason": finish or "stop",
                                   "model_name": self.model_name},
                chunk_position="last",
            )
        )
