"""RAG with LangChain over the same documents (``cookbook/data/``), answered by ChatStream.

Shows a classic retrieval chain, ``{context: retriever, question} | prompt | ChatStream``, over
langchain-core's ``InMemoryVectorStore`` with the same offline llama.cpp embeddings as the
LlamaIndex recipe (no torch), streamed. With no output parser at the end the chain yields
message chunks, and the last one carries the routing record in ``response_metadata["stream"]``.

Run: ``python cookbook/rag_langchain.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

from _common import DATA, build_chat_stream, show_record
from _embeddings import LlamaCppEmbeddings
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

QUESTION = "Which tier answers HIGH questions first, and what happens when the budget is spent?"


def load_documents() -> list[Document]:
    """One document per paragraph of every file in ``cookbook/data/``."""
    docs = []
    for path in sorted(DATA.glob("*.md")):
        for i, para in enumerate(p.strip() for p in path.read_text().split("\n\n")):
            if para and not para.startswith("#"):
                docs.append(Document(para, metadata={"source": path.name, "paragraph": i}))
    return docs


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


def main() -> None:
    store = InMemoryVectorStore.from_documents(load_documents(), LlamaCppEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the context only, in one or two sentences.\n\n"
                   "Context:\n{context}"),
        ("human", "{question}"),
    ])
    for doc in retriever.invoke(QUESTION):
        print(f"retrieved: {doc.metadata['source']} paragraph {doc.metadata['paragraph']}")

    with build_chat_stream(max_tokens=48) as llm:
        chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} \
            | prompt | llm
        print(f"Q: {QUESTION}\nA: ", end="", flush=True)
        last = None
        for chunk in chain.stream(QUESTION):
            print(chunk.content, end="", flush=True)
            last = chunk
        print()
    # The last streamed chunk carries the routing record.
    show_record(last.response_metadata.get("stream") if last is not None else None)


if __name__ == "__main__":
    main()
