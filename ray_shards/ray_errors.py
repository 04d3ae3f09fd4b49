"""What a Ray call's failure says, as the Orchestrator reports it: the remote error itself, not Ray's wrapper."""

from __future__ import annotations

import asyncio
import logging
import typing

from ray_shards.effects import describe_error

__all__ = ["log_background_failure", "task_failure", "unwrap_ray_error"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


def unwrap_ray_error(exc: BaseException) -> BaseException:
    """The error a remote call raised (the Orchestrator, a host behind it), without Ray's RayTaskError wrapping
    (which repeats the remote traceback); ``exc`` itself when it wraps no exception."""
    import ray.exceptions

    cause: BaseException = exc
    while isinstance(cause, ray.exceptions.RayTaskError) and isinstance(getattr(cause, "cause", None), BaseException):
        cause = cause.cause
    return cause if isinstance(cause, Exception) else exc


def task_failure(task: asyncio.Task[typing.Any], what: str, *, unwrap: bool) -> str | None:
    """``"Type: message"`` of how ``task`` failed (None: it succeeded), as the long operations' cores record failures.

    ``unwrap``: show the host's own error rather than Ray's wrapper around it (a host start).
    """
    if task.cancelled():
        return f"CancelledError: {what} was cancelled"
    exc = task.exception()
    if exc is None:
        return None
    return describe_error(unwrap_ray_error(exc) if unwrap else exc)


def log_background_failure(task: asyncio.Task[typing.Any]) -> None:
    """Done-callback of a background task of the Orchestrator's (a retirement, a quarantine): log a failure."""
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("background step failed: %s", task.exception())
