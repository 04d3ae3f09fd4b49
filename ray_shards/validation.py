"""Argument checks for gateway commands, run before anything is sent anywhere.

They mirror what hikari's own shard checks (so a command is refused the same
way locally and remotely) and turn the arguments into plain values that cross
process boundaries.
"""

from __future__ import annotations

import datetime
import typing

import hikari

from ray_shards.presence import validate_activity

__all__ = ["member_request", "presence_update", "shard_for_guild", "voice_state"]

_UNDEFINED = hikari.UNDEFINED


def _snowflake(value: object, what: str) -> int:
    if isinstance(value, bool):
        msg = f"{what} must be a snowflake or an object with an id, not a bool"
        raise TypeError(msg)
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        pass
    if hasattr(value, "id"):
        return int(value.id)
    msg = f"{what} must be a snowflake or an object with an id, not {type(value).__name__}"
    raise TypeError(msg)


def shard_for_guild(guild: object, shard_count: int) -> int:
    """Return the shard id that receives events of ``guild`` (Discord's ``(id >> 22) % shard_count``)."""
    guild_id = _snowflake(guild, "guild")
    if guild_id <= 0:
        msg = f"guild id must be positive, not {guild_id}"
        raise ValueError(msg)
    return (guild_id >> 22) % shard_count


def member_request(
    intents: hikari.Intents,
    guild: object,
    *,
    include_presences: hikari.UndefinedOr[bool] = _UNDEFINED,
    query: str = "",
    limit: int = 0,
    users: hikari.UndefinedOr[typing.Any] = _UNDEFINED,
    nonce: hikari.UndefinedOr[str] = _UNDEFINED,
) -> dict[str, typing.Any]:
    """Check a guild member request as the API reference specifies; return its plain arguments.

    Raises
    ------
    ValueError
        When ``users`` is given with ``query``/``limit``, ``limit`` is not within 0..100,
        ``users`` has over 100 entries, or ``nonce`` is over 32 bytes.
    hikari.MissingIntentError
        When presences are requested without ``GUILD_PRESENCES``, or the full member
        list without ``GUILD_MEMBERS``.
    """
    guild_id = _snowflake(guild, "guild")
    if not isinstance(query, str):
        msg = f"query must be a str, not {type(query).__name__}"
        raise TypeError(msg)
    if isinstance(limit, bool) or not isinstance(limit, int):
        msg = f"limit must be an int, not {type(limit).__name__}"
        raise TypeError(msg)
    if not query and not limit and not intents & hikari.Intents.GUILD_MEMBERS:
        raise hikari.MissingIntentError(hikari.Intents.GUILD_MEMBERS)
    if include_presences and not intents & hikari.Intents.GUILD_PRESENCES:
        raise hikari.MissingIntentError(hikari.Intents.GUILD_PRESENCES)
    if users is not _UNDEFINED and (query or limit):
        msg = "Cannot specify limit/query with users"
        raise ValueError(msg)
    if not 0 <= limit <= 100:
        msg = "'limit' must be between 0 and 100, both inclusive"
        raise ValueError(msg)
    user_ids: list[int] | None = None
    if users is not _UNDEFINED:
        user_ids = [_snowflake(u, "user") for u in users]
        if len(user_ids) > 100:
            msg = "'users' is limited to 100 users"
            raise ValueError(msg)
    if nonce is not _UNDEFINED:
        if not isinstance(nonce, str):
            msg = f"nonce must be a str, not {type(nonce).__name__}"
            raise TypeError(msg)
        if len(nonce.encode("utf-8")) > 32:
            msg = "'nonce' can be no longer than 32 byte characters long."
            raise ValueError(msg)
    return {
        "guild": guild_id,
        "include_presences": include_presences,
        "query": query,
        "limit": limit,
        "users": _UNDEFINED if user_ids is None else user_ids,
        "nonce": nonce,
    }


def voice_state(
    guild: object,
    channel: object | None,
    *,
    self_mute: hikari.UndefinedOr[bool] = _UNDEFINED,
    self_deaf: hikari.UndefinedOr[bool] = _UNDEFINED,
) -> dict[str, typing.Any]:
    """Check a voice state update; return its plain arguments."""
    for name, value in (("self_mute", self_mute), ("self_deaf", self_deaf)):
        if value is not _UNDEFINED and not isinstance(value, bool):
            msg = f"{name} must be a bool, not {type(value).__name__}"
            raise TypeError(msg)
    return {
        "guild": _snowflake(guild, "guild"),
        "channel": None if channel is None else _snowflake(channel, "channel"),
        "self_mute": self_mute,
        "self_deaf": self_deaf,
    }


def presence_update(
    *,
    idle_since: hikari.UndefinedNoneOr[datetime.datetime] = _UNDEFINED,
    afk: hikari.UndefinedOr[bool] = _UNDEFINED,
    activity: hikari.UndefinedNoneOr[hikari.Activity] = _UNDEFINED,
    status: hikari.UndefinedOr[hikari.Status] = _UNDEFINED,
) -> dict[str, typing.Any]:
    """Check a presence update; return its arguments (hikari values, all picklable)."""
    validate_activity(activity)
    if idle_since is not _UNDEFINED and idle_since is not None and not isinstance(idle_since, datetime.datetime):
        msg = f"idle_since must be a datetime or None, not {type(idle_since).__name__}"
        raise TypeError(msg)
    if afk is not _UNDEFINED and not isinstance(afk, bool):
        msg = f"afk must be a bool, not {type(afk).__name__}"
        raise TypeError(msg)
    if status is not _UNDEFINED:
        try:
            status = hikari.Status(status)
        except ValueError:
            msg = f"unknown status {status!r}; use a hikari.Status"
            raise ValueError(msg) from None
    return {"idle_since": idle_since, "afk": afk, "activity": activity, "status": status}
