"""Discord gateway protocol constants and frame encoding helpers."""

from __future__ import annotations

import json
import typing

__all__ = [
    "ALL_INTENTS",
    "CLIENT_OPS",
    "PRIVILEGED_INTENTS",
    "Close",
    "Intent",
    "Op",
    "dispatch_frame",
    "dumps",
]


class Op:
    """Gateway opcodes."""

    DISPATCH: typing.Final = 0
    HEARTBEAT: typing.Final = 1
    IDENTIFY: typing.Final = 2
    PRESENCE_UPDATE: typing.Final = 3
    VOICE_STATE_UPDATE: typing.Final = 4
    RESUME: typing.Final = 6
    RECONNECT: typing.Final = 7
    REQUEST_GUILD_MEMBERS: typing.Final = 8
    INVALID_SESSION: typing.Final = 9
    HELLO: typing.Final = 10
    HEARTBEAT_ACK: typing.Final = 11
    REQUEST_CHANNEL_INFO: typing.Final = 43


CLIENT_OPS: frozenset[int] = frozenset(
    {
        Op.HEARTBEAT,
        Op.IDENTIFY,
        Op.PRESENCE_UPDATE,
        Op.VOICE_STATE_UPDATE,
        Op.RESUME,
        Op.REQUEST_GUILD_MEMBERS,
        Op.REQUEST_CHANNEL_INFO,
    }
)
"""Opcodes a client may send; anything else is closed with 4001."""


class Close:
    """Gateway close codes (and the reasons Discord gives)."""

    UNKNOWN_ERROR: typing.Final = 4000
    UNKNOWN_OPCODE: typing.Final = 4001
    DECODE_ERROR: typing.Final = 4002
    NOT_AUTHENTICATED: typing.Final = 4003
    AUTHENTICATION_FAILED: typing.Final = 4004
    ALREADY_AUTHENTICATED: typing.Final = 4005
    INVALID_SEQ: typing.Final = 4007
    RATE_LIMITED: typing.Final = 4008
    SESSION_TIMED_OUT: typing.Final = 4009
    INVALID_SHARD: typing.Final = 4010
    SHARDING_REQUIRED: typing.Final = 4011
    INVALID_API_VERSION: typing.Final = 4012
    INVALID_INTENTS: typing.Final = 4013
    DISALLOWED_INTENTS: typing.Final = 4014

    REASONS: typing.Final[dict[int, str]] = {
        4000: "Unknown error.",
        4001: "Unknown opcode.",
        4002: "Error while decoding payload.",
        4003: "Not authenticated.",
        4004: "Authentication failed.",
        4005: "Already authenticated.",
        4007: "Invalid seq.",
        4008: "Rate limited.",
        4009: "Session timed out.",
        4010: "Invalid shard.",
        4011: "Sharding required.",
        4012: "Invalid API version.",
        4013: "Invalid intent(s).",
        4014: "Disallowed intent(s).",
    }


class Intent:
    """Gateway intent bits the emulator knows about."""

    GUILDS: typing.Final = 1 << 0
    GUILD_MEMBERS: typing.Final = 1 << 1
    GUILD_PRESENCES: typing.Final = 1 << 8
    GUILD_MESSAGES: typing.Final = 1 << 9
    MESSAGE_CONTENT: typing.Final = 1 << 15


ALL_INTENTS: int = sum(1 << bit for bit in (*range(17), 20, 21, 24, 25))
"""Every intent bit Discord defines (same value as ``hikari.Intents.ALL``)."""

PRIVILEGED_INTENTS: int = Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT
"""GUILD_MEMBERS, GUILD_PRESENCES and MESSAGE_CONTENT."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: object) -> str:
    """Serialize to compact JSON.

    Parameters
    ----------
    obj
        Any JSON-compatible value.

    Returns
    -------
    str
        The JSON text.
    """
    return _ENCODER.encode(obj)


def dispatch_frame(seq: int, event_name: str, data_json: str) -> str:
    """Build an op 0 DISPATCH frame from pre-serialized data.

    Parameters
    ----------
    seq
        Sequence number of the dispatch.
    event_name
        Event name (``t``), e.g. ``"MESSAGE_CREATE"``.
    data_json
        The already serialized ``d`` object.

    Returns
    -------
    str
        The frame's JSON text.
    """
    return f'{{"op":0,"s":{seq},"t":{_ENCODER.encode(event_name)},"d":{data_json}}}'
