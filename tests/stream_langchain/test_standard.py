"""LangChain's standard test suites against ChatStream on the embedded stack.

Capability flags are set honestly for the embedded stack: its only tier is the bundled
Gemma 3 270M *base* model (not instruction tuned) run in-process by llama.cpp, which cannot
call tools, produce structured output, read images or follow JSON mode. ChatStream forwards
those features to the routed tier (see test_chat_stream.py), so they work when a capable
tier is configured; here they are switched off rather than faked.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from stream_langchain import ChatStream
from stream_langchain.judges import KeywordJudge


def _params() -> dict[str, Any]:
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    return {"local": ChatLlamaCpp(max_tokens=24, seed=1), "judge": KeywordJudge()}


class _Flags:
    @property
    def chat_model_class(self) -> type[ChatStream]:
        return ChatStream

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    # The 270M base model cannot do these; ChatStream forwards them to capable tiers.
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


class TestChatStreamUnit(_Flags, ChatModelUnitTests):
    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # ChatStream holds no key of its own (each tier model holds its own), so the unit
        # suite's ``api_key="test"`` is not a ChatStream parameter.
        params = dict(super().standard_chat_model_params)
        params.pop("api_key")
        return params


@pytest.mark.slow
class TestChatStreamIntegration(_Flags, ChatModelIntegrationTests):
    pass
