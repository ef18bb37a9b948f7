"""The relay command line: secret handling and a real start/stop."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relay import Producer, SyncConsumer, mint_tokens, new_channel, new_key
from relay.cli import SECRET_ENV, add_arguments, main

REPO = Path(__file__).resolve().parents[2]


def test_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No $STREAM_RELAY_SECRET and no --secret-file: exit status 2 and an explanation."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert main(["--port", "0"]) == 2
    assert SECRET_ENV in capsys.readouterr().err


def test_unreadable_or_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    """A missing or empty --secret-file stops the relay with a clear message."""
    with pytest.raises(SystemExit, match="cannot read"):
        main(["--secret-file", str(tmp_path / "nope")])
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match="empty"):
        main(["--secret-file", str(empty)])


def test_add_arguments_lets_another_cli_delegate() -> None:
    """add_arguments() fills a foreign parser with the relay's options and defaults."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--host", "0.0.0.0", "--insecure-dev"])
    assert (args.host, args.port, args.insecure_dev) == ("0.0.0.0", 8765, True)


def test_relay_process_serves_with_a_secret_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`python -m relay --secret-file F --port 0` prints its URL, relays, exits 0 on SIGTERM."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("cli-test-secret\n")
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay",
            "--port",
            "0",
            "--secret-file",
            str(secret_file),
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().split()[-1]
        assert url.startswith("ws://127.0.0.1:")
        channel, key = new_channel(), new_key()
        tokens = mint_tokens("cli-test-secret", channel, 60)
        with Producer(url, channel, tokens.producer, key) as producer:
            producer.send({"ok": True})
            producer.close()
        with SyncConsumer(url, channel, tokens.consumer, key) as consumer:
            assert list(consumer) == [{"ok": True}]
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
        assert "cli-test-secret" not in (child.stderr.read() if child.stderr else "")
    finally:
        child.kill()
        child.communicate()
