"""StreamLLM carries LlamaIndex ``ImageBlock``s to the tier that can see them.

No vision model installs on these machines, so the vision tier is ``tests/vision_backend.py``'s
``VisionBackend``: a real OpenAI-compatible HTTP server on loopback, reached by the real
``ChatOpenAI`` client, that records the image parts it receives and answers with what it saw
("I see 1 image: png 3x2 sha256=<12 hex>."). The text tier is the bundled Gemma in-process.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from llama_index.core.llms import AudioBlock, ChatMessage, ImageBlock, TextBlock

from stream_langchain import ChatStream
from stream_langchain.routing import CapabilityError
from stream_llamaindex import StreamLLM
from stream_llamaindex._convert import image_part, to_langchain_messages
from tests.stream_langchain.conftest import FixedJudge
from tests.vision_backend import VisionBackend, describe_image_url, png_bytes, png_data_url

PNG = png_bytes(3, 2)
PNG_URL = png_data_url(3, 2)
PNG_B64 = base64.b64encode(PNG).decode()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32)


def _ask(*blocks: Any) -> list[ChatMessage]:
    return [ChatMessage(role="user", blocks=[TextBlock(text="What is in this picture?"),
                                             *blocks])]


def _seen(part: dict[str, Any]) -> str:
    """What VisionBackend would report for a converted part."""
    if "url" in part:
        return describe_image_url(part["url"])
    return describe_image_url(f"data:{part['mime_type']};base64,{part['base64']}")


# ------------------------------------------------------------------ conversion (no tier)


def test_image_bytes_become_a_standard_base64_block() -> None:
    """Raw bytes: LangChain's {"type": "image", "base64", "mime_type"} with the same bytes."""
    part = image_part(ImageBlock(image=PNG), 0)
    assert part == {"type": "image", "base64": PNG_B64, "mime_type": "image/png"}


def test_already_base64_bytes_are_not_encoded_twice() -> None:
    """Bytes that are already base64 (as ImageBlock stores them) arrive as the same image."""
    part = image_part(ImageBlock(image=PNG_B64.encode()), 0)
    assert base64.b64decode(part["base64"]) == PNG


def test_mime_type_is_guessed_from_the_bytes() -> None:
    """A stream without a declared type is sniffed (JPEG magic -> image/jpeg); a wrong
    declared type loses to the bytes."""
    assert image_part(ImageBlock(image=io.BytesIO(JPEG)), 0)["mime_type"] == "image/jpeg"
    assert image_part(ImageBlock(image=PNG, image_mimetype="image/jpeg"), 0)[
        "mime_type"] == "image/png"


def test_local_path_and_file_url_are_read_and_inlined(tmp_path: Path) -> None:
    """A path or file:// URL becomes inline data of that file's bytes."""
    f = tmp_path / "pic.png"
    f.write_bytes(PNG)
    for block in (ImageBlock(path=f), ImageBlock(url=f.as_uri())):
        part = image_part(block, 0)
        assert part["mime_type"] == "image/png"
        assert base64.b64decode(part["base64"]) == PNG


def test_data_url_is_inlined() -> None:
    """A data URL becomes the standard base64 block (not a URL the tier must fetch)."""
    part = image_part(ImageBlock(url=PNG_URL), 0)
    assert part == {"type": "image", "base64": PNG_B64, "mime_type": "image/png"}


def test_http_url_stays_a_url_and_detail_is_kept() -> None:
    """https URLs are passed by reference; detail= switches to OpenAI's image_url form."""
    url = "https://example.com/cat.png"
    assert image_part(ImageBlock(url=url), 0) == {"type": "image", "url": url}
    assert image_part(ImageBlock(url=url, detail="low"), 0) == {
        "type": "image_url", "image_url": {"url": url, "detail": "low"}}
    inline = image_part(ImageBlock(image=PNG, detail="high"), 0)
    assert inline["image_url"] == {"url": PNG_URL, "detail": "high"}


def test_text_and_images_keep_their_order() -> None:
    """A user message with images is a list of parts in block order; text-only stays a str."""
    msgs = [ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", blocks=[TextBlock(text="first"), ImageBlock(image=PNG),
                                             TextBlock(text="second")]),
            ChatMessage(role="user", content="no picture")]
    system, with_image, plain = to_langchain_messages(msgs)
    assert isinstance(with_image, HumanMessage)
    assert [p["type"] for p in with_image.content] == ["text", "image", "text"]  # type: ignore[index]
    assert system.content == "Be brief." and plain.content == "no picture"


def test_caller_image_messages_are_not_modified() -> None:
    """Converting does not change the caller's blocks."""
    msgs = _ask(ImageBlock(image=PNG))
    before = msgs[0].model_dump()
    to_langchain_messages(msgs)
    assert msgs[0].model_dump() == before


@pytest.mark.parametrize(("block", "problem"), [
    (ImageBlock(image=b"just some words, no pixels"), "not a recognizable image"),
    (ImageBlock(image=b"%PDF-1.4 not a picture"), "application/pdf, not an image"),
    (ImageBlock(url="ftp://example.com/a.png"), "scheme 'ftp' is not supported"),
    (ImageBlock(url="data:image/png;base64,@@@"), "not valid base64"),
    (ImageBlock(), "has no image, path or url"),
])
def test_bad_images_name_the_message_and_problem(block: ImageBlock, problem: str) -> None:
    """Each bad image is a ValueError naming the message index, block and what is wrong."""
    msgs = [ChatMessage(role="user", content="hi"), *_ask(block)]
    with pytest.raises(ValueError, match=rf"message 1 block 1 \(image\): .*{problem}"):
        to_langchain_messages(msgs)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A path that cannot be read is a ValueError naming it and why."""
    missing = tmp_path / "gone.png"
    missing.write_bytes(PNG)
    block = ImageBlock(path=missing)
    missing.unlink()
    with pytest.raises(ValueError, match=r"message 0 block 1 .*gone\.png.*No such file"):
        to_langchain_messages(_ask(block))


def test_image_outside_a_user_message_is_refused() -> None:
    """Assistant and system turns cannot carry images (OpenAI-compatible APIs refuse them)."""
    msg = ChatMessage(role="assistant", blocks=[ImageBlock(image=PNG)])
    with pytest.raises(ValueError, match=r"message 0 \(assistant\) has an image block"):
        to_langchain_messages([msg])


def test_other_media_blocks_are_still_refused() -> None:
    """An audio block is a ValueError naming the block type and the supported ones."""
    msg = ChatMessage(role="user", blocks=[AudioBlock(audio=b"RIFF0000WAVE")])
    with pytest.raises(ValueError, match="'audio' block.*supported blocks: text, image"):
        to_langchain_messages([msg])


# ------------------------------------------------------------------ through ChatStream


@pytest.fixture(scope="module")
def vision() -> Iterator[VisionBackend]:
    with VisionBackend() as backend:
        yield backend


def _vision_model(backend: VisionBackend) -> ChatOpenAI:
    return ChatOpenAI(base_url=backend.base_url, api_key="sk-test-not-a-secret",  # type: ignore[arg-type]
                      model="vision-stub", max_retries=0)


@pytest.fixture
def llm(vision: VisionBackend) -> StreamLLM:
    vision.reset()
    return StreamLLM(chat_stream=ChatStream(cloud=_vision_model(vision),
                                            capabilities={"cloud": {"vision": True}},
                                            judge=FixedJudge("LOW")))


def test_chat_with_image_bytes_reaches_the_vision_tier(llm: StreamLLM,
                                                       vision: VisionBackend) -> None:
    """chat(): the backend receives exactly the PNG, and the answer is what it saw."""
    assert llm.image_inputs
    response = llm.chat(_ask(ImageBlock(image=PNG)))
    assert vision.last_images == [PNG_URL]
    assert response.message.content == f"I see 1 image: {describe_image_url(PNG_URL)}."
    record = response.additional_kwargs["stream"]
    assert record["tier"] == "cloud" and record["needs"]["images"] == 1


def test_stream_chat_with_an_image_path(llm: StreamLLM, vision: VisionBackend,
                                        tmp_path: Path) -> None:
    """stream_chat(): a PNG file on disk is read, sent inline, and described in the deltas."""
    picture = png_bytes(5, 4, rgb=(10, 200, 10))
    f = tmp_path / "green.png"
    f.write_bytes(picture)
    responses = list(llm.stream_chat(_ask(ImageBlock(path=f))))
    sent = "data:image/png;base64," + base64.b64encode(picture).decode()
    assert vision.last_images == [sent]
    text = "".join(r.delta or "" for r in responses)
    assert "png 5x4" in text and describe_image_url(sent) in text
    assert responses[-1].additional_kwargs["stream"]["needs"]["images"] == 1


async def test_achat_with_data_and_http_urls(llm: StreamLLM, vision: VisionBackend) -> None:
    """achat(): a data URL is inlined, an https URL passed through; both reach the tier in
    order."""
    url = "https://images.example.org/cat.png"
    response = await llm.achat(_ask(ImageBlock(url=PNG_URL), ImageBlock(url=url)))
    assert vision.last_images == [PNG_URL, url]
    assert response.message.content == (
        f"I see 2 images: {describe_image_url(PNG_URL)}; url {url}.")
    assert response.additional_kwargs["stream"]["needs"]["image_urls"] == 1


async def test_astream_chat_with_an_image(llm: StreamLLM, vision: VisionBackend) -> None:
    """astream_chat(): the streamed answer names the image the tier received."""
    gen = await llm.astream_chat(_ask(ImageBlock(image=PNG)))
    text = "".join([r.delta or "" async for r in gen])
    assert vision.last_images == [PNG_URL]
    assert describe_image_url(PNG_URL) in text


def test_bad_image_fails_before_any_tier_is_called(llm: StreamLLM,
                                                   vision: VisionBackend) -> None:
    """A non-image ImageBlock is refused by StreamLLM; the backend gets no request."""
    with pytest.raises(ValueError, match="message 0 block 1 .*not a recognizable image"):
        llm.chat(_ask(ImageBlock(image=b"words, not pixels")))
    assert vision.requests == []


# ------------------------------------------------------------------ with a text-only tier


@pytest.fixture(scope="module")
def gemma() -> Any:
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp, bundled_model_path

    return ChatLlamaCpp(model_path=bundled_model_path(), max_tokens=12)


@pytest.mark.slow
def test_text_tier_is_skipped_for_images_and_the_record_says_why(
        gemma: Any, vision: VisionBackend) -> None:
    """LOW prefers local, but the image goes to the vision tier; text still goes local."""
    vision.reset()
    llm = StreamLLM(chat_stream=ChatStream(local=gemma, cloud=_vision_model(vision),
                                           capabilities={"cloud": {"vision": True}},
                                           judge=FixedJudge("LOW")))
    assert llm.image_inputs
    record = llm.chat(_ask(ImageBlock(image=PNG))).additional_kwargs["stream"]
    assert record["tier"] == "cloud" and vision.last_images == [PNG_URL]
    (local,) = [s for s in record["skipped"] if s["tier"] == "local"]
    assert "no image input" in local["reason"]
    text = llm.chat([ChatMessage(role="user", content="Name a colour.")])
    assert text.additional_kwargs["stream"]["tier"] == "local"
    assert len(vision.requests) == 1


@pytest.mark.slow
def test_no_tier_that_sees_is_a_capability_error(gemma: Any, vision: VisionBackend) -> None:
    """Only a text tier (or a vision tier that privacy forbids): CapabilityError through
    StreamLLM, naming image input, and nothing is sent anywhere."""
    vision.reset()
    only_text = StreamLLM(chat_stream=ChatStream(local=gemma, judge=FixedJudge("LOW")))
    assert not only_text.image_inputs
    with pytest.raises(CapabilityError, match="needs image input") as info:
        only_text.chat(_ask(ImageBlock(image=PNG)))
    assert info.value.capability == "image input"
    assert [s["tier"] for s in info.value.skipped if "no image input" in s["reason"]] == [
        "local"]

    private = StreamLLM(chat_stream=ChatStream(local=gemma, cloud=_vision_model(vision),
                                               capabilities={"cloud": {"vision": True}},
                                               allow_cloud=False, judge=FixedJudge("HIGH")))
    assert not private.image_inputs
    with pytest.raises(CapabilityError, match="needs image input.*allow_cloud=False"):
        private.chat(_ask(ImageBlock(image=PNG)))
    assert vision.requests == []
