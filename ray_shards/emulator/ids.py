"""Snowflakes: the deterministic ids of the fake world and fresh increasing ids."""

from __future__ import annotations

import datetime
import time

__all__ = [
    "DISCORD_EPOCH_MS",
    "SnowflakeGenerator",
    "guild_id",
    "guild_index",
    "iso_timestamp",
    "snowflake_time",
    "text_channel_id",
    "user_id",
    "voice_channel_id",
]

DISCORD_EPOCH_MS = 1_420_070_400_000
_GUILD_BASE = 1000
_USER_BASE = 10_000_000


def guild_id(index: int) -> int:
    """Return the id of guild ``index``; it lives on shard ``(index + 1000) % shard_count``.

    Parameters
    ----------
    index
        Guild number, 0-based.

    Returns
    -------
    int
        ``(1000 + index) << 22``.
    """
    return (_GUILD_BASE + index) << 22


def guild_index(gid: int, guild_count: int) -> int | None:
    """Invert `guild_id`.

    Parameters
    ----------
    gid
        A guild id.
    guild_count
        Number of guilds in the world.

    Returns
    -------
    int | None
        The index, or `None` if ``gid`` is not a guild of this world.
    """
    if gid & ((1 << 22) - 1):
        return None
    index = (gid >> 22) - _GUILD_BASE
    return index if 0 <= index < guild_count else None


def text_channel_id(gid: int) -> int:
    """Return the id of the guild's text channel."""
    return gid + 1


def voice_channel_id(gid: int) -> int:
    """Return the id of the guild's voice channel."""
    return gid + 2


def user_id(number: int) -> int:
    """Return the id of fake user ``number`` (named ``user{number}``)."""
    return (_USER_BASE + number) << 22


def snowflake_time(snowflake: int) -> float:
    """Return the UNIX time encoded in a snowflake."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000.0


def iso_timestamp(unix: float) -> str:
    """Format a UNIX time the way Discord does (ISO 8601, UTC offset)."""
    return datetime.datetime.fromtimestamp(unix, tz=datetime.UTC).isoformat(timespec="microseconds")


class SnowflakeGenerator:
    """Strictly increasing snowflakes derived from the current time."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """Return a new snowflake greater than every one returned before.

        Returns
        -------
        int
            The snowflake.
        """
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last
