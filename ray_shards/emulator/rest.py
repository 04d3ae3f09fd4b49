"""The REST API under ``/api/v10``: the endpoints hikari and hikari-arc call."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import typing

from aiohttp import web

from ray_shards.emulator import ids, payloads
from ray_shards.emulator.commands import CommandStore
from ray_shards.emulator.config import DEFAULT_BOT_ID, EmulatorConfig, bot_id_from_token, token_matches
from ray_shards.emulator.ids import SnowflakeGenerator
from ray_shards.emulator.interactions import AckResult, InteractionStore
from ray_shards.emulator.limits import IdentifyLimiter
from ray_shards.emulator.recorder import Recorder
from ray_shards.emulator.world import JSON, World

__all__ = ["API_PREFIX", "RestApi"]

_LOGGER = logging.getLogger("ray_shards.emulator")

API_PREFIX = "/api/v10"
_MESSAGE_TYPES_WITH_MESSAGE = frozenset({4, 5, 7})
_EPHEMERAL = 1 << 6
_LOADING = 1 << 7


@dataclasses.dataclass(slots=True)
class _Call:
    request: web.Request
    params: dict[str, str]
    body: typing.Any
    bot_id: int


_Handler: typing.TypeAlias = typing.Callable[[_Call], typing.Awaitable[web.StreamResponse]]


def _error(status: int, message: str, code: int = 0) -> web.Response:
    return web.json_response({"message": message, "code": code}, status=status)


def _optional_int(value: str | None) -> int | None:
    return int(value) if value else None


class RestApi:
    """Routes REST requests, checks ``Authorization`` and records every call.

    Parameters
    ----------
    config
        The emulator configuration.
    world
        The guilds.
    limiter
        Provides ``session_start_limit``.
    recorder
        Receives the REST log, posted messages and interaction responses.
    commands
        Application command storage.
    interactions
        Interactions created by the control surface.
    snowflakes
        Source of new ids.
    gateway_url
        Returns the gateway URL to advertise.
    recommended_shards
        Returns the shard count to recommend.
    """

    __slots__ = (
        "_commands",
        "_config",
        "_gateway_url",
        "_interactions",
        "_limiter",
        "_originals",
        "_recommended_shards",
        "_recorder",
        "_routes",
        "_snowflakes",
        "_world",
    )

    def __init__(
        self,
        *,
        config: EmulatorConfig,
        world: World,
        limiter: IdentifyLimiter,
        recorder: Recorder,
        commands: CommandStore,
        interactions: InteractionStore,
        snowflakes: SnowflakeGenerator,
        gateway_url: typing.Callable[[], str],
        recommended_shards: typing.Callable[[], int],
    ) -> None:
        self._config = config
        self._world = world
        self._limiter = limiter
        self._recorder = recorder
        self._commands = commands
        self._interactions = interactions
        self._snowflakes = snowflakes
        self._gateway_url = gateway_url
        self._recommended_shards = recommended_shards
        self._originals: dict[str, JSON] = {}
        commands_path = r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands"
        webhook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        table: list[tuple[str, str, _Handler, bool]] = [
            ("GET", r"/gateway", self._gateway, False),
            ("GET", r"/gateway/bot", self._gateway_bot, True),
            ("GET", r"/users/@me", self._me, True),
            ("GET", r"/(?:oauth2/)?applications/@me", self._application, True),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self._post_message, True),
            ("POST", r"/interactions/(?P<interaction>\d+)/(?P<token>[^/]+)/callback", self._callback, False),
            ("POST", webhook, self._followup, False),
            ("GET", webhook + r"/messages/(?P<message>[^/]+)", self._get_webhook_message, False),
            ("PATCH", webhook + r"/messages/(?P<message>[^/]+)", self._edit_webhook_message, False),
            ("DELETE", webhook + r"/messages/(?P<message>[^/]+)", self._delete_webhook_message, False),
            ("GET", commands_path + r"/permissions", self._command_permissions, True),
            ("GET", commands_path, self._list_commands, True),
            ("PUT", commands_path, self._overwrite_commands, True),
            ("POST", commands_path, self._create_command, True),
            ("GET", commands_path + r"/(?P<command>\d+)", self._get_command, True),
            ("PATCH", commands_path + r"/(?P<command>\d+)", self._edit_command, True),
            ("DELETE", commands_path + r"/(?P<command>\d+)", self._delete_command, True),
        ]
        self._routes = [
            (method, re.compile(pattern + r"/?"), handler, auth) for method, pattern, handler, auth in table
        ]

    # -- dispatch -----------------------------------------------------------------------------

    def _authorized_bot(self, request: web.Request) -> int | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bot "):
            return None
        token = header[4:]
        if not token_matches(token, self._config.accepted_tokens()):
            return None
        return bot_id_from_token(token) or DEFAULT_BOT_ID

    async def _read_body(self, request: web.Request) -> typing.Any:
        if request.method in ("GET", "DELETE", "HEAD") or not request.can_read_body:
            return None
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            raw = form.get("payload_json")
            if isinstance(raw, str):
                return json.loads(raw)
            if isinstance(raw, bytes | bytearray):
                return json.loads(raw.decode())
            return None
        text = await request.text()
        return json.loads(text) if text else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one REST request under ``/api/...``."""
        path = request.path
        entry: dict[str, typing.Any] = {
            "method": request.method,
            "path": path,
            "query": dict(request.query),
            "json": None,
            "status": 0,
            "time": time.time(),
        }
        self._recorder.rest_log.append(entry)
        try:
            response = await self._route(request, path, entry)
        except Exception:
            _LOGGER.exception("REST handler failed for %s %s", request.method, path)
            response = _error(500, "500: Internal Server Error")
        entry["status"] = response.status
        return response

    async def _route(self, request: web.Request, path: str, entry: dict[str, typing.Any]) -> web.StreamResponse:
        try:
            entry["json"] = await self._read_body(request)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "400: Bad Request", 50109)
        if not path.startswith(API_PREFIX + "/"):
            return _error(404, "404: Not Found")
        sub_path = path[len(API_PREFIX) :]
        matched_path = False
        for method, pattern, handler, needs_auth in self._routes:
            match = pattern.fullmatch(sub_path)
            if match is None:
                continue
            matched_path = True
            if method != request.method:
                continue
            bot_id = self._authorized_bot(request)
            if needs_auth and bot_id is None:
                return _error(401, "401: Unauthorized")
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            return await handler(_Call(request, params, entry["json"], bot_id or DEFAULT_BOT_ID))
        if matched_path:
            return _error(405, "405: Method Not Allowed")
        return _error(404, "404: Not Found")

    # -- gateway, users, application ----------------------------------------------------------

    async def _gateway(self, call: _Call) -> web.StreamResponse:
        return web.json_response({"url": self._gateway_url()})

    async def _gateway_bot(self, call: _Call) -> web.StreamResponse:
        return web.json_response(
            {
                "url": self._gateway_url(),
                "shards": self._recommended_shards(),
                "session_start_limit": self._limiter.session_start_limit(),
            }
        )

    async def _me(self, call: _Call) -> web.StreamResponse:
        return web.json_response(World.my_user(call.bot_id))

    async def _application(self, call: _Call) -> web.StreamResponse:
        return web.json_response(payloads.application(call.bot_id, self._world.guild_count))

    # -- messages -----------------------------------------------------------------------------

    def _guild_of_channel(self, channel_id: int) -> int | None:
        for offset in (1, 2):
            if self._world.has_guild(channel_id - offset):
                return channel_id - offset
        return None

    def _bot_message(self, *, channel_id: int, guild_id: int | None, body: JSON, bot_id: int, flags: int = 0) -> JSON:
        bot_user = World.bot_user(bot_id)
        embeds = [e for e in body.get("embeds") or [] if isinstance(e, dict)]
        return payloads.message(
            message_id=self._snowflakes.next(),
            channel_id=channel_id,
            author=bot_user,
            content=str(body.get("content") or ""),
            guild_id=guild_id,
            member=World.member(bot_user) if guild_id is not None else None,
            extra={"embeds": embeds, "flags": int(body.get("flags") or 0) | flags, "tts": bool(body.get("tts"))},
        )

    async def _post_message(self, call: _Call) -> web.StreamResponse:
        channel_id = int(call.params["channel"])
        guild_id = self._guild_of_channel(channel_id)
        if guild_id is None:
            return _error(404, "Unknown Channel", 10003)
        body = call.body if isinstance(call.body, dict) else {}
        message = self._bot_message(channel_id=channel_id, guild_id=guild_id, body=body, bot_id=call.bot_id)
        self._recorder.messages.append(
            {
                "id": int(message["id"]),
                "channel_id": channel_id,
                "guild_id": guild_id,
                "content": message["content"],
                "json": call.body,
                "time": time.time(),
            }
        )
        return web.json_response(message)

    # -- interactions and webhooks ------------------------------------------------------------

    def _interaction_channel(self, token: str) -> tuple[int, int | None]:
        found = self._interactions.lookup(token)
        if found is None:
            return 0, None
        return ids.text_channel_id(found[0]), found[0]

    def _record_response(self, kind: str, call: _Call, *, response_type: int | None = None) -> None:
        body = call.body if isinstance(call.body, dict) else {}
        interaction_id = call.params.get("interaction")
        data = body.get("data") if kind == "callback" else body
        self._recorder.interaction_responses.append(
            {
                "kind": kind,
                "interaction_id": int(interaction_id) if interaction_id else None,
                "application_id": _optional_int(call.params.get("app")),
                "type": response_type,
                "data": data,
                "content": (data or {}).get("content") if isinstance(data, dict) else None,
                "time": time.time(),
            }
        )

    async def _callback(self, call: _Call) -> web.StreamResponse:
        interaction_id = int(call.params["interaction"])
        token = call.params["token"]
        result = self._interactions.acknowledge(interaction_id, token)
        if result is AckResult.UNKNOWN:
            return _error(404, "Unknown interaction", 10062)
        if result is AckResult.ALREADY_ACKNOWLEDGED:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        body = call.body if isinstance(call.body, dict) else {}
        response_type = int(body.get("type") or 0)
        self._record_response("callback", call, response_type=response_type)
        raw_data = body.get("data")
        data: JSON = raw_data if isinstance(raw_data, dict) else {}
        message: JSON | None = None
        if response_type in _MESSAGE_TYPES_WITH_MESSAGE:
            channel_id, guild_id = self._interaction_channel(token)
            found = self._interactions.lookup(token)
            application_id = found[1] if found is not None else call.bot_id
            message = self._bot_message(
                channel_id=channel_id,
                guild_id=guild_id,
                body=data,
                bot_id=application_id,
                flags=_LOADING if response_type == 5 else 0,
            )
            message["application_id"] = str(application_id)
            message["type"] = 20
            self._originals[token] = message
        if call.request.query.get("with_response", "").lower() != "true":
            return web.Response(status=204)
        return web.json_response(
            payloads.interaction_callback_response(
                interaction_id=interaction_id,
                response_type=response_type,
                message_payload=message,
                ephemeral=bool(int(data.get("flags") or 0) & _EPHEMERAL),
            )
        )

    async def _followup(self, call: _Call) -> web.StreamResponse:
        self._record_response("followup", call)
        channel_id, guild_id = self._interaction_channel(call.params["token"])
        body = call.body if isinstance(call.body, dict) else {}
        message = self._bot_message(channel_id=channel_id, guild_id=guild_id, body=body, bot_id=int(call.params["app"]))
        message["webhook_id"] = call.params["app"]
        return web.json_response(message)

    async def _get_webhook_message(self, call: _Call) -> web.StreamResponse:
        message = self._originals.get(call.params["token"])
        if message is None:
            return _error(404, "Unknown Message", 10008)
        return web.json_response(message)

    async def _edit_webhook_message(self, call: _Call) -> web.StreamResponse:
        self._record_response("edit", call)
        token = call.params["token"]
        body = call.body if isinstance(call.body, dict) else {}
        message = self._originals.get(token)
        if message is None:
            channel_id, guild_id = self._interaction_channel(token)
            message = self._bot_message(
                channel_id=channel_id, guild_id=guild_id, body=body, bot_id=int(call.params["app"])
            )
        else:
            message = dict(message)
            if "content" in body:
                message["content"] = str(body["content"] or "")
            message["flags"] = int(message.get("flags") or 0) & ~_LOADING
            message["edited_timestamp"] = ids.iso_timestamp(time.time())
        if call.params["message"] == "@original":
            self._originals[token] = message
        return web.json_response(message)

    async def _delete_webhook_message(self, call: _Call) -> web.StreamResponse:
        self._record_response("delete", call)
        if call.params["message"] == "@original":
            self._originals.pop(call.params["token"], None)
        return web.Response(status=204)

    # -- application commands -----------------------------------------------------------------

    @staticmethod
    def _scope(call: _Call) -> tuple[int, int | None]:
        return int(call.params["app"]), _optional_int(call.params.get("guild"))

    async def _list_commands(self, call: _Call) -> web.StreamResponse:
        return web.json_response(self._commands.get_all(*self._scope(call)))

    async def _overwrite_commands(self, call: _Call) -> web.StreamResponse:
        if not isinstance(call.body, list) or not all(isinstance(c, dict) for c in call.body):
            return _error(400, "Invalid Form Body", 50035)
        return web.json_response(self._commands.overwrite(*self._scope(call), call.body))

    async def _create_command(self, call: _Call) -> web.StreamResponse:
        if not isinstance(call.body, dict):
            return _error(400, "Invalid Form Body", 50035)
        return web.json_response(self._commands.create(*self._scope(call), call.body), status=201)

    async def _get_command(self, call: _Call) -> web.StreamResponse:
        command = self._commands.get(*self._scope(call), int(call.params["command"]))
        return web.json_response(command) if command is not None else _error(404, "Unknown application command", 10063)

    async def _edit_command(self, call: _Call) -> web.StreamResponse:
        body = call.body if isinstance(call.body, dict) else {}
        command = self._commands.edit(*self._scope(call), int(call.params["command"]), body)
        return web.json_response(command) if command is not None else _error(404, "Unknown application command", 10063)

    async def _delete_command(self, call: _Call) -> web.StreamResponse:
        if self._commands.delete(*self._scope(call), int(call.params["command"])):
            return web.Response(status=204)
        return _error(404, "Unknown application command", 10063)

    async def _command_permissions(self, call: _Call) -> web.StreamResponse:
        return web.json_response([])
