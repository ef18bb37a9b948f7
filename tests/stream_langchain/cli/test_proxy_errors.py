"""``stream proxy`` / ``keys`` / ``usage`` fail in one line a user can act on: a bad database
URL (password masked), a missing extra (the pip command), a port in use (before any banner);
a relative SQLite path is made absolute, so the store is where the log says."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import pytest

from stream_langchain.cli.main import main
from stream_langchain.proxy import Store


@pytest.mark.parametrize("url", ["postgresql://bob:s3cret-pw@127.0.0.1:1/usage",
                                 "not a url :// s3cret-pw"])
def test_bad_database_url_is_one_line_without_the_password(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """keys list on an unreachable or unparsable URL: exit 1, one line, password masked."""
    assert main(["keys", "list", "--db", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stream: error: cannot open the database")
    assert len(err.strip().splitlines()) == 1
    assert "s3cret-pw" not in err and "Traceback" not in err


def test_missing_proxy_extra_names_the_pip_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without the proxy's modules importable: one line naming `pip install ...[proxy]`."""
    monkeypatch.setitem(sys.modules, "stream_langchain.proxy.usage", None)
    assert main(["usage", "--db", "sqlite://"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'stream-tiered[proxy]'" in err and len(err.strip().splitlines()) == 1


def test_port_in_use_fails_before_the_banner(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A taken port: exit 1 naming it, and no "stream proxy: http://..." line first (the
    socket is bound before any model is loaded)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["proxy", "--no-hpc", "--port", str(port),
                     "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    out = capsys.readouterr()
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.err
    assert "stream proxy: http" not in out.err + out.out


def test_relative_sqlite_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """sqlite:///rel.db opens ./rel.db and says its absolute path."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="stream_langchain.proxy.usage"):
        store = Store("sqlite:///sub/rel.db")
    store.close()
    assert (tmp_path / "sub" / "rel.db").exists()
    assert store.url_safe == f"sqlite:///{tmp_path / 'sub' / 'rel.db'}"
    assert str(tmp_path / "sub" / "rel.db") in caplog.text
