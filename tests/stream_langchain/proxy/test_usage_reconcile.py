"""Reconciliation on the embedded stack through the proxy with the real ``openai`` client:
local, HPC, auto-routed, forced, streamed, non-streamed, tool-calling, aborted and refused
requests. Every usage row equals what the backend counted itself (llama.cpp's own usage for
the same messages on the same model), and refused requests carry zero (see
``benchmarks/usage``, which writes the same comparison as a results file)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.usage.__main__ import MAX_TOKENS, run
from stream_langchain import ChatStream, KeywordJudge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatStream]:
    with ChatStream.embedded(max_tokens=MAX_TOKENS, temperature=0.0,
                             judge=KeywordJudge()) as chat:
        yield chat


def test_usage_rows_equal_what_the_backends_counted(chat: ChatStream) -> None:
    """Rows == llama.cpp's counts for every answered request; refused rows are zero; the
    mix reached both tiers, a tool call, and a 400 context_length_exceeded."""
    data = run(chat)
    by_name = {r["name"]: r for r in data["requests"]}
    assert data["rows"] == len(data["requests"])
    mismatched = [r for r in data["requests"] if r["exact"] is False]
    assert not mismatched, mismatched
    assert data["totals"]["checked"] >= 8 and data["totals"]["refused_charged"] == 0
    assert {by_name["local"]["tier"], by_name["hpc"]["tier"]} == {"local", "hpc"}
    assert by_name["refused-too-long"]["code"] == "context_length_exceeded"
    assert by_name["refused-image"]["http_status"] == 400
    assert by_name["hpc-aborted"]["status"] == "aborted"
    # the templated prompt is more than the message text: the chat template was counted
    assert by_name["local"]["row"][0] > 7
