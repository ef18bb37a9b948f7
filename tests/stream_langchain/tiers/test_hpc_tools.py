"""Tool calls pass through the HPC tier: backend tool-call deltas, sealed, merged client side.

The backend is llama.cpp's server with its grammar-constrained ``chatml-function-calling``
format, so a forced tool choice yields a real, well-formed tool call even from the 270M base
model. That server repeats the function name and id in every streamed delta (OpenAI sends
them once); the node normalizes that, so the merged call is not 'addaddadd'.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest

from stream_langchain.tiers.hpc import ChatHPC
from stream_langchain.tiers.llama_server import LlamaServer

pytestmark = pytest.mark.slow


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(scope="module")
def tool_server() -> Iterator[LlamaServer]:
    with LlamaServer(chat_format="chatml-function-calling", n_ctx=2048, n_threads=2) as srv:
        yield srv


@pytest.fixture
def llm(hpc_relay: tuple[str, str], tool_server: LlamaServer) -> Iterator[ChatHPC]:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield ChatHPC(
            executor=pool,
            relay_url=hpc_relay[0],
            relay_secret=hpc_relay[1],
            backend_url=tool_server.base_url,
            model="gemma-3-270m",
            max_tokens=48,
            temperature=0.0,
        )


def test_forced_tool_call_streams_through_the_relay(llm: ChatHPC) -> None:
    """A forced tool choice comes back as one parsed tool call with integer arguments."""
    msg = llm.bind_tools([add], tool_choice="add").invoke("What is 2 + 3?")
    assert msg.response_metadata["hpc_mode"] == "stream"
    (call,) = msg.tool_calls
    assert call["name"] == "add" and call["id"]
    assert set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values())


def test_tool_call_arrives_in_several_chunks(llm: ChatHPC) -> None:
    """The arguments stream as deltas (not one blob), and only the first names the tool."""
    chunks = list(llm.bind_tools([add], tool_choice="add").stream("Add 2 and 3."))
    pieces = [tc for c in chunks for tc in c.tool_call_chunks]
    assert len(pieces) > 1
    assert [p["name"] for p in pieces if p["name"]] == ["add"]
