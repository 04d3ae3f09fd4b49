"""Applying a new presence on one host: one hop to its actor, or through its mailbox when that cannot work."""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from ray_shards.errors import StaleLeaseError
from ray_shards.models import CommandKind
from ray_shards.ray_errors import unwrap_ray_error

if typing.TYPE_CHECKING:
    from ray_shards.host_mailboxes import Mailboxes
    from ray_shards.presence import PresenceState

__all__ = ["push_presence"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


async def push_presence(
    host_id: str,
    handle: typing.Any,
    key: str | None,
    presence: PresenceState,
    version: int,
    *,
    mail: Mailboxes,
    timeout: float,
) -> None:
    """Apply ``presence`` (version ``version``) on ``host_id`` within ``timeout``.

    Pushed to its actor ``handle`` with the command ``key`` (`ray_shards.auth.command_key`) when both are
    known; through its mailbox when there is no handle (a Client's own shards), no key yet (a restarted
    Orchestrator learns it at the first authenticate) or the push could not reach the host.

    Raises
    ------
    ray.exceptions.ActorDiedError
        When the host is gone (its shards move, and identify or resume with the stored presence).
    CommandFailedError, ShardUnavailableError
        When the host refused it or did not run it in time.
    """
    import ray.exceptions

    deadline = time.monotonic() + timeout
    if handle is not None and key is not None:
        try:
            await asyncio.wait_for(handle.apply_presence.remote(key, presence, version), timeout)
            return
        except ray.exceptions.ActorDiedError:
            raise
        except Exception as exc:
            error = unwrap_ray_error(exc)
            if not isinstance(
                error, (StaleLeaseError, ray.exceptions.ActorUnavailableError, TimeoutError, AttributeError)
            ):
                # The host refused the key, or a shard failed to send: the mailbox would not do better.
                raise error from None
            # Not started yet, unreachable for a moment, or a host without the method (an older version):
            # the mailbox reaches it on its next sync (a push that landed after all is just sent again).
            _LOGGER.info("presence push to host %s failed (%s: %s); sending it through the mailbox",
                         host_id, type(error).__name__, error)
    arguments = {"presence": presence, "version": version}
    await mail.run(host_id, CommandKind.PRESENCE, None, arguments, max(1.0, deadline - time.monotonic()))
