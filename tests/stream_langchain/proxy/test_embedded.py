"""The proxy over the real embedded stack (the bundled model run by llama.cpp in-process):
the official openai client and ChatOpenAI get real generated answers and routing records."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from langchain_openai import ChatOpenAI

from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.proxy import Store

from .conftest import ServeFn, wait_for

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def embedded() -> Iterator[ChatStream]:
    with ChatStream.embedded(hpc=None, max_tokens=12, temperature=0.0,
                             judge=KeywordJudge()) as chat:
        yield chat


def test_openai_client_on_the_embedded_stack(serve: ServeFn, keys: dict[str, str],
                                             embedded: ChatStream, store: Store) -> None:
    """Plain and streamed completions carry generated text, usage and the local tier's
    record naming the GGUF model; each writes a usage row."""
    server = serve(embedded)
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="stream", messages=MSG,  # type: ignore[arg-type]
                                                      max_tokens=8)
    resp = raw.parse()
    assert resp.choices[0].message.content
    assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 8
    route = json.loads(raw.headers["x-stream-route"])
    assert route["tier"] == "local" and route["model"].endswith(".gguf")
    chunks = list(c.chat.completions.create(model="stream-local", messages=MSG, stream=True,  # type: ignore[arg-type]
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    wait_for(lambda: len(store.rows()) == 2)
    assert [r["status"] for r in store.rows()] == ["ok", "ok"]


async def test_async_client_and_chat_openai_on_the_embedded_stack(
        serve: ServeFn, keys: dict[str, str], embedded: ChatStream) -> None:
    """The async openai client streams real tokens; ChatOpenAI invokes and streams."""
    server = serve(embedded)
    ac = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=keys["user"], max_retries=0)
    stream = await ac.chat.completions.create(model="stream", messages=MSG, stream=True)  # type: ignore[arg-type]
    parts = [c.choices[0].delta.content async for c in stream
             if c.choices and c.choices[0].delta.content]
    assert "".join(parts).strip()
    await ac.close()
    llm = ChatOpenAI(base_url=server.url + "/v1", api_key=keys["user"],  # type: ignore[arg-type]
                     model="stream", max_retries=0, max_tokens=8)  # type: ignore[call-arg]
    msg = await llm.ainvoke("Name a fruit.")
    assert isinstance(msg.content, str) and msg.content.strip()
    streamed = [c.content async for c in llm.astream("Name a fruit.")]
    assert "".join(str(s) for s in streamed).strip()
