"""The dependency rules between the packages hold (read from the source, every import counted).

Rules (DESIGN.md, "Dependency direction"): ``relay`` imports nothing of the others;
``hpc_functions`` imports only ``relay`` and never LangChain; ``judges/`` imports nothing of
``tiers/``, ``cli/`` or ``proxy/``; nothing outside ``cli/`` imports ``cli/``; nothing below the
engine (judges, tiers) imports the engine (``chat_model``, ``_run``, ``routing``, ``_factory``);
and no two modules import each other, directly or around a loop, at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("stream_langchain", "stream_llamaindex", "relay", "hpc_functions")
ENGINE = ("stream_langchain.chat_model", "stream_langchain._run", "stream_langchain.routing",
          "stream_langchain._factory")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports anywhere in it (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out.add(base)
            # ``from pkg import submodule`` imports the submodule too.
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


SOURCES = _sources()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _offenders(importer: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for mod, path in SOURCES.items():
        if not _within(mod, importer):
            continue
        for name in _imports(path):
            if any(_within(name, f) for f in forbidden):
                bad.append(f"{mod} imports {name}")
    return sorted(bad)


def test_the_tree_was_found() -> None:
    """The rule checks below read real modules (a wrong root would make them pass vacuously)."""
    assert "stream_langchain.judges.base" in SOURCES
    assert "stream_langchain.tiers.hpc" in SOURCES
    assert "relay.server" in SOURCES and "hpc_functions.chat" in SOURCES


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("relay", ("stream_langchain", "stream_llamaindex", "hpc_functions", "langchain_core")),
    ("hpc_functions", ("stream_langchain", "stream_llamaindex", "langchain_core",
                       "langchain_openai", "llama_index")),
    ("stream_langchain.judges", ("stream_langchain.tiers", "stream_langchain.cli",
                                 "stream_langchain.proxy", *ENGINE)),
    ("stream_langchain.tiers", ("stream_langchain.cli", "stream_langchain.proxy", *ENGINE)),
])
def test_dependency_direction(importer: str, forbidden: tuple[str, ...]) -> None:
    """A lower layer never imports a higher one, not even inside a function."""
    assert _offenders(importer, forbidden) == []


def test_nothing_imports_the_cli() -> None:
    """Only the ``stream`` console script enters ``cli/``; no library module imports it."""
    bad = [f"{mod} imports {name}" for mod, path in SOURCES.items()
           if not _within(mod, "stream_langchain.cli")
           for name in _imports(path)
           if _within(name, "stream_langchain.cli")]
    assert bad == []


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports, counting those inside functions: a
    deferred import hides a circle from Python, not from the reader."""
    graph = {mod: {n for n in _imports(path) if n in SOURCES and n != mod}
             for mod, path in SOURCES.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    assert cycles == []
