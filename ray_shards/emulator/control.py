"""The control surface: ``/_emulator/<action>`` over HTTP (loopback tooling, no auth)."""

from __future__ import annotations

import json
import logging
import typing

from aiohttp import web

if typing.TYPE_CHECKING:
    from ray_shards.emulator.server import Emulator

__all__ = ["ControlApi"]

_LOGGER = logging.getLogger("ray_shards.emulator")

_Params: typing.TypeAlias = dict[str, typing.Any]
_Action: typing.TypeAlias = typing.Callable[["Emulator", _Params], typing.Any]


def _int(params: _Params, name: str) -> int:
    if name not in params:
        raise ValueError(f"missing parameter {name!r}")
    value = params[name]
    if isinstance(value, bool):
        raise ValueError(f"parameter {name!r} must be an integer")
    return int(value)


def _opt_int(params: _Params, name: str) -> int | None:
    value = params.get(name)
    return None if value is None or value == "" else int(value)


def _bool(params: _Params, name: str, default: bool) -> bool:
    value = params.get(name, default)
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


_READS: dict[str, _Action] = {
    "health": lambda emu, p: emu.health(),
    "stats": lambda emu, p: emu.stats(),
    "identify_log": lambda emu, p: emu.identify_log(),
    "resume_log": lambda emu, p: emu.resume_log(),
    "received": lambda emu, p: emu.received(_opt_int(p, "shard_id"), _opt_int(p, "op")),
    "rest_log": lambda emu, p: emu.rest_log(),
    "messages": lambda emu, p: emu.messages(),
    "interaction_responses": lambda emu, p: emu.interaction_responses(),
    "stream_sent": lambda emu, p: emu.stream_sent(),
    "script_sent": lambda emu, p: emu.script_sent(),
    "sessions": lambda emu, p: emu.sessions(),
    "guilds": lambda emu, p: (
        emu.guild_ids()
        if _opt_int(p, "shard_count") is None
        else emu.guilds_for_shard(_int(p, "shard_id"), _int(p, "shard_count"))
    ),
}

_WRITES: dict[str, _Action] = {
    "reset_logs": lambda emu, p: emu.reset_logs(),
    "reconnect": lambda emu, p: emu.reconnect(_int(p, "shard_id")),
    "invalidate": lambda emu, p: emu.invalidate(_int(p, "shard_id"), _bool(p, "resumable", False)),
    "close": lambda emu, p: emu.close(_int(p, "shard_id"), _opt_int(p, "code") or 4000),
    "drop": lambda emu, p: emu.drop(_int(p, "shard_id")),
    "zombie": lambda emu, p: emu.zombie(_int(p, "shard_id"), _bool(p, "enabled", True)),
    "dispatch": lambda emu, p: emu.dispatch(_int(p, "shard_id"), str(p["event_name"]), p.get("data")),
    "dispatch_to_guild": lambda emu, p: emu.dispatch_to_guild(_int(p, "guild_id"), str(p["event_name"]), p.get("data")),
    "interaction": lambda emu, p: emu.interaction(
        _int(p, "guild_id"), str(p["command_name"]), p.get("options"), _opt_int(p, "user_id")
    ),
    "set_limits": lambda emu, p: emu.set_limits(
        remaining=_opt_int(p, "remaining"),
        max_concurrency=_opt_int(p, "max_concurrency"),
        shards=_opt_int(p, "shards"),
        total=_opt_int(p, "total"),
    ),
    "script": lambda emu, p: emu.script(
        str(p["action"]), _opt_int(p, "guild_id"), content=p.get("content"), message_id=_opt_int(p, "message_id"),
        emoji=str(p.get("emoji") or "x"),
    ),
    "start_stream": lambda emu, p: emu.start_stream(float(p["rate"])),
    "stop_stream": lambda emu, p: emu.stop_stream(),
}


class ControlApi:
    """Serves ``GET``/``POST /_emulator/<action>`` for an `Emulator`.

    Reads accept GET (query parameters) or POST (JSON body); actions that change
    state require POST. Every answer is JSON: ``{"result": ...}`` or ``{"error": ...}``.

    Parameters
    ----------
    emulator
        The emulator to observe and control.
    """

    __slots__ = ("_emulator",)

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one control request."""
        action = request.match_info.get("action", "")
        params: _Params = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "the body must be a JSON object"}, status=400)
            if body is not None:
                if not isinstance(body, dict):
                    return web.json_response({"error": "the body must be a JSON object"}, status=400)
                params.update(body)
        handler = _READS.get(action)
        if handler is None:
            handler = _WRITES.get(action)
            if handler is not None and request.method != "POST":
                return web.json_response({"error": f"{action} requires POST"}, status=405)
        if handler is None:
            return web.json_response({"error": f"unknown control action {action!r}"}, status=404)
        try:
            result = handler(self._emulator, params)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        except Exception as exc:
            _LOGGER.exception("control action %s failed", action)
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
        return web.json_response({"result": result}, dumps=lambda obj: json.dumps(obj, default=str))
