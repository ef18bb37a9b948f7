"""`stream chat --image PATH`, run as a user runs it (a subprocess).

No vision model installs on these machines, so the vision tier is ``tests/vision_backend.py``'s
``VisionBackend``: a real OpenAI-compatible HTTP server on loopback (in this test process),
reached by the CLI's real ``ChatOpenAI`` client, that records the image parts it receives and
answers with what it saw ("I see 1 image: png 3x2 sha256=<12 hex>."). The text tier is a real
``ChatOllama`` client pointed at a loopback port nobody serves: these tests show it is never
asked for an image request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stream_langchain.cli.test_chat import run
from tests.vision_backend import VisionBackend, describe_image_url, png_bytes, png_data_url

KEY_ENV = "STREAM_TEST_VISION_KEY"
TEXT_ONLY = """\
[stream]
judge = "keyword"
[local]
provider = "ollama"
model = "llama3.2:3b"
base_url = "http://127.0.0.1:9"
[context]
summarizer = "none"
"""


@pytest.fixture(scope="module")
def vision() -> Iterator[VisionBackend]:
    with VisionBackend() as backend:
        yield backend


def _settings(tmp_path: Path, backend: VisionBackend, vision: bool = True) -> Path:
    path = tmp_path / "stream.toml"
    path.write_text(TEXT_ONLY + f"""\
[cloud]
base_url = "{backend.base_url}"
model = "vision-stub"
api_key_env = "{KEY_ENV}"
vision = {str(vision).lower()}
""")
    return path


def _png(tmp_path: Path, name: str, width: int, height: int) -> Path:
    path = tmp_path / name
    path.write_bytes(png_bytes(width, height))
    return path


def _chat(tmp_path: Path, args: list[str], stdin: str = "") -> tuple[int, str, str]:
    proc = run(["chat", *args], tmp_path, stdin=stdin, env={KEY_ENV: "sk-test-not-a-secret"})
    return proc.returncode, proc.stdout, proc.stderr


def test_image_reaches_the_vision_tier(tmp_path: Path, vision: VisionBackend) -> None:
    """The file's exact bytes arrive at the vision tier; the header names it, the footer
    says why the preferred text tier was skipped."""
    vision.reset()
    config = _settings(tmp_path, vision)
    image = _png(tmp_path, "red.png", 3, 2)
    rc, out, err = _chat(tmp_path, ["--config", str(config), "--image", str(image),
                                    "What is in this picture?"])
    assert rc == 0, err
    assert vision.last_images == [png_data_url(3, 2)]
    assert f"I see 1 image: {describe_image_url(png_data_url(3, 2))}." in out
    assert "[cloud | vision-stub |" in out
    assert "| 1 image |" in out and "local (no image input" in out
    assert "sk-test-not-a-secret" not in out + err


def test_repeated_image_flags_send_every_image_in_order(tmp_path: Path,
                                                        vision: VisionBackend) -> None:
    """--image twice: both images, in the order given, with the question text (JSON out)."""
    vision.reset()
    config = _settings(tmp_path, vision)
    first, second = _png(tmp_path, "a.png", 3, 2), _png(tmp_path, "b.png", 7, 5)
    rc, out, err = _chat(tmp_path, ["--config", str(config), "--json", "--image", str(first),
                                    "--image", str(second), "Compare these."])
    assert rc == 0, err
    assert vision.last_images == [png_data_url(3, 2), png_data_url(7, 5)]
    texts = [p["text"] for p in vision.requests[-1]["messages"][-1]["content"]
             if p["type"] == "text"]
    assert texts == ["Compare these."]
    result = json.loads(out)
    assert "png 3x2" in result["answer"] and "png 7x5" in result["answer"]
    assert result["stream"]["tier"] == "cloud" and result["stream"]["needs"]["images"] == 2


def test_interactive_images_go_with_the_first_question(tmp_path: Path,
                                                       vision: VisionBackend) -> None:
    """Interactive: the image rides on the first question only; later questions are text
    (the first stays in the history, so the conversation stays on the vision tier)."""
    vision.reset()
    config = _settings(tmp_path, vision)
    image = _png(tmp_path, "red.png", 3, 2)
    rc, out, err = _chat(tmp_path, ["--config", str(config), "--image", str(image)],
                         stdin="What is this?\nAnd its colour?\n")
    assert rc == 0, err
    assert "1 image attached to your first question" in out
    assert len(vision.requests) == 2
    first_turn, second_turn = (r["messages"] for r in vision.requests)
    assert [p["type"] for p in first_turn[-1]["content"]] == ["text", "image_url"]
    assert second_turn[-1] == {"role": "user", "content": "And its colour?"}
    assert vision.images == [[png_data_url(3, 2)], [png_data_url(3, 2)]]


def test_only_a_text_tier_is_a_clear_refusal(tmp_path: Path) -> None:
    """--image with no tier that takes images: an error naming image input, no traceback,
    and the text tier is never called."""
    config = tmp_path / "text.toml"
    config.write_text(TEXT_ONLY)
    image = _png(tmp_path, "red.png", 3, 2)
    rc, out, err = _chat(tmp_path, ["--config", str(config), "--image", str(image), "What?"])
    assert rc != 0
    assert "needs image input" in err and "local: no image input" in err
    assert "Traceback" not in err and "127.0.0.1:9" not in err


def test_vision_false_in_settings_keeps_images_off_that_tier(tmp_path: Path,
                                                             vision: VisionBackend) -> None:
    """[cloud] vision = false: the image is refused and the backend gets nothing."""
    vision.reset()
    config = _settings(tmp_path, vision, vision=False)
    image = _png(tmp_path, "red.png", 3, 2)
    rc, _, err = _chat(tmp_path, ["--config", str(config), "--image", str(image), "What?"])
    assert rc != 0 and "needs image input" in err and "vision=False" in err
    assert vision.requests == []


def _file(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.png"
    if kind == "directory":
        return tmp_path
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("just some text, not pixels\n")
    else:  # huge: a sparse file, nothing written but the PNG header
        path.write_bytes(png_bytes(3, 2))
        with path.open("r+b") as f:
            f.truncate(20 * 1024 * 1024 + 1)
    return path


@pytest.mark.parametrize(("kind", "problem"), [
    ("missing", "no such file"),
    ("directory", "not a regular file"),
    ("empty", "the file is empty"),
    ("text", "the data is not a recognizable image"),
    ("huge", "20.0 MiB is over the 20 MiB limit"),
])
def test_bad_image_file_is_a_usage_error(tmp_path: Path, kind: str, problem: str) -> None:
    """A missing, empty, oversized or non-image file: exit 2, the path and problem named,
    before any settings or tier are touched (the --config file does not even exist)."""
    path = _file(tmp_path, kind)
    rc, out, err = _chat(tmp_path, ["--config", str(tmp_path / "none.toml"),
                                    "--image", str(path), "What?"])
    assert rc == 2, err
    assert f"stream chat: --image {path}: {problem}" in err
    assert "Traceback" not in err and out == ""


def test_image_part_sniffs_the_four_formats(tmp_path: Path) -> None:
    """The type comes from the bytes, whatever the file is called."""
    from stream_langchain.cli.chat import image_part

    samples = {"image/png": png_bytes(1, 1), "image/jpeg": b"\xff\xd8\xff\xe0" + bytes(12),
               "image/gif": b"GIF87a" + bytes(10),
               "image/webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8)}
    for mime, data in samples.items():
        path = tmp_path / "picture.bin"
        path.write_bytes(data)
        part = image_part(path)
        assert part == {"type": "image", "base64": base64.b64encode(data).decode(),
                        "mime_type": mime}
