"""`RemoteShard`: a `hikari.api.GatewayShard` for a shard that runs in another process.

Its state (alive, connected, latency) comes from the Orchestrator's shard table
as last fetched by its owner (a `Client` or a `Bot`), and its operations are
sent as commands to the host that runs the shard, wherever that is.
"""

from __future__ import annotations

import asyncio
import typing

import hikari
from typing_extensions import override

from ray_shards import validation
from ray_shards.models import CommandKind, ShardInfo, ShardStatus

__all__ = ["RemoteShard", "ShardCommander"]


class ShardCommander(typing.Protocol):
    """What a `RemoteShard` needs from its owner."""

    def shard_info(self, shard_id: int) -> ShardInfo | None:
        """The latest table row of ``shard_id``."""

    @property
    def intents(self) -> hikari.Intents:
        """The bot's intents."""

    @property
    def bot_id(self) -> int:
        """The bot's user id."""

    async def send_command(self, kind: CommandKind, shard_id: int, arguments: dict[str, typing.Any]) -> None:
        """Run a command on the host that owns ``shard_id``."""


class RemoteShard(hikari.api.GatewayShard):
    """A shard of this bot that runs in another process (possibly on another machine).

    Parameters
    ----------
    commander
        The `Client` or `Bot` that fetched it.
    shard_id
        Its shard id.
    shard_count
        The bot's shard count.
    """

    __slots__ = ("_commander", "_shard_count", "_shard_id")

    def __init__(self, commander: ShardCommander, shard_id: int, shard_count: int) -> None:
        self._commander = commander
        self._shard_id = shard_id
        self._shard_count = shard_count

    def __repr__(self) -> str:
        info = self.info
        status = info.status.value if info else "unknown"
        host = info.host_id if info else None
        return f"RemoteShard(id={self._shard_id}, shard_count={self._shard_count}, status={status}, host={host})"

    @property
    def info(self) -> ShardInfo | None:
        """The latest table row of this shard (host, node, status, latency, seq...)."""
        return self._commander.shard_info(self._shard_id)

    @property
    @override
    def capabilities(self) -> hikari.GatewayCapabilities:
        return hikari.GatewayCapabilities.NONE

    @property
    @override
    def heartbeat_latency(self) -> float:
        info = self.info
        return info.latency if info else float("nan")

    @property
    @override
    def id(self) -> int:
        return self._shard_id

    @property
    @override
    def intents(self) -> hikari.Intents:
        return self._commander.intents

    @property
    @override
    def is_alive(self) -> bool:
        info = self.info
        return bool(info and info.is_alive)

    @property
    @override
    def is_connected(self) -> bool:
        info = self.info
        return bool(info and info.status is ShardStatus.READY)

    @property
    @override
    def shard_count(self) -> int:
        info = self.info
        return info.shard_count if info else self._shard_count

    @override
    async def close(self) -> None:
        msg = "a remote shard is closed by closing the bot (Client.close) or its host, not from a proxy"
        raise NotImplementedError(msg)

    @override
    async def start(self) -> None:
        msg = "remote shards are started by their hosts; use Client.recommended_shard to run one here"
        raise NotImplementedError(msg)

    @override
    async def join(self) -> None:
        while self.is_alive:
            await asyncio.sleep(0.5)

    @override
    def get_user_id(self) -> hikari.Snowflake:
        """The bot's user id: every shard of a bot logs in as the same user, whose id the token names.

        Raises
        ------
        hikari.ComponentStateConflictError
            While no host runs the shard, as hikari's shard raises before it is READY.
        """
        if not self.is_alive:
            msg = f"shard {self._shard_id} is not running on any host, so it has no user id yet"
            raise hikari.ComponentStateConflictError(msg)
        return hikari.Snowflake(self._commander.bot_id)

    async def reconnect(self) -> None:
        """Make the host drop this shard's connection and RESUME it (a restart without a new IDENTIFY)."""
        await self._commander.send_command(CommandKind.RECONNECT, self._shard_id, {})

    @override
    async def request_channel_info(
        self, guild: hikari.SnowflakeishOr[hikari.PartialGuild], *, fields: typing.Sequence[typing.Any]
    ) -> None:
        # Sent to the host that runs the guild's shard, like a member request (op 43 there).
        arguments = {"guild": int(guild), "fields": [str(field) for field in fields]}
        await self._commander.send_command(CommandKind.REQUEST_CHANNEL_INFO, self._shard_id, arguments)

    @override
    async def request_guild_members(
        self,
        guild: hikari.SnowflakeishOr[hikari.PartialGuild],
        *,
        include_presences: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        query: str = "",
        limit: int = 0,
        users: hikari.UndefinedOr[hikari.SnowflakeishSequence[hikari.User]] = hikari.UNDEFINED,
        nonce: hikari.UndefinedOr[str] = hikari.UNDEFINED,
    ) -> None:
        arguments = validation.member_request(
            self.intents, guild, include_presences=include_presences, query=query, limit=limit, users=users,
            nonce=nonce,
        )
        await self._commander.send_command(CommandKind.REQUEST_MEMBERS, self._shard_id, arguments)

    @override
    async def update_presence(
        self,
        *,
        idle_since: hikari.UndefinedNoneOr[typing.Any] = hikari.UNDEFINED,
        afk: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED,
        status: hikari.UndefinedOr[hikari.Status] = hikari.UNDEFINED,
    ) -> None:
        arguments = validation.presence_update(idle_since=idle_since, afk=afk, activity=activity, status=status)
        await self._commander.send_command(CommandKind.PRESENCE, self._shard_id, arguments)

    @override
    async def update_voice_state(
        self,
        guild: hikari.SnowflakeishOr[hikari.PartialGuild],
        channel: hikari.SnowflakeishOr[hikari.GuildVoiceChannel] | None,
        *,
        self_mute: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        self_deaf: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
    ) -> None:
        arguments = validation.voice_state(guild, channel, self_mute=self_mute, self_deaf=self_deaf)
        await self._commander.send_command(CommandKind.VOICE_STATE, self._shard_id, arguments)
