"""OpenAI-style errors: one exception type, one JSON body, the right status.

Every refusal the proxy makes is an :class:`APIError` and reaches the client as
``{"error": {"message", "type", "param", "code"}}`` with its HTTP status, the shape the
``openai`` SDK turns into ``openai.BadRequestError``, ``RateLimitError`` and friends.

Example:
    >>> err = APIError(404, "model 'gpt-9' does not exist", code="model_not_found",
    ...                param="model")
    >>> err.body()["error"]["type"], err.status
    ('invalid_request_error', 404)
"""

from __future__ import annotations

from typing import Any

__all__ = ["APIError", "error_type_for"]

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
