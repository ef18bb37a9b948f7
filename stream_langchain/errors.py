"""Every error STREAM raises, under one root, and the one way they are described.

Catch :class:`StreamError` for anything STREAM itself reports; each class also derives from the
built-in a caller would expect (``ValueError`` for bad input, ``TimeoutError`` for timeouts,
``NotImplementedError`` for a missing capability), so existing ``except`` clauses keep working.
The tree::

    StreamError
    ├── SettingsError (ValueError)        configuration file or keyword invalid; names the key
    ├── ImageFileError (ValueError)       an image that cannot be sent; names the file/part
    ├── CapabilityError (ValueError)      no tier can serve the request (images, tools, ...)
    ├── UnsupportedFeature (NotImplementedError)
    │                                     one model lacks a feature (tool calling, ...)
    ├── JudgeError (RuntimeError)         a judge produced no label
    ├── TierFailure (RuntimeError)        one tier failed; ``tier``, ``cause``
    ├── AllTiersFailed (RuntimeError)     no tier answered; ``errors``, ``skipped``
    ├── ModelError (RuntimeError)         a bundled model cannot be assembled or verified
    ├── LlamaServerError (RuntimeError)   the llama.cpp server cannot start or be reached
    ├── Preempted (RuntimeError)          background generation yielded to an answer
    ├── StoreError (RuntimeError)         the proxy's usage database cannot be opened
    ├── OllamaError (RuntimeError)        the Ollama tier cannot answer
    │   ├── OllamaNotRunning
    │   ├── OllamaModelMissing
    │   └── OllamaTimeout (TimeoutError)
    └── HPCError (RuntimeError)           the HPC tier failed; ``tokens`` says how far
        ├── HPCQueueTimeout (TimeoutError)
        ├── HPCFirstTokenTimeout (TimeoutError)
        ├── HPCIdleTimeout (TimeoutError)
        ├── HPCRemoteError                the node reported an error in an authentic frame
        ├── HPCTaskError                  the executor or the task failed
        │   └── ExecutorRefused           the executor would not take the task
        └── RelayFailed                   the relay was unreachable or lost before a token

The relay's own errors (:mod:`relay.errors`, root ``RelayError``: tampered, truncated,
refused...) stay in the dependency-free ``relay`` package; the HPC tier reports them as the
cause of an :class:`HPCError`.

Example:
    >>> from stream_langchain import StreamError, SettingsError
    >>> issubclass(SettingsError, StreamError) and issubclass(SettingsError, ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "AllTiersFailed",
    "CapabilityError",
    "ExecutorRefused",
    "HPCError",
    "HPCFirstTokenTimeout",
    "HPCIdleTimeout",
    "HPCQueueTimeout",
    "HPCRemoteError",
    "HPCTaskError",
    "ImageFileError",
    "JudgeError",
    "LlamaServerError",
    "ModelError",
    "OllamaError",
    "OllamaModelMissing",
    "OllamaNotRunning",
    "OllamaTimeout",
    "Preempted",
    "RelayFailed",
    "SettingsError",
    "StoreError",
    "StreamError",
    "TierFailure",
    "UnsupportedFeature",
    "describe",
]


class StreamError(Exception):
    """The root of every error STREAM raises (see the module docstring for the tree)."""


def _one(exc: BaseException) -> str:
    """``Type: line``: the first line of the message, or the last when the message is a
    remote traceback (its last line names the error)."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if len(lines) > 1 and any(ln.lstrip().startswith("Traceback (most recent") for ln in lines):
        text = lines[-1]
    name = type(exc).__name__
    return f"{name}: {text.strip()[:300]}" if text else name


def describe(exc: BaseException) -> str:
    """``Type: message`` for an exception, one line, bounded, with its root cause.

    Example:
        >>> try:
        ...     try:
        ...         raise ConnectionRefusedError(111, "refused")
        ...     except OSError as e:
        ...         raise RuntimeError("Connection error.") from e
        ... except RuntimeError as e:
        ...     print(describe(e))
        RuntimeError: Connection error. (cause: ConnectionRefusedError: [Errno 111] refused)
        >>> print(describe(RuntimeError("Traceback (most recent call last):\\n  ...\\n"
        ...                             "ValueError: bad prompt")))
        RuntimeError: ValueError: bad prompt
    """
    root = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is exc:
        return _one(exc)
    return f"{_one(exc)} (cause: {_one(root)})"


# ---------------------------------------------------------------- input and configuration


class SettingsError(StreamError, ValueError):
    """The configuration is invalid; the message names the file and the offending key."""


class ImageFileError(StreamError, ValueError):
    """An image that cannot be sent; the message names the file (or message part) and the
    problem."""


class CapabilityError(StreamError, ValueError):
    """No configured tier can serve the request: it needs a capability (``capability``, for
    example ``"image input"``) that every tier lacks or is not allowed to use. Raised before
    any tier is called; ``skipped`` says why each tier was passed over."""

    def __init__(self, capability: str, skipped: list[dict[str, str]],
                 detail: str = "") -> None:
        self.capability = capability
        self.skipped = skipped
        why = "; ".join(f"{s['tier']}: {s['reason']}" for s in skipped)
        msg = f"no tier can serve this request: it needs {capability}{detail}"
        super().__init__(msg + (f" ({why})" if why else ""))


class UnsupportedFeature(StreamError, NotImplementedError):
    """A model lacks a feature the call needs (``feature``: ``"tool calling"``...).

    A ``NotImplementedError``, as LangChain's ``bind_tools`` convention expects."""

    def __init__(self, model: str, feature: str, detail: str = "") -> None:
        self.model = model
        self.feature = feature
        super().__init__(f"{model} does not support {feature}{detail}")


# ---------------------------------------------------------------- routing


class JudgeError(StreamError, RuntimeError):
    """A judge could not produce a label (model error, timeout, unparseable output)."""


class TierFailure(StreamError, RuntimeError):
    """One tier failed; carries the tier name and the cause."""

    def __init__(self, tier: str, cause: BaseException) -> None:
        self.tier = tier
        self.cause = cause
        super().__init__(f"{tier}: {describe(cause)}")


class AllTiersFailed(StreamError, RuntimeError):
    """No tier could answer. ``errors`` lists ``{"tier", "error"}`` for every tier tried;
    ``skipped`` lists the tiers not tried and why; ``causes`` holds the exceptions of
    ``errors``, in order (to tell failures apart by type)."""

    def __init__(self, errors: list[dict[str, str]], skipped: list[dict[str, str]], *,
                 causes: list[BaseException] | None = None) -> None:
        self.errors = errors
        self.skipped = skipped
        self.causes = list(causes or [])
        if errors:
            msg = "all tiers failed: " + "; ".join(f"{e['tier']}: {e['error']}" for e in errors)
        else:
            msg = "no tier available"
        if skipped:
            msg += " (not tried: " + "; ".join(f"{s['tier']}: {s['reason']}" for s in skipped)
            msg += ")"
        super().__init__(msg)


# ---------------------------------------------------------------- local models


class ModelError(StreamError, RuntimeError):
    """A model cannot be assembled: a part is missing, at the wrong version, or damaged."""


class LlamaServerError(StreamError, RuntimeError):
    """The llama.cpp server could not be found, started or reached."""


class Preempted(StreamError, RuntimeError):
    """Background generation stopped so a waiting foreground request could run."""


class StoreError(StreamError, RuntimeError):
    """The database cannot be opened (one line, password masked)."""


class OllamaError(StreamError, RuntimeError):
    """The Ollama tier cannot answer; the message says what to do."""

    def __init__(self, message: str, base_url: str, model: str) -> None:
        super().__init__(message)
        self.base_url = base_url
        self.model = model


class OllamaNotRunning(OllamaError):
    """Nothing answers at the Ollama address."""

    def __init__(self, base_url: str, model: str) -> None:
        super().__init__(f"Ollama is not running at {base_url} (start it with "
                         "`ollama serve`)", base_url, model)


class OllamaModelMissing(OllamaError):
    """Ollama runs but does not have the model."""

    def __init__(self, base_url: str, model: str) -> None:
        super().__init__(f"model {model} is not pulled (run `ollama pull {model}`)",
                         base_url, model)


class OllamaTimeout(OllamaError, TimeoutError):
    """Ollama accepted the request but sent nothing within the first-token timeout."""


# ---------------------------------------------------------------- the HPC tier


class HPCError(StreamError, RuntimeError):
    """Base class of every ChatHPC failure.

    Attributes:
        tokens: How many content/tool deltas had been yielded when it failed (0 means the
            failure happened before the first chunk: a router may try another tier; more
            means mid-stream: a router may fail over).
    """

    def __init__(self, message: str, *, tokens: int = 0) -> None:
        super().__init__(message)
        self.tokens = tokens


class HPCQueueTimeout(HPCError, TimeoutError):
    """The task did not start (reach the relay) within ``queue_timeout``."""


class HPCFirstTokenTimeout(HPCError, TimeoutError):
    """The task started but produced no token within ``first_token_timeout``."""


class HPCIdleTimeout(HPCError, TimeoutError):
    """The stream went silent for longer than ``idle_timeout`` between tokens."""


class HPCRemoteError(HPCError):
    """The HPC node reported an error (backend down, bad request, ...) in an authentic frame."""


class HPCTaskError(HPCError):
    """The executor could not run the task, or the task itself raised."""


class ExecutorRefused(HPCTaskError):
    """The endpoint's executor would not take the task (shut down, offline): the request may
    move to the next endpoint before the first token."""


class RelayFailed(HPCError):
    """The relay could not be reached, or was lost before the first token (try another)."""
