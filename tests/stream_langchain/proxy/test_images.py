"""Images through the proxy: OpenAI ``image_url`` parts (chat completions) and ``input_image``
parts (Responses) reach a vision tier intact, with the routing record saying why the text-only
local tier was skipped; bad image parts, image requests no tier may take, and bodies past the
size limit get OpenAI-style 4xx errors naming the problem.

No vision model installs on these machines (no model hub, no GPU), so the vision tier is
:class:`tests.vision_backend.VisionBackend`: a real OpenAI-compatible HTTP server on loopback
that records the image parts it receives and answers "I see 1 image: png 3x2 sha256=...". The
local tier is the real bundled Gemma (llama.cpp, text only); the client is the real ``openai``
SDK against the proxy on a real uvicorn server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from stream_langchain import ChatStream
from stream_langchain.proxy import Limits, MessageLimits, ProxyConfig
from stream_langchain.proxy.chat_completions import parse_chat_request
from stream_langchain.proxy.errors import APIError
from stream_langchain.proxy.responses import parse_responses_request
from tests.stream_langchain.conftest import FixedJudge
from tests.vision_backend import VisionBackend, png_bytes, png_data_url

from .conftest import ServeFn

QUESTION = "What is in this picture?"
IMAGE_URL = "https://images.example.org/cat.png"


def short_sha(data: bytes) -> str:
    return "sha256=" + hashlib.sha256(data).hexdigest()[:12]


def noisy_png(width: int, height: int, seed: bytes = b"stream") -> bytes:
    """A valid PNG of pseudo-random pixels (incompressible, so its size is ~3*width*height)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    stream = hashlib.shake_256(seed).digest(3 * width * height)
    rows = b"".join(b"\x00" + stream[3 * width * y:3 * width * (y + 1)] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 1))
            + chunk(b"IEND", b""))


def user_with_image(url: str, **image: Any) -> Any:
    """One user message: the question and an image_url part (``image``: extra fields)."""
    return [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                         {"type": "image_url", "image_url": {"url": url,
                                                                             **image}}]}]


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def vision() -> Iterator[VisionBackend]:
    with VisionBackend() as vb:
        yield vb


def vision_tier(vb: VisionBackend) -> BaseChatModel:
    return ChatOpenAI(base_url=vb.base_url, model="vision-stub",
                      api_key="sk-test-not-a-secret",  # type: ignore[arg-type]
                      max_retries=0)


def make_stream(local_model: BaseChatModel, vb: VisionBackend, **kw: Any) -> ChatStream:
    """Text-only local Gemma plus the vision 'cloud' tier, a judge that always says LOW."""
    return ChatStream(local=local_model, cloud=vision_tier(vb),
                      capabilities={"cloud": {"vision": True}}, judge=FixedJudge("LOW"), **kw)


@pytest.fixture
def chat(local_model: BaseChatModel, vision: VisionBackend) -> ChatStream:
    vision.reset()
    return make_stream(local_model, vision)


def assert_local_skipped_for_images(route: dict[str, Any], images: int = 1) -> None:
    assert route["tier"] == "cloud", route
    assert route["needs"]["images"] == images, route
    local = [s for s in route["skipped"] if s["tier"] == "local"]
    assert local and local[0]["reason"].startswith("no image input"), route


# ----------------------------------------------------------------------- conversion (no I/O)


def test_text_only_requests_convert_as_before() -> None:
    """A string stays a string and a list of text parts stays those text parts."""
    body = {"model": "stream", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text",
                                                                          "text": "brief."}]},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "and you?"}]}]}
    msgs = parse_chat_request(json.dumps(body).encode(), limits=MessageLimits()).messages
    assert [m.content for m in msgs] == ["Be brief.", "hi", [{"type": "text",
                                                                "text": "and you?"}]]


def test_image_parts_pass_through_unchanged() -> None:
    """image_url parts (data URL with detail, http URL without) reach ChatStream as the same
    OpenAI parts, next to the text, in order."""
    data_url = png_data_url(3, 2)
    content = [{"type": "text", "text": QUESTION},
               {"type": "image_url", "image_url": {"url": data_url, "detail": "high"}},
               {"type": "image_url", "image_url": {"url": IMAGE_URL}}]
    body = {"model": "stream", "messages": [{"role": "user", "content": content}]}
    (msg,) = parse_chat_request(json.dumps(body).encode(), limits=MessageLimits()).messages
    assert isinstance(msg, HumanMessage) and msg.content == content


def test_image_data_does_not_count_as_message_characters() -> None:
    """The per-message character limit counts text; an inline image far longer than it is
    bounded by the body size instead."""
    limits = MessageLimits(max_message_chars=100)
    body: dict[str, Any] = {"model": "stream", "messages": user_with_image(png_data_url(64, 64))}
    assert len(body["messages"][0]["content"][1]["image_url"]["url"]) > 100
    assert parse_chat_request(json.dumps(body).encode(), limits=limits).messages


def test_responses_input_image_converts_to_image_url() -> None:
    """input_text / input_image parts become the chat text / image_url parts (detail kept)."""
    data_url = png_data_url(4, 4)
    body = {"model": "stream", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": QUESTION},
        {"type": "input_image", "image_url": data_url, "detail": "low"}]}]}
    (msg,) = parse_responses_request(json.dumps(body).encode(), limits=MessageLimits()).messages
    assert msg.content == [{"type": "text", "text": QUESTION},
                           {"type": "image_url", "image_url": {"url": data_url,
                                                               "detail": "low"}}]


BAD_CHAT = [
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
     "messages[0].content[1].image_url.url", "base64"),
    ([{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}],
     "messages[0].content[1].image_url.url", "data:image/"),
    ([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
     "messages[0].content[1].image_url.url", "http(s)"),
    ([{"type": "image_url", "image_url": {}}],
     "messages[0].content[1].image_url.url", "missing"),
    ([{"type": "image_url", "image_url": IMAGE_URL}],
     "messages[0].content[1].image_url", "must be an object"),
    ([{"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "ultra"}}],
     "messages[0].content[1].image_url.detail", "'ultra'"),
    ([{"type": "image_url", "image_url": {"url": IMAGE_URL, "crop": [0, 0]}}],
     "messages[0].content[1].image_url.crop", "crop"),
    ([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
     "messages[0].content[1].type", "'input_audio', which STREAM does not support"),
    ([{"type": "file", "file": {"file_id": "file-1"}}],
     "messages[0].content[1].type", "'file', which STREAM does not support"),
    (["just a string"], "messages[0].content[1]", "must be an object"),
]


@pytest.mark.parametrize(("parts", "param", "fragment"), BAD_CHAT)
def test_bad_image_parts_are_refused_naming_the_field(parts: list[Any], param: str,
                                                      fragment: str) -> None:
    """Each malformed or unsupported part: a 400 whose param is the exact field."""
    body = {"model": "stream", "messages": [{"role": "user", "content": [
        {"type": "text", "text": QUESTION}, *parts]}]}
    with pytest.raises(APIError) as info:
        parse_chat_request(json.dumps(body).encode(), limits=MessageLimits())
    assert info.value.status == 400 and info.value.param == param, info.value.body()
    assert fragment in info.value.message


def test_images_only_in_user_messages() -> None:
    """An image in a system or assistant message is refused, naming the part and the role."""
    for role in ("system", "assistant"):
        body = {"model": "stream", "messages": [{"role": role, "content": [
            {"type": "image_url", "image_url": {"url": IMAGE_URL}}]}]}
        with pytest.raises(APIError) as info:
            parse_chat_request(json.dumps(body).encode(), limits=MessageLimits())
        assert info.value.param == "messages[0].content[0].type"
        assert f"{role!r} message" in info.value.message


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "input_image", "image_url": "ftp://x/y.png"}, "input[0].content[0].image_url"),
    ({"type": "input_image", "image_url": IMAGE_URL, "detail": "max"},
     "input[0].content[0].detail"),
    ({"type": "input_image", "file_id": "file-123"}, "input[0].content[0].file_id"),
    ({"type": "input_file", "file_data": "AAAA"}, "input[0].content[0].type"),
])
def test_bad_responses_image_parts(part: dict[str, Any], param: str) -> None:
    """Responses input_image problems name the Responses field (input[i].content[j]...)."""
    body = {"model": "stream", "input": [{"role": "user", "content": [part]}]}
    with pytest.raises(APIError) as info:
        parse_responses_request(json.dumps(body).encode(), limits=MessageLimits())
    assert info.value.status == 400 and info.value.param == param, info.value.body()


# ----------------------------------------------------------------------- end to end


def test_streamed_chat_with_a_base64_png(serve: ServeFn, keys: dict[str, str],
                                         chat: ChatStream, vision: VisionBackend) -> None:
    """A streamed request with an inline PNG is answered by the vision tier, which got the
    very same data URL (and detail); the last chunk's record says local was skipped."""
    url = png_data_url(3, 2)
    server = serve(chat)
    chunks = list(client(server.url, keys["user"]).chat.completions.create(
        model="stream", messages=user_with_image(url, detail="low"),
        stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert vision.last_images == [url]
    sent = vision.requests[-1]["messages"][0]["content"]
    assert sent[0] == {"type": "text", "text": QUESTION}
    assert sent[1]["image_url"] == {"url": url, "detail": "low"}
    assert "png 3x2" in text and short_sha(png_bytes(3, 2)) in text
    assert chunks[-1].model_extra is not None
    assert_local_skipped_for_images(chunks[-1].model_extra["stream"])


def test_non_streamed_chat_with_an_image_url(serve: ServeFn, keys: dict[str, str],
                                             chat: ChatStream, vision: VisionBackend) -> None:
    """An image given by URL goes to the vision tier as that URL; the response body and the
    x-stream-route header carry the record (one image, by URL)."""
    server = serve(chat)
    raw = client(server.url, keys["user"]).chat.completions.with_raw_response.create(
        model="stream", messages=user_with_image(IMAGE_URL))
    resp = raw.parse()
    assert vision.last_images == [IMAGE_URL]
    assert f"url {IMAGE_URL}" in (resp.choices[0].message.content or "")
    assert resp.model_extra is not None
    route = resp.model_extra["stream"]
    assert_local_skipped_for_images(route)
    assert route["needs"]["image_urls"] == 1
    assert json.loads(raw.headers["x-stream-route"])["tier"] == "cloud"


def test_responses_api_with_input_image(serve: ServeFn, keys: dict[str, str],
                                        chat: ChatStream, vision: VisionBackend) -> None:
    """responses.create with an input_image part, plain and streamed: the vision tier gets
    the image and the output text describes it."""
    url = png_data_url(5, 4)
    server = serve(chat)
    api = client(server.url, keys["user"])
    item: Any = {"role": "user", "content": [{"type": "input_text", "text": QUESTION},
                                        {"type": "input_image", "image_url": url,
                                         "detail": "auto"}]}
    resp = api.responses.create(model="stream", input=[item])
    assert vision.last_images == [url]
    assert "png 5x4" in resp.output_text and short_sha(png_bytes(5, 4)) in resp.output_text
    assert resp.model_extra is not None
    assert_local_skipped_for_images(resp.model_extra["stream"])
    events = list(api.responses.create(model="stream", input=[item],
                                       stream=True))
    last: Any = events[-1]
    assert last.type == "response.completed" and last.response.output_text == resp.output_text
    assert len(vision.images) == 2 and vision.images[-1] == [url]


def test_malformed_image_part_is_a_400_and_reaches_no_tier(
        serve: ServeFn, keys: dict[str, str], chat: ChatStream, vision: VisionBackend) -> None:
    """Through the real client: BadRequestError whose param is the bad field; nothing is
    sent to any tier."""
    server = serve(chat)
    with pytest.raises(openai.BadRequestError) as info:
        client(server.url, keys["user"]).chat.completions.create(
            model="stream", messages=user_with_image("data:image/png;base64,not base64!"))
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert err["code"] == "invalid_image" and "base64" in err["message"]
    assert vision.requests == []


def test_image_with_cloud_not_allowed_is_a_400_naming_privacy(
        serve: ServeFn, keys: dict[str, str], local_model: BaseChatModel,
        vision: VisionBackend) -> None:
    """allow_cloud=False and only the cloud tier takes images: 400 unsupported_capability
    naming image input and privacy, not a 5xx; the image never leaves for the cloud."""
    vision.reset()
    server = serve(make_stream(local_model, vision, allow_cloud=False))
    for stream in (False, True):  # streamed too: refused before any header is sent
        with pytest.raises(openai.BadRequestError) as info:
            client(server.url, keys["user"]).chat.completions.create(
                model="stream", messages=user_with_image(png_data_url(3, 2)),
                stream=stream)
        err = info.value.body
        assert isinstance(err, dict) and err["code"] == "unsupported_capability", err
        assert err["type"] == "invalid_request_error"
        assert "image input" in err["message"] and "privacy" in err["message"]
        assert "local: no image input" in err["message"]
    assert vision.requests == []


def test_image_to_a_forced_text_only_tier_is_a_400(serve: ServeFn, keys: dict[str, str],
                                                   chat: ChatStream,
                                                   vision: VisionBackend) -> None:
    """model=stream-local with an image: 400 saying the local tier takes no images."""
    server = serve(chat)
    with pytest.raises(openai.BadRequestError) as info:
        client(server.url, keys["user"]).chat.completions.create(
            model="stream-local", messages=user_with_image(IMAGE_URL))
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "unsupported_capability"
    assert "local: no image input" in err["message"]
    assert vision.requests == []


def test_text_requests_still_go_local(serve: ServeFn, keys: dict[str, str], chat: ChatStream,
                                      vision: VisionBackend) -> None:
    """The same proxy answers a text question from the local Gemma; the vision tier is not
    called and the record needs no images."""
    server = serve(chat)
    resp = client(server.url, keys["user"]).chat.completions.create(
        model="stream", messages=[{"role": "user", "content": [
            {"type": "text", "text": "Name a colour."}]}], max_tokens=8)
    assert resp.model_extra is not None
    route = resp.model_extra["stream"]
    assert route["tier"] == "local" and route["needs"]["images"] == 0
    assert resp.choices[0].message.content
    assert vision.requests == []


def test_a_5_mb_image_passes_and_an_oversized_body_gets_413(
        serve: ServeFn, keys: dict[str, str], chat: ChatStream, vision: VisionBackend) -> None:
    """A 5 MB PNG (about 7 MB as base64) fits the default body limit and arrives byte for
    byte; under a 1 MiB limit the same request is a 413 naming the limit and the way out."""
    png = noisy_png(1300, 1300)
    assert len(png) >= 5_000_000
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    server = serve(chat)
    resp = client(server.url, keys["user"]).chat.completions.create(
        model="stream", messages=user_with_image(url))
    assert vision.last_images == [url]
    assert short_sha(png) in (resp.choices[0].message.content or "")

    small = serve(chat, ProxyConfig(max_body_bytes=1024 * 1024))
    with pytest.raises(openai.APIStatusError) as info:
        client(small.url, keys["user"]).chat.completions.create(
            model="stream", messages=user_with_image(url))
    assert info.value.status_code == 413
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "body_too_large"
    assert str(1024 * 1024) in err["message"] and "by http(s) URL" in err["message"]
    # Without a Content-Length (chunked upload) the limit holds as well.
    r = httpx.post(small.url + "/v1/chat/completions",
                   content=iter([json.dumps({"model": "stream",
                                             "messages": user_with_image(url)}).encode()]),
                   headers={"authorization": f"Bearer {keys['user']}",
                            "content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert len(vision.images) == 1


def test_image_tokens_count_toward_the_rate_limit(serve: ServeFn, keys: dict[str, str],
                                                  chat: ChatStream) -> None:
    """The per-minute token estimate charges ChatStream.image_tokens per image, not the
    base64 text: an inline image well over the TPM limit in characters is admitted."""
    assert chat.image_tokens > 0
    url = "data:image/png;base64," + base64.b64encode(os.urandom(300_000)).decode()
    server = serve(chat, ProxyConfig(limits=Limits(tpm=chat.image_tokens + 200)))
    resp = client(server.url, keys["user"]).chat.completions.create(
        model="stream", messages=user_with_image(url))
    assert resp.choices[0].message.content
