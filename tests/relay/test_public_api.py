"""The public surface of the relay package, and its independence from the rest of STREAM."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import relay

PACKAGE = Path(relay.__file__).parent

EXPECTED = {
    "AUTH_REASONS",
    "AsyncProducer",
    "AuthRejected",
    "ChannelClosed",
    "ConnectTimeout",
    "Consumer",
    "Data",
    "DroppedFrame",
    "End",
    "FirstFrameTimeout",
    "Frame",
    "FrameError",
    "FrameType",
    "IdleTimeout",
    "IntegrityError",
    "Limits",
    "Producer",
    "RelayError",
    "RelayRefused",
    "RelayServer",
    "RelayThread",
    "RelayTimeout",
    "RelayUnreachable",
    "RemoteError",
    "ReorderedFrame",
    "ReplayedFrame",
    "Sealer",
    "SyncConsumer",
    "TamperedFrame",
    "Timeouts",
    "Tokens",
    "TruncatedStream",
    "Verifier",
    "WrongKey",
    "encode_frame",
    "mint_tokens",
    "new_channel",
    "new_key",
    "parse_frame",
    "run_in_thread",
    "verify_token",
}


def test_all_is_pinned_and_importable() -> None:
    """relay.__all__ is exactly the documented surface, and every name exists."""
    assert set(relay.__all__) == EXPECTED
    for name in relay.__all__:
        assert getattr(relay, name) is not None


def test_every_error_is_a_relay_error() -> None:
    """All exported exception classes derive from RelayError."""
    errors = [
        getattr(relay, n)
        for n in relay.__all__
        if isinstance(getattr(relay, n), type) and issubclass(getattr(relay, n), BaseException)
    ]
    assert len(errors) == 18
    assert all(issubclass(e, relay.RelayError) for e in errors)
    assert issubclass(relay.FirstFrameTimeout, relay.RelayTimeout)
    assert issubclass(relay.RelayTimeout, TimeoutError)


def test_relay_imports_nothing_from_the_rest_of_stream() -> None:
    """No module of relay imports stream_langchain, stream_llamaindex or hpc_functions."""
    forbidden = {"stream_langchain", "stream_llamaindex", "hpc_functions"}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, path.name


def test_importing_relay_loads_none_of_the_other_packages() -> None:
    """`import relay` in a fresh interpreter pulls in no other STREAM package."""
    code = (
        "import sys, relay; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'stream_langchain', 'stream_llamaindex', 'hpc_functions'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_public_modules_declare_all() -> None:
    """Every public relay module has an explicit __all__ and future annotations."""
    for path in PACKAGE.glob("*.py"):
        source = path.read_text()
        assert "from __future__ import annotations" in source, path.name
        if not path.name.startswith("_") or path.name in {"__init__.py", "__main__.py"}:
            assert "__all__" in source, path.name
