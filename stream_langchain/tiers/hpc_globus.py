"""Production wiring of the HPC tier: ``globus_compute_sdk.Executor`` and the serializer.

Kept apart from :mod:`stream_langchain.tiers.hpc` so ChatHPC itself depends on nothing but a
``concurrent.futures.Executor``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

__all__ = ["globus_executor", "shipped_serializer"]


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
