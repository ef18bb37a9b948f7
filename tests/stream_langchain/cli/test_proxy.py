"""``stream keys`` and ``stream usage`` work end to end on a real database; ``stream proxy``
serves until interrupted; the CLI's documented defaults are the proxy's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stream_langchain.cli.main import main
from stream_langchain.cli.proxy import DEFAULTS
from stream_langchain.proxy import ProxyConfig, Store, UsageRow


def test_defaults_match_the_proxy() -> None:
    """The limits the options show are the proxy's real defaults."""
    cfg = ProxyConfig()
    assert DEFAULTS == {"rpm": cfg.limits.rpm, "tpm": cfg.limits.tpm,
                        "max_concurrent": cfg.limits.max_concurrent,
                        "max_messages": cfg.messages.max_messages,
                        "max_message_chars": cfg.messages.max_message_chars,
                        "max_body_bytes": cfg.max_body_bytes}


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create prints the key once (stdout) and stores its hash; list shows ids and names,
    never keys; revoke marks it; revoking an unknown id fails naming it."""
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert main(["keys", "create", "--name", "alice", "--rpm", "5", "--db", db]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("sk-stream-") and "shown once" in out.err
    assert main(["keys", "list", "--json", "--db", db]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "alice" and row["rpm"] == 5 and row["revoked"] is None
    assert key not in json.dumps(row)
    assert main(["keys", "revoke", row["key_id"], "--db", db]) == 0
    assert main(["keys", "list", "--db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "deadbeef", "--db", db]) == 1
    assert "'deadbeef'" in capsys.readouterr().err


def test_usage_prints_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stream usage sums the rows per identity and tier (table and JSON)."""
    db = f"sqlite:///{tmp_path / 'u.db'}"
    store = Store(db)
    for tokens in (3, 4):
        store.record(UsageRow(identity="bob", key_id="k", model="stream", tier="hpc",
                              status="ok", stream=True, input_tokens=10, output_tokens=tokens,
                              hpc_seconds=0.5))
    store.close()
    assert main(["usage", "--json", "--db", db]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["requests"], row["output_tokens"], row["hpc_seconds"]) == (2, 7, 1.0)
    assert main(["usage", "--db", db]) == 0
    assert "bob" in capsys.readouterr().out


def test_usage_errors_aborted_by_tier_and_cost_avoided(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table counts errors and aborted requests; --by tier merges identities; with a
    settings file naming the cloud model and its price, each free tier's tokens are priced
    as what they would have cost there (the cloud tier's own rows avoid nothing)."""
    db = f"sqlite:///{tmp_path / 'u.db'}"
    store = Store(db)
    rows = [("ann", "local", "ok", 600_000, 400_000), ("bob", "local", "ok", 400_000, 100_000),
            ("bob", "hpc", "aborted", 0, 0), ("bob", None, "error", 0, 0),
            ("ann", "cloud", "ok", 1_000, 1_000)]
    for who, tier, status, inp, out in rows:
        store.record(UsageRow(identity=who, key_id="k", model="stream", tier=tier,
                              status=status, stream=False, input_tokens=inp,
                              output_tokens=out))
    store.close()
    config = tmp_path / "stream.toml"
    config.write_text('[cloud]\nmodel = "gpt-4o-mini"\n'
                      '[budget.prices."gpt-4o-mini"]\ninput = 0.15\noutput = 0.6\n')
    assert main(["usage", "--by", "tier", "--json", "--db", db, "--config", str(config)]) == 0
    by_tier = {r["tier"]: r for r in json.loads(capsys.readouterr().out)}
    assert by_tier["local"]["requests"] == 2
    assert by_tier["local"]["cost_avoided_usd"] == pytest.approx(0.15 + 0.3)  # 1M in, 0.5M out
    assert by_tier["cloud"]["cost_avoided_usd"] == 0.0
    assert by_tier["hpc"]["aborted"] == 1 and by_tier[None]["errors"] == 1
    assert main(["usage", "--db", db, "--config", str(config)]) == 0
    table = capsys.readouterr()
    header = table.out.splitlines()[0]
    assert "errors" in header and "aborted" in header and "avoided $" in header
    assert "gpt-4o-mini" in table.err


@pytest.mark.slow
def test_stream_proxy_starts_with_no_keys_and_answers_401(tmp_path: Path) -> None:
    """`stream proxy` on an empty key store starts, logs that it has no keys, answers 401,
    and exits cleanly on SIGINT."""
    from stream_langchain.tiers.llama_server import free_port

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("STREAM_CONFIG", None)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "stream"), "proxy", "--no-hpc", "--port",
         str(port), "--db", f"sqlite:///{tmp_path / 'p.db'}", "--max-tokens", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
        assert r.status_code == 401 and r.json()["error"]["code"] == "no_api_keys"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "has no API keys" in out
