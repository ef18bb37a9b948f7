"""The public surface of the HPC tier modules is pinned."""

from __future__ import annotations

import hpc_functions
import stream_langchain.tiers.hpc
import stream_langchain.tiers.hpc_stack
import stream_langchain.tiers.llama_server


def test_hpc_functions_surface() -> None:
    """hpc_functions exports exactly the node-side functions."""
    assert sorted(hpc_functions.__all__) == ["batch_chat", "ping", "stream_chat"]
    assert hpc_functions.protocol.PAYLOAD_KINDS == {"start", "delta", "usage"}


def test_chat_hpc_surface() -> None:
    """stream_langchain.tiers.hpc exports the model, its errors and the Globus wiring."""
    assert sorted(stream_langchain.tiers.hpc.__all__) == [
        "ChatHPC",
        "HPCError",
        "HPCFirstTokenTimeout",
        "HPCIdleTimeout",
        "HPCQueueTimeout",
        "HPCRemoteError",
        "HPCTaskError",
        "HPCTimeouts",
        "globus_executor",
        "new_relay_secret",
        "shipped_serializer",
    ]
    for name in stream_langchain.tiers.hpc.__all__:
        assert hasattr(stream_langchain.tiers.hpc, name)


def test_stack_and_server_surface() -> None:
    """The embedded stack and the llama.cpp server helper export what the lead wires in."""
    assert stream_langchain.tiers.hpc_stack.__all__ == ["EmbeddedHPC"]
    assert sorted(stream_langchain.tiers.llama_server.__all__) == [
        "BUNDLED_MODEL_DISTRIBUTION",
        "LlamaServer",
        "LlamaServerError",
        "bundled_model_path",
        "describe_exit",
        "free_port",
    ]


def test_errors_form_one_family() -> None:
    """Every ChatHPC error is an HPCError; the timeouts are also TimeoutErrors."""
    from stream_langchain.tiers import hpc

    for name in ("HPCQueueTimeout", "HPCFirstTokenTimeout", "HPCIdleTimeout"):
        assert issubclass(getattr(hpc, name), hpc.HPCError)
        assert issubclass(getattr(hpc, name), TimeoutError)
    assert issubclass(hpc.HPCRemoteError, hpc.HPCError)
    assert issubclass(hpc.HPCTaskError, hpc.HPCError)
