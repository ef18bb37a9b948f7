"""Exact token usage from llama.cpp, streamed or not.

llama-cpp-python reports ``usage`` only on non-streamed completions. Streamed, it says
nothing, and counting the messages' text misses the chat template (role markers, the
system prompt the template adds, tool schemas). :func:`metered` counts what llama.cpp itself
evaluates: every completion, streamed or not, runs through ``Llama.generate(prompt_tokens)``
with the prompt as llama.cpp tokenized it after the chat template; the tokens it yields, but
for the end-of-generation token, are the completion (the numbers llama.cpp puts in a
non-streamed ``usage``).

The meter replaces ``generate`` on the one ``Llama`` object for the duration of a request;
callers hold that model's lock (a ``Llama`` runs one request at a time anyway).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Meter", "metered", "stream_with_usage"]


@dataclass
class Meter:
    """What one request evaluated: ``prompt`` and ``completion`` tokens (llama.cpp's count)."""

    prompt: int = 0
    completion: int = 0
    ran: bool = False

    def usage(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion}


@contextlib.contextmanager
def metered(llm: Any) -> Iterator[Meter]:
    """Count the prompt and completion tokens ``llm`` evaluates inside the block.

    Example:
        >>> class Fake:
        ...     def generate(self, tokens, **kw):
        ...         yield from (7, 8, 2)
        >>> llm = Fake()
        >>> with metered(llm) as m:
        ...     out = list(llm.generate([1, 2, 3]))
        >>> m.prompt, m.completion  # no vocabulary: nothing is end-of-generation
        (3, 3)
    """
    meter = Meter()
    original = llm.generate
    own = "generate" in getattr(llm, "__dict__", {})  # already replaced (a nested meter)
    is_eog = _eog_test(llm)

    def generate(tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        meter.ran = True
        meter.prompt = len(tokens)
        meter.completion = 0
        for token in original(tokens, *args, **kwargs):
            if not is_eog(token):
                meter.completion += 1
            yield token

    llm.generate = generate
    try:
        yield meter
    finally:
        if own:
            llm.generate = original
        else:
            with contextlib.suppress(AttributeError):
                del llm.generate  # back to the class's method


def _eog_test(llm: Any) -> Any:
    """``token -> bool``: end of generation in ``llm``'s vocabulary (llama.cpp drops it from
    the completion)."""
    model = getattr(llm, "_model", None)
    vocab = getattr(model, "vocab", None)
    if vocab is None:
        return lambda token: False
    import llama_cpp

    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def stream_with_usage(llm: Any, chunks: Iterable[Any]) -> Iterator[Any]:
    """``chunks`` (a streaming llama.cpp chat completion of ``llm``, not started yet), then one
    chunk with ``usage`` and no choices, as vLLM and OpenAI end a stream asked for
    ``stream_options={"include_usage": true}``.

    llama.cpp evaluates lazily, while the chunks are pulled: the meter is on ``llm`` from the
    first chunk until the stream is exhausted or closed.
    """
    with metered(llm) as meter:
        first: dict[str, Any] | None = None
        for chunk in chunks:
            if first is None and isinstance(chunk, dict):
                first = chunk
            yield chunk
    if meter.ran and first is not None:
        yield {"id": first.get("id"), "object": first.get("object"),
               "created": first.get("created"), "model": first.get("model"),
               "choices": [], "usage": meter.usage()}
