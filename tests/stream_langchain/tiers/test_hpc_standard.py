"""LangChain's standard test suites against ChatHPC over a real relay, executor and backend.

The backend here is llama.cpp's server with the bundled Gemma 3 270M *base* model (fast; the
suite checks the HPC path, not answers), which cannot call tools or produce structured output.
Flags are off for that reason, and they would stay off with the embedded HPC stand-in's real
model: Qwen2.5-Coder-1.5B-Instruct behind llama.cpp's server with ``chatml-function-calling``
(the server's only tool-call parser) called the right tool for 5 of 10 tool questions with
``tool_choice="auto"`` (empty answers otherwise), and the server rejects ``tool_choice="any"``
/``"required"`` (llama-cpp-python 0.3.x asserts ``"auto"``); only a tool forced by name worked
(2 of 2). ChatHPC passes tools and tool-call deltas through (``bind_tools``; see
test_hpc.py and test_hpc_tools.py), so they work against a vLLM with a tool parser. The same
1.5B model called tools 10 of 10 times in-process through its own chat template (see
test_llama_tools.py), which llama.cpp's server does not parse.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from stream_langchain.tiers.hpc import ChatHPC
from stream_langchain.tiers.llama_server import LlamaServer

_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4)
_WIRING: dict[str, Any] = {
    # Unit tests never reach these (no call is made); integration tests replace them.
    "relay_url": "ws://127.0.0.1:9",
    "relay_secret": "unit-test-secret-0000000000000000",
    "backend_url": "http://127.0.0.1:9/v1",
}


class _Flags:
    @property
    def chat_model_class(self) -> type[ChatHPC]:
        return ChatHPC

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"executor": _POOL, **_WIRING}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # ChatHPC has no API key of its own (the relay secret is separate, see test_hpc.py),
        # and short answers keep the suite quick on a CPU backend.
        params = dict(super().standard_chat_model_params)  # type: ignore[misc]
        params.pop("api_key", None)
        params["max_tokens"] = 16
        return params

    has_tool_calling = False
    has_tool_choice = False
    has_structured_output = False
    supports_json_mode = False
    supports_image_inputs = False
    supports_image_urls = False
    supports_pdf_inputs = False
    supports_audio_inputs = False
    supports_image_tool_message = False
    supports_pdf_tool_message = False
    supports_anthropic_inputs = False
    supports_model_override = False
    returns_usage_metadata = True


class TestChatHPCUnit(_Flags, ChatModelUnitTests):
    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        secret = "secret-from-the-environment-000000"
        return (
            {"STREAM_RELAY_SECRET": secret},
            {"executor": _POOL, "relay_url": "ws://relay.example:8765"},
            {"relay_secret": secret},
        )


@pytest.mark.slow
class TestChatHPCIntegration(_Flags, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _real_wiring(self, hpc_relay: tuple[str, str], llama_server: LlamaServer) -> Iterator[None]:
        saved = dict(_WIRING)
        _WIRING.update(
            relay_url=hpc_relay[0], relay_secret=hpc_relay[1], backend_url=llama_server.base_url
        )
        try:
            yield
        finally:
            _WIRING.clear()
            _WIRING.update(saved)
