"""A settings file that configures the cloud (or HPC) tier and leaves out ``[local]`` has no
local tier: no default Ollama at localhost for LOW queries to try first, none in
``/v1/models``; ``[local] enabled = false`` says the same explicitly."""

from __future__ import annotations

from pathlib import Path

from stream_langchain import ChatStream, KeywordJudge
from stream_langchain.proxy import Store, create_app
from stream_langchain.settings import Settings

ENV = {"OPENAI_API_KEY": "sk-test-not-a-secret"}


def test_cloud_only_file_has_no_local_tier(tmp_path: Path) -> None:
    """stream.toml with only [cloud]: the cloud tier, nothing else; the proxy lists no
    stream-local model."""
    path = tmp_path / "stream.toml"
    path.write_text('[cloud]\nmodel = "gpt-4o-mini"\n')
    llm = ChatStream.from_settings(str(path), env=ENV, judge=KeywordJudge())
    assert sorted(llm.tiers) == ["cloud"]
    store = Store("sqlite://")
    try:
        app = create_app(llm, store=store)
        assert sorted(app.state.proxy.models) == ["stream", "stream-cloud"]
    finally:
        store.close()


def test_local_stays_by_default_and_can_be_switched_off() -> None:
    """No file, or a file with [local]: the local tier as before; enabled = false: none."""
    assert Settings.load({}, env={}).local.enabled
    assert Settings.load({"local": {"model": "llama3.2:1b"}, "cloud": {"model": "m"}},
                         env={}).local.enabled
    off = ChatStream.from_settings({"local": {"enabled": False},
                                    "cloud": {"model": "gpt-4o-mini"}},
                                   env=ENV, judge=KeywordJudge())
    assert sorted(off.tiers) == ["cloud"]
    kept = ChatStream.from_settings({"local": {"model": "llama3.2:1b"},
                                     "cloud": {"model": "gpt-4o-mini"}},
                                    env=ENV, judge=KeywordJudge())
    assert sorted(kept.tiers) == ["cloud", "local"]
