"""Fixtures for StreamLLM's tests: one embedded ChatStream (Qwen2.5-Coder-0.5B-Instruct
in-process) shared by the whole session, since the model load is shared anyway.

- ``engine``: ``ChatStream.embedded(hpc=None, max_tokens=MAX_TOKENS)`` with the keyword judge
  (StreamLLM's tests must not depend on a classifier); closed at the end of the session.
- ``llm``: a fresh ``StreamLLM`` over ``engine`` for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream_langchain import CachedJudge, ChatStream, KeywordJudge
from stream_llamaindex import StreamLLM

MAX_TOKENS = 12


@pytest.fixture(scope="session")
def engine() -> Iterator[ChatStream]:
    """The embedded engine, local tier only, short answers."""
    chat_stream = ChatStream.embedded(hpc=None, max_tokens=MAX_TOKENS,
                                      judge=CachedJudge(KeywordJudge()))
    try:
        yield chat_stream
    finally:
        chat_stream.close()


@pytest.fixture
def llm(engine: ChatStream) -> StreamLLM:
    """A StreamLLM over the shared engine."""
    return StreamLLM(chat_stream=engine)
