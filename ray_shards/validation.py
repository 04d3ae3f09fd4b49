"""Argument checks for gateway commands, run before anything is sent anywhere.

They mirror what hikari's own shard checks (so a command is refused the same
way locally and remotely) and turn the arguments into plain values that cross
process boundaries.
"""

from __future__ import annotations

import datetime
import itertools
import typing

import hikari

from ray_shards.auth import mask_tokens
from ray_shards.presence import validate_activity

__all__ = ["member_request", "presence_update", "shard_for_guild", "voice_state"]

_UNDEFINED = hikari.UNDEFINED


_SNOWFLAKE_LIMIT = 1 << 64
_MAX_USERS = 100


def _snowflake(value: object, what: str) -> int:
    """Return the id of a snowflake-ish ``value`` (an int, a str of digits or an object with an ``id``).

    Raises
    ------
    TypeError
        For a bool, a float or any other type that is not an id.
    ValueError
        For a str that is not a decimal number, or an id outside 1..2**64-1.
    """
    if hasattr(value, "id") and not isinstance(value, int | str):
        value = value.id
    if isinstance(value, bool) or not isinstance(value, int | str):
        msg = f"{what} must be a snowflake (an int or a str of digits) or have an id, not {type(value).__name__}"
        raise TypeError(msg)
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 20:
            msg = f"{what} must be a snowflake: a str of up to 20 decimal digits"
            raise ValueError(msg)
        value = int(text)
    if not 0 < value < _SNOWFLAKE_LIMIT:
        msg = f"{what} must be a snowflake between 1 and 2**64-1, not {value}"
        raise ValueError(msg)
    return int(value)


def _check_shard_count(shard_count: object) -> int:
    if isinstance(shard_count, bool) or not isinstance(shard_count, int):
        msg = f"shard_count must be an int, not {type(shard_count).__name__}"
        raise TypeError(msg)
    if shard_count < 1:
        msg = f"shard_count must be at least 1, not {shard_count}"
        raise ValueError(msg)
    return shard_count


def shard_for_guild(guild: object, shard_count: int) -> int:
    """Return the shard id that receives events of ``guild`` (Discord's ``(id >> 22) % shard_count``).

    Raises
    ------
    TypeError, ValueError
        When ``guild`` is not a snowflake or ``shard_count`` is not an int of at least 1.
    """
    shard_count = _check_shard_count(shard_count)
    guild_id = _snowflake(guild, "guild")
    return (guild_id >> 22) % shard_count


def _optional_bool(value: object, name: str) -> None:
    if value is not _UNDEFINED and not isinstance(value, bool):
        msg = f"{name} must be a bool, not {type(value).__name__}"
        raise TypeError(msg)


def _check_users_type(users: object) -> None:
    if isinstance(users, str | bytes | bytearray) or not isinstance(users, typing.Iterable):
        msg = f"users must be a sequence of snowflakes or users, not {type(users).__name__}"
        raise TypeError(msg)


def _user_ids(users: object) -> list[int]:
    _check_users_type(users)
    assert isinstance(users, typing.Iterable)
    # Read at most one entry over the limit: ``users`` may be an endless iterator.
    entries = list(itertools.islice(users, _MAX_USERS + 1))
    if len(entries) > _MAX_USERS:
        msg = "'users' is limited to 100 users"
        raise ValueError(msg)
    return [_snowflake(u, "user") for u in entries]


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
    _optional_bool(include_presences, "include_presences")
    if users is not _UNDEFINED:
        _check_users_type(users)
    if nonce is not _UNDEFINED and not isinstance(nonce, str):
        msg = f"nonce must be a str, not {type(nonce).__name__}"
        raise TypeError(msg)
    # The order of the checks below is hikari's (GatewayShardImpl.request_guild_members).
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
    user_ids = None if users is _UNDEFINED else _user_ids(users)
    if isinstance(nonce, str):
        try:
            size = len(nonce.encode("utf-8"))
        except UnicodeEncodeError:
            msg = "nonce must be valid unicode (it has a lone surrogate)"
            raise ValueError(msg) from None
        if size > 32:
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
    _optional_bool(self_mute, "self_mute")
    _optional_bool(self_deaf, "self_deaf")
    return {
        "guild": _snowflake(guild, "guild"),
        "channel": None if channel is None else _snowflake(channel, "channel"),
        "self_mute": self_mute,
        "self_deaf": self_deaf,
    }


def _check_activity(activity: object) -> None:
    validate_activity(activity)  # type: ignore[arg-type]
    if not isinstance(activity, hikari.Activity):
        return
    if not isinstance(activity.name, str):
        msg = f"activity name must be a str, not {type(activity.name).__name__}"
        raise TypeError(msg)
    for name in ("url", "state"):
        value = getattr(activity, name)
        if value is not None and not isinstance(value, str):
            msg = f"activity {name} must be a str or None, not {type(value).__name__}"
            raise TypeError(msg)
    if isinstance(activity.type, bool) or not isinstance(activity.type, int):
        msg = f"activity type must be a hikari.ActivityType, not {type(activity.type).__name__}"
        raise TypeError(msg)
    if not isinstance(hikari.ActivityType(activity.type), hikari.ActivityType):
        msg = f"unknown activity type {int(activity.type)}; use a hikari.ActivityType"
        raise ValueError(msg)


def _check_status(status: object) -> hikari.Status:
    if not isinstance(status, str):
        msg = f"status must be a hikari.Status, not {type(status).__name__}"
        raise TypeError(msg)
    member = hikari.Status(status)  # hikari returns unknown values unchanged instead of raising
    if not isinstance(member, hikari.Status):
        valid = ", ".join(str(s) for s in hikari.Status)
        msg = f"unknown status {mask_tokens(status)[:40]!r}; use a hikari.Status ({valid})"
        raise ValueError(msg)
    return member


def presence_update(
    *,
    idle_since: hikari.UndefinedNoneOr[datetime.datetime] = _UNDEFINED,
    afk: hikari.UndefinedOr[bool] = _UNDEFINED,
    activity: hikari.UndefinedNoneOr[hikari.Activity] = _UNDEFINED,
    status: hikari.UndefinedOr[hikari.Status] = _UNDEFINED,
) -> dict[str, typing.Any]:
    """Check a presence update; return its arguments (hikari values, all picklable).

    Raises
    ------
    TypeError, ValueError
        For a value of the wrong type, an unknown status or activity type, or an
        ``idle_since`` that is not a representable point in time.
    """
    _check_activity(activity)
    if idle_since is not _UNDEFINED and idle_since is not None:
        if not isinstance(idle_since, datetime.datetime):
            msg = f"idle_since must be a datetime or None, not {type(idle_since).__name__}"
            raise TypeError(msg)
        try:
            # Hosts rebuild it from a timestamp: it must survive the round trip, and Discord wants unix time.
            stamp = idle_since.timestamp()
            datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC)
        except (OverflowError, OSError, ValueError):
            stamp = -1.0
        if stamp < 0:
            msg = f"idle_since must be a point in time after 1970-01-01 UTC, not {idle_since.isoformat()}"
            raise ValueError(msg)
    _optional_bool(afk, "afk")
    if status is not _UNDEFINED:
        status = _check_status(status)
    return {"idle_since": idle_since, "afk": afk, "activity": activity, "status": status}
