"""Settings: TOML + environment, validated with errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from stream_langchain import ChatStream, Settings, SettingsError
from stream_langchain.judges import KeywordJudge
from stream_langchain.judges.default import ESCALATE_BELOW

GOOD = """
[stream]
allow_cloud = false
judge = "keyword"

[local]
model = "llama3.2:3b"
base_url = "http://127.0.0.1:11434"

[cloud]
base_url = "http://127.0.0.1:9/v1"
model = "gpt-4o-mini"
api_key_env = "MY_CLOUD_KEY"

[budget]
cloud_usd = 2.5
[budget.prices."gpt-4o-mini"]
input = 0.15
output = 0.6
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stream.toml"
    p.write_text(text)
    return p


def test_file_builds_ollama_and_openai_tiers(tmp_path: Path) -> None:
    """A settings file builds ChatOllama (local) and ChatOpenAI (cloud) with its options."""
    env = {"MY_CLOUD_KEY": "sk-live-abcdef123456"}
    llm = ChatStream.from_settings(write(tmp_path, GOOD), env=env)
    assert isinstance(llm.local, ChatOllama) and llm.local.model == "llama3.2:3b"
    assert isinstance(llm.cloud, ChatOpenAI) and llm.cloud.model_name == "gpt-4o-mini"
    assert llm.allow_cloud is False and llm.cloud_budget_usd == 2.5
    assert llm.prices == {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    assert llm.active_judge.name == "keyword"
    assert "sk-live-abcdef123456" not in repr(llm) and "sk-live" not in str(llm.cloud)


def test_environment_overrides_file(tmp_path: Path) -> None:
    env = {"MY_CLOUD_KEY": "k", "STREAM_ALLOW_CLOUD": "true", "STREAM_LOCAL_MODEL": "qwen3:4b"}
    s = Settings.load(write(tmp_path, GOOD), env=env)
    assert s.stream.allow_cloud is True and s.local.model == "qwen3:4b"


def test_unset_key_variable_is_named_not_leaked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="MY_CLOUD_KEY.*unset or empty"):
        ChatStream.from_settings(write(tmp_path, GOOD), env={})


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[local\nmodel = ")
    with pytest.raises(SettingsError, match=f"{p}.*not valid TOML"):
        Settings.load(p)


def test_unknown_key_and_bad_type_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown key 'local.modle'"):
        Settings.load({"local": {"modle": "x"}})
    with pytest.raises(SettingsError, match="routing.failure_threshold"):
        Settings.load({"routing": {"failure_threshold": 0}})
    with pytest.raises(SettingsError, match="stream.judge"):
        Settings.load({"stream": {"judge": "oracle"}})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file .*nope.toml"):
        Settings.load(tmp_path / "nope.toml")


def test_dict_source_and_overrides() -> None:
    """from_settings takes a dict; constructor overrides win over built tiers."""
    judge = KeywordJudge()
    llm = ChatStream.from_settings({"local": {"model": "llama3.2:1b"}}, env={}, judge=judge)
    assert llm.active_judge is judge and llm.cloud is None and llm.hpc is None
    assert llm.context_windows["local"] == 32768 and llm.context_reserve["local"] == 4096


def test_hpc_settings_need_relay_and_secret() -> None:
    with pytest.raises(SettingsError, match="relay_url"):
        ChatStream.from_settings({"hpc": {"endpoint_id": "abc"}}, env={})
    with pytest.raises(SettingsError, match="STREAM_RELAY_SECRET.*unset"):
        ChatStream.from_settings({"hpc": {"endpoint_id": "abc", "relay_url": "wss://r"}},
                                 env={})


def test_chatstream_rejects_unknown_arguments() -> None:
    """A typo in a privacy-relevant argument is an error, not silently ignored."""
    with pytest.raises(ValueError, match="allow_clod"):
        ChatStream(local=ChatOllama(model="x"), allow_clod=False)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least one tier"):
        ChatStream()


def test_hpc_settings_build_a_globus_backed_chathpc(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """[hpc] builds ChatHPC over globus_compute_sdk.Executor with the configured mode.

    The Globus service is not reachable here: the SDK Client gets a NullAuthorizer (neither
    constructor touches the network) and nothing is submitted.
    """
    import uuid

    import globus_sdk
    from globus_compute_sdk import Client, Executor

    from stream_langchain.tiers.hpc import ChatHPC

    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path))
    client = Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
    endpoint = str(uuid.uuid4())
    settings = {"hpc": {"endpoint_id": endpoint, "relay_url": "wss://relay.example.org",
                        "model": "llama-70b", "mode": "batch", "batch_fallback": False,
                        "amqp_port": 5671, "queue_timeout_s": 30}}
    llm = ChatStream.from_settings(settings, env={"STREAM_RELAY_SECRET": "s" * 32},
                                   globus_client=client)
    try:
        hpc = llm.hpc
        assert isinstance(hpc, ChatHPC) and isinstance(hpc.executor, Executor)
        assert str(hpc.executor.endpoint_id) == endpoint and hpc.executor.amqp_port == 5671
        assert (hpc.mode, hpc.batch_fallback, hpc.model, hpc.queue_timeout) == (
            "batch", False, "llama-70b", 30)
        assert "s" * 32 not in repr(hpc)
    finally:
        llm.hpc.executor.shutdown(wait=False, cancel_futures=True)  # type: ignore[union-attr]


def test_hpc_mode_is_validated() -> None:
    with pytest.raises(SettingsError, match="hpc.mode"):
        Settings.load({"hpc": {"mode": "carrier-pigeon"}})


@pytest.mark.parametrize(("kind", "name"), [
    ("auto", "embedded>transformer+keyword"),
    ("embedded", "embedded+keyword"),
    ("transformer", "transformer+keyword"),
])
def test_judge_kinds_build_the_named_judges(kind: str, name: str) -> None:
    from stream_langchain.judges import CascadeJudge

    llm = ChatStream.from_settings({"stream": {"judge": kind}, "local": {"model": "m"}}, env={})
    judge = llm.active_judge
    assert judge.name == name
    primary = judge.inner.judges[0]  # type: ignore[attr-defined]
    if isinstance(primary, CascadeJudge):
        assert primary.threshold == ESCALATE_BELOW
    out = judge.judge("Compare the causes of World War I and World War II.")
    assert out.judge in name.split("+")[0].split(">")


def test_default_settings_use_the_default_judge() -> None:
    assert Settings.load({}).stream.judge == "auto"


def test_capability_keys_and_windows_from_profiles() -> None:
    """``vision`` / ``tools`` per tier become ChatStream capabilities; an unset cloud window
    comes from the model's LangChain profile (gpt-4o-mini: 128000), a set one wins, and a
    model without a profile gets the paper's default; ``image_tokens`` reaches the router."""
    env = {"OPENAI_API_KEY": "sk-test-not-a-secret"}
    llm = ChatStream.from_settings({
        "local": {"model": "llama3.2:1b", "vision": True, "tools": False},
        "cloud": {"model": "gpt-4o-mini"},
        "context": {"image_tokens": 300}}, env=env, judge=KeywordJudge())
    assert llm.capabilities == {"local": {"vision": True, "tools": False}}
    assert llm.tier_capabilities["local"].vision is True
    assert llm.tier_capabilities["local"].tools is False
    assert "cloud" not in llm.context_windows and llm._window("cloud") == 128000
    assert llm.image_tokens == 300
    set_window = ChatStream.from_settings({"cloud": {"model": "gpt-4o-mini",
                                                     "context_window": 64000}},
                                          env=env, judge=KeywordJudge())
    assert set_window._window("cloud") == 64000
    unknown = ChatStream.from_settings({"cloud": {"model": "my-own-model"}}, env=env,
                                       judge=KeywordJudge())
    assert unknown._window("cloud") == 128000 and unknown.context_windows["cloud"] == 128000
    with pytest.raises(SettingsError, match="vision"):
        Settings.load({"cloud": {"model": "m", "vision": "yes please"}}, env={})
