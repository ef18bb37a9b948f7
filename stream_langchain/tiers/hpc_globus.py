"""Production wiring of the HPC tier: ``globus_compute_sdk.Executor`` and the serializer.

Kept apart from :mod:`stream_langchain.tiers.hpc` so ChatHPC itself depends on nothing but a
``concurrent.futures.Executor``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["globus_endpoint_status", "globus_executor", "shipped_serializer"]


def shipped_serializer() -> Any:
    """The ``ComputeSerializer`` ChatHPC ships functions with: by source (``PureSourceDill``).

    Source serialization means the endpoint runs the client's version of
    :mod:`hpc_functions` and needs only ``relay`` and ``httpx`` installed, not this package.

    Returns:
        A ``globus_compute_sdk.serialize.ComputeSerializer``.
    """
    from globus_compute_sdk.serialize import ComputeSerializer, PureSourceDill

    return ComputeSerializer(strategy_code=PureSourceDill())


def globus_executor(
    endpoint_id: str,
    *,
    amqp_port: int | None = 443,
    task_group_id: str | None = None,
    client: Any = None,
    **kwargs: Any,
) -> concurrent.futures.Executor:
    """Build the production executor: ``globus_compute_sdk.Executor`` for one endpoint.

    Args:
        endpoint_id: The Globus Compute endpoint UUID on the HPC system.
        amqp_port: Port for the results queue (the service accepts 443, 5671, 5672).
        task_group_id: Reuse a task group (optional).
        client: A ``globus_compute_sdk.Client`` (default: the SDK builds one, which uses
            your Globus login or ``GLOBUS_COMPUTE_CLIENT_ID``/``_SECRET``).
        **kwargs: More ``globus_compute_sdk.Executor`` arguments.

    Returns:
        The executor (reuse it across requests; shut it down when done).

    Raises:
        ImportError: If ``globus-compute-sdk`` is not installed (the ``hpc`` extra).
        ValueError: If ``endpoint_id`` is not a UUID.
    """
    import uuid

    try:
        uuid.UUID(str(endpoint_id))
    except ValueError:
        raise ValueError(
            f"endpoint_id must be a Globus Compute endpoint UUID: {endpoint_id!r}"
        ) from None
    try:
        from globus_compute_sdk import Executor
    except ImportError as exc:
        raise ImportError(
            "the HPC tier needs globus-compute-sdk: pip install 'stream-tiered[hpc]'"
        ) from exc
    return Executor(  # type: ignore[no-any-return]
        endpoint_id=endpoint_id,
        amqp_port=amqp_port,
        task_group_id=task_group_id,
        client=client,
        serializer=shipped_serializer(),
        **kwargs,
    )


def globus_endpoint_status(
    executors: Mapping[str, Any], *, ttl_s: float = 30.0
) -> Callable[[str], str | None]:
    """What Globus Compute reports about each endpoint (``"online"``, ``"offline"``, ...).

    ChatHPC skips an endpoint reported ``"offline"`` before submitting to it. Answers are
    cached for ``ttl_s`` seconds; a failed lookup is ``None`` (unknown: the endpoint is tried
    and its queue timeout decides).

    Args:
        executors: Endpoint id -> its ``globus_compute_sdk.Executor`` (whose ``client`` asks).
        ttl_s: Seconds an answer is reused.

    Returns:
        ``status(endpoint_id) -> str | None`` (blocking: call it from a thread).
    """
    cache: dict[str, tuple[float, str | None]] = {}
    lock = threading.Lock()

    def status(endpoint_id: str) -> str | None:
        now = time.monotonic()
        with lock:
            hit = cache.get(endpoint_id)
        if hit is not None and now - hit[0] < ttl_s:
            return hit[1]
        client: Any = getattr(executors.get(endpoint_id), "client", None)
        try:
            state = str(client.get_endpoint_status(endpoint_id)["status"]).lower()
        except Exception:  # noqa: BLE001 - unknown status: try the endpoint anyway
            state = None
        with lock:
            cache[endpoint_id] = (now, state)
        return state

    return status
