"""Scripted guild events beside the MESSAGE_CREATE stream: edits, reactions, guild joins and leaves.

Each call dispatches one event into every resumable session (any shard count) covering its guild,
like the stream, and records it in the recorder's ``script_sent`` log, so tests can compare what
listeners handled with what was sent. Reaction events of one (message, user, emoji) have identical
payloads each time (added, removed, added again), as Discord sends them.
"""

from __future__ import annotations

import time
import typing

from ray_shards.emulator import ids, payloads
from ray_shards.emulator.gateway import Gateway
from ray_shards.emulator.ids import SnowflakeGenerator
from ray_shards.emulator.protocol import dumps
from ray_shards.emulator.recorder import Entry, Recorder
from ray_shards.emulator.world import JSON, World

__all__ = ["SCRIPT_ACTIONS", "ScriptedEvents"]

SCRIPT_ACTIONS = ("edit", "react_add", "react_remove", "join", "leave")
"""``edit`` (MESSAGE_UPDATE), ``react_add`` / ``react_remove`` (MESSAGE_REACTION_ADD / _REMOVE), ``join``
(GUILD_CREATE without ``unavailable``: the world gains a guild) and ``leave`` (GUILD_DELETE without
``unavailable``: the world loses its last guild)."""


class ScriptedEvents:
    """Builds, dispatches and records scripted events (see the module docstring)."""

    __slots__ = ("_bot_id", "_count", "_gateway", "_messages", "_recorder", "_snowflakes", "_world")

    def __init__(
        self, *, gateway: Gateway, world: World, recorder: Recorder, snowflakes: SnowflakeGenerator, bot_id: int
    ) -> None:
        self._gateway = gateway
        self._world = world
        self._recorder = recorder
        self._snowflakes = snowflakes
        self._bot_id = bot_id
        self._count = 0
        self._messages: dict[int, int] = {}

    def _message_id(self, gid: int) -> int:
        """The guild's scripted message (the one edits and reactions are about)."""
        if gid not in self._messages:
            self._messages[gid] = self._snowflakes.next()
        return self._messages[gid]

    def _author(self, gid: int) -> tuple[JSON, JSON]:
        numbers = self._world.member_numbers(gid)
        user = World.user(numbers[0]) if numbers else World.bot_user(self._bot_id)
        return user, World.member(user)

    def run(
        self,
        action: str,
        guild_id: int | None = None,
        *,
        content: str | None = None,
        message_id: int | None = None,
        emoji: str = "x",
    ) -> Entry:
        """Dispatch one scripted event; return its ``script_sent`` entry.

        Parameters
        ----------
        action
            One of `SCRIPT_ACTIONS`.
        guild_id
            The guild (default: the first; for ``leave`` the last). Ignored by ``join``.
        content
            The new content of an ``edit`` (default ``edit <n>``).
        message_id
            The message of an ``edit`` or reaction (default: the guild's scripted message).
        emoji
            The reaction's emoji name.
        """
        if action not in SCRIPT_ACTIONS:
            raise ValueError(f"unknown scripted action {action!r}; one of {', '.join(SCRIPT_ACTIONS)}")
        guilds = self._world.guild_ids()
        if action == "join":
            gid = self._world.join_guild()
        elif guild_id is not None:
            gid = guild_id
        elif not guilds:
            raise ValueError("the emulator has no guilds")
        else:
            gid = guilds[-1] if action == "leave" else guilds[0]
        if action != "join" and not self._world.has_guild(gid):
            raise ValueError(f"unknown guild {gid}")
        self._count += 1
        entry: Entry = {"n": self._count, "action": action, "guild_id": gid, "time": time.time()}
        data: JSON
        if action == "edit":
            mid = message_id or self._message_id(gid)
            author, member = self._author(gid)
            text = content if content is not None else f"edit {self._count}"
            data = payloads.message(
                message_id=mid, channel_id=ids.text_channel_id(gid), author=author, content=text, guild_id=gid,
                member=member, extra={"edited_timestamp": ids.iso_timestamp(time.time())},
            )
            name = "MESSAGE_UPDATE"
            entry.update(message_id=mid, content=text)
        elif action in ("react_add", "react_remove"):
            mid = message_id or self._message_id(gid)
            user, member = self._author(gid)
            data = {
                "user_id": user["id"], "channel_id": str(ids.text_channel_id(gid)), "message_id": str(mid),
                "guild_id": str(gid), "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0,
            }
            if action == "react_add":
                data["member"] = member
                name = "MESSAGE_REACTION_ADD"
            else:
                name = "MESSAGE_REACTION_REMOVE"
            entry.update(message_id=mid, emoji=emoji)
        elif action == "join":
            data = self._world.guild_create(gid, self._bot_id, presences=False, large_threshold=250)
            del data["unavailable"]  # a join, not a guild becoming available
            name = "GUILD_CREATE"
        else:
            data = {"id": str(gid)}  # no "unavailable": the bot left (was removed from) the guild
            name = "GUILD_DELETE"
        entry["event"] = name
        entry["sessions"] = self._gateway.dispatch_to_guild(gid, name, dumps(data))
        if action == "leave":
            self._world.leave_guild(gid)
        self._recorder.script_sent.append(entry)
        return dict(entry)

    def sent(self) -> list[Entry]:
        """Every scripted event so far (since the logs were reset)."""
        return [dict(e) for e in self._recorder.script_sent]

    def describe(self) -> dict[str, typing.Any]:
        """The scripted messages per guild."""
        return {str(g): m for g, m in self._messages.items()}
