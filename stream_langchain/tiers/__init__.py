"""The sub-models STREAM ships, one module per tier kind.

- :mod:`~stream_langchain.tiers.llamacpp`: ``ChatLlamaCpp``, a GGUF model run in-process.
- :mod:`~stream_langchain.tiers.llama_server`: ``LlamaServer``, llama.cpp's OpenAI-compatible
  server as a managed subprocess (the stand-in for vLLM and for a cloud endpoint).
- :mod:`~stream_langchain.tiers.hpc`: ``ChatHPC``, the HPC tier over Globus Compute (control
  plane) and the encrypted relay (data plane); its errors in ``hpc_errors`` and its Globus
  wiring in ``hpc_globus``.
- :mod:`~stream_langchain.tiers.hpc_stack`: ``EmbeddedHPC``, the whole HPC path on one machine.
- :mod:`~stream_langchain.tiers.embedded`: the offline default stack behind
  ``ChatStream.embedded()``.

A tier is any LangChain ``BaseChatModel``; a new one that STREAM ships goes in a module here.
Nothing in this package imports the engine (``chat_model``, ``routing``, ``_run``) or the CLI:
the builders receive the class they build. Importing this package loads no model.
"""
