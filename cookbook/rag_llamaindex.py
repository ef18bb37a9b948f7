"""RAG with LlamaIndex: a ``VectorStoreIndex`` over ``cookbook/data/`` answered by StreamLLM.

Shows StreamLLM as the LLM of an ordinary LlamaIndex query engine
(``as_query_engine(streaming=True, llm=...)``), offline embeddings that install from PyPI
without torch (:class:`stream_llamaindex.embeddings.LlamaCppEmbedding`: llama.cpp's embedding
mode over the bundled GGUF), and how to get the routing record out of a pipeline that only
returns text: an instrumentation handler listening for ``StreamRoutingEvent``.

Run: ``python cookbook/rag_llamaindex.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

from typing import Any

from _common import DATA, build_chat_stream, show_record
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.node_parser import SentenceSplitter

from stream_llamaindex import StreamLLM, StreamRoutingEvent
from stream_llamaindex.embeddings import LlamaCppEmbedding

QUESTION = "Why can the relay not read the tokens it forwards?"


class RoutingRecords(BaseEventHandler):
    """Collects the routing record of every StreamLLM call."""

    records: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RoutingRecords"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, StreamRoutingEvent):
            self.records.append(event.record)


def main() -> None:
    routing = RoutingRecords()
    get_dispatcher().add_event_handler(routing)

    documents = SimpleDirectoryReader(str(DATA)).load_data()
    index = VectorStoreIndex.from_documents(
        documents,
        embed_model=LlamaCppEmbedding(),
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=16)],
    )
    print(f"indexed {len(documents)} documents from {DATA.name}/")

    with StreamLLM(chat_stream=build_chat_stream(max_tokens=48)) as llm:
        engine = index.as_query_engine(streaming=True, llm=llm, similarity_top_k=2)
        response = engine.query(QUESTION)
        assert isinstance(response, StreamingResponse)
        print(f"Q: {QUESTION}\nA: ", end="", flush=True)
        for token in response.response_gen:
            print(token, end="", flush=True)
        print()
    for node in response.source_nodes:
        print(f"source: {node.node.metadata.get('file_name')} (score {node.score:.3f})")
    show_record(routing.records[-1] if routing.records else None)


if __name__ == "__main__":
    main()
