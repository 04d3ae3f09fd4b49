"""Per-shard commands sent straight to the host actor that runs the shard: one hop, fenced by epoch.

A member request, a voice state update or one shard's presence goes from a `Client`
(or a `Bot` for a shard on another host) to the `ShardHost` actor that runs the
shard, named by the lease epoch of the caller's latest table row. The host refuses
a stale epoch (`StaleLeaseError`): the shard moved since the caller last looked.
The caller then refreshes its table and sends once more. Whatever cannot go direct
-- no row yet, the shard between hosts, a host without an actor handle (a standalone
`Bot` or a Client's own shard), or a second refusal -- goes through the Orchestrator,
which waits for a hand-over in progress to finish. A host that does not answer in time may
still run the command, so only presence and voice state (setting the same state twice is
harmless) are sent on after a timeout; other commands raise `CommandOutcomeUnknownError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

import ray
import ray.exceptions

from ray_shards.errors import CommandOutcomeUnknownError, StaleLeaseError
from ray_shards.link import unwrap_ray_error
from ray_shards.models import CommandKind, ShardInfo, ShardStatus

if typing.TYPE_CHECKING:
    from ray_shards.link import OrchestratorLink

__all__ = ["DIRECT_KINDS", "IDEMPOTENT_KINDS", "DirectCommands"]

_LOGGER = logging.getLogger("ray_shards.direct_commands")

DIRECT_KINDS: typing.Final[frozenset[CommandKind]] = frozenset(
    {
        CommandKind.REQUEST_MEMBERS,
        CommandKind.VOICE_STATE,
        CommandKind.PRESENCE,
        CommandKind.REQUEST_CHANNEL_INFO,
        CommandKind.RECONNECT,
    }
)
"""Commands for one shard that a host runs when asked directly (bot-wide ones go through the Orchestrator)."""

IDEMPOTENT_KINDS: typing.Final[frozenset[CommandKind]] = frozenset({CommandKind.PRESENCE, CommandKind.VOICE_STATE})
"""Commands that set state: sending one twice changes nothing, so one whose outcome is unknown is sent again."""

_HANDLES_REFRESH_S: typing.Final[float] = 1.0
"""Ask the Orchestrator for host handles at most this often when a host is not known yet."""


class DirectCommands:
    """Sends per-shard commands to the owning host's actor (see the module docstring).

    Parameters
    ----------
    link
        The caller's link to the Orchestrator (for host handles).
    lookup
        The caller's latest table row of a shard.
    refresh
        Fetches the table again (after a refusal).
    key
        `ray_shards.auth.command_key` of the bot token.
    timeout
        How long one direct call may take before the command goes through the Orchestrator.
    """

    __slots__ = ("_handles", "_handles_at", "_key", "_link", "_lookup", "_refresh", "_timeout", "fallbacks", "sent")

    def __init__(
        self,
        link: OrchestratorLink,
        lookup: typing.Callable[[int], ShardInfo | None],
        refresh: typing.Callable[[], typing.Awaitable[object]],
        key: str,
        timeout: float,
    ) -> None:
        self._link = link
        self._lookup = lookup
        self._refresh = refresh
        self._key = key
        self._timeout = timeout
        self._handles: dict[str, typing.Any] = {}
        self._handles_at = -float("inf")
        self.sent = 0
        """Commands a host ran when asked directly."""
        self.fallbacks = 0
        """Commands that went through the Orchestrator instead."""

    async def _handle(self, host_id: str) -> typing.Any:
        handle = self._handles.get(host_id)
        if handle is None and time.monotonic() - self._handles_at > _HANDLES_REFRESH_S:
            self._handles_at = time.monotonic()
            self._handles = dict(await self._link.host_handles(retry_for=2.0))
            handle = self._handles.get(host_id)
        return handle

    async def send(self, kind: CommandKind, shard_id: int, arguments: dict[str, typing.Any]) -> bool:
        """Run the command on the shard's host directly; return False when it must go through the Orchestrator.

        Raises
        ------
        Exception
            What the host raised running the command (for example a `CommandFailedError`).
        """
        if kind not in DIRECT_KINDS:
            return False
        for attempt in range(2):
            info = self._lookup(shard_id)
            if info is None or info.host_id is None or info.status is not ShardStatus.READY:
                break
            handle = await self._handle(info.host_id)
            if handle is None:
                break
            try:
                await asyncio.wait_for(
                    handle.command.remote(self._key, kind, shard_id, info.epoch, arguments), self._timeout
                )
            except ray.exceptions.RayTaskError as exc:
                cause = unwrap_ray_error(exc)
                if not isinstance(cause, StaleLeaseError):
                    raise cause from None
                _LOGGER.debug("shard %s moved off host %s (attempt %s); refreshing", shard_id, info.host_id, attempt)
            except (ray.exceptions.ActorUnavailableError, TimeoutError) as exc:
                # The host is alive but slow or briefly unreachable: the command may still run there (or already
                # has). Only a command that sets state may be sent again; a second member request would be a
                # second op 8 at Discord.
                self._handles.pop(info.host_id, None)
                if kind not in IDEMPOTENT_KINDS:
                    msg = (
                        f"the host of shard {shard_id} did not answer a {kind.value} command within "
                        f"{self._timeout:g} s ({type(exc).__name__}); it may or may not have reached Discord, and "
                        "it was not sent again; retry if you need it"
                    )
                    raise CommandOutcomeUnknownError(msg) from None
            except ray.exceptions.RayActorError:
                # The host died: its shard is (or soon will be) elsewhere, and a command it had not run is lost
                # with it. (One it had already written to Discord would be sent again: a host death in the
                # middle of a call is the one case a direct command is at-least-once.)
                self._handles.pop(info.host_id, None)
            else:
                self.sent += 1
                return True
            if attempt == 0:
                await self._refresh()
        self.fallbacks += 1
        return False
