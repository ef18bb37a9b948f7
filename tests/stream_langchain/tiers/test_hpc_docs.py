"""docs/deployment.md: its endpoint config and settings are valid for the real loaders."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

DOC = (Path(__file__).resolve().parents[3] / "docs" / "deployment.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_endpoint_config_loads_with_globus_compute_endpoint() -> None:
    """The config.yaml in the guide is accepted by globus-compute-endpoint's own loader."""
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
    from globus_compute_endpoint.engines import GlobusComputeEngine

    (block,) = _blocks("yaml")
    config = load_config_yaml(block)
    assert config.amqp_port == 443
    assert isinstance(config.engine, GlobusComputeEngine)
    provider = config.engine.executor.provider
    assert type(provider).__name__ == "SlurmProvider"
    assert "vllm serve" in provider.worker_init


def test_settings_block_is_valid_hpc_settings() -> None:
    """The stream.toml in the guide validates and maps onto the HPC tier's fields."""
    from stream_langchain.settings import Settings

    (block,) = [b for b in _blocks("toml") if "[hpc]" in b]
    settings = Settings.load(tomllib.loads(block), env={})
    hpc = settings.hpc
    assert hpc.enabled and hpc.relay_url == "wss://relay.example.edu"
    assert hpc.backend_url == "http://127.0.0.1:8000/v1"
    assert (hpc.queue_timeout_s, hpc.first_token_timeout_s, hpc.idle_timeout_s) == (300, 120, 60)


@pytest.mark.parametrize(
    "name",
    [
        "HPCQueueTimeout",
        "HPCFirstTokenTimeout",
        "HPCIdleTimeout",
        "HPCRemoteError",
        "HPCTaskError",
        "shipped_serializer",
    ],
)
def test_names_in_the_guide_exist(name: str) -> None:
    """Every stream_langchain.tiers.hpc name the guide tells readers about exists."""
    import stream_langchain.tiers.hpc as hpc

    assert name in DOC and hasattr(hpc, name)
