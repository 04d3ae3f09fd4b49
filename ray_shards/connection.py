"""Connecting to Ray and finding a bot's Orchestrator actor."""

from __future__ import annotations

import logging
import os
import socket

import ray

__all__ = [
    "NAMESPACE",
    "OrchestratorNotFoundError",
    "RayUnreachableError",
    "ensure_ray",
    "host_actor_name",
    "orchestrator_name",
]

_LOGGER = logging.getLogger("ray_shards.connection")

NAMESPACE = "ray_shards"
"""The Ray namespace every ray_shards actor lives in, whatever namespace the driver uses."""


class RayUnreachableError(ConnectionError):
    """The Ray cluster at the given address could not be reached."""


class OrchestratorNotFoundError(LookupError):
    """No Orchestrator runs for this bot on the cluster."""


def orchestrator_name(bot_id: int) -> str:
    """The Ray actor name of the Orchestrator of bot ``bot_id`` (the token's first segment, decoded)."""
    return f"orchestrator-{bot_id}"


def host_actor_name(bot_id: int, host_id: str) -> str:
    """The Ray actor name of one shard host of bot ``bot_id``."""
    return f"host-{bot_id}-{host_id}"


def _check_gcs_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast for a ``HOST:PORT`` GCS address nobody listens on: `ray.init` retries it for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        msg = (
            f"cannot reach a Ray cluster at {address!r}: {exc}. Start one with `ray start --head`, "
            "or pass the right address (auto, ray://HOST:10001, HOST:6379)."
        )
        raise RayUnreachableError(msg) from None


def _is_client_address(address: str | None) -> bool:
    """Whether ``address`` is a Ray Client address (``ray://``), which takes fewer `ray.init` options."""
    return isinstance(address, str) and address.startswith("ray://")


def ensure_ray(address: str | None) -> None:
    """Connect this process to Ray unless it already is.

    ``address`` is a Ray address: ``"auto"`` (the cluster this machine belongs to),
    ``"ray://host:10001"`` (Ray Client), ``"host:6379"`` (the GCS), ``"local"`` (start a
    new local cluster) or None (Ray's own default: connect to a running cluster,
    else start one). When Ray is already initialised in this process, that
    connection is used and ``address`` is ignored.

    Raises
    ------
    RayUnreachableError
        When no cluster answers at ``address``.
    """
    if ray.is_initialized():
        return
    if address is not None and not isinstance(address, str):
        msg = f"the orchestrator address must be a Ray address string, not {type(address).__name__}"
        raise TypeError(msg)
    kwargs: dict[str, object] = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
    if address not in (None, "", "local"):
        kwargs["address"] = address
    elif address == "local":
        kwargs["address"] = "local"
    if isinstance(address, str):
        _check_gcs_reachable(address)
    if os.environ.get("RAY_SHARDS_INCLUDE_DASHBOARD") == "0":
        kwargs["include_dashboard"] = False
    from ray_shards.logs import ray_logging_config

    logging_config = ray_logging_config()
    if logging_config is not None and not _is_client_address(address):
        kwargs["logging_config"] = logging_config
    try:
        ray.init(**kwargs)  # type: ignore[arg-type]
        if "logging_config" in kwargs:
            from ray_shards.logs import hand_over_to_ray

            hand_over_to_ray()
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        msg = (
            f"cannot reach a Ray cluster at {address!r}: {exc}. Start one with `ray start --head`, "
            "or pass the right address (auto, ray://HOST:10001, HOST:6379)."
        )
        raise RayUnreachableError(msg) from None
