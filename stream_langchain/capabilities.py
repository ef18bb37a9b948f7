"""What each tier can take (images, tools, how long a context) and what a request needs.

A tier's capabilities come from the ecosystem's own data first: LangChain chat models carry a
``profile`` (``ChatOpenAI(model="gpt-4o-mini").profile["image_inputs"]`` is ``True``), and any
model accepts ``profile={...}`` in its constructor. ChatStream's ``capabilities`` argument (or
the settings keys ``vision``, ``tools``) overrides it per tier. A capability nobody stated is
*unknown*: an unknown tier is never sent images (it would fail, or worse, silently drop them),
and is tried after the tiers known to call tools when tools are bound.

Example:
    >>> from langchain_core.language_models import GenericFakeChatModel
    >>> m = GenericFakeChatModel(messages=iter([]), profile={"image_inputs": True,
    ...                                                      "max_input_tokens": 8192})
    >>> caps = tier_capabilities(m)
    >>> caps.vision, caps.tools, caps.context_window
    (True, None, 8192)
    >>> tier_capabilities(m, {"vision": False}).why("vision")
    'vision=False (ChatStream capabilities)'
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from stream_langchain.errors import ImageFileError

__all__ = [
    "CAPABILITY_KEYS",
    "IMAGE_PART_TYPES",
    "Capabilities",
    "Needs",
    "check_image_bytes",
    "check_image_part",
    "image_media_type",
    "model_name",
    "request_needs",
    "tier_capabilities",
    "validate_capabilities",
]

CAPABILITY_KEYS = frozenset({"vision", "image_urls", "tools", "context_window"})
"""Keys of a per-tier override: ``vision`` (takes image parts), ``image_urls`` (takes images
by http(s) URL, not only inline data), ``tools`` (calls tools), ``context_window`` (tokens)."""

IMAGE_PART_TYPES = frozenset({"image_url", "image"})
"""Content part types that carry an image: OpenAI's ``image_url`` and LangChain's standard
``image`` block."""

_PROFILE_KEYS = {"vision": "image_inputs", "image_urls": "image_url_inputs",
                 "tools": "tool_calling", "context_window": "max_input_tokens"}
_RUNTIME_WINDOW = ("n_ctx", "num_ctx")  # llama.cpp, Ollama: the window actually allocated


def model_name(model: BaseChatModel) -> str:
    """The model's name as providers report it (``model_name``, ``model``, ``model_id``,
    ``deployment_name``), else its type; the one name every record and trace uses.

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> model_name(GenericFakeChatModel(messages=iter([])))
        'generic-fake-chat-model'
    """
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return model._llm_type


@dataclass(frozen=True)
class Capabilities:
    """One tier's capabilities; ``None`` means unknown. ``sources`` says where each came
    from (``profile``, ``ChatStream capabilities``, ``n_ctx``)."""

    vision: bool | None = None
    image_urls: bool | None = None
    tools: bool | None = None
    context_window: int | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def why(self, key: str) -> str:
        """``key=value (source)``, for skip reasons.

        Example:
            >>> print(Capabilities().why("vision"))
            vision unknown (no profile; set capabilities={tier: {"vision": True}} or vision = true
            in the tier settings)
        """
        value = getattr(self, key)
        if value is None:
            return (f"{key} unknown (no profile; set capabilities={{tier: "
                    f"{{\"{key}\": True}}}} or {key} = true in the tier settings)")
        return f"{key}={value} ({self.sources.get(key, 'profile')})"


@dataclass(frozen=True)
class Needs:
    """What a request needs from the tier that answers it."""

    images: int = 0
    """Image parts in the conversation."""
    image_urls: int = 0
    """Of those, images given by http(s) URL (the tier must fetch them)."""
    tools: bool = False
    """Tools are bound to the request."""

    def record(self) -> dict[str, Any]:
        return {"images": self.images, "image_urls": self.image_urls, "tools": self.tools}


def validate_capabilities(overrides: Mapping[str, Mapping[str, Any]],
                          tiers: Collection[str]) -> None:
    """Raise ``ValueError`` naming the problem in a ``capabilities`` argument (``tiers``: the
    valid tier names).

    Example:
        >>> validate_capabilities({"cloud": {"vison": True}}, ("local", "hpc", "cloud"))
        Traceback (most recent call last):
        ...
        ValueError: capabilities['cloud']: unknown key 'vison' (expected context_window, ...)
    """
    for tier, caps in overrides.items():
        if tier not in tiers:
            raise ValueError(f"capabilities: unknown tier {tier!r} (expected one of "
                             f"{', '.join(tiers)})")
        if not isinstance(caps, Mapping):
            raise ValueError(f"capabilities[{tier!r}] must be a dict, got {type(caps).__name__}")
        for key, value in caps.items():
            if key not in CAPABILITY_KEYS:
                raise ValueError(f"capabilities[{tier!r}]: unknown key {key!r} (expected "
                                 f"{', '.join(sorted(CAPABILITY_KEYS))})")
            if key == "context_window":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                          or value <= 0):
                    raise ValueError(f"capabilities[{tier!r}]['context_window'] must be a "
                                     f"positive int, got {value!r}")
            elif value is not None and not isinstance(value, bool):
                raise ValueError(f"capabilities[{tier!r}][{key!r}] must be true, false or "
                                 f"None, got {value!r}")


def tier_capabilities(model: BaseChatModel,
                      override: Mapping[str, Any] | None = None,
                      learned: Capabilities | None = None) -> Capabilities:
    """A tier's capabilities: ``override`` wins, then what the tier's server said about its
    model (``learned``: Ollama's ``/api/show``, see :mod:`stream_langchain.ollama`), then (for
    the window) the context the model really allocates (``n_ctx``, ``num_ctx``), then the
    model's ``profile``."""
    profile: Mapping[str, Any] = getattr(model, "profile", None) or {}
    override = override or {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, pkey in _PROFILE_KEYS.items():
        if override.get(key) is not None:
            values[key], sources[key] = override[key], "ChatStream capabilities"
            continue
        if learned is not None and getattr(learned, key) is not None:
            values[key] = getattr(learned, key)
            sources[key] = learned.sources.get(key, "learned from the server")
            continue
        if key == "context_window":
            for attr in _RUNTIME_WINDOW:
                n = getattr(model, attr, None)
                if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                    values[key], sources[key] = n, attr
                    break
            if key in values:
                continue
        v = profile.get(pkey)
        if key == "context_window":
            ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        else:
            ok = isinstance(v, bool)
        if ok:
            values[key], sources[key] = v, f"profile: {pkey}={v}"
    if values.get("vision") is False and "image_urls" not in override:
        values["image_urls"] = False
    return Capabilities(sources=sources, **values)


def _bad(where: str, problem: str) -> ImageFileError:
    return ImageFileError(f"{where}: {problem}")


# Leading bytes -> media type. Images first; then common files that are not images, so the
# error can say what the data is.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),  # after "RIFF" and the size
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"\x00\x00\x01\x00", "image/x-icon"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftypheic", "image/heic"),
    (0, b"%PDF", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (4, b"ftypisom", "video/mp4"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"OggS", "audio/ogg"),
)


def image_media_type(data: bytes) -> str | None:
    """The media type its first bytes say ``data`` has (PNG, JPEG, GIF, WebP, BMP, TIFF,
    ICO, AVIF, HEIC; or a common non-image type such as ``application/pdf``), else ``None``.

    Example:
        >>> image_media_type(b"GIF89a" + bytes(10)), image_media_type(b"%PDF-1.4")
        ('image/gif', 'application/pdf')
    """
    for offset, magic, mime in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            if mime == "image/webp" and data[:4] != b"RIFF":
                continue
            return mime
    return None


def check_image_bytes(data: bytes, where: str, *, declared: str | None = None) -> str:
    r"""Validate image data; return its media type. The bytes decide when they can; data no
    signature names passes only with a ``declared`` ``image/*`` type. Every face (the CLI's
    ``--image``, StreamLLM's ``ImageBlock``, the proxy) validates images here.

    Raises:
        ImageFileError: naming ``where``: empty data, data of a non-image type, or
            unrecognizable data without a declared image type.

    Example:
        >>> check_image_bytes(b"\x89PNG\r\n\x1a\n" + bytes(8), "photo.png")
        'image/png'
        >>> check_image_bytes(b"%PDF-1.4", "message 0 block 1")
        Traceback (most recent call last):
        ...
        stream_langchain.errors.ImageFileError: message 0 block 1: the data is application/pdf, ...
    """
    if not data:
        raise _bad(where, "the image data is empty")
    sniffed = image_media_type(data)
    if sniffed is not None and not sniffed.startswith("image/"):
        raise _bad(where, f"the data is {sniffed}, not an image")
    mime = sniffed or declared
    if not mime or not mime.startswith("image/"):
        stated = f" (declared {declared!r})" if declared else ""
        raise _bad(where, f"the data is not a recognizable image{stated}; expected PNG, JPEG, "
                          "GIF, WebP or another image format")
    return mime


def _check_data_url(url: str, where: str) -> None:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise _bad(where, "an inline image must be a data URL "
                          f"'data:image/<type>;base64,<data>'; got {head[:40]!r}")
    _check_base64(payload, where)


def _check_base64(payload: Any, where: str) -> None:
    if not isinstance(payload, str) or not payload:
        raise _bad(where, "image data is empty")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(where, f"image data is not valid base64 ({exc})") from None


def _check_url(url: Any, where: str) -> bool:
    """Validate an image URL; ``True`` when the tier must fetch it (http/https)."""
    if not isinstance(url, str) or not url:
        raise _bad(where, "image URL is missing or not a string")
    if url.startswith("data:"):
        _check_data_url(url, where)
        return False
    if url.startswith(("http://", "https://")):
        return True
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    raise _bad(where, f"image URL must be http(s):// or a data: URL, not {scheme!r}")


def check_image_part(part: Mapping[str, Any], where: str) -> bool:
    """Validate one image content part; ``True`` when it is an http(s) URL.

    Raises:
        ImageFileError: (a ``ValueError``) naming ``where`` and what is wrong.

    Example:
        >>> check_image_part({"type": "image_url", "image_url": {"url": "https://x/a.png"}},
        ...                  "message 0")
        True
        >>> check_image_part({"type": "image", "base64": "!!"}, "message 0")
        Traceback (most recent call last):
        ...
        stream_langchain.errors.ImageFileError: message 0: image data is not valid base64 (...)
    """
    if part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return _check_url(url, where)
    # LangChain standard block: v1 (base64 / url / file_id) or v0 (source_type + data / url).
    source = part.get("source_type")
    if "base64" in part or source == "base64":
        data = part.get("base64", part.get("data"))
        _check_base64(data, where)
        return False
    if "url" in part or source == "url":
        return _check_url(part.get("url"), where)
    if "file_id" in part or source == "id":
        raise _bad(where, "image by file_id is provider-specific and cannot be routed; send "
                          "the image inline (base64) or by URL")
    raise _bad(where, "image block has no 'base64', 'url' or 'data'")


def _image_parts(message: BaseMessage) -> list[Mapping[str, Any]]:
    if isinstance(message.content, str):
        return []
    return [p for p in message.content
            if isinstance(p, Mapping) and p.get("type") in IMAGE_PART_TYPES]


def request_needs(messages: Sequence[BaseMessage], *, tools: bool = False) -> Needs:
    """What ``messages`` (already checked) need: image count, URL images, tools."""
    images = urls = 0
    for m in messages:
        for part in _image_parts(m):
            images += 1
            url = part.get("url")
            if part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                urls += 1
    return Needs(images=images, image_urls=urls, tools=tools)
