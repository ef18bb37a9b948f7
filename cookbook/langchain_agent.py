"""A LangChain agent with tools, on ChatStream.

When a tier can call tools, the agent runs: LangChain's ``create_agent`` when the
``langchain`` package is installed, else a minimal tool loop written with langchain-core alone
(``bind_tools`` -> run the tool calls -> feed back ``ToolMessage``s). ChatStream forwards the
tools to whichever tier it routes to.

On the embedded stack that tier is local: Qwen2.5-Coder-0.5B-Instruct in-process, which calls
tools through its GGUF's own chat template (``ChatLlamaCpp.bind_tools``). The calls below are
real: the model picks the tool and its arguments, the recipe runs it and sends the result back.
A 0.5B model is not a careful planner, so the final arithmetic is only as right as its plan;
the printed tool calls show what it did. A tier that cannot call tools (the Gemma 270M base
model, say) is named, and the question is then answered without tools.

Run: ``python cookbook/langchain_agent.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

import json
from typing import Any

from _common import build_chat_stream, show_record
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.tools import BaseTool, tool

MAX_STEPS = 4
QUESTION = "What is 17 multiplied by 23? Use the multiply tool."
ANSWER_PROMPT = "Answer my question from the tool results above, in one sentence."


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


TOOLS: list[BaseTool] = [multiply, add, word_count]


def can_call_tools(model: BaseChatModel) -> bool:
    """Whether a chat model can call tools: its LangChain ``profile`` says so (STREAM's own
    tiers set it from what their model measurably does), else it implements ``bind_tools``."""
    profile = getattr(model, "profile", None) or {}
    if "tool_calling" in profile:
        return bool(profile["tool_calling"])
    return type(model).bind_tools is not BaseChatModel.bind_tools


def tool_loop(llm: BaseChatModel, tools: list[BaseTool], question: str) -> list[BaseMessage]:
    """The smallest agent: ask, run the requested tools, answer; at most MAX_STEPS rounds.

    A small model may ask again for a result it already has; then the tools are withdrawn
    (``tool_choice="none"``) and it is asked, in so many words, to answer from the results.
    """
    by_name = {t.name: t for t in tools}
    bound = llm.bind_tools(tools)
    messages: list[BaseMessage] = [HumanMessage(question)]
    done: set[str] = set()
    for _ in range(MAX_STEPS):
        reply = bound.invoke(messages)
        calls = reply.tool_calls if isinstance(reply, AIMessage) else []
        if calls and all(_key(c) in done for c in calls):
            print("  (the model asked again for results it has: asking it to answer)")
            messages.append(HumanMessage(ANSWER_PROMPT))
            messages.append(llm.bind_tools(tools, tool_choice="none").invoke(messages))
            break
        messages.append(reply)
        if not calls:
            break
        for call in calls:
            print(f"  tool call: {call['name']}({call['args']})")
            messages.append(by_name[call["name"]].invoke(call))  # a ToolMessage
            done.add(_key(call))
    return messages


def _key(call: ToolCall) -> str:
    return json.dumps([call["name"], call["args"]], sort_keys=True)


def model_name(model: BaseChatModel) -> str:
    return str(getattr(model, "model_name", None) or getattr(model, "model", None)
               or type(model).__name__)


def run_agent(llm: BaseChatModel) -> list[BaseMessage]:
    try:
        from langchain.agents import create_agent  # the `langchain` package (optional)
    except ImportError:
        print("(langchain's create_agent is not installed: using a langchain-core tool loop)")
        return tool_loop(llm, TOOLS, QUESTION)
    agent: Any = create_agent(llm, tools=TOOLS)
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]},
                          config={"recursion_limit": 2 * MAX_STEPS + 1})
    return list(result["messages"])


def main() -> None:
    # 96 tokens: a tool call is a whole JSON object, and a call cut short is no call
    with build_chat_stream(max_tokens=96, temperature=0) as llm:
        capable = {t: can_call_tools(m) for t, m in llm.tiers.items()}
        print(f"Q: {QUESTION}")
        if not any(capable.values()):
            names = ", ".join(f"{t} ({model_name(m)})" for t, m in sorted(llm.tiers.items()))
            print(f"No tier here can call tools: {names}. Set STREAM_CONFIG to a settings "
                  "file with a tool-capable tier (Ollama, a cloud API) to run the agent. "
                  "Answering without tools instead:")
            answer = llm.invoke(QUESTION)
            print(f"A: {answer.content}")
            show_record(answer.response_metadata.get("stream"))
            return
        print(f"Running the agent (tool-capable tiers: "
              f"{', '.join(t for t, ok in capable.items() if ok)})")
        messages = run_agent(llm)
        calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
        print(f"tool calls made: {len(calls)}")
        final = messages[-1]
        print(f"A: {final.content}")
        show_record(final.response_metadata.get("stream"))


if __name__ == "__main__":
    main()
