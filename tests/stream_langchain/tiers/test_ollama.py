"""The Ollama local tier against a server that speaks Ollama's API (tests/ollama_server.py),
through the real ``ChatOllama`` client: the learned window sent as ``num_ctx``, capabilities
from ``/api/show``, usage, clear failures, the breaker and the cold-load timeout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama

from stream_langchain import ChatStream
from stream_langchain.ollama import (
    OllamaModelInfo,
    OllamaModelMissing,
    OllamaNotRunning,
    OllamaProbe,
    is_ollama,
)
from stream_langchain.routing import CapabilityError
from tests.ollama_server import FakeModel, OllamaServer, b64, count_tokens
from tests.stream_langchain.conftest import FixedJudge
from tests.vision_backend import png_bytes

FACT = "The vault code is ZEBRA-42."
QUESTION = "What is the vault code I told you at the start?"
FILLER = ("We talked about the weather in the valley, the price of bread at the market, "
          "and the long road home through the hills before the evening rain came down. ")


@pytest.fixture
def srv() -> Iterator[OllamaServer]:
    with OllamaServer(facts=("ZEBRA-42",)) as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conversation(tokens: int) -> list[BaseMessage]:
    """A planted fact, then filler turns until about ``tokens`` (server tokens), then the
    question about the fact."""
    msgs: list[BaseMessage] = [SystemMessage("You are a helpful assistant."),
                               HumanMessage(f"Remember this. {FACT}"), AIMessage("Noted.")]
    i = 0
    while sum(count_tokens(str(m.content)) for m in msgs) < tokens:
        i += 1
        msgs += [HumanMessage(f"Turn {i}. {FILLER * 3}"), AIMessage(f"Yes, turn {i}. {FILLER}")]
    return [*msgs, HumanMessage(QUESTION)]


def _stream(srv: OllamaServer, model: str = "llama3.2:3b", **kw: Any) -> ChatStream:
    probe = kw.pop("probe", None) or OllamaProbe()
    return ChatStream(local=ChatOllama(model=model, base_url=srv.base_url), ollama_probe=probe,
                      judge=FixedJudge("LOW"), **kw)


def _answer_requests(srv: OllamaServer) -> list[Any]:
    """The chat requests that carried the question (not the summarizer's)."""
    return [r for r in srv.requests if r.body["messages"][-1].get("content") == QUESTION]


def _rec(msg: AIMessage) -> dict[str, Any]:
    return msg.response_metadata["stream"]


# ------------------------------------------------------------------ the window


def test_plain_chatollama_loses_the_start_silently_and_chatstream_does_not(
        srv: OllamaServer) -> None:
    """Without num_ctx Ollama runs at its 4096 default and drops the planted fact without an
    error; through ChatStream the learned window (32768) is sent and the fact is seen."""
    conv = _conversation(6000)
    plain = ChatOllama(model="llama3.2:3b", base_url=srv.base_url).invoke(conv)
    lost = srv.requests[-1]
    assert lost.num_ctx == 4096 and "num_ctx" not in lost.options
    assert lost.truncated and "ZEBRA-42" not in lost.seen_text
    assert "I cannot see ZEBRA-42" in str(plain.content)

    msg = _stream(srv).invoke(conv)
    kept = _answer_requests(srv)[-1]
    assert kept.options["num_ctx"] == 32768 and kept.num_ctx == 32768
    assert not kept.truncated and "ZEBRA-42" in kept.seen_text
    assert "I can see ZEBRA-42" in str(msg.content)
    rec = _rec(msg)
    assert rec["summarized"] is False
    assert rec["ollama"]["num_ctx"] == 32768
    assert rec["ollama"]["window_source"] == ("ollama: llama.context_length=131072, capped at "
                                              "max_num_ctx=32768")
    assert rec["ollama"]["server_default"] == 4096
    assert rec["ollama"]["trained_context"] == 131072


def test_a_conversation_over_the_window_is_fitted_not_truncated(srv: OllamaServer) -> None:
    """Past the window (ceiling 2048 here) ChatStream fits the conversation to it, so the
    prompt Ollama gets is never cut behind anyone's back."""
    conv = _conversation(6000)
    msg = _stream(srv, probe=OllamaProbe(max_num_ctx=2048)).invoke(conv)
    req = _answer_requests(srv)[-1]
    assert req.options["num_ctx"] == 2048
    assert not req.truncated, (req.prompt_tokens, req.sent_tokens)
    rec = _rec(msg)
    assert rec["context_tokens_after"] < rec["context_tokens_before"]
    assert rec["ollama"]["num_ctx"] == 2048


def test_the_window_never_exceeds_the_trained_length() -> None:
    """A model trained on 8192 tokens gets num_ctx 8192 under a 32768 ceiling."""
    short = FakeModel("phi3:mini", arch="phi3", context_length=8192)
    with OllamaServer([short]) as srv:
        llm = _stream(srv, model="phi3:mini")
        msg = llm.invoke("hi")
        assert srv.requests[-1].options["num_ctx"] == 8192
        assert _rec(msg)["ollama"]["window_source"] == ("ollama: phi3.context_length=8192 "
                                                         "(below max_num_ctx=32768)")
        assert llm.tier_capabilities["local"].context_window == 8192


def test_an_explicit_num_ctx_is_kept_and_a_modelfile_default_is_reported() -> None:
    """ChatOllama(num_ctx=...) is the caller's choice (capped at the trained length); the
    record names the server's default, here the Modelfile's num_ctx."""
    model = FakeModel("llama3.2:3b", parameters="num_ctx 2048\nstop \"<|eot_id|>\"")
    with OllamaServer([model]) as srv:
        llm = ChatStream(local=ChatOllama(model="llama3.2:3b", base_url=srv.base_url,
                                          num_ctx=8192), judge=FixedJudge("LOW"))
        rec = _rec(llm.invoke("hi"))
        assert srv.requests[-1].options["num_ctx"] == 8192
        assert rec["ollama"]["window_source"] == ("num_ctx=8192 (ollama: "
                                                  "llama.context_length=131072)")
        assert (rec["ollama"]["server_default"], rec["ollama"]["server_default_source"]) == (
            2048, "Modelfile num_ctx")


def test_learned_once_per_model_and_asked_again_after_a_failure(srv: OllamaServer) -> None:
    """/api/show is asked once for many requests; a failure makes the next request ask
    again (and the tier recovers once the model is back)."""
    llm = _stream(srv, cloud=GenericFakeChatModel(messages=iter(["from cloud"] * 5)))
    for _ in range(3):
        llm.invoke("hi")
    assert srv.calls.count("POST /api/show") == 1
    model = srv.models.pop("llama3.2:3b")  # `ollama rm` while STREAM runs
    rec = _rec(llm.invoke("hi"))
    assert rec["tier"] == "cloud"
    assert "model llama3.2:3b is not pulled" in rec["fallbacks"][0]["error"]
    srv.models[model.name] = model
    assert _rec(llm.invoke("hi"))["tier"] == "local"
    assert srv.calls.count("POST /api/show") == 2  # asked once more, after the failure


async def test_async_path_learns_and_sends_num_ctx(srv: OllamaServer) -> None:
    llm = _stream(srv)
    msg = await llm.ainvoke(_conversation(6000))
    assert _answer_requests(srv)[-1].options["num_ctx"] == 32768
    assert "I can see ZEBRA-42" in str(msg.content)
    chunks = [c async for c in llm.astream("hi")]
    assert _rec(chunks[-1])["ollama"]["num_ctx"] == 32768  # type: ignore[arg-type]


# ------------------------------------------------------------------ usage, capabilities


def test_usage_is_ollamas_prompt_and_eval_counts(srv: OllamaServer) -> None:
    msg = _stream(srv).invoke("Tell me about the hills.")
    req = srv.requests[-1]
    usage = _rec(msg)["usage"]
    assert usage["input_tokens"] == req.prompt_tokens > 0
    assert usage["output_tokens"] == count_tokens(str(msg.content)) > 0
    assert "usage_estimated" not in _rec(msg)
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == req.prompt_tokens


def test_capabilities_come_from_api_show_and_overrides_win(srv: OllamaServer) -> None:
    text = _stream(srv)
    text.invoke("hi")
    caps = text.tier_capabilities["local"]
    assert (caps.tools, caps.vision, caps.image_urls) == (True, False, False)
    assert "ollama /api/show" in caps.why("tools")
    vision = _stream(srv, model="gemma3:4b")
    vision.invoke("hi")
    assert (vision.tier_capabilities["local"].vision,
            vision.tier_capabilities["local"].tools) == (True, False)
    forced = _stream(srv, capabilities={"local": {"tools": False}})
    forced.invoke("hi")
    assert forced.tier_capabilities["local"].why("tools") == (
        "tools=False (ChatStream capabilities)")


def _image_question() -> HumanMessage:
    return HumanMessage(content=[
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "base64": b64(png_bytes(5, 4)), "mime_type": "image/png"}])


def test_an_image_goes_to_a_vision_model(srv: OllamaServer) -> None:
    """gemma3 says it sees images: the bytes arrive as base64 in `images`."""
    msg = _stream(srv, model="gemma3:4b").invoke([_image_question()])
    assert srv.requests[-1].images == [b64(png_bytes(5, 4))]
    assert str(msg.content).startswith("I see 1 image: png 5x4")


def test_an_image_is_refused_for_a_text_model_before_any_chat(srv: OllamaServer) -> None:
    """llama3.2 has no `vision` capability: CapabilityError, and no /api/chat call."""
    llm = _stream(srv)
    with pytest.raises(CapabilityError, match="image input") as err:
        llm.invoke([_image_question()])
    assert "vision=False (ollama /api/show" in str(err.value)
    assert "POST /api/chat" not in srv.calls


def test_a_tool_call_in_ollamas_shape(srv: OllamaServer) -> None:
    @tool
    def magic_function(input: int) -> int:  # noqa: A002 (the standard suite's name)
        """Apply a magic function to an input."""
        return input + 2

    msg = _stream(srv).bind_tools([magic_function]).invoke("What is magic_function(3)?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("magic_function",
                                                                  {"input": 3})]
    assert srv.requests[-1].tools == ["magic_function"]


def test_tools_go_first_to_the_tier_ollama_says_calls_them(srv: OllamaServer) -> None:
    """With tools bound, the local tier that Ollama lists with `tools` comes before an
    unknown one, whatever the complexity order."""
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    llm = ChatStream(hpc=GenericFakeChatModel(messages=iter([])),
                     local=ChatOllama(model="llama3.2:3b", base_url=srv.base_url),
                     judge=FixedJudge("MEDIUM"))
    msg = llm.bind_tools([add]).invoke("Add 2 and 5.")
    assert _rec(msg)["tier"] == "local"
    assert msg.tool_calls[0]["args"] == {"a": 2, "b": 5}


# ------------------------------------------------------------------ failures


def test_not_running_is_a_clear_reason_and_the_next_tier_answers() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    llm = ChatStream(local=ChatOllama(model="llama3.2:3b", base_url=url),
                     cloud=GenericFakeChatModel(messages=iter(["from cloud"])),
                     judge=FixedJudge("LOW"))
    msg = llm.invoke("hi")
    rec = _rec(msg)
    assert rec["tier"] == "cloud" and msg.content == "from cloud"
    assert rec["fallbacks"][0]["error"].startswith(
        f"OllamaNotRunning: Ollama is not running at {url} (start it with `ollama serve`)")


def test_model_missing_is_a_clear_reason(srv: OllamaServer) -> None:
    llm = _stream(srv, model="qwen3:4b",
                  cloud=GenericFakeChatModel(messages=iter(["from cloud"])))
    rec = _rec(llm.invoke("hi"))
    assert rec["tier"] == "cloud"
    assert rec["fallbacks"][0]["error"].startswith(
        "OllamaModelMissing: model qwen3:4b is not pulled (run `ollama pull qwen3:4b`)")


def test_model_removed_after_learning_is_reported_the_same_way(srv: OllamaServer) -> None:
    """The chat call's own 404 (not the probe's) becomes the same message."""
    llm = _stream(srv, cloud=GenericFakeChatModel(messages=iter(["from cloud"])))
    llm.invoke("hi")
    srv.models.pop("llama3.2:3b")
    err = _rec(llm.invoke("hi"))["fallbacks"][0]["error"]
    assert err.startswith("OllamaModelMissing: model llama3.2:3b is not pulled")
    assert "404" in err  # the client's error, as the cause


def test_the_breaker_stops_asking_a_failing_ollama(srv: OllamaServer) -> None:
    """After `failure_threshold` failures the tier is skipped: no more calls to Ollama."""
    llm = _stream(srv, model="qwen3:4b", failure_threshold=2,
                  cloud=GenericFakeChatModel(messages=iter(["a", "b", "c", "d"])))
    for _ in range(2):
        llm.invoke("hi")
    asked = len(srv.calls)
    rec = _rec(llm.invoke("hi"))
    assert len(srv.calls) == asked
    assert {"tier": "local", "reason": "circuit open after repeated failures"} in rec["skipped"]


def test_a_cold_load_gets_its_own_first_token_timeout() -> None:
    """Loading takes 1 s. Known cold: the cold-load timeout (30 s) applies and it answers.
    Believed warm but unloaded behind our back: the warm timeout (0.2 s) fires, the reason is
    clear, and the next request, which asks the server again, answers."""
    probe = OllamaProbe(first_token_timeout_s=0.2, cold_load_timeout_s=30.0)
    with OllamaServer(load_delay_s=1.0) as srv:
        llm = _stream(srv, probe=probe,
                      cloud=GenericFakeChatModel(messages=iter(["from cloud"] * 3)))
        first = _rec(llm.invoke("hi"))
        assert first["tier"] == "local" and first["ollama"]["cold_load"] is True
        assert srv.requests[-1].cold
        warm = _rec(llm.invoke("hi"))
        assert warm["tier"] == "local" and warm["ollama"]["cold_load"] is False
        srv.unload("llama3.2:3b")  # keep_alive expired on the server
        lost = _rec(llm.invoke("hi"))
        assert lost["tier"] == "cloud"
        assert lost["fallbacks"][0]["error"].startswith(
            f"OllamaTimeout: Ollama at {srv.base_url} sent no token from llama3.2:3b within "
            "0.2 s (the model was loaded)")
        assert _rec(llm.invoke("hi"))["tier"] == "local"  # asked again: cold, or loaded by now


def test_a_model_loaded_with_the_window_is_known_warm() -> None:
    """/api/ps says the model is loaded with the context we will send: no cold load."""
    with OllamaServer() as srv:
        srv.load("llama3.2:3b", 32768)
        rec = _rec(_stream(srv).invoke("hi"))
        assert rec["ollama"]["cold_load"] is False
        assert rec["ollama"]["loaded_context"] == 32768
        assert srv.loads == 0


# ------------------------------------------------------------------ settings and the CLI


def test_settings_provider_ollama_learns_the_window(srv: OllamaServer) -> None:
    """`[local] provider = "ollama"`: context_window is the ceiling, the learned window is
    sent, and the summarizer's model asks for the same num_ctx (no reload)."""
    llm = ChatStream.from_settings(
        {"local": {"provider": "ollama", "model": "llama3.2:3b", "base_url": srv.base_url,
                   "context_window": 16384}}, judge=FixedJudge("LOW"))
    assert is_ollama(llm.local)
    assert llm.local.num_ctx == 16384  # type: ignore[union-attr]
    assert llm.tier_capabilities["local"].context_window == 16384
    rec = _rec(llm.invoke("hi"))
    assert srv.requests[-1].options["num_ctx"] == 16384
    assert rec["ollama"]["window_source"] == ("ollama: llama.context_length=131072, capped "
                                              "at max_num_ctx=16384")
    assert srv.calls.count("POST /api/show") == 1


def test_settings_with_ollama_down_still_build(tmp_path: Path) -> None:
    """Built while Ollama is down: the ceiling stands in for the window; asking fails with
    the clear reason."""
    url = f"http://127.0.0.1:{_closed_port()}"
    llm = ChatStream.from_settings({"local": {"base_url": url, "context_window": 8192}},
                                   judge=FixedJudge("LOW"))
    assert llm.local.num_ctx == 8192  # type: ignore[union-attr]
    with pytest.raises(Exception, match="Ollama is not running at"):
        llm.invoke("hi")


def test_summaries_ask_for_the_same_num_ctx_as_answers(srv: OllamaServer) -> None:
    """The summarizer writes with the local tier; its requests carry the same num_ctx as the
    answers, so Ollama never reloads the model between them."""
    llm = _stream(srv, probe=OllamaProbe(max_num_ctx=2048))
    llm.invoke(_conversation(6000))
    deadline = time.monotonic() + 60  # the summary may be written in the background
    while len(srv.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    summaries = [r for r in srv.requests if r.body["messages"][-1].get("content") != QUESTION]
    assert summaries, "the conversation was not summarized"
    assert {r.num_ctx for r in srv.requests} == {2048}
    assert srv.loads == 1


@pytest.mark.slow
def test_stream_chat_tier_local_shows_the_learned_window(srv: OllamaServer,
                                                         tmp_path: Path) -> None:
    config = tmp_path / "stream.toml"
    config.write_text(f'[local]\nprovider = "ollama"\nmodel = "gemma3:4b"\n'
                      f'base_url = "{srv.base_url}"\n[stream]\njudge = "keyword"\n')
    env = {k: v for k, v in os.environ.items() if k != "STREAM_CONFIG"}
    stream_bin = Path(sys.executable).parent / "stream"
    proc = subprocess.run([str(stream_bin), "chat", "--config", str(config), "--tier", "local",
                           "Hello"], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ("ollama num_ctx 32768 (ollama: gemma3.context_length=131072, capped at "
            "max_num_ctx=32768); vision") in proc.stdout
    proc = subprocess.run([str(stream_bin), "chat", "--config", str(config), "--tier", "local",
                           "--json", "Hello"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path, check=False)
    rec = json.loads(proc.stdout)["stream"]
    assert rec["ollama"]["capabilities"] == ["completion", "vision"]


# ------------------------------------------------------------------ the probe alone


def test_probe_errors_name_the_fix(srv: OllamaServer) -> None:
    probe = OllamaProbe()
    with pytest.raises(OllamaModelMissing, match=r"run `ollama pull nope:1b`"):
        probe.info(srv.base_url, "nope:1b")
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(OllamaNotRunning, match=r"start it with `ollama serve`"):
        probe.info(url, "llama3.2:3b")


def test_a_base_url_that_is_not_ollama_is_named(srv: OllamaServer) -> None:
    """A wrong path (404 page not found) or a server that is not Ollama is not reported as
    a missing model, and the next tier answers."""
    llm = ChatStream(local=ChatOllama(model="llama3.2:3b", base_url=srv.base_url + "/v1"),
                     cloud=GenericFakeChatModel(messages=iter(["from cloud"])),
                     judge=FixedJudge("LOW"))
    rec = _rec(llm.invoke("hi"))
    assert rec["tier"] == "cloud"
    assert "is base_url an Ollama server?" in rec["fallbacks"][0]["error"]
    assert "not pulled" not in rec["fallbacks"][0]["error"]


def test_window_choice() -> None:
    info = OllamaModelInfo(model="m", base_url="u", trained_context=None)
    assert OllamaProbe(max_num_ctx=4096).window(info) == (
        4096, "max_num_ctx=4096 (ollama reported no trained length)")
    with pytest.raises(ValueError, match="max_num_ctx"):
        OllamaProbe(max_num_ctx=10)
