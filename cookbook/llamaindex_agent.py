"""A LlamaIndex agent on StreamLLM, with tools and a bounded number of steps.

When a routable tier can call tools (``StreamLLM.metadata.is_function_calling_model``) the
recipe uses a ``FunctionAgent``, whose tool calls StreamLLM forwards to the routed tier. On the
embedded stack that is the local tier, Qwen2.5-Coder-0.5B-Instruct in-process, which calls
tools through its GGUF's chat template: the ``multiply`` call below is the model's own, and the
tool really runs. Where no tier can call tools (the Gemma 270M base model, say) the recipe says
so and uses a ``ReActAgent``, which needs none: the model writes ``Action: ...`` lines as text
and the agent parses them. A small model may loop, so the agent is bounded
(``max_iterations``) and, when it runs out of steps, asked for a final answer
(``early_stopping_method="generate"``) instead of failing.

Every step is one StreamLLM call, and each one's routing record is printed from a
``StreamRoutingEvent`` instrumentation handler.

Run: ``python cookbook/llamaindex_agent.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from _common import build_chat_stream, show_record
from llama_index.core.agent.workflow import (
    AgentOutput,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.tools import BaseTool, FunctionTool

from stream_llamaindex import StreamLLM, StreamRoutingEvent

MAX_ITERATIONS = 3
QUESTION = "What is 12 times 7? Use the multiply tool."


def multiply(a: int, b: int) -> int:
    """Multiply two integers and return the product."""
    return a * b


class RoutingRecords(BaseEventHandler):
    """Collects the routing record of every StreamLLM call."""

    records: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RoutingRecords"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, StreamRoutingEvent):
            self.records.append(event.record)


async def run(llm: StreamLLM) -> str:
    tools: list[BaseTool | Callable[..., Any]] = [FunctionTool.from_defaults(fn=multiply)]
    agent: FunctionAgent | ReActAgent
    if llm.metadata.is_function_calling_model:
        print("agent: FunctionAgent (the routed tiers call tools natively)")
        agent = FunctionAgent(tools=tools, llm=llm, early_stopping_method="generate")
    else:
        print("agent: ReActAgent (no tier here can call tools natively, so the model "
              "writes its tool calls as text)")
        agent = ReActAgent(tools=tools, llm=llm, early_stopping_method="generate")
    handler = agent.run(user_msg=QUESTION, max_iterations=MAX_ITERATIONS)
    calls = 0
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            calls += 1
            print(f"  tool {event.tool_name}({event.tool_kwargs}) -> {event.tool_output}")
    print(f"tool calls made: {calls}")
    result: AgentOutput = await handler
    return str(result.response.content or "")


def main() -> None:
    routing = RoutingRecords()
    get_dispatcher().add_event_handler(routing)
    # 96 tokens: a tool call is a whole JSON object, and a call cut short is no call
    with StreamLLM(chat_stream=build_chat_stream(max_tokens=96, temperature=0)) as llm:
        print(f"Q: {QUESTION}")
        answer = asyncio.run(run(llm))
        print(f"A: {answer}")
    print(f"LLM calls: {len(routing.records)}, tiers: {[r['tier'] for r in routing.records]}")
    show_record(routing.records[-1] if routing.records else None, label="last routing record")


if __name__ == "__main__":
    main()
