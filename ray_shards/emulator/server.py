"""`Emulator`: the in-process server (REST, gateway, control surface) on one event loop."""

from __future__ import annotations

import logging
import time
import types
import typing

from aiohttp import web

from ray_shards.emulator import payloads
from ray_shards.emulator.client import EmulatorControl
from ray_shards.emulator.commands import CommandStore
from ray_shards.emulator.config import DEFAULT_BOT_ID, EmulatorConfig, bot_id_from_token
from ray_shards.emulator.control import ControlApi
from ray_shards.emulator.gateway import Gateway
from ray_shards.emulator.ids import SnowflakeGenerator
from ray_shards.emulator.interactions import InteractionStore
from ray_shards.emulator.limits import IdentifyLimiter
from ray_shards.emulator.protocol import dumps
from ray_shards.emulator.recorder import Entry, Recorder
from ray_shards.emulator.rest import RestApi
from ray_shards.emulator.script import ScriptedEvents
from ray_shards.emulator.sessions import SessionRegistry
from ray_shards.emulator.stream import EventStream
from ray_shards.emulator.world import World

__all__ = ["Emulator"]

_LOGGER = logging.getLogger("ray_shards.emulator")


class Emulator:
    """A local Discord (REST + gateway) that unmodified hikari connects to.

    Use ``async with Emulator(config) as emu:`` or `start` / `stop`. Observation and
    control methods are synchronous and must be called from the emulator's event
    loop; from other threads or processes use `control` (HTTP).

    Parameters
    ----------
    config
        Settings; defaults to ``EmulatorConfig()``.
    **overrides
        Field values that replace those of ``config``.
    """

    __slots__ = (
        "_commands",
        "_config",
        "_control_api",
        "_gateway",
        "_interactions",
        "_limiter",
        "_port",
        "_recorder",
        "_registry",
        "_rest",
        "_runner",
        "_script",
        "_shards",
        "_snowflakes",
        "_started_at",
        "_stream",
        "_world",
    )

    def __init__(self, config: EmulatorConfig | None = None, **overrides: typing.Any) -> None:
        config = config or EmulatorConfig()
        if overrides:
            config = EmulatorConfig.model_validate({**config.model_dump(), **overrides})
        self._config = config
        self._shards = config.shards
        self._snowflakes = SnowflakeGenerator()
        self._world = World(config.guilds, config.members_per_guild)
        self._recorder = Recorder()
        self._limiter = IdentifyLimiter(
            total=config.session_total,
            remaining=config.session_remaining,
            reset_after_ms=config.session_reset_after_ms,
            max_concurrency=config.max_concurrency,
            window_s=config.identify_window_s,
            enforce=config.enforce_identify_rate_limit,
        )
        self._registry = SessionRegistry(timeout_s=config.session_timeout_s, buffer_size=config.replay_buffer_size)
        self._gateway = Gateway(
            config=config,
            world=self._world,
            limiter=self._limiter,
            recorder=self._recorder,
            registry=self._registry,
        )
        self._stream = EventStream(
            gateway=self._gateway, world=self._world, recorder=self._recorder, snowflakes=self._snowflakes
        )
        self._script = ScriptedEvents(
            gateway=self._gateway, world=self._world, recorder=self._recorder, snowflakes=self._snowflakes,
            bot_id=bot_id_from_token(config.token) or DEFAULT_BOT_ID,
        )
        self._commands = CommandStore(self._snowflakes)
        self._interactions = InteractionStore()
        self._rest = RestApi(
            config=config,
            world=self._world,
            limiter=self._limiter,
            recorder=self._recorder,
            commands=self._commands,
            interactions=self._interactions,
            snowflakes=self._snowflakes,
            gateway_url=self._advertised_gateway_url,
            recommended_shards=lambda: self._shards,
        )
        self._control_api = ControlApi(self)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._started_at = 0.0

    def __repr__(self) -> str:
        return f"Emulator({self.base_url if self._runner else 'stopped'}, guilds={self._config.guilds})"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> Emulator:
        """Bind the port and start serving.

        Returns
        -------
        Emulator
            ``self``.
        """
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get(self._config.gateway_path, self._gateway.handle)
        app.router.add_get(self._config.resume_gateway_path, self._gateway.handle)
        app.router.add_route("*", "/_emulator/{action}", self._control_api.handle)
        app.router.add_route("*", "/{tail:.*}", self._rest.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self._config.host, self._config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else self._config.port
        self._runner = runner
        self._started_at = time.monotonic()
        self._gateway.resume_url = self._ws_base() + self._config.resume_gateway_path
        self._gateway.start()
        _LOGGER.info("emulator listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        """Stop the stream, close every connection and release the port."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._stream.aclose()
        await self._gateway.stop()
        await runner.cleanup()
        _LOGGER.info("emulator on port %s stopped", self._port)

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._runner is not None

    # -- addresses ----------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The configuration the emulator was created with."""
        return self._config

    @property
    def port(self) -> int:
        """The bound port (0 before `start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self._config.url_host()}:{self._port}"

    @property
    def rest_url(self) -> str:
        """``base_url + "/api/v10"``, for hikari's ``rest_url``."""
        return self.base_url + "/api/v10"

    def _ws_base(self) -> str:
        return f"ws://{self._config.url_host()}:{self._port}"

    @property
    def gateway_url(self) -> str:
        """``ws://host:port/gateway``."""
        return self._ws_base() + self._config.gateway_path

    @property
    def resume_gateway_url(self) -> str:
        """The ``resume_gateway_url`` READY hands out."""
        return self._ws_base() + self._config.resume_gateway_path

    def _advertised_gateway_url(self) -> str:
        return self._config.advertised_gateway_url or self.gateway_url

    @property
    def control(self) -> EmulatorControl:
        """A synchronous HTTP client of the control surface (for other threads/processes)."""
        return EmulatorControl(self.base_url)

    # -- world --------------------------------------------------------------------------------

    def guild_ids(self) -> list[int]:
        """Return every guild id."""
        return self._world.guild_ids()

    def guilds_for_shard(self, shard_id: int, shard_count: int) -> list[int]:
        """Return the guild ids of one shard."""
        return self._world.guilds_for_shard(shard_id, shard_count)

    # -- observation --------------------------------------------------------------------------

    def stats(self) -> dict[str, typing.Any]:
        """Return counters, ``session_start_limit``, connection counts, split brain and closes."""
        return self._gateway.stats()

    def identify_log(self) -> list[Entry]:
        """Return every accepted IDENTIFY."""
        return [dict(e) for e in self._recorder.identify_log]

    def resume_log(self) -> list[Entry]:
        """Return every accepted RESUME."""
        return [dict(e) for e in self._recorder.resume_log]

    def received(self, shard_id: int | None = None, op: int | None = None) -> list[Entry]:
        """Return client payloads (heartbeats left out; tokens redacted)."""
        return self._recorder.received_entries(shard_id, op)

    def rest_log(self) -> list[Entry]:
        """Return every REST request (never with the Authorization header)."""
        return [dict(e) for e in self._recorder.rest_log]

    def messages(self) -> list[Entry]:
        """Return the messages posted through ``POST /channels/{id}/messages``."""
        return [dict(e) for e in self._recorder.messages]

    def interaction_responses(self) -> list[Entry]:
        """Return interaction callbacks, follow-ups and edits."""
        return [dict(e) for e in self._recorder.interaction_responses]

    def stream_sent(self) -> list[Entry]:
        """Return every event the stream generated: ``id``, ``guild_id``, ``time``."""
        return [dict(e) for e in self._recorder.stream_sent]

    def script_sent(self) -> list[Entry]:
        """Return every scripted event (`script`): ``n``, ``action``, ``event``, ``guild_id``, ``time``, ..."""
        return self._script.sent()

    def script(
        self,
        action: str,
        guild_id: int | None = None,
        *,
        content: str | None = None,
        message_id: int | None = None,
        emoji: str = "x",
    ) -> Entry:
        """Dispatch one scripted guild event (see `ray_shards.emulator.script`); return what was sent."""
        return self._script.run(action, guild_id, content=content, message_id=message_id, emoji=emoji)

    def sessions(self) -> list[dict[str, typing.Any]]:
        """Return a summary of every live session."""
        return self._gateway.sessions()

    def reset_logs(self) -> None:
        """Clear logs and counters and restart the concurrency maxima from now."""
        self._recorder.reset()
        self._registry.reset_max()

    def health(self) -> dict[str, typing.Any]:
        """Return liveness information."""
        return {
            "ok": self.running,
            "port": self._port,
            "uptime_s": time.monotonic() - self._started_at if self.running else 0.0,
            "connections": len(self._gateway.connections),
            "sessions": len(self._registry.all()),
            "stream_running": self._stream.running,
        }

    # -- control ------------------------------------------------------------------------------

    def reconnect(self, shard_id: int) -> int:
        """Send op 7 to the shard's live connections; return how many."""
        return self._gateway.reconnect(shard_id)

    def invalidate(self, shard_id: int, resumable: bool = False) -> int:
        """Send op 9 with ``d=resumable`` to the shard's live connections; return how many."""
        return self._gateway.invalidate(shard_id, resumable)

    def close(self, shard_id: int, code: int = 4000) -> int:
        """Close the shard's live connections with ``code``; return how many."""
        return self._gateway.close_shard(shard_id, code)

    def drop(self, shard_id: int) -> int:
        """Abort the shard's TCP connections without a close frame; return how many."""
        return self._gateway.drop(shard_id)

    def zombie(self, shard_id: int, enabled: bool = True) -> None:
        """Stop (``enabled``) or resume acknowledging the shard's heartbeats."""
        self._gateway.set_zombie(shard_id, enabled)

    def dispatch(self, shard_id: int, event_name: str, data: typing.Any) -> int:
        """Inject a dispatch into the shard's resumable sessions (all shard counts)."""
        return self._gateway.dispatch_to_shard(shard_id, event_name, data)

    def dispatch_to_guild(self, guild_id: int, event_name: str, data: typing.Any) -> int:
        """Inject a dispatch into every resumable session covering the guild."""
        return self._gateway.dispatch_to_guild(guild_id, event_name, dumps(data))

    def interaction(
        self,
        guild_id: int,
        command_name: str,
        options: typing.Any = None,
        user_id: int | None = None,
    ) -> dict[str, typing.Any]:
        """Send a slash-command INTERACTION_CREATE to the guild's sessions.

        Parameters
        ----------
        guild_id
            A guild of the world.
        command_name
            The slash command; its registered id is used when it was registered.
        options
            ``{name: value}`` or a list of Discord option objects.
        user_id
            The invoking member (defaults to the guild's first fake user).

        Returns
        -------
        dict[str, typing.Any]
            ``{"id", "token", "sessions"}``.
        """
        if not self._world.has_guild(guild_id):
            raise ValueError(f"unknown guild {guild_id}")
        bot_id = bot_id_from_token(self._config.token) or DEFAULT_BOT_ID
        found = self._commands.find(bot_id, command_name, guild_id)
        command_id = int(found[0]["id"]) if found is not None else self._snowflakes.next()
        registered_guild = found[1] if found is not None else None
        numbers = self._world.member_numbers(guild_id)
        user = World.user(numbers[0]) if numbers else World.bot_user(bot_id)
        if user_id is not None:
            user = next((World.user(n) for n in numbers if user_id == int(World.user(n)["id"])), user)
        interaction_id = self._snowflakes.next()
        token = self._interactions.create(interaction_id, guild_id, bot_id)
        payload = payloads.slash_interaction(
            interaction_id=interaction_id,
            token=token,
            bot_id=bot_id,
            guild_id=guild_id,
            command_id=command_id,
            command_name=command_name,
            options=payloads.normalize_options(options),
            user=user,
            registered_guild_id=registered_guild,
        )
        count = self._gateway.dispatch_to_guild(guild_id, "INTERACTION_CREATE", dumps(payload))
        return {"id": interaction_id, "token": token, "sessions": count}

    def set_limits(
        self,
        remaining: int | None = None,
        max_concurrency: int | None = None,
        shards: int | None = None,
        total: int | None = None,
    ) -> dict[str, typing.Any]:
        """Change the session start budget, concurrency or recommended shard count.

        Returns
        -------
        dict[str, typing.Any]
            The new ``session_start_limit`` and ``shards``.
        """
        if shards is not None:
            if shards < 1:
                raise ValueError("shards must be >= 1")
            self._shards = shards
        self._limiter.set_limits(remaining=remaining, max_concurrency=max_concurrency, total=total)
        return {"session_start_limit": self._limiter.session_start_limit(), "shards": self._shards}

    def start_stream(self, rate: float) -> None:
        """Start (or re-rate) the MESSAGE_CREATE stream at ``rate`` events/s in total."""
        self._stream.start(rate)

    def stop_stream(self) -> int:
        """Stop the stream; return how many events it generated since the logs were reset."""
        self._stream.stop()
        return self._recorder.streamed
