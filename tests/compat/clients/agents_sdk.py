"""The OpenAI Agents SDK against the proxy, unmodified: one JSON line per case on stdout.

Runs in the ``openai3`` environment (no STREAM imports). Environment: ``STREAM_URL`` (the
proxy's ``/v1`` base), ``STREAM_KEY``, ``STREAM_MODEL`` (text) and ``STREAM_TOOL_MODEL``
(a model that calls tools).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from typing import Any

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel

CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Today's weather in a city.

    Args:
        city: The city's name.
    """
    CALLS.append(city)
    return f"Sunny and 21 degrees in {city}."


class Capital(BaseModel):
    country: str
    capital: str


async def run_case(model: Any, *, stream: bool, tools: bool,
                   output_type: type[BaseModel] | None = None) -> dict[str, Any]:
    CALLS.clear()
    agent = Agent(
        name="assistant",
        instructions="You answer briefly. Use the tools when the question needs them.",
        model=model,
        tools=[get_weather] if tools else [],
        model_settings=ModelSettings(tool_choice="required" if tools else None,
                                     max_tokens=96, temperature=0.0),
        output_type=output_type,
    )
    question = ("What is the weather in Paris?" if tools
                else "Which country has Paris as its capital? Answer in JSON.")
    events: list[str] = []
    if stream:
        result = Runner.run_streamed(agent, question, max_turns=4)
        async for event in result.stream_events():
            events.append(event.type)
    else:
        result = await Runner.run(agent, question, max_turns=4)
    final = result.final_output
    return {"ok": True, "tool_calls": list(CALLS), "events": sorted(set(events)),
            "final": final.model_dump() if isinstance(final, BaseModel) else final,
            "final_type": type(final).__name__}


async def main() -> None:
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=os.environ["STREAM_URL"], api_key=os.environ["STREAM_KEY"],
                         max_retries=0)
    text, tool = os.environ["STREAM_MODEL"], os.environ["STREAM_TOOL_MODEL"]
    cases = {}
    for api, cls in (("responses", OpenAIResponsesModel), ("chat", OpenAIChatCompletionsModel)):
        for stream in (False, True):
            cases[f"{api}-tool-{'stream' if stream else 'plain'}"] = (
                cls(model=tool, openai_client=client), stream, True, None)
        cases[f"{api}-output_type"] = (cls(model=text, openai_client=client), False, False,
                                       Capital)
    only = set(sys.argv[1:])
    for name, (model, stream, tools, output_type) in cases.items():
        if only and name not in only:
            continue
        try:
            out = await run_case(model, stream=stream, tools=tools, output_type=output_type)
        except Exception as exc:  # reported, not raised: the test names the failing case
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "trace": traceback.format_exc()[-3000:]}
        print(json.dumps({"case": name, **out}, default=str), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
