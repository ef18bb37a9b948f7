"""``stream chat`` interactive mode shows when the context is being summarized."""

from __future__ import annotations

import io

from stream_langchain.cli.chat import _context_note, _Printer


def test_the_note_says_summarizing_then_the_sizes() -> None:
    """summarize_start prints "summarizing context"; the end prints before -> after, or the
    truncation and its cause."""
    out = io.StringIO()
    note = _context_note(_Printer(out))
    note("summarize_start", {"tier": "local", "input_tokens": 900})
    note("summarize_end", {"tier": "local", "context_tokens_before": 2600,
                           "context_tokens_after": 700, "fallback_truncated": False})
    note("summarize_end", {"tier": "local", "fallback_truncated": True,
                           "summarizer_error": "TimeoutError: summarizer took longer than 1 s"})
    assert out.getvalue().splitlines() == [
        "[summarizing context for local ...]",
        "[context 2600 -> 700 tokens]",
        "[context truncated: TimeoutError: summarizer took longer than 1 s]",
    ]
