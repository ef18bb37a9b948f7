"""Docs are part of the product: every README block and docstring example runs here."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PACKAGES = ["stream_langchain", "stream_llamaindex", "relay", "hpc_functions"]
BIN = Path(sys.executable).parent


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}."):
            if not info.name.rsplit(".", 1)[-1].startswith("__"):
                names.append(info.name)
    return names


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("module", _modules())
def test_docstring_examples(module: str) -> None:
    """Each module's docstring examples run and print what they claim."""
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module}"


@pytest.mark.slow
def test_readme_python_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's Python blocks run in order (TOML blocks become ./stream.toml)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    for toml in _blocks("toml"):
        (tmp_path / "stream.toml").write_text(toml)
    namespace: dict[str, object] = {}
    blocks = _blocks("python")
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["record"]["tier"] == "local"  # type: ignore[index]


def _readme_commands() -> list[str]:
    cmds = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            cmd = line.split("  #", 1)[0].strip()
            if cmd.startswith(("stream ", "echo ")) or cmd == "stream":
                cmds.append(cmd)
    return cmds


def test_readme_names_the_two_commands_ci_runs() -> None:
    """The quick start's commands exist in the Makefile and .ci/run calls the test one."""
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("command", _readme_commands())
def test_readme_commands(command: str, tmp_path: Path) -> None:
    """Each `stream ...` command in the README exits 0 and prints an answer."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "STREAM_EMBEDDED_MAX_TOKENS": "8"}
    env.pop("STREAM_CONFIG", None)
    proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{command!r} failed:\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip(), f"{command!r} printed nothing"
    if "--json" in shlex.split(command):
        import json

        assert json.loads(proc.stdout)["stream"]["tier"] == "local"
