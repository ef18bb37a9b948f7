"""Real tool calling through StreamLLM: a tier that can call tools (``ChatOpenAI`` against
llama.cpp's OpenAI-compatible server with its grammar-constrained ``chatml-function-calling``
format) gets LlamaIndex tools, and its calls come back as LlamaIndex tool selections.

The server repeats the function name in every streamed delta (OpenAI sends it once), so the
tier is built with ``disable_streaming="tool_calling"``: tool requests are answered whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_openai import ChatOpenAI
from llama_index.core.tools import FunctionTool

from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.tiers.llama_server import LlamaServer
from stream_llamaindex import StreamLLM

pytestmark = pytest.mark.slow


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = FunctionTool.from_defaults(fn=add)


@pytest.fixture(scope="module")
def tool_llm() -> Iterator[StreamLLM]:
    """StreamLLM whose only tier is a tool-calling OpenAI-compatible endpoint."""
    with LlamaServer(chat_format="chatml-function-calling", n_ctx=2048, n_threads=2) as srv:
        tier = ChatOpenAI(model="gemma-3-270m", base_url=srv.base_url, api_key="none",
                          temperature=0, extra_body={"max_tokens": 48},
                          disable_streaming="tool_calling")
        yield StreamLLM(chat_stream=ChatStream(cloud=tier, judge=KeywordJudge()))


def test_chat_with_tools_returns_the_tiers_tool_call(tool_llm: StreamLLM) -> None:
    """A forced tool choice comes back as a ToolSelection naming the tool, with int args,
    and the record says which tier answered."""
    assert tool_llm.metadata.is_function_calling_model is True
    resp = tool_llm.chat_with_tools([ADD], user_msg="What is 2 + 3?", tool_choice="add")
    assert resp.additional_kwargs["stream"]["tier"] == "cloud"
    (call,) = tool_llm.get_tool_calls_from_response(resp)
    assert call.tool_name == "add" and call.tool_id
    assert set(call.tool_kwargs) == {"a", "b"}
    assert all(isinstance(v, int) for v in call.tool_kwargs.values())


async def test_apredict_and_call_runs_the_tool(tool_llm: StreamLLM) -> None:
    """apredict_and_call: the model picks the arguments (async path), LlamaIndex runs the
    tool."""
    out = await tool_llm.apredict_and_call([ADD], user_msg="Add 2 and 3.", tool_choice="add")
    (source,) = out.sources
    assert source.tool_name == "add"
    assert out.response == str(add(**source.raw_input["kwargs"]))
