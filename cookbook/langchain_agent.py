"""A LangChain agent with tools, on ChatStream.

With tiers that can call tools (Ollama, an OpenAI-compatible API: set ``STREAM_CONFIG``), the
agent runs: LangChain's ``create_agent`` when the ``langchain`` package is installed, else a
minimal tool loop written with langchain-core alone (``bind_tools`` -> run the tool calls ->
feed back ``ToolMessage``s). ChatStream forwards the tools to whichever tier it routes to.

The embedded stack's model (Gemma 3 270M base, in-process llama.cpp) cannot call tools, and
this recipe does not pretend it can: it says so, and answers the question without tools.

Run: ``python cookbook/langchain_agent.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

from typing import Any

from _common import build_chat_stream, show_record
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool, tool

MAX_STEPS = 4
QUESTION = "What is 17 multiplied by 23, plus the number of words in 'tiered inference rocks'?"


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
    """A LangChain chat model can call tools when it implements ``bind_tools`` itself."""
    return type(model).bind_tools is not BaseChatModel.bind_tools


def tool_loop(llm: BaseChatModel, tools: list[BaseTool], question: str) -> list[BaseMessage]:
    """The smallest agent: ask, run the requested tools, answer; at most MAX_STEPS rounds."""
    by_name = {t.name: t for t in tools}
    bound = llm.bind_tools(tools)
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(MAX_STEPS):
        reply = bound.invoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            break
        for call in reply.tool_calls:
            print(f"  tool call: {call['name']}({call['args']})")
            messages.append(by_name[call["name"]].invoke(call))  # a ToolMessage
    return messages


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
    with build_chat_stream(max_tokens=32) as llm:
        capable = {t: can_call_tools(m) for t, m in llm.tiers.items()}
        print(f"Q: {QUESTION}")
        if not any(capable.values()):
            names = ", ".join(sorted(capable))
            print(f"No tier here can call tools ({names}): the embedded model is a small base "
                  "model run by llama.cpp, without tool calling. Set STREAM_CONFIG to a "
                  "settings file with an Ollama or cloud tier to run the agent. Answering "
                  "without tools instead:")
            answer = llm.invoke(QUESTION)
            print(f"A: {answer.content}")
            show_record(answer.response_metadata.get("stream"))
            return
        print(f"Running the agent (tool-capable tiers: "
              f"{', '.join(t for t, ok in capable.items() if ok)})")
        messages = run_agent(llm)
        final = messages[-1]
        print(f"A: {final.content}")
        show_record(final.response_metadata.get("stream"))


if __name__ == "__main__":
    main()
