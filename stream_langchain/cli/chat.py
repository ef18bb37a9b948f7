"""``stream chat`` and ``stream demo``: ask questions, see the routing, watch the tokens.

``stream chat --image photo.png "What is in this picture?"`` sends the question with the
image (repeat ``--image`` for several); ChatStream routes it only to a tier that takes images.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from stream_langchain.capabilities import check_image_bytes
from stream_langchain.errors import ImageFileError
from stream_langchain.record import RouteHint, RouteRecord, Skip

__all__ = ["DEMO_QUESTIONS", "IMAGE_MAX_BYTES", "ImageFileError", "add_chat_commands",
           "build_chat", "image_part"]

DEMO_QUESTIONS = [
    "What is the capital of France?",
    "Explain how a hash table handles collisions.",
    "Prove that there are infinitely many prime numbers, step by step.",
]

IMAGE_MAX_BYTES = 20 * 1024 * 1024
"""Largest image file ``--image`` takes (20 MiB, OpenAI's per-image limit)."""

def image_part(path: str | os.PathLike[str], *,
               max_bytes: int = IMAGE_MAX_BYTES) -> dict[str, Any]:
    """LangChain's standard image block for an image file:
    ``{"type": "image", "base64": ..., "mime_type": ...}``.

    The type comes from the file's first bytes (PNG, JPEG, GIF, WebP, ...: see
    :func:`stream_langchain.capabilities.check_image_bytes`), not its name.

    Raises:
        ImageFileError: naming the path: missing, not a file, unreadable, empty, over
            ``max_bytes``, or not an image.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        ...     _ = f.write(b"GIF89a" + bytes(10)); f.flush()
        ...     image_part(f.name)["mime_type"]
        'image/gif'
        >>> image_part("/nonexistent/cat.png")
        Traceback (most recent call last):
        ...
        stream_langchain.errors.ImageFileError: /nonexistent/cat.png: no such file
    """
    name = os.fspath(path)
    p = Path(name)
    try:
        if not p.exists():
            raise ImageFileError(f"{name}: no such file")
        if not p.is_file():
            raise ImageFileError(f"{name}: not a regular file")
        size = p.stat().st_size
        if size == 0:
            raise ImageFileError(f"{name}: the file is empty")
        if size > max_bytes:
            raise ImageFileError(f"{name}: {size / 2**20:.1f} MiB is over the "
                                 f"{max_bytes / 2**20:g} MiB limit for an image")
        data = p.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    mime = check_image_bytes(data, name)  # judged by its first bytes, not its name
    return {"type": "image", "base64": base64.b64encode(data).decode("ascii"),
            "mime_type": mime}


def _question(text: str, images: list[dict[str, Any]]) -> HumanMessage:
    if not images:
        return HumanMessage(text)
    return HumanMessage(content=[{"type": "text", "text": text}, *images])


def build_chat(args: argparse.Namespace) -> Any:
    """The ChatStream a ``stream`` command uses: the settings file (``--config``, else the
    default path) when there is one, else the embedded stack (``--max-tokens``,
    ``--no-hpc``)."""
    from stream_langchain.chat_model import ChatStream
    from stream_langchain.settings import default_config_path

    path = args.config or default_config_path()
    if path is not None:
        return ChatStream.from_settings(path)
    overrides: dict[str, Any] = {}
    if getattr(args, "no_hpc", False):
        overrides["hpc"] = None
    return ChatStream.embedded(max_tokens=args.max_tokens, **overrides)


class _Printer:
    """Plain text when piped, rich when a terminal."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.rich = None
        if out.isatty():
            try:
                from rich.console import Console

                self.rich = Console(file=out, highlight=False)
            except ImportError:  # pragma: no cover - rich is a dependency
                self.rich = None

    def note(self, text: str) -> None:
        if self.rich is not None:
            self.rich.print(f"[dim]{text}[/dim]")
        else:
            print(text, file=self.out, flush=True)

    def token(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _header(hint: RouteHint) -> str:
    return (f"[{hint.tier} | {hint.model} | {hint.complexity} | "
            f"judge {hint.judge} {hint.judge_ms:.1f} ms]")


def _footer(rec: RouteRecord, elapsed: float) -> str:
    out_tokens = rec.usage.get("output_tokens", 0) if rec.usage else 0
    ttft = rec.ttft_ms
    gen_s = elapsed - (ttft or 0) / 1000.0
    rate = out_tokens / gen_s if gen_s > 0 and out_tokens else 0.0
    parts = [f"TTFT {ttft:.0f} ms" if ttft is not None else "TTFT n/a",
             f"{out_tokens} tokens", f"{rate:.1f} tokens/s"]
    images = (rec.needs or {}).get("images")
    if images:
        parts.append(f"{images} image{'s' if images > 1 else ''}")
    ahead = _tiers_ahead(rec)
    if ahead:
        parts.append("skipped: " + "; ".join(f"{s['tier']} ({s['reason']})" for s in ahead))
    if rec.fallbacks:
        parts.append("fallbacks: " + "; ".join(f"{f['tier']}: {f['error']}"
                                               for f in rec.fallbacks))
    if rec.failover:
        parts.append("failover: " + " -> ".join(rec.tiers))
    if rec.hpc_mode:
        parts.append(f"hpc mode: {rec.hpc_mode}")
    if rec.ollama:
        o = rec.ollama
        can = [c for c in o.get("capabilities") or [] if c != "completion"]
        parts.append(f"ollama num_ctx {o['num_ctx']} ({o['window_source']}); "
                     f"{', '.join(can) or 'text only'}{'; cold load' if o['cold_load'] else ''}")
    return "[" + " | ".join(parts) + "]"


def _tiers_ahead(rec: RouteRecord) -> list[Skip]:
    """Skipped tiers the policy would have preferred to the one that answered."""
    from stream_langchain.judges import Complexity
    from stream_langchain.routing import DEFAULT_ORDER

    if not rec.complexity or rec.override:
        return []
    order = list(DEFAULT_ORDER[Complexity(rec.complexity)])
    rank = order.index(rec.tier) if rec.tier in order else len(order)  # type: ignore[arg-type]
    return [s for s in rec.skipped if s["tier"] in order[:rank]]


def _answer(llm: Any, messages: list[BaseMessage], tier: str | None, printer: _Printer | None,
            ) -> tuple[str, RouteRecord | None]:
    """Stream one answer; print it when ``printer`` is given. Returns (text, record)."""
    kwargs = {"tier": tier} if tier else {}
    started = time.perf_counter()
    parts: list[str] = []
    record: RouteRecord | None = None
    for chunk in llm.stream(messages, **kwargs):
        hint = RouteHint.from_metadata(chunk.response_metadata)
        if hint is not None and printer:
            printer.note(_header(hint))
        if chunk.content:
            text = str(chunk.content)
            parts.append(text)
            if printer:
                printer.token(text)
        record = RouteRecord.from_metadata(chunk.response_metadata) or record
    if printer:
        printer.token("\n")
        printer.note(_footer(record or RouteRecord.from_dict({}),
                             time.perf_counter() - started))
    return "".join(parts), record


def _cmd_chat(args: argparse.Namespace) -> int:
    question = args.question
    if question == "-":
        question = sys.stdin.read().strip()
        if not question:
            print("stream chat: no question on stdin", file=sys.stderr)
            return 2
    try:
        images = [image_part(path) for path in args.image]
    except ImageFileError as exc:
        print(f"stream chat: --image {exc}", file=sys.stderr)
        return 2
    with build_chat(args) as llm:
        if question is None:
            return _interactive(llm, args, images)
        messages: list[BaseMessage] = [_question(question, images)]
        if args.json:
            text, record = _answer(llm, messages, args.tier, None)
            print(json.dumps({"answer": text, "stream": record.to_dict() if record else {}},
                             ensure_ascii=False))
        else:
            _answer(llm, messages, args.tier, _Printer(sys.stdout))
    return 0


def _context_note(printer: _Printer) -> Any:
    """Shows "summarizing context" while older turns are condensed (ChatStream's hook)."""

    def note(name: str, data: dict[str, Any]) -> None:
        if name == "summarize_start":
            printer.note(f"[summarizing context for {data['tier']} ...]")
        elif data.get("fallback_truncated"):
            printer.note(f"[context truncated: {data.get('summarizer_error')}]")
        else:
            printer.note(f"[context {data['context_tokens_before']} -> "
                         f"{data['context_tokens_after']} tokens]")

    return note


def _interactive(llm: Any, args: argparse.Namespace,
                 images: list[dict[str, Any]] | None = None) -> int:
    """Multi-turn chat; ``images`` go with the first question (and stay in the history)."""
    printer = _Printer(sys.stdout)
    printer.note("STREAM chat: empty line or Ctrl-D to quit.")
    pending = list(images or [])
    if pending:
        printer.note(f"[{len(pending)} image{'s' if len(pending) > 1 else ''} attached to "
                     "your first question]")
    llm.on_context_event = _context_note(printer)
    history: list[BaseMessage] = []
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            print()
            return 0
        if not line or line in {"exit", "quit"}:
            return 0
        history.append(_question(line, pending))
        pending = []
        text, _ = _answer(llm, history, args.tier, printer)
        history.append(AIMessage(text))


def _cmd_demo(args: argparse.Namespace) -> int:
    printer = _Printer(sys.stdout)
    printer.note("STREAM demo: each question is judged, routed and streamed (embedded stack).")
    with build_chat(args) as llm:
        tiers = ", ".join(f"{t}={m}" for t, m in llm._identifying_params["tiers"].items())
        printer.note(f"tiers: {tiers}; judge: {llm.active_judge.name}")
        for q in args.questions or DEMO_QUESTIONS:
            printer.note(f"\nQ: {q}")
            _answer(llm, [HumanMessage(q)], None, printer)
    return 0



def add_chat_commands(sub: Any) -> None:
    """Add ``chat`` and ``demo`` to the ``stream`` command's subparsers."""
    chat = sub.add_parser("chat", help="ask a question (or chat interactively)")
    chat.add_argument("question", nargs="?", help="the question; '-' reads stdin; "
                      "omit for an interactive chat")
    chat.add_argument("--tier", choices=["local", "hpc", "cloud"], help="force a tier")
    chat.add_argument("--config", help="settings file (TOML)")
    chat.add_argument("--json", action="store_true", help="print one JSON object")
    chat.add_argument("--image", action="append", default=[], metavar="PATH",
                      help="send an image file (PNG, JPEG, GIF or WebP, at most 20 MiB) with "
                      "the question; repeat for several. Only tiers that take images answer "
                      "(settings: vision = true). Interactive chat: the images go with the "
                      "first question and stay in its history")
    chat.add_argument("--max-tokens", type=int,
                      default=int(os.environ.get("STREAM_EMBEDDED_MAX_TOKENS", "256")),
                      help="answer length for the embedded stack (default 256, or "
                      "$STREAM_EMBEDDED_MAX_TOKENS)")
    chat.add_argument("--no-hpc", action="store_true",
                      help="embedded stack without its HPC tier (faster start)")
    chat.set_defaults(func=_cmd_chat)

    demo = sub.add_parser("demo", help="sample questions through the embedded stack")
    demo.add_argument("questions", nargs="*", help="questions instead of the samples")
    demo.add_argument("--config", help="settings file (TOML)")
    demo.add_argument("--max-tokens", type=int,
                      default=int(os.environ.get("STREAM_EMBEDDED_MAX_TOKENS", "48")))
    demo.add_argument("--no-hpc", action="store_true")
    demo.set_defaults(func=_cmd_demo)
