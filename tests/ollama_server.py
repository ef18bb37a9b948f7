"""A loopback server that speaks Ollama's HTTP API, for tests of the Ollama local tier.

Ollama cannot run on these machines (no model hub, no GPU), so the tests drive the real
``ChatOllama`` client (langchain-ollama over the ``ollama`` package and httpx) against this
``http.server`` on ``127.0.0.1``. It answers the endpoints as Ollama's API documents them:

- ``POST /api/chat``: streaming NDJSON (``Transfer-Encoding: chunked``,
  ``application/x-ndjson``), one ``{"model", "created_at", "message", "done": false}`` object
  per piece and a last ``done: true`` object with ``done_reason``, ``prompt_eval_count``,
  ``eval_count`` and the durations; ``stream: false`` gives that one object whole. Tool
  calls come in Ollama's shape (``message.tool_calls[].function.{name, arguments}``, the
  arguments an object); images arrive as base64 strings in ``messages[].images``.
- ``POST /api/show``: ``capabilities``, ``parameters``, ``model_info`` (with
  ``<arch>.context_length``), ``details``, ``template``, ``modelfile``.
- ``GET /api/ps`` (loaded models, their ``context_length`` and ``expires_at``),
  ``GET /api/tags``, ``GET /api/version``, ``GET /`` ("Ollama is running").
- A model that is not pulled: HTTP 404 with Ollama's error body
  (``{"error": "model \\"x\\" not found, try pulling it first"}``); tools for a model without
  the ``tools`` capability: HTTP 400 ``... does not support tools``.

What makes it useful is that the context behaves as Ollama's does:

- The context a request runs with is its ``options.num_ctx``, else the model's Modelfile
  ``num_ctx`` parameter, else the server default (``OLLAMA_CONTEXT_LENGTH``, 4096), capped at
  the model's trained length. A different context than the loaded one reloads the model.
- A prompt longer than that context is **silently truncated** as Ollama's ``chatPrompt``
  does: the oldest messages are dropped (system messages and the latest message always
  stay), and a prompt still too long keeps its last tokens. No error, no warning in the
  response: only :attr:`OllamaServer.requests` says what was lost.
- Tokens are counted with a simple tokenizer (:func:`count_tokens`: words and punctuation
  marks), over a simple template (role marker plus content per message).
- A cold model (not loaded, expired ``keep_alive``, or loaded with another context) waits
  ``load_delay_s`` before its first byte, as a real load does.

The model is a scripted responder: by default it says how much of the conversation it saw
and whether it can see each ``facts`` string (so a test can show a planted fact lost or
kept); a vision model describes the images it got (type, size, digest); a model with tools
bound calls the first tool with arguments taken from the question.

Example:
    >>> with OllamaServer() as srv:
    ...     import httpx
    ...     r = httpx.post(srv.base_url + "/api/chat", json={"model": "llama3.2:3b",
    ...         "stream": False, "messages": [{"role": "user", "content": "hi there"}]})
    ...     r.json()["done"], r.json()["prompt_eval_count"] > 0
    (True, True)
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.vision_backend import describe_image_url

__all__ = ["ChatRequest", "FakeModel", "OllamaServer", "b64", "count_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def count_tokens(text: str) -> int:
    """The server's tokenizer: words and punctuation marks (``"Hi, you."`` is 4)."""
    return len(_TOKEN.findall(text))


def _render(msg: dict[str, Any]) -> str:
    """One message as the model's template renders it (role marker, content)."""
    return f"<|{msg.get('role', 'user')}|> {msg.get('content') or ''}\n"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


@dataclass
class FakeModel:
    """One pulled model: what ``/api/show`` reports and how it behaves."""

    name: str
    arch: str = "llama"
    context_length: int | None = 131072
    """``<arch>.context_length`` (the trained length); ``None``: not reported."""
    capabilities: tuple[str, ...] = ("completion", "tools")
    parameters: str = 'stop "<|eot_id|>"'
    """The Modelfile parameters as ``/api/show`` prints them (``num_ctx 8192`` sets the
    model's default context)."""
    family: str = "llama"
    parameter_size: str = "3.2B"

    def default_ctx(self) -> int | None:
        for line in self.parameters.splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "num_ctx" and value.strip().isdigit():
                return int(value)
        return None

    def details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": self.family,
                "families": [self.family], "parameter_size": self.parameter_size,
                "quantization_level": "Q4_K_M"}


@dataclass
class ChatRequest:
    """What one ``/api/chat`` request did to the conversation."""

    model: str
    num_ctx: int
    """The context the request ran with."""
    messages: int
    """Messages sent."""
    kept: int
    """Messages the model saw (the rest were dropped, silently)."""
    prompt_tokens: int
    """Tokens the model saw."""
    sent_tokens: int
    """Tokens of the whole conversation as sent (before truncation)."""
    seen_text: str
    images: list[str]
    tools: list[str]
    cold: bool
    options: dict[str, Any]
    body: dict[str, Any] = field(repr=False)

    @property
    def truncated(self) -> bool:
        """Whether anything sent was not seen (Ollama's silent loss)."""
        return self.prompt_tokens < self.sent_tokens


Responder = Callable[[ChatRequest, list[dict[str, Any]]], str | dict[str, Any]]
"""A scripted model: (request, the messages it saw) -> reply text, or a message dict with
``tool_calls``."""


def _duration_s(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value).strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else default


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _tool_args(schema: dict[str, Any], question: str) -> dict[str, Any]:
    """Arguments for a tool from the question: integers for integer fields, else the first
    quoted text, else the last word."""
    numbers = [int(n) for n in re.findall(r"-?\d+", question)]
    words = re.findall(r"'([^']+)'", question) or re.findall(r"[^\W\d_][\w'-]*", question)[-1:]
    args: dict[str, Any] = {}
    props = (schema.get("properties") or {})
    for name in schema.get("required") or list(props):
        kind = (props.get(name) or {}).get("type")
        if kind in ("integer", "number"):
            args[name] = numbers.pop(0) if numbers else 0
        else:
            args[name] = words[0] if words else "x"
    return args


class OllamaServer:
    """The server; ``with OllamaServer() as srv:`` starts and stops it.

    Args:
        models: the pulled models (default: ``llama3.2:3b`` text + tools, 131072 trained,
            and ``gemma3:4b`` vision, 131072 trained).
        default_num_ctx: the server default (``OLLAMA_CONTEXT_LENGTH``; Ollama's is 4096).
        load_delay_s: how long a cold load takes before the first byte.
        facts: strings the default responder reports as seen or not seen.

    Attributes:
        base_url: ``http://127.0.0.1:<port>`` (what ``ChatOllama(base_url=...)`` takes).
        requests: a :class:`ChatRequest` per ``/api/chat`` call, in order.
        calls: every request line (``POST /api/show``), in order.
        loads: how many times a model was (re)loaded.
    """

    def __init__(self, models: list[FakeModel] | None = None, *, default_num_ctx: int = 4096,
                 load_delay_s: float = 0.0, facts: tuple[str, ...] = (),
                 responder: Responder | None = None, keep_alive_s: float = 300.0) -> None:
        self.models = {m.name: m for m in (models if models is not None else [
            FakeModel("llama3.2:3b"),
            FakeModel("gemma3:4b", arch="gemma3", family="gemma3", parameter_size="4.3B",
                      capabilities=("completion", "vision"))])}
        self.default_num_ctx = default_num_ctx
        self.load_delay_s = load_delay_s
        self.facts = facts
        self.responder = responder or self.default_reply
        self.keep_alive_s = keep_alive_s
        self.requests: list[ChatRequest] = []
        self.calls: list[str] = []
        self.loads = 0
        self.loaded: dict[str, tuple[int, float]] = {}  # name -> (context, expires monotonic)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OllamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="ollama-server")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def load(self, name: str, num_ctx: int) -> None:
        """Mark ``name`` loaded with ``num_ctx`` (as if a request had just run)."""
        with self._lock:
            self.loaded[name] = (num_ctx, time.monotonic() + self.keep_alive_s)

    def unload(self, name: str) -> None:
        """Forget that ``name`` is loaded (``keep_alive`` expired)."""
        with self._lock:
            self.loaded.pop(name, None)

    # ------------------------------------------------------------------ the model

    def default_reply(self, req: ChatRequest, seen: list[dict[str, Any]]) -> str | dict[str, Any]:
        """Tool call when tools are bound and the last turn is the user's; image
        descriptions for a vision model; else what it saw and which facts it can see."""
        body = req.body
        last = seen[-1] if seen else {}
        tools = body.get("tools") or []
        if tools and last.get("role") == "user":
            fn = tools[0].get("function") or {}
            args = _tool_args(fn.get("parameters") or {}, last.get("content") or "")
            return {"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": fn.get("name"), "arguments": args}}]}
        if last.get("role") == "tool":
            return f"The tool returned {last.get('content')}."
        if req.images:
            shown = "; ".join(describe_image_url("data:image/png;base64," + b)
                              for b in req.images)
            return f"I see {len(req.images)} image{'s' if len(req.images) > 1 else ''}: {shown}."
        out = (f"I saw {req.kept} of {req.messages} messages, {req.prompt_tokens} tokens "
               f"(num_ctx {req.num_ctx}).")
        for fact in self.facts:
            out += f" {'I can see' if fact in req.seen_text else 'I cannot see'} {fact}."
        return out

    # ------------------------------------------------------------------ Ollama's rules

    def _context(self, model: FakeModel, options: dict[str, Any]) -> int:
        n = options.get("num_ctx") or model.default_ctx() or self.default_num_ctx
        if model.context_length is not None:
            n = min(int(n), model.context_length)
        return int(n)

    @staticmethod
    def _truncate(msgs: list[dict[str, Any]], num_ctx: int) -> tuple[list[dict[str, Any]], str]:
        """Ollama's chatPrompt: keep the system messages and the newest messages that fit
        (the latest always), then, if still too long, the prompt's last ``num_ctx`` tokens."""
        if not msgs:
            return [], ""
        n = len(msgs) - 1
        for i in range(n - 1, -1, -1):
            system = [m for m in msgs[:i] if m.get("role") == "system"]
            text = "".join(_render(m) for m in [*system, *msgs[i:]])
            if count_tokens(text) > num_ctx:
                break
            n = i
        kept = [m for m in msgs[:n] if m.get("role") == "system"] + msgs[n:]
        text = "".join(_render(m) for m in kept)
        toks = _tokens(text)
        if len(toks) > num_ctx:
            text = " ".join(toks[-num_ctx:])
        return kept, text

    def _start(self, body: dict[str, Any],
               ) -> tuple[int, str | dict[str, Any], ChatRequest | None]:
        """Validate a chat request and run the model: (status, error or reply, record)."""
        name = body.get("model") or ""
        model = self.models.get(name)
        if model is None:
            return 404, f'model "{name}" not found, try pulling it first', None
        if body.get("tools") and "tools" not in model.capabilities:
            return 400, f"registry.ollama.ai/library/{name} does not support tools", None
        options = dict(body.get("options") or {})
        num_ctx = self._context(model, options)
        msgs = list(body.get("messages") or [])
        kept, seen_text = self._truncate(msgs, num_ctx)
        images = ([b for m in kept for b in (m.get("images") or [])]
                  if "vision" in model.capabilities else [])
        with self._lock:
            loaded = self.loaded.get(name)
            cold = loaded is None or loaded[0] != num_ctx or loaded[1] < time.monotonic()
            if cold:
                self.loads += 1
        req = ChatRequest(
            model=name, num_ctx=num_ctx, messages=len(msgs), kept=len(kept),
            prompt_tokens=count_tokens(seen_text),
            sent_tokens=count_tokens("".join(_render(m) for m in msgs)),
            seen_text=seen_text, images=images,
            tools=[(t.get("function") or {}).get("name", "") for t in body.get("tools") or []],
            cold=cold, options=options, body=body)
        with self._lock:
            self.requests.append(req)
        return 200, self.responder(req, kept), req

    def _loaded(self, name: str, num_ctx: int, keep_alive: Any) -> None:
        """The model is loaded (listed by /api/ps) once loading finished, for keep_alive."""
        seconds = _duration_s(keep_alive, self.keep_alive_s)
        with self._lock:
            if seconds == 0:
                self.loaded.pop(name, None)
            else:
                until = float("inf") if seconds < 0 else time.monotonic() + seconds
                self.loaded[name] = (num_ctx, until)

    def _pieces(self, reply: str | dict[str, Any]) -> Iterator[dict[str, Any]]:
        if isinstance(reply, dict):
            yield reply
            return
        for piece in re.findall(r"\S+\s*", reply) or [""]:
            yield {"role": "assistant", "content": piece}

    def _final(self, name: str, req: ChatRequest, eval_count: int) -> dict[str, Any]:
        return {"model": name, "created_at": _now(),
                "message": {"role": "assistant", "content": ""}, "done": True,
                "done_reason": "stop", "total_duration": 1_000_000,
                "load_duration": int(self.load_delay_s * 1e9) if req.cold else 100_000,
                "prompt_eval_count": req.prompt_tokens, "prompt_eval_duration": 500_000,
                "eval_count": eval_count, "eval_duration": 400_000}

    def _show(self, model: FakeModel) -> dict[str, Any]:
        info: dict[str, Any] = {"general.architecture": model.arch,
                                "general.parameter_count": 3212749888,
                                f"{model.arch}.embedding_length": 3072}
        if model.context_length is not None:
            info[f"{model.arch}.context_length"] = model.context_length
        return {"license": "", "modelfile": f"FROM {model.name}\n",
                "parameters": model.parameters, "template": "{{ .Prompt }}",
                "details": model.details(), "model_info": info,
                "capabilities": list(model.capabilities), "modified_at": _now()}

    def _ps(self) -> dict[str, Any]:
        out = []
        now = time.monotonic()
        with self._lock:
            for name, (ctx, until) in self.loaded.items():
                if until < now or name not in self.models:
                    continue
                expires = datetime.now(UTC) + timedelta(seconds=min(until - now, 1e9))
                out.append({"name": name, "model": name, "size": 3_000_000_000,
                            "digest": "a" * 64, "details": self.models[name].details(),
                            "expires_at": expires.isoformat(), "size_vram": 3_000_000_000,
                            "context_length": ctx})
        return {"models": out}

    def _tags(self) -> dict[str, Any]:
        return {"models": [{"name": m.name, "model": m.name, "modified_at": _now(),
                            "size": 2_019_393_189, "digest": "b" * 64,
                            "details": m.details()} for m in self.models.values()]}

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:  # noqa: C901
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any] | None:
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError as exc:
                    self._json(400, {"error": f"invalid JSON: {exc}"})
                    return None
                return body if isinstance(body, dict) else {}

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                srv.calls.append(f"GET {self.path}")
                if self.path == "/":
                    data = b"Ollama is running"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif self.path == "/api/version":
                    self._json(200, {"version": "0.12.6"})
                elif self.path == "/api/ps":
                    self._json(200, srv._ps())
                elif self.path == "/api/tags":
                    self._json(200, srv._tags())
                else:
                    self._json(404, {"error": "404 page not found"})

            def do_POST(self) -> None:  # noqa: N802
                srv.calls.append(f"POST {self.path}")
                body = self._body()
                if body is None:
                    return
                if self.path == "/api/show":
                    name = body.get("model") or body.get("name") or ""
                    model = srv.models.get(name)
                    if model is None:
                        self._json(404, {"error": f"model '{name}' not found"})
                    else:
                        self._json(200, srv._show(model))
                elif self.path == "/api/chat":
                    self._chat(body)
                else:
                    self._json(404, {"error": "404 page not found"})

            def _chat(self, body: dict[str, Any]) -> None:
                status, reply, req = srv._start(body)
                if req is None:
                    self._json(status, {"error": reply})
                    return
                if req.cold and srv.load_delay_s:
                    time.sleep(srv.load_delay_s)  # loading the weights, before any byte
                srv._loaded(req.model, req.num_ctx, body.get("keep_alive"))
                name = req.model
                pieces = list(srv._pieces(reply))
                count = sum(count_tokens(str(p.get("content") or "")) for p in pieces) or 1
                if body.get("stream") is False:
                    final = srv._final(name, req, count)
                    message: dict[str, Any] = {
                        "role": "assistant",
                        "content": "".join(str(p.get("content") or "") for p in pieces)}
                    if pieces[0].get("tool_calls"):
                        message["tool_calls"] = pieces[0]["tool_calls"]
                    final["message"] = message
                    self._json(200, final)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    self._chunk({"model": name, "created_at": _now(), "message": piece,
                                 "done": False})
                self._chunk(srv._final(name, req, count))
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler


def b64(data: bytes) -> str:
    """Base64 text, as Ollama takes images."""
    return base64.b64encode(data).decode("ascii")
