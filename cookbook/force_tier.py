"""Forcing a tier, and reading the routing record.

ChatStream normally judges each query and picks the tier itself. Three ways to force one:

1. a per-call keyword: ``llm.invoke(q, tier="local")``;
2. inside a chain, where you cannot reach the model's kwargs, a LangChain config:
   ``chain.invoke(x, config={"configurable": {"stream_tier": "hpc"}})``;
3. on the LlamaIndex side, ``StreamLLM(chat_stream=llm, tier=...)`` or ``tier=`` per call.

Each answer's ``response_metadata["stream"]`` says what happened: ``tier``, ``model``,
``complexity``, ``judge``, ``ttft_ms``, ``override`` (the forced tier, or ``None``) and any
``fallbacks``. Offline this recipe starts the embedded HPC stack too (a loopback relay, a local
process pool and llama.cpp's server standing in for vLLM), so ``hpc`` can be forced for real.

Run: ``python cookbook/force_tier.py`` (offline; set ``STREAM_CONFIG`` to use your tiers).
"""

from __future__ import annotations

from _common import build_chat_stream, show_record
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from stream_llamaindex import StreamLLM

QUESTION = "Name three primary colours."


def main() -> None:
    with build_chat_stream(max_tokens=16, with_hpc=True) as llm:
        tiers = sorted(llm.tiers)
        print(f"configured tiers: {', '.join(tiers)}")

        routed = llm.invoke(QUESTION)
        show_record(routed.response_metadata["stream"], label="routed by the judge")

        forced = "local" if "local" in tiers else tiers[0]
        answer = llm.invoke(QUESTION, tier=forced)
        show_record(answer.response_metadata["stream"], label=f"forced tier={forced!r}",
                    full=False)

        target = "hpc" if "hpc" in tiers else forced
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | llm
        chunks = list(chain.stream({"q": QUESTION},
                                   config={"configurable": {"stream_tier": target}}))
        show_record(chunks[-1].response_metadata["stream"],  # the last chunk has the record
                    label=f"forced via config stream_tier={target!r}", full=False)

        text = (chain | StrOutputParser()).invoke(
            {"q": QUESTION}, config={"configurable": {"stream_tier": target}})
        print(f"same chain with a parser: {text!r}")

        li = StreamLLM(chat_stream=llm, tier=forced)
        completion = li.complete(QUESTION)
        show_record(completion.additional_kwargs["stream"],
                    label=f"LlamaIndex StreamLLM(tier={forced!r})", full=False)

        try:
            llm.invoke(QUESTION, tier="gpu")
        except ValueError as exc:
            print(f"an unknown tier is refused: {exc}")


if __name__ == "__main__":
    main()
