"""The production wiring: globus_compute_sdk.Executor built by ChatHPC.from_globus.

The Globus Compute web service is not reachable here, so nothing is submitted: the tests
build the real ``globus_compute_sdk.Executor`` around a real ``Client`` whose authorizer
sends no credentials (``NullAuthorizer``; neither constructor calls the network) and check
the mapping of settings onto it. Submitting needs the cloud and is not tested here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import globus_sdk
import pytest
from globus_compute_sdk import Client, Executor
from globus_compute_sdk.serialize import PureSourceDill

from stream_langchain.tiers.hpc import ChatHPC, globus_executor


@pytest.fixture
def offline_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path))
    return Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())


@pytest.fixture
def endpoint_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def built(offline_client: Client, endpoint_id: str) -> Iterator[ChatHPC]:
    llm = ChatHPC.from_globus(
        endpoint_id=endpoint_id,
        amqp_port=5671,
        task_group_id=None,
        client=offline_client,
        relay_url="wss://relay.example.org",
        relay_secret="x" * 32,
        backend_url="http://127.0.0.1:8000/v1",
        model="meta-llama/Llama-3.3-70B-Instruct",
        queue_timeout=30,
    )
    try:
        yield llm
    finally:
        llm.executor.shutdown(wait=False, cancel_futures=True)


def test_from_globus_builds_an_sdk_executor_for_the_endpoint(
    built: ChatHPC, endpoint_id: str
) -> None:
    """The executor is globus_compute_sdk.Executor for that endpoint and AMQP port."""
    ex = built.executor
    assert isinstance(ex, Executor)
    assert str(ex.endpoint_id) == endpoint_id
    assert ex.amqp_port == 5671


def test_from_globus_ships_functions_by_source(built: ChatHPC) -> None:
    """Functions are registered with the source strategy (endpoint needs only relay + httpx)."""
    assert isinstance(built.executor.serializer.code_serializer, PureSourceDill)


def test_from_globus_keeps_chat_settings(built: ChatHPC) -> None:
    """Relay, backend, model and timeouts land on the chat model; the secret stays hidden."""
    assert built.relay_url == "wss://relay.example.org"
    assert built.backend_url == "http://127.0.0.1:8000/v1"
    assert built.model == "meta-llama/Llama-3.3-70B-Instruct"
    assert built.queue_timeout == 30
    assert "x" * 32 not in repr(built)


def test_task_group_is_passed_through(offline_client: Client, endpoint_id: str) -> None:
    """A configured task group id is used by the executor."""
    group = str(uuid.uuid4())
    ex = globus_executor(endpoint_id, task_group_id=group, client=offline_client)
    try:
        assert str(ex.task_group_id) == group
    finally:
        ex.shutdown(wait=False)


def test_endpoint_id_must_be_a_uuid(offline_client: Client) -> None:
    """A malformed endpoint id is rejected with a message that names it."""
    with pytest.raises(ValueError, match="endpoint_id"):
        globus_executor("not-a-uuid", client=offline_client)
