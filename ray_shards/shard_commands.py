"""Run one per-shard gateway command on a local shard: the part a host and a Client's own shard share.

A `Command` names the operation and carries plain (picklable) arguments; this turns
it into the hikari shard call. Bot-wide and resharding commands are the host's own
business and are not handled here.
"""

from __future__ import annotations

import typing

from ray_shards.models import Command, CommandKind

if typing.TYPE_CHECKING:
    import hikari

__all__ = ["SHARD_COMMANDS", "run_shard_command"]

SHARD_COMMANDS: typing.Final = frozenset(
    {CommandKind.PRESENCE, CommandKind.VOICE_STATE, CommandKind.REQUEST_MEMBERS, CommandKind.REQUEST_CHANNEL_INFO}
)
"""The command kinds `run_shard_command` runs."""


async def run_shard_command(shard: hikari.api.GatewayShard, command: Command) -> None:
    """Send ``command`` through ``shard`` (one of `SHARD_COMMANDS`).

    Raises
    ------
    ValueError
        For a command kind that is not a per-shard gateway command.
    """
    args = command.arguments
    if command.kind is CommandKind.PRESENCE:
        await shard.update_presence(**args)
    elif command.kind is CommandKind.VOICE_STATE:
        await shard.update_voice_state(
            args["guild"], args["channel"], self_mute=args["self_mute"], self_deaf=args["self_deaf"]
        )
    elif command.kind is CommandKind.REQUEST_MEMBERS:
        await shard.request_guild_members(
            args["guild"],
            include_presences=args["include_presences"],
            query=args["query"],
            limit=args["limit"],
            users=args["users"],
            nonce=args["nonce"],
        )
    elif command.kind is CommandKind.REQUEST_CHANNEL_INFO:
        await shard.request_channel_info(args["guild"], fields=args["fields"])
    else:
        msg = f"{command.kind.value} is not a per-shard gateway command"
        raise ValueError(msg)
