"""LlamaIndex's ``OpenAILike`` against the proxy, unmodified: one JSON line per case.

Runs in the ``llamaindex`` environment (no STREAM imports): ``complete``, ``stream_chat``,
``structured_predict`` and a ``FunctionAgent`` with a function tool. Environment as in
``agents_sdk.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike

CALLS: list[str] = []


def llm(model: str) -> OpenAILike:
    return OpenAILike(model=model, api_base=os.environ["STREAM_URL"],
                      api_key=os.environ["STREAM_KEY"], is_chat_model=True,
                      is_function_calling_model=True, context_window=2048, max_tokens=64,
                      temperature=0.0, max_retries=0, timeout=600)


def get_weather(city: str) -> str:
    """Today's weather in a city."""
    CALLS.append(city)
    return f"Sunny and 21 degrees in {city}."


async def complete() -> dict[str, Any]:
    out = llm(os.environ["STREAM_MODEL"]).complete("Name a colour.")
    return {"text": out.text}


async def stream_chat() -> dict[str, Any]:
    gen = llm(os.environ["STREAM_MODEL"]).stream_chat(
        [ChatMessage(role="system", content="Be brief."),
         ChatMessage(role="user", content="Name a fruit.")])
    deltas = [r.delta or "" for r in gen]
    return {"deltas": len(deltas), "text": "".join(deltas)}


async def function_agent() -> dict[str, Any]:
    CALLS.clear()
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(get_weather)],
                          llm=llm(os.environ["STREAM_TOOL_MODEL"]),
                          system_prompt="Use the get_weather tool for weather questions.",
                          initial_tool_choice="get_weather")
    result = await agent.run("What is the weather in Paris?", max_iterations=4)
    return {"tool_calls": list(CALLS), "answer": str(result)}


CASES: dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = {
    "complete": complete, "stream_chat": stream_chat, "function_agent": function_agent,
}


async def main() -> None:
    only = set(sys.argv[1:])
    for name, fn in CASES.items():
        if only and name not in only:
            continue
        try:
            out = {"ok": True, **(await fn())}
        except Exception as exc:
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "trace": traceback.format_exc()[-3000:]}
        print(json.dumps({"case": name, **out}, default=str), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
