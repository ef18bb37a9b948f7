"""Capability-aware routing: images go to vision tiers, tools to tool callers, windows from
profiles, and a request no tier can serve fails before any tier is called.

No vision model installs on this machine, so the vision tier is ``ChatOpenAI`` (the real
client) against :class:`tests.vision_backend.VisionBackend`, a real OpenAI-compatible HTTP
server on loopback that records the image parts it receives and answers with what it saw
(size and SHA-256 of each PNG), so each test can check the exact image arrived. The text
tier is the bundled Gemma run in-process by llama.cpp (its profile: no images).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from stream_langchain import CapabilityError, ChatStream
from stream_langchain.capabilities import Capabilities, Needs, request_needs, tier_capabilities
from stream_langchain.context import IMAGE_TOKENS, count_tokens
from stream_langchain.judges import Judgement
from stream_langchain.routing import CircuitBreaker, plan_route
from tests.stream_langchain.conftest import FixedJudge, openai_model
from tests.vision_backend import VisionBackend, describe_image_url, png_bytes, png_data_url

pytestmark = pytest.mark.slow  # the local tier is the bundled model


@pytest.fixture(scope="module")
def backend() -> Iterator[VisionBackend]:
    with VisionBackend() as vb:
        yield vb


@pytest.fixture
def vb(backend: VisionBackend) -> VisionBackend:
    backend.reset()
    return backend


def vision_model(vb: VisionBackend) -> BaseChatModel:
    return openai_model(vb.base_url, "vision-stub")


def photo(w: int = 3, h: int = 2, text: str = "What is in this picture?") -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": text},
                                 {"type": "image_url", "image_url": {"url": png_data_url(w, h)}}])


def seen(w: int, h: int) -> str:
    """What the backend says for :func:`png_bytes` of this size."""
    return describe_image_url(png_data_url(w, h))


class RecordingJudge(FixedJudge):
    """A fixed label, remembering the texts it was asked to judge."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.texts: list[str] = []

    def _judge(self, text: str) -> Judgement:
        self.texts.append(text)
        return super()._judge(text)


# ------------------------------------------------------------------ capabilities (pure)


def test_capabilities_come_from_the_profile_and_overrides_win() -> None:
    m = GenericFakeChatModel(messages=iter([]), profile={
        "image_inputs": True, "image_url_inputs": False, "tool_calling": True,
        "max_input_tokens": 32000})
    caps = tier_capabilities(m)
    assert (caps.vision, caps.image_urls, caps.tools, caps.context_window) == (
        True, False, True, 32000)
    assert caps.why("vision") == "vision=True (profile: image_inputs=True)"
    over = tier_capabilities(m, {"vision": False, "context_window": 4096})
    assert (over.vision, over.image_urls, over.context_window) == (False, False, 4096)
    assert over.why("vision") == "vision=False (ChatStream capabilities)"
    unknown = tier_capabilities(GenericFakeChatModel(messages=iter([])))
    assert (unknown.vision, unknown.tools, unknown.context_window) == (None, None, None)


def test_the_window_a_model_allocates_beats_its_profile(local_model: BaseChatModel) -> None:
    """llama.cpp's n_ctx (what is really allocated) over the profile's max_input_tokens."""
    model = local_model.model_copy(update={"profile": {"max_input_tokens": 131072}})
    caps = tier_capabilities(model)
    assert caps.context_window == local_model.n_ctx  # type: ignore[attr-defined]
    assert caps.sources["context_window"] == "n_ctx"


def test_cloud_window_comes_from_the_real_profile() -> None:
    """gpt-4o-mini's LangChain profile says 128000 input tokens: ChatStream fits to it."""
    from langchain_openai import ChatOpenAI

    cloud = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test-not-a-secret")  # type: ignore[arg-type]
    llm = ChatStream(cloud=cloud, judge=FixedJudge("LOW"))
    assert llm.tier_capabilities["cloud"].context_window == 128000
    assert llm.tier_capabilities["cloud"].vision is True
    assert llm._window("cloud") == 128000
    assert ChatStream(cloud=cloud, judge=FixedJudge("LOW"),
                      context_windows={"cloud": 9000})._window("cloud") == 9000


@pytest.mark.parametrize(("caps", "problem"), [
    ({"gpu": {"vision": True}}, "unknown tier 'gpu'"),
    ({"cloud": {"vison": True}}, "unknown key 'vison'"),
    ({"cloud": {"vision": "yes"}}, "must be true, false or None"),
    ({"cloud": {"context_window": 0}}, "must be a positive int"),
])
def test_bad_capabilities_are_refused(caps: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ChatStream(cloud=GenericFakeChatModel(messages=iter([])), capabilities=caps,
                   judge=FixedJudge("LOW"))


def test_request_needs_counts_images_and_urls() -> None:
    msgs = [photo(), AIMessage("a cat"), HumanMessage(content=[
        {"type": "image", "url": "https://example.org/b.png"},
        {"type": "image", "base64": base64.b64encode(png_bytes(1, 1)).decode(),
         "mime_type": "image/png"}])]
    assert request_needs(msgs, tools=True) == Needs(images=3, image_urls=1, tools=True)
    assert request_needs([HumanMessage("hi")]) == Needs()


def test_plan_route_orders_tool_callers_first_and_skips_non_callers() -> None:
    caps = {"local": Capabilities(tools=False), "hpc": Capabilities(),
            "cloud": Capabilities(tools=True)}
    plan = plan_route("MEDIUM", available={"local", "hpc", "cloud"}, breaker=CircuitBreaker(),
                      capabilities=caps, needs=Needs(tools=True))
    assert plan.order == ["cloud", "hpc"]  # known caller first, then unknown (MEDIUM: hpc>cloud)
    assert {"tier": "local", "reason": "no tool calling: tools=False (profile)"} in plan.skipped
    # Without tools the complexity order stands.
    assert plan_route("MEDIUM", available={"local", "hpc", "cloud"}, breaker=CircuitBreaker(),
                      capabilities=caps).order == ["hpc", "cloud", "local"]


def test_unknown_vision_is_never_sent_images() -> None:
    plan = plan_route("HIGH", available={"hpc", "cloud"}, breaker=CircuitBreaker(),
                      capabilities={"hpc": Capabilities(vision=True), "cloud": Capabilities()},
                      needs=Needs(images=1))
    assert plan.order == ["hpc"]
    reasons = {s["tier"]: s["reason"] for s in plan.skipped}
    assert reasons["cloud"].startswith("no image input: vision unknown")


def test_url_images_skip_tiers_that_cannot_fetch() -> None:
    caps = {"local": Capabilities(vision=True, image_urls=False),
            "hpc": Capabilities(vision=True)}
    plan = plan_route("LOW", available={"local", "hpc"}, breaker=CircuitBreaker(),
                      capabilities=caps, needs=Needs(images=1, image_urls=1))
    assert plan.order == ["hpc"]
    assert plan.skipped[-1]["reason"].startswith("cannot fetch image URLs")


# ------------------------------------------------------------------ ChatStream's own profile


def test_chatstream_profile_says_what_some_tier_can_do(local_model: BaseChatModel,
                                                       vb: VisionBackend) -> None:
    text_only = ChatStream(local=local_model, judge=FixedJudge("LOW"))
    assert text_only.profile is not None
    assert text_only.profile["image_inputs"] is False
    assert text_only.profile["max_input_tokens"] == local_model.n_ctx  # type: ignore[attr-defined]
    both = ChatStream(local=local_model, cloud=vision_model(vb), judge=FixedJudge("LOW"),
                      capabilities={"cloud": {"vision": True}})
    assert both.profile is not None and both.profile["image_inputs"] is True
    private = ChatStream(local=local_model, cloud=vision_model(vb), judge=FixedJudge("LOW"),
                         capabilities={"cloud": {"vision": True}}, allow_cloud=False)
    assert private.profile is not None and private.profile["image_inputs"] is False


# ------------------------------------------------------------------ routing images for real


@pytest.fixture
def llm(local_model: BaseChatModel, vb: VisionBackend) -> ChatStream:
    return ChatStream(local=local_model, cloud=vision_model(vb), judge=RecordingJudge("LOW"),
                      capabilities={"cloud": {"vision": True}})


def test_an_image_goes_to_the_vision_tier_intact(llm: ChatStream, vb: VisionBackend) -> None:
    """LOW would go local, but local reads no images: the photo goes to cloud, byte-exact."""
    msg = llm.invoke([photo(3, 2)])
    assert msg.content == f"I see 1 image: {seen(3, 2)}."
    assert vb.last_images == [png_data_url(3, 2)]
    rec = msg.response_metadata["stream"]
    assert rec["tier"] == "cloud"
    assert rec["needs"] == {"images": 1, "image_urls": 0, "tools": False}
    assert {"tier": "local", "reason": "no image input: vision=False "
            "(profile: image_inputs=False)"} in rec["skipped"]
    # The judge saw the question, not the picture's base64.
    assert llm.active_judge.texts == ["What is in this picture?"]  # type: ignore[attr-defined]
    # A text question still goes local.
    assert llm.invoke("Hi there").response_metadata["stream"]["tier"] == "local"


def test_standard_blocks_urls_and_several_images(llm: ChatStream, vb: VisionBackend) -> None:
    data = base64.b64encode(png_bytes(5, 7)).decode()
    msg = HumanMessage(content=[
        {"type": "text", "text": "Compare these."},
        {"type": "image", "base64": data, "mime_type": "image/png"},
        {"type": "image", "url": "https://images.example.org/cat.png"},
        {"type": "image_url", "image_url": {"url": png_data_url(2, 2), "detail": "low"}},
    ])
    out = llm.invoke([msg])
    assert out.content == ("I see 3 images: " + seen(5, 7)
                           + "; url https://images.example.org/cat.png; " + seen(2, 2) + ".")
    assert vb.last_images[0] == "data:image/png;base64," + data
    assert hashlib.sha256(base64.b64decode(vb.last_images[0].split(",")[1])).hexdigest() == (
        hashlib.sha256(png_bytes(5, 7)).hexdigest())


def test_an_image_earlier_in_the_conversation_still_needs_vision(
        llm: ChatStream, vb: VisionBackend) -> None:
    history = [photo(4, 4), AIMessage("A red square."), HumanMessage("And its size?")]
    out = llm.invoke(history)
    assert out.response_metadata["stream"]["tier"] == "cloud"
    assert vb.last_images == [png_data_url(4, 4)]


def test_streaming_and_async_carry_images(llm: ChatStream, vb: VisionBackend) -> None:
    chunks = list(llm.stream([photo(6, 1)]))
    text = "".join(str(c.content) for c in chunks)
    assert text == f"I see 1 image: {seen(6, 1)}."
    assert len([c for c in chunks if c.content]) > 3  # token by token, not one blob
    assert chunks[-1].response_metadata["stream"]["tier"] == "cloud"


async def test_async_paths_carry_images(llm: ChatStream, vb: VisionBackend) -> None:
    out = await llm.ainvoke([photo(2, 5)])
    assert out.content == f"I see 1 image: {seen(2, 5)}."
    parts = [str(c.content) async for c in llm.astream([photo(1, 3)])]
    assert "".join(parts) == f"I see 1 image: {seen(1, 3)}."
    assert vb.last_images == [png_data_url(1, 3)]


def test_no_tier_that_sees_fails_before_any_tier_is_called(
        local_model: BaseChatModel, vb: VisionBackend) -> None:
    """Privacy wins: with allow_cloud=False the only vision tier is out, nothing is sent."""
    calls: list[str] = []

    def on_event(name: str, data: dict[str, Any]) -> None:
        calls.append(name)

    llm = ChatStream(local=local_model, cloud=vision_model(vb), judge=FixedJudge("HIGH"),
                     capabilities={"cloud": {"vision": True}}, allow_cloud=False,
                     on_context_event=on_event)
    with pytest.raises(CapabilityError) as info:
        llm.invoke([photo()])
    err = info.value
    assert err.capability == "image input"
    assert "cloud: privacy: allow_cloud=False" in str(err)
    assert "local: no image input" in str(err)
    assert {s["tier"] for s in err.skipped} == {"local", "cloud", "hpc"}
    assert vb.requests == []
    assert calls == []
    with pytest.raises(CapabilityError, match="needs image input"):
        list(llm.stream([photo()]))
    assert vb.requests == []


async def test_no_tier_that_sees_async(local_model: BaseChatModel) -> None:
    llm = ChatStream(local=local_model, judge=FixedJudge("LOW"))
    with pytest.raises(CapabilityError, match=r"local: no image input: vision=False"):
        await llm.ainvoke([photo()])


def test_forcing_a_text_tier_with_an_image_is_refused(llm: ChatStream,
                                                      vb: VisionBackend) -> None:
    with pytest.raises(CapabilityError, match="needs image input.*local: no image input"):
        llm.invoke([photo()], tier="local")
    assert vb.requests == []
    assert llm.invoke([photo()], tier="cloud").content == f"I see 1 image: {seen(3, 2)}."


def test_image_tokens_are_counted_for_context_fit(local_model: BaseChatModel,
                                                  vb: VisionBackend) -> None:
    text = count_tokens([HumanMessage("What is in this picture?")])
    assert count_tokens([photo()]) == text + IMAGE_TOKENS
    llm = ChatStream(local=local_model, cloud=vision_model(vb), judge=FixedJudge("LOW"),
                     capabilities={"cloud": {"vision": True}}, image_tokens=100)
    rec = llm.invoke([photo()]).response_metadata["stream"]
    assert rec["context_tokens"] == text + 100
    # Two images at the default estimate do not fit cloud's 1,000-token window minus its
    # reserve: HIGH goes to the other vision tier. At 100 tokens an image, they fit.
    two = HumanMessage(content=[*photo().content, {  # type: ignore[list-item]
        "type": "image_url", "image_url": {"url": png_data_url(1, 1)}}])
    caps = {"hpc": {"vision": True}, "cloud": {"vision": True, "context_window": 1000}}

    def build(**kw: Any) -> ChatStream:
        return ChatStream(local=local_model, hpc=openai_model(vb.base_url, "big-vision"),
                          cloud=vision_model(vb), judge=FixedJudge("HIGH"), capabilities=caps,
                          context_reserve={"cloud": 100}, summarize=False, **kw)

    rec = build().invoke([two]).response_metadata["stream"]
    assert rec["tier"] == "hpc"
    reasons = {s["tier"]: s["reason"] for s in rec["skipped"]}
    assert reasons["cloud"] == f"context {text + 2 * IMAGE_TOKENS} tokens > window 900"
    assert build(image_tokens=100).invoke([two]).response_metadata["stream"]["tier"] == "cloud"


def test_tools_prefer_tool_calling_tiers(local_model: BaseChatModel, vb: VisionBackend) -> None:
    """MEDIUM puts hpc first, but hpc is known not to call tools: the tool caller answers."""

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    llm = ChatStream(local=local_model, hpc=openai_model(vb.base_url, "no-tools"),
                     cloud=vision_model(vb), judge=FixedJudge("MEDIUM"),
                     capabilities={"hpc": {"tools": False}, "cloud": {"tools": True}})
    rec = llm.bind_tools([add]).invoke("What is 2 + 3?").response_metadata["stream"]
    assert rec["tier"] == "cloud"
    assert rec["needs"]["tools"] is True
    reasons = {s["tier"]: s["reason"] for s in rec["skipped"]}
    assert reasons["hpc"] == "no tool calling: tools=False (ChatStream capabilities)"
    assert reasons["local"].startswith("no tool calling")
    assert vb.requests[-1]["tools"][0]["function"]["name"] == "add"
    # Without tools, MEDIUM goes to hpc as usual.
    assert llm.invoke("What is 2 + 3?").response_metadata["stream"]["tier"] == "hpc"
