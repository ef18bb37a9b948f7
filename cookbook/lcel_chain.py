"""LCEL chain: ``prompt | ChatStream | StrOutputParser``, streamed token by token.

Shows that ChatStream drops into an ordinary LangChain Expression Language chain, that
streaming works through the parser, and where the routing record goes: the parser keeps only
text, so a LangChain callback handler reads the record from the model's final message (the
same place LangSmith and other tracers see it).

Run: ``python cookbook/lcel_chain.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

from typing import Any

from _common import build_chat_stream, show_record
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate


class RoutingRecordHandler(BaseCallbackHandler):
    """Keeps the routing record of each model call that ends in the chain."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        message = getattr(response.generations[0][0], "message", None)
        if message is not None and "stream" in message.response_metadata:
            self.records.append(message.response_metadata["stream"])


def main() -> None:
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are a concise assistant. Answer in one sentence."),
        ("human", "{question}"),
    ])
    routing = RoutingRecordHandler()
    with build_chat_stream(max_tokens=24) as llm:
        chain = prompt | llm | StrOutputParser()
        question = "What is the capital of France?"
        print(f"Q: {question}\nA: ", end="", flush=True)
        for piece in chain.stream({"question": question}, config={"callbacks": [routing]}):
            print(piece, end="", flush=True)
        print()
    show_record(routing.records[-1] if routing.records else None)


if __name__ == "__main__":
    main()
