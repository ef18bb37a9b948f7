"""LangChain's standard integration suite against ChatStream whose local tier is the real
``ChatOllama`` client talking to a server that speaks Ollama's API (tests/ollama_server.py).

The local model is a vision and tool model as Ollama lists them (``capabilities``
``completion, vision, tools``, as for ``mistral-small3.1``): ChatStream learns both, and the
window, from ``/api/show``, and sends ``num_ctx`` with each request. The server's model is
scripted (it calls the first bound tool with arguments read from the question, describes the
images it gets, says what it saw otherwise), so the suite checks the protocol path, not
answers. Flags off, with the reason:

- tool choice: ``ChatOllama.bind_tools`` ignores ``tool_choice`` (Ollama's API has none);
- structured output, JSON mode: ChatStream's ``with_structured_output`` binds a tool, and the
  standard test sees ChatStream's run and the tier's (see test_standard.py);
- image URLs: Ollama takes images inline (base64) only, so ChatStream refuses to send it an
  http(s) URL (``image_urls=False``) rather than let the client send the URL as if it were
  image data;
- PDFs, audio, images inside tool messages: Ollama's chat API takes none of them.

The suite downloads its test image from GitHub; with no internet here, that download is
served from a loopback server.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_ollama import ChatOllama
from langchain_tests.integration_tests import ChatModelIntegrationTests

from stream_langchain import ChatStream
from tests.ollama_server import FakeModel, OllamaServer
from tests.stream_langchain.conftest import FixedJudge
from tests.vision_backend import VisionBackend, png_bytes

MODEL = "mistral-small3.1:24b"


@functools.lru_cache(maxsize=1)
def _server() -> OllamaServer:
    """One loopback Ollama for the module (a daemon thread; gone with the process)."""
    srv = OllamaServer([FakeModel(MODEL, arch="mistral3", family="mistral3",
                                  parameter_size="24B",
                                  capabilities=("completion", "vision", "tools"))])
    srv.start()
    return srv


@functools.lru_cache(maxsize=1)
def _files() -> VisionBackend:
    vb = VisionBackend()
    vb.start()
    return vb


@pytest.fixture(autouse=True)
def _suite_image_from_loopback(request: pytest.FixtureRequest) -> Iterator[None]:
    """test_image_inputs downloads its image from GitHub: served from loopback instead; the
    Ollama server must then have received those bytes as base64 in ``images``."""
    if not request.node.name.startswith("test_image_inputs"):
        yield
        return
    image = png_bytes(64, 48)
    real_get = httpx.get
    srv = _server()
    before = len(srv.requests)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(httpx, "get",
                   lambda url, **kw: real_get(_files().serve("test.png", image), **kw))
        yield
    got = [r.images for r in srv.requests[before:] if r.images]
    assert got, "no image reached Ollama"
    assert all(r.options.get("num_ctx") == 32768 for r in srv.requests[before:])


@pytest.mark.slow
class TestChatStreamOllamaIntegration(ChatModelIntegrationTests):
    """The suite as published, local tier = ChatOllama over Ollama's HTTP API."""

    @property
    def chat_model_class(self) -> type[ChatStream]:
        return ChatStream

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"local": ChatOllama(model=MODEL, base_url=_server().base_url),
                "judge": FixedJudge("LOW")}

    has_tool_calling = True
    has_tool_choice = False
    has_structured_output = False
    supports_json_mode = False
    supports_image_inputs = True
    supports_image_urls = False
    supports_pdf_inputs = False
    supports_audio_inputs = False
    supports_image_tool_message = False
    supports_pdf_tool_message = False
    supports_anthropic_inputs = False
    supports_model_override = False
    returns_usage_metadata = True
