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
  reports usage only on non-streamed answers). The HPC node forwards these numbers;
- accepts OpenAI's structured-output request ``response_format={"type": "json_schema",
  "json_schema": {"schema": ...}}`` (what vLLM takes and ``ChatOpenAI`` sends) by rewriting it,
  before validation, into llama-cpp-python's own form ``{"type": "json_object", "schema": ...}``
  (the same JSON-schema grammar); its server answers the OpenAI form with HTTP 422.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
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
    _accept_json_schema()
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


# -- response_format json_schema -> llama-cpp-python's json_object + schema ------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def translate_response_format(body: dict[str, Any]) -> dict[str, Any]:
    """The chat body with an OpenAI ``json_schema`` response format in llama-cpp-python's form.

    Example:
        >>> translate_response_format({"response_format": {"type": "json_schema",
        ...     "json_schema": {"name": "x", "schema": {"type": "object"}}}})
        {'response_format': {'type': 'json_object', 'schema': {'type': 'object'}}}
        >>> translate_response_format({"response_format": {"type": "text"}})
        {'response_format': {'type': 'text'}}
    """
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return body
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    new_fmt: dict[str, Any] = {"type": "json_object"}
    if schema is not None:
        new_fmt["schema"] = schema
    return {**body, "response_format": new_fmt}


class JsonSchemaFormat:
    """ASGI middleware: :func:`translate_response_format` on every chat-completions request.

    Args:
        app: llama-cpp-python's server app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).endswith(
            "/chat/completions"
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before its body came
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = _rewritten(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        request = {"type": "http.request", "body": raw, "more_body": False}
        await self.app({**scope, "headers": headers}, _replay([request], receive), send)


def _rewritten(raw: bytes) -> bytes:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw  # the server reports the malformed body itself
    if not isinstance(body, dict):
        return raw
    new = translate_response_format(body)
    return raw if new is body else json.dumps(new).encode()


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then the connection's own."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _accept_json_schema() -> None:
    """Wrap the app the server entry point builds in :class:`JsonSchemaFormat`."""
    import llama_cpp.server.__main__ as entry

    build = entry.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        return JsonSchemaFormat(build(*args, **kwargs))

    entry.create_app = create_app  # type: ignore[assignment]


if __name__ == "__main__":
    main()
