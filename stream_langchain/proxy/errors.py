"""OpenAI-style errors: one exception type, one JSON body, the right status.

Every refusal the proxy makes is an :class:`APIError` and reaches the client as
``{"error": {"message", "type", "param", "code"}}`` with its HTTP status, the shape the
``openai`` SDK turns into ``openai.BadRequestError``, ``RateLimitError`` and friends. What the
engine raises becomes one by its type, in one place (:func:`api_error`): the
:mod:`stream_langchain.errors` tree, the proxy's own :class:`ClientGone` and
:class:`ShuttingDown`, then ``ValueError`` / ``TypeError`` (400) and anything else (500).

Example:
    >>> err = APIError(404, "model 'gpt-9' does not exist", code="model_not_found",
    ...                param="model")
    >>> err.body()["error"]["type"], err.status
    ('invalid_request_error', 404)
    >>> too_long = context_length_exceeded([], [
    ...     {"tier": "local", "reason": "context 9000 tokens, 9000 after fitting > budget 1792"},
    ...     {"tier": "cloud", "reason": "not configured"}])
    >>> too_long.status, too_long.code
    (400, 'context_length_exceeded')
    >>> api_error(ClientGone()).status, api_error(KeyError("x")).code
    (499, 'internal_error')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stream_langchain.errors import (
    AllTiersFailed,
    CapabilityError,
    TierFailure,
    UnsupportedFeature,
    describe,
)

__all__ = ["APIError", "ClientGone", "ShuttingDown", "api_error", "context_length_exceeded",
           "error_type_for"]

logger = logging.getLogger("stream_langchain.proxy.app")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


def error_type_for(status: int) -> str:
    """The OpenAI error ``type`` for an HTTP status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


class APIError(Exception):
    """A request the proxy refuses or cannot serve, with its status and OpenAI body.

    Args:
        status: HTTP status.
        message: What is wrong, naming the offending parameter or limit.
        type: OpenAI error type (default: derived from ``status``).
        param: The request field at fault, if any.
        code: A stable machine-readable code.
        headers: Extra response headers (``Retry-After``, ``x-ratelimit-*``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,  # noqa: A002 - the OpenAI field's name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}`` as OpenAI sends it."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# Why a tier could not take a prompt because of its length: routing's and fitting's skip
# reasons, llama.cpp's and OpenAI-compatible servers' errors.
_CONTEXT = re.compile(r"^context \d+ tokens|exceed(?:s|ed)? (?:the )?context window|"
                      r"maximum context length|context_length_exceeded|context length",
                      re.IGNORECASE)
# Not tried for reasons that have nothing to do with the request's length.
_NOT_ALLOWED = ("not configured", "privacy", "cloud budget exhausted")
_TOKENS = re.compile(r"context (\d+) tokens|Requested tokens \((\d+)\)|resulted in (\d+) tokens")
_WINDOW = re.compile(r"(?:budget|window(?: of)?|context length is) (\d+)")


def context_length_exceeded(errors: Iterable[Mapping[str, str]],
                            skipped: Iterable[Mapping[str, str]]) -> APIError | None:
    """A 400 ``context_length_exceeded`` when every tier the request may use refused it for
    its length (after fitting was tried), else ``None``.

    Args:
        errors: ``{"tier", "error"}`` for every tier tried (``AllTiersFailed.errors``).
        skipped: ``{"tier", "reason"}`` for every tier not tried (``AllTiersFailed.skipped``).
    """
    reasons = [e.get("error", "") for e in errors]
    reasons += [s.get("reason", "") for s in skipped
                if not s.get("reason", "").startswith(_NOT_ALLOWED)]
    if not reasons or not all(_CONTEXT.search(r) for r in reasons):
        return None
    tokens = [int(n) for r in reasons for m in _TOKENS.finditer(r) for n in m.groups() if n]
    windows = [int(m.group(1)) for r in reasons for m in _WINDOW.finditer(r)]
    size = f"{max(tokens)} tokens" if tokens else "too long"
    largest = (f"; the largest window this request may use takes {max(windows)} prompt tokens"
               if windows else "")
    return APIError(400, f"this request's context is {size}, more than any tier it may use "
                         f"can take even after fitting{largest}. Shorten the conversation "
                         "(or allow a tier with a larger window).",
                    param="messages", code="context_length_exceeded")


class ClientGone(Exception):
    """The client disconnected before the response started."""


class ShuttingDown(Exception):
    """The server's graceful shutdown is about to run out: answers still running are cut."""


def _capability(exc: CapabilityError) -> APIError:
    tools = exc.capability == "tool calling"
    return APIError(400, str(exc), param="tools" if tools else "messages",
                    code="tools_unsupported" if tools else "unsupported_capability")


def _all_failed(exc: AllTiersFailed) -> APIError:
    too_long = context_length_exceeded(exc.errors, exc.skipped)
    if too_long is not None:  # a 400: the openai SDK must not retry it
        return too_long
    if exc.causes and all(isinstance(c, UnsupportedFeature) for c in exc.causes):
        return APIError(400, "no tier that can serve this request supports tool calling: "
                             + "; ".join(e["error"] for e in exc.errors), param="tools",
                        code="tools_unsupported")
    return APIError(503, f"no tier could serve the request: {exc}", code="all_tiers_failed")


def _internal(exc: BaseException) -> APIError:
    logger.error("chat request failed: %s", describe(exc))
    return APIError(500, f"internal error: {describe(exc)}", code="internal_error")


_BY_TYPE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...],
                      Callable[[Any], APIError]], ...] = (
    (APIError, lambda e: e),
    (ShuttingDown, lambda e: APIError(
        503, "the server is shutting down: this answer was cut when its graceful shutdown "
             "time ran out; retry on another replica or later", code="server_shutting_down")),
    (ClientGone, lambda e: APIError(
        499, "the client closed the request; generation was cancelled", code="client_closed")),
    (CapabilityError, _capability),  # before ValueError: its own code and field
    (UnsupportedFeature, lambda e: APIError(400, describe(e), param="tools",
                                            code="tools_unsupported")),
    (AllTiersFailed, _all_failed),
    (TierFailure, lambda e: APIError(503, f"the answering tier failed: {e}",
                                     code="tier_failed")),
    ((ValueError, TypeError), lambda e: APIError(400, f"invalid request: {describe(e)}",
                                                 code="invalid_request")),
)
"""Most specific first: the first type ``exc`` is an instance of maps it."""


def api_error(exc: BaseException) -> APIError:
    """What the client is told about ``exc``: the one mapping from error types to OpenAI
    errors (an unexpected error is a 500, logged)."""
    for kind, build in _BY_TYPE:
        if isinstance(exc, kind):
            return build(exc)
    return _internal(exc)
