"""Virtual environments for the client libraries, one per set of pins, cached between runs.

The clients pin conflicting ``openai`` versions (the Agents SDK and ``llm`` want openai 3,
``llama-index-llms-openai`` wants openai < 3), so each set runs in its own environment made with
the standard library's ``venv`` and ``pip`` from the package index. An environment lives in
``.venv-compat/<name>-<hash of the pins>/`` (``STREAM_COMPAT_VENVS`` moves it) and is built once:
a stamp file written after a successful install marks it ready, so a failed install is retried.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

__all__ = ["CLIENTS", "ensure_venv", "venv_python"]

REPO = Path(__file__).resolve().parents[2]

CLIENTS: dict[str, tuple[str, ...]] = {
    # The Agents SDK, the llm CLI and the openai SDK's parse helpers: openai 3.
    "openai3": ("openai==3.63.0", "openai-agents==0.24.0", "llm==0.36"),
    # LlamaIndex's OpenAILike: openai < 3.
    "llamaindex": ("llama-index-llms-openai-like==0.8.1", "llama-index-llms-openai==0.8.3",
                   "llama-index-core==0.14.25"),
}
"""Requirement pins per environment."""


def _root() -> Path:
    return Path(os.environ.get("STREAM_COMPAT_VENVS") or REPO / ".venv-compat")


def venv_python(path: Path) -> Path:
    """The interpreter of the environment at ``path``."""
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(name: str, timeout: float = 900.0) -> Path:
    """The environment for ``CLIENTS[name]``, created and installed if it is not ready.

    Raises:
        subprocess.CalledProcessError: pip failed (its output is in the exception).
    """
    pins = CLIENTS[name]
    digest = hashlib.sha256("\n".join((sys.version.split()[0], *pins)).encode()).hexdigest()
    path = _root() / f"{name}-{digest[:12]}"
    stamp = path / ".installed"
    if stamp.exists():
        return path
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run([str(venv_python(path)), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", *pins],
                   check=True, timeout=timeout, capture_output=True, text=True)
    stamp.write_text("\n".join(pins) + "\n")
    return path
