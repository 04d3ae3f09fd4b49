"""Builders of the Discord JSON objects the emulator sends (besides the world's guilds)."""

from __future__ import annotations

import typing

from ray_shards.emulator import ids
from ray_shards.emulator.world import JSON, World

__all__ = [
    "application",
    "command_echo",
    "interaction_callback_response",
    "member_chunks",
    "message",
    "normalize_options",
    "ready",
    "slash_interaction",
    "voice_server_update",
    "voice_state",
]

_ALL_PERMISSIONS = "2251799813685247"
_CHUNK_SIZE = 1000


def ready(
    *,
    world: World,
    bot_id: int,
    session_id: str,
    resume_gateway_url: str,
    shard: tuple[int, int],
) -> JSON:
    """Return the READY payload of a new session."""
    guilds = world.guilds_for_shard(*shard)
    return {
        "v": 10,
        "user": World.my_user(bot_id),
        "guilds": [{"id": str(gid), "unavailable": True} for gid in guilds],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_gateway_url,
        "shard": list(shard),
        "application": {"id": str(bot_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
        "_trace": ["ray-shards-emulator"],
    }


def application(bot_id: int, guild_count: int) -> JSON:
    """Return the application object of the bot (``/oauth2/applications/@me``)."""
    return {
        "id": str(bot_id),
        "name": "ray-shards-emulator",
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": 0,
        "owner": World.user(0) | {"id": str(ids.user_id(9_999_999))},
        "team": None,
        "bot": World.bot_user(bot_id),
        "rpc_origins": [],
        "tags": [],
        "approximate_guild_count": guild_count,
        "approximate_user_install_count": 0,
        "integration_types_config": {"0": {}},
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "hook": True,
    }


def message(
    *,
    message_id: int,
    channel_id: int,
    author: JSON,
    content: str,
    guild_id: int | None = None,
    member: JSON | None = None,
    extra: JSON | None = None,
) -> JSON:
    """Return a full message object (MESSAGE_CREATE and REST responses)."""
    payload: JSON = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": ids.iso_timestamp(ids.snowflake_time(message_id)),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "components": [],
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        if member is not None:
            payload["member"] = {k: v for k, v in member.items() if k != "user"}
    if extra:
        payload.update(extra)
    return payload


def command_echo(
    body: JSON,
    *,
    command_id: int,
    application_id: int,
    guild_id: int | None,
    version: int,
) -> JSON:
    """Return the stored form of an application command sent by a client."""
    command_type = int(body.get("type", 1) or 1)
    result: JSON = {
        "id": str(command_id),
        "application_id": str(application_id),
        "version": str(version),
        "type": command_type,
        "name": body.get("name", ""),
        "name_localizations": body.get("name_localizations"),
        "description": body.get("description", "") if command_type == 1 else "",
        "description_localizations": body.get("description_localizations"),
        "options": body.get("options") or [],
        "default_member_permissions": body.get("default_member_permissions"),
        "dm_permission": body.get("dm_permission", True),
        "nsfw": bool(body.get("nsfw", False)),
        "guild_id": str(guild_id) if guild_id is not None else None,
        "integration_types": body.get("integration_types") or [0],
        "contexts": body.get("contexts"),
    }
    return result


def _option_type(value: object) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def normalize_options(options: typing.Any) -> list[JSON]:
    """Turn ``{"name": value}`` or a list of option objects into interaction options.

    Parameters
    ----------
    options
        `None`, a mapping of option name to value, or a list of Discord option objects.

    Returns
    -------
    list[JSON]
        Discord interaction option objects.
    """
    if not options:
        return []
    if isinstance(options, dict):
        return [{"name": str(k), "type": _option_type(v), "value": v} for k, v in options.items()]
    return [dict(option) for option in options]


def slash_interaction(
    *,
    interaction_id: int,
    token: str,
    bot_id: int,
    guild_id: int,
    command_id: int,
    command_name: str,
    options: list[JSON],
    user: JSON,
    registered_guild_id: int | None,
) -> JSON:
    """Return an INTERACTION_CREATE payload for a slash command used in a guild."""
    channel_id = ids.text_channel_id(guild_id)
    data: JSON = {"id": str(command_id), "name": command_name, "type": 1, "options": options}
    if registered_guild_id is not None:
        data["guild_id"] = str(registered_guild_id)
    return {
        "id": str(interaction_id),
        "application_id": str(bot_id),
        "type": 2,
        "data": data,
        "guild_id": str(guild_id),
        "guild_locale": "en-US",
        "channel_id": str(channel_id),
        "channel": {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": "general",
            "permissions": _ALL_PERMISSIONS,
            "parent_id": None,
            "nsfw": False,
            "flags": 0,
        },
        "member": World.member(user) | {"permissions": _ALL_PERMISSIONS},
        "token": token,
        "version": 1,
        "app_permissions": _ALL_PERMISSIONS,
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id)},
        "context": 0,
        "attachment_size_limit": 26_214_400,
    }


def interaction_callback_response(
    *, interaction_id: int, response_type: int, message_payload: JSON | None, ephemeral: bool
) -> JSON:
    """Return the body of ``POST /interactions/{id}/{token}/callback?with_response=true``."""
    callback: JSON = {
        "id": str(interaction_id),
        "type": 2,
        "response_message_loading": response_type == 5,
        "response_message_ephemeral": ephemeral,
    }
    result: JSON = {"interaction": callback}
    if message_payload is not None:
        callback["response_message_id"] = message_payload["id"]
        result["resource"] = {"type": response_type, "message": message_payload}
    return result


def voice_state(
    *, gid: int, channel_id: object, bot_user: JSON, session_id: str, self_mute: bool, self_deaf: bool
) -> JSON:
    """Return the VOICE_STATE_UPDATE payload for the bot."""
    return {
        "guild_id": str(gid),
        "channel_id": None if channel_id is None else str(channel_id),
        "user_id": bot_user["id"],
        "member": World.member(bot_user),
        "session_id": session_id,
        "deaf": False,
        "mute": False,
        "self_deaf": self_deaf,
        "self_mute": self_mute,
        "self_stream": False,
        "self_video": False,
        "suppress": False,
        "request_to_speak_timestamp": None,
    }


def voice_server_update(*, gid: int, token: str, endpoint: str) -> JSON:
    """Return the VOICE_SERVER_UPDATE payload."""
    return {"token": token, "guild_id": str(gid), "endpoint": endpoint}


def member_chunks(
    *,
    world: World,
    gid: int,
    bot_id: int,
    request: JSON,
) -> list[JSON]:
    """Answer an op 8 REQUEST_GUILD_MEMBERS for one guild.

    Parameters
    ----------
    world
        The fake world.
    gid
        The guild requested.
    bot_id
        The bot user id (the bot is a member).
    request
        The op 8 ``d`` object: ``query``, ``limit``, ``user_ids``, ``presences``, ``nonce``.

    Returns
    -------
    list[JSON]
        The GUILD_MEMBERS_CHUNK payloads, at least one.
    """
    members = world.members(gid, bot_id)
    not_found: list[str] = []
    raw_user_ids = request.get("user_ids")
    if raw_user_ids is not None:
        wanted = [str(u) for u in (raw_user_ids if isinstance(raw_user_ids, list) else [raw_user_ids])]
        by_id = {m["user"]["id"]: m for m in members}
        selected = [by_id[u] for u in wanted if u in by_id]
        not_found = [u for u in wanted if u not in by_id]
    else:
        query = str(request.get("query") or "").lower()
        limit = int(request.get("limit") or 0)
        selected = [m for m in members if m["user"]["username"].lower().startswith(query)]
        if limit > 0:
            selected = selected[:limit]
    chunks = [selected[i : i + _CHUNK_SIZE] for i in range(0, len(selected), _CHUNK_SIZE)] or [[]]
    result = []
    for index, chunk in enumerate(chunks):
        payload: JSON = {
            "guild_id": str(gid),
            "members": chunk,
            "chunk_index": index,
            "chunk_count": len(chunks),
        }
        if index == 0 and not_found:
            payload["not_found"] = not_found
        if request.get("presences"):
            payload["presences"] = [World.presence(m["user"], gid) for m in chunk]
        if request.get("nonce") is not None:
            payload["nonce"] = request["nonce"]
        result.append(payload)
    return result
