"""The fake world: guilds, channels, roles, users and members, as Discord JSON."""

from __future__ import annotations

import typing

from ray_shards.emulator import ids
from ray_shards.emulator.protocol import dumps

__all__ = ["BOT_USERNAME", "JOINED_AT", "JSON", "World"]

JSON: typing.TypeAlias = dict[str, typing.Any]

BOT_USERNAME = "ray-shards-emulator"
JOINED_AT = "2024-01-01T00:00:00.000000+00:00"
_EVERYONE_PERMISSIONS = "1071698660929"


class World:
    """Deterministic guilds and members of the emulated bot.

    Parameters
    ----------
    guild_count
        Number of guilds; guild ``i`` has id ``(1000 + i) << 22``.
    members_per_guild
        Fake users in each guild (the bot is a member as well).
    """

    __slots__ = ("_by_shard_count", "_guild_create_cache", "_guild_ids", "guild_count", "members_per_guild")

    def __init__(self, guild_count: int, members_per_guild: int) -> None:
        self.guild_count = guild_count
        self.members_per_guild = members_per_guild
        self._guild_ids = [ids.guild_id(i) for i in range(guild_count)]
        self._guild_create_cache: dict[tuple[int, int, bool, bool], str] = {}
        self._by_shard_count: dict[int, list[list[int]]] = {}

    # -- guilds -------------------------------------------------------------------------------

    def guild_ids(self) -> list[int]:
        """Return every guild id, in index order."""
        return list(self._guild_ids)

    def join_guild(self) -> int:
        """The bot joins a new guild (the next index); return its id."""
        gid = ids.guild_id(self.guild_count)
        self.guild_count += 1
        self._guild_ids.append(gid)
        self._by_shard_count.clear()
        return gid

    def leave_guild(self, gid: int) -> None:
        """The bot leaves ``gid``, which must be the world's last guild (the most recently joined)."""
        if not self._guild_ids or self._guild_ids[-1] != gid:
            raise ValueError(f"only the last guild ({self._guild_ids[-1] if self._guild_ids else None}) can be left")
        self.guild_count -= 1
        self._guild_ids.pop()
        self._by_shard_count.clear()
        self._guild_create_cache = {k: v for k, v in self._guild_create_cache.items() if k[0] != gid}

    def has_guild(self, gid: int) -> bool:
        """Return whether ``gid`` is a guild of this world."""
        return ids.guild_index(gid, self.guild_count) is not None

    @staticmethod
    def shard_of(gid: int, shard_count: int) -> int:
        """Return the shard that owns guild ``gid``: ``(gid >> 22) % shard_count``."""
        return (gid >> 22) % shard_count

    def guilds_for_shard(self, shard_id: int, shard_count: int) -> list[int]:
        """Return the ids of the guilds that shard ``shard_id`` of ``shard_count`` receives."""
        if not 0 <= shard_id < shard_count:
            return []
        table = self._by_shard_count.get(shard_count)
        if table is None:
            table = [[] for _ in range(shard_count)]
            for gid in self._guild_ids:
                table[(gid >> 22) % shard_count].append(gid)
            if len(self._by_shard_count) < 64:
                self._by_shard_count[shard_count] = table
        return list(table[shard_id])

    # -- users ----------------------------------------------------------------------------------

    def member_numbers(self, gid: int) -> range:
        """Return the fake user numbers of the guild's members (the bot excluded)."""
        index = ids.guild_index(gid, self.guild_count)
        if index is None:
            return range(0)
        start = index * self.members_per_guild
        return range(start, start + self.members_per_guild)

    @staticmethod
    def user(number: int) -> JSON:
        """Return the user object of fake user ``number``."""
        return {
            "id": str(ids.user_id(number)),
            "username": f"user{number}",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": False,
            "public_flags": 0,
        }

    @staticmethod
    def bot_user(bot_id: int) -> JSON:
        """Return the public user object of the bot."""
        return {
            "id": str(bot_id),
            "username": BOT_USERNAME,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
        }

    @classmethod
    def my_user(cls, bot_id: int) -> JSON:
        """Return the bot's own user object (``/users/@me`` and READY)."""
        return {
            **cls.bot_user(bot_id),
            "mfa_enabled": False,
            "verified": True,
            "email": None,
            "flags": 0,
            "locale": "en-US",
            "premium_type": 0,
        }

    @staticmethod
    def member(user: JSON) -> JSON:
        """Return a guild member object wrapping ``user``."""
        return {
            "user": user,
            "nick": None,
            "avatar": None,
            "roles": [],
            "joined_at": JOINED_AT,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }

    def members(self, gid: int, bot_id: int) -> list[JSON]:
        """Return the guild's members: the fake users, then the bot."""
        result = [self.member(self.user(n)) for n in self.member_numbers(gid)]
        result.append(self.member(self.bot_user(bot_id)))
        return result

    @staticmethod
    def presence(user: JSON, gid: int) -> JSON:
        """Return an online presence for a member."""
        return {
            "user": {"id": user["id"]},
            "guild_id": str(gid),
            "status": "online",
            "activities": [],
            "client_status": {"desktop": "online"},
        }

    def owner_id(self, gid: int, bot_id: int) -> int:
        """Return the guild owner (its first fake user, else the bot)."""
        numbers = self.member_numbers(gid)
        return ids.user_id(numbers[0]) if numbers else bot_id

    # -- channels and guild objects -------------------------------------------------------------

    @staticmethod
    def text_channel(gid: int) -> JSON:
        """Return the guild's text channel object."""
        return {
            "id": str(ids.text_channel_id(gid)),
            "type": 0,
            "guild_id": str(gid),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "last_pin_timestamp": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    @staticmethod
    def voice_channel(gid: int) -> JSON:
        """Return the guild's voice channel object."""
        return {
            "id": str(ids.voice_channel_id(gid)),
            "type": 2,
            "guild_id": str(gid),
            "name": "voice",
            "position": 1,
            "permission_overwrites": [],
            "bitrate": 64000,
            "user_limit": 0,
            "rtc_region": None,
            "video_quality_mode": 1,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "nsfw": False,
            "flags": 0,
        }

    @staticmethod
    def everyone_role(gid: int) -> JSON:
        """Return the @everyone role (its id is the guild id)."""
        return {
            "id": str(gid),
            "name": "@everyone",
            "color": 0,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": 0,
            "permissions": _EVERYONE_PERMISSIONS,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def guild_name(self, gid: int) -> str:
        """Return the guild's name."""
        return f"guild{ids.guild_index(gid, self.guild_count)}"

    def guild_create(self, gid: int, bot_id: int, *, presences: bool, large_threshold: int) -> JSON:
        """Return the full GUILD_CREATE payload of a guild.

        Parameters
        ----------
        gid
            Guild id.
        bot_id
            The bot's user id (it is a member).
        presences
            Include member presences (the client asked for GUILD_PRESENCES).
        large_threshold
            From IDENTIFY; the guild is ``large`` above this member count.

        Returns
        -------
        JSON
            The guild object.
        """
        members = self.members(gid, bot_id)
        member_count = len(members)
        return {
            "id": str(gid),
            "name": self.guild_name(gid),
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id(gid, bot_id)),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [self.everyone_role(gid)],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(ids.text_channel_id(gid)),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_presences": None,
            "max_members": 500_000,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "incidents_data": None,
            "joined_at": JOINED_AT,
            "large": member_count > large_threshold,
            "unavailable": False,
            "member_count": member_count,
            "voice_states": [],
            "members": members,
            "channels": [self.text_channel(gid), self.voice_channel(gid)],
            "threads": [],
            "presences": [self.presence(m["user"], gid) for m in members] if presences else [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    def guild_create_json(self, gid: int, bot_id: int, *, presences: bool, large_threshold: int) -> str:
        """Return `guild_create` serialized, cached per variant."""
        large = len(self.member_numbers(gid)) + 1 > large_threshold
        key = (gid, bot_id, presences, large)
        cached = self._guild_create_cache.get(key)
        if cached is None:
            payload = self.guild_create(gid, bot_id, presences=presences, large_threshold=large_threshold)
            cached = dumps(payload)
            if len(self._guild_create_cache) < 50_000:
                self._guild_create_cache[key] = cached
        return cached
