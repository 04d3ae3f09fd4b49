"""`Bot`: a hikari `GatewayBotAware` whose shards are assigned by a ray_shards Orchestrator.

It is built from hikari's public components (cache, entity and event factories,
event manager, REST client, voice) like `hikari.GatewayBot`, so listeners,
the cache, REST and command frameworks work unchanged. What differs is where
its shards come from: the Orchestrator leases them, gates every IDENTIFY
through its cluster-wide queue, and moves them between bots when one dies.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import itertools
import logging
import math
import signal
import sys
import threading
import time
import types
import typing
import uuid
import warnings

import hikari
from hikari import traits
from hikari.api import cache as cache_api
from hikari.api import entity_factory as entity_factory_api
from hikari.api import event_factory as event_factory_api
from hikari.api import event_manager as event_manager_api
from hikari.events import base_events
from hikari.impl import cache as cache_impl
from hikari.impl import config as config_impl
from hikari.impl import entity_factory as entity_factory_impl
from hikari.impl import event_factory as event_factory_impl
from hikari.impl import rest as rest_impl
from hikari.impl import voice as voice_impl
from typing_extensions import override

from ray_shards import identify, sessions, validation
from ray_shards.auth import command_key, redact
from ray_shards.delivery import DeliveryMode, GatedEventManager
from ray_shards.direct_commands import DIRECT_KINDS, DirectCommands
from ray_shards.errors import (
    BotStoppedError,
    CommandFailedError,
    HostNotRegisteredError,
    LeaseLostError,
    ShardFailedError,
    StaleLeaseError,
)
from ray_shards.gateway_info import validate_rest_url
from ray_shards.link import OrchestratorLink, OrchestratorUnavailableError
from ray_shards.metrics import ShardMetrics, shard_metrics_wanted
from ray_shards.models import (
    BotConfig,
    Command,
    CommandKind,
    HostDirectives,
    Lease,
    ReportBatch,
    SessionState,
    ShardInfo,
    ShardReport,
    ShardStatus,
)
from ray_shards.presence import PresenceState
from ray_shards.protocol import GuildTails, Registration
from ray_shards.remote import RemoteShard
from ray_shards.shard_commands import SHARD_COMMANDS, run_shard_command
from ray_shards.table_view import TableView
from ray_shards.timings import Timings

__all__ = ["Bot"]

_LOGGER = logging.getLogger("ray_shards.bot")

_FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
_GRANT_USE_LIMIT = identify.GRANT_USE_LIMIT
"""Seconds between asking for an identify grant and sending the IDENTIFY (the scheduler's grant_use_limit)."""


def _tls_rejected(ca_cert: bytes | None) -> None:
    if ca_cert is not None:
        msg = (
            "ca_cert is not used by ray_shards: the Orchestrator is reached through Ray, so TLS is Ray's. Set "
            "RAY_USE_TLS=1, RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY and RAY_TLS_CA_CERT on every node and on this "
            "process instead (see the README, 'Security')."
        )
        raise ValueError(msg)


def _check_start_options(
    *,
    shard_ids: typing.Sequence[int] | None,
    shard_count: int | None,
    ignore_session_start_limit: bool,
    startup_window_delay: int,
    large_threshold: int | None,
) -> None:
    """Refuse, with the reason, the `hikari.GatewayBot.start` options a ray_shards bot cannot honour."""
    if shard_ids is not None and shard_count is None:
        msg = "'shard_ids' must be passed with 'shard_count'"
        raise TypeError(msg)
    if shard_ids is not None:
        msg = (
            "shard_ids is not supported: the Orchestrator chooses which shards each bot runs (and moves them when "
            "a bot dies), so a bot cannot pick them; use local_shard_count=N for how many"
        )
        raise ValueError(msg)
    if shard_count is not None and (isinstance(shard_count, bool) or not isinstance(shard_count, int)
                                    or shard_count < 1):
        msg = f"shard_count must be at least 1, not {shard_count!r}"
        raise ValueError(msg)
    if ignore_session_start_limit:
        msg = (
            "ignore_session_start_limit=True is not supported: the Orchestrator never starts more sessions than "
            "Discord's daily session_start_limit allows (it waits for the reset instead), for every host at once"
        )
        raise ValueError(msg)
    if startup_window_delay < 5:
        msg = "'startup_window_delay' must be at least 5 seconds"
        raise ValueError(msg)
    if startup_window_delay != 5:
        msg = (
            "startup_window_delay is not supported: the Orchestrator spaces IDENTIFYs for every host of the bot; "
            "pass timings=Timings(identify_window=...) where the Orchestrator starts (run_server or a launcher)"
        )
        raise ValueError(msg)
    if large_threshold is not None and (isinstance(large_threshold, bool) or not isinstance(large_threshold, int)
                                        or not 50 <= large_threshold <= 250):
        msg = f"large_threshold must be a whole number from 50 to 250 (Discord's range), not {large_threshold!r}"
        raise ValueError(msg)


async def _check_for_updates(
    http_settings: config_impl.HTTPSettings, proxy_settings: config_impl.ProxySettings
) -> None:
    from hikari.internal import ux

    await ux.check_for_updates(http_settings, proxy_settings)


def _get_or_make_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop, or a new one set as the thread's (as `hikari.GatewayBot.run` does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            loop = None
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def _destroy_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop``, finish its async generators and default executor, and close it."""
    try:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class _Flag:
    """A one-way `asyncio.Event` (set, never cleared) that allocates nothing until someone waits.

    A slot has two; an `asyncio.Event` builds its waiter deque (~600 bytes) up front, for every shard a host runs.
    """

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Whether `set` was called."""
        return self._is_set

    def set(self) -> None:
        """Set the flag and wake every waiter (idempotent)."""
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._is_set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            # A cancelled wait leaves no waiter behind.
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


@dataclasses.dataclass(slots=True)
class _Slot:
    """One local shard and what its host knows of it."""

    lease: Lease
    shard: sessions.ManagedShard
    task: asyncio.Task[None] | None = None
    status: ShardStatus = ShardStatus.STARTING
    error: str | None = None
    started: _Flag = dataclasses.field(default_factory=_Flag)
    leaving: bool = False
    identify_pending: bool = False
    """An IDENTIFY was granted and its READY not yet reported (`_on_shard_ready` reports it once)."""
    identify_left_at: float | None = None
    """When the last IDENTIFY's frame was written to its socket (monotonic; None before the write returned)."""
    identify_ask: int | None = None
    """The number of the ask whose grant the last IDENTIFY used: `identify_done` names it."""
    reported: SessionState | None = None
    """The session last reported to the Orchestrator: reports never go back from it."""
    previous: _Slot | None = None
    """The slot this one replaces (same shard, lower epoch): it must be gone before this one connects."""
    left: _Flag = dataclasses.field(default_factory=_Flag)
    handed: SessionState | None = None
    """The session this slot handed over when it left."""


class _ShardsView(typing.Mapping[int, hikari.api.GatewayShard]):
    """Local shards first, then every other shard of the bot as a `RemoteShard`."""

    __slots__ = ("_bot",)

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    def __getitem__(self, shard_id: int) -> hikari.api.GatewayShard:
        slot = self._bot._slots.get(shard_id)
        if slot is not None:
            return slot.shard
        if shard_id in self._bot._remote:
            return self._bot._remote[shard_id]
        raise KeyError(shard_id)

    def __iter__(self) -> typing.Iterator[int]:
        return iter(sorted(set(self._bot._slots) | set(self._bot._remote)))

    def __len__(self) -> int:
        return len(set(self._bot._slots) | set(self._bot._remote))


class Bot(traits.GatewayBotAware):
    """Bot implementation which is managed by a ray_shards Orchestrator.

    Parameters
    ----------
    orchestrator_address
        Ray address of the cluster the Orchestrator runs on: ``"auto"``,
        ``"ray://host:10001"``, ``"host:6379"``, or None. Ignored when this process
        is already connected to Ray.
    token
        Discord bot token to use.
    cache_settings
        The cache settings to use.
    ca_cert
        Not supported: TLS to the Orchestrator is Ray's TLS (``RAY_USE_TLS``); passing a
        certificate raises `ValueError` saying how to configure it.
    http_settings
        Configuration to use for the REST client.
    intents
        The intents the bot runs with; must match the Orchestrator's. None (the default)
        takes the Orchestrator's when `start` registers, for the shards and the event
        manager alike (member chunking; missing-intent warnings are given then).
    proxy_settings
        Custom proxy settings for the REST client and the shards.
    rest_url
        Base URL to use for requests made by the REST client.
    global_shard_count
        If given, the shard count the Orchestrator must be running (checked on start).
    local_shard_count
        Amount of shards this bot should run locally. A target, not a cap: the
        Orchestrator may hand this bot the shards of a bot that died or closed.
    auto_chunk_members
        Whether to request guild members on GUILD_CREATE, as in `hikari.GatewayBot`.
    executor
        Executor for blocking work (REST file uploads...), as in `hikari.GatewayBot`.
    host_id
        Name of this bot among the bot's hosts; a random one by default.
    timings
        Reaction times (see `ray_shards.timings.Timings`).
    shard_metrics
        Also export Prometheus series per shard (``ray_shards_shard_state``,
        ``ray_shards_heartbeat_latency_seconds``, ``ray_shards_shard_events_total``, tagged
        ``shard``), besides the per-host ones every host exports. Each costs this process
        roughly 13-27 KiB per shard (Ray keeps every tag set) and Prometheus one series per
        shard. None (the default) reads the ``RAY_SHARDS_SHARD_METRICS`` environment variable
        of the host's process (``1``, ``true``, ``yes`` or ``on`` switch them on); launchers pass it
        through ``settings_factory``.
    actor_handle, shadow
        Internal: set by the launchers' `ray_shards.host.ShardHost` (its own actor handle,
        and whether its events are held during a live reshard).
    """

    __slots__ = (
        "_actor_handle",
        "_address",
        "_asks",
        "_cache",
        "_closed_event",
        "_closing_event",
        "_config",
        "_direct",
        "_ended",
        "_entity_factory",
        "_event_factory",
        "_event_manager",
        "_executor",
        "_explicit_intents",
        "_failed",
        "_failures",
        "_global_shard_count",
        "_host_id",
        "_http_settings",
        "_intents",
        "_link",
        "_local_shard_count",
        "_metrics",
        "_presence",
        "_presence_version",
        "_proxy_settings",
        "_remote",
        "_remote_table",
        "_rest",
        "_sent_sessions",
        "_slots",
        "_sync_task",
        "_tasks",
        "_timings",
        "_voice",
        "shards",
    )

    def __init__(
        self,
        orchestrator_address: str | None,
        token: str,
        /,
        *,
        cache_settings: config_impl.CacheSettings | None = None,
        ca_cert: bytes | None = None,
        http_settings: config_impl.HTTPSettings | None = None,
        intents: hikari.Intents | int | None = None,
        proxy_settings: config_impl.ProxySettings | None = None,
        rest_url: str = hikari.urls.REST_API_URL,
        global_shard_count: int | None = None,
        local_shard_count: int = 1,
        auto_chunk_members: bool = True,
        executor: concurrent.futures.Executor | None = None,
        host_id: str | None = None,
        timings: Timings | None = None,
        shard_metrics: bool | None = None,
        actor_handle: typing.Any = None,
        shadow: bool = False,
    ) -> None:
        _tls_rejected(ca_cert)
        if isinstance(local_shard_count, bool) or not isinstance(local_shard_count, int) or local_shard_count < 0:
            msg = f"local_shard_count must be a whole number of shards (0 or more), not {local_shard_count!r}"
            raise ValueError(msg)
        if global_shard_count is not None and (not isinstance(global_shard_count, int) or global_shard_count < 1):
            msg = f"global_shard_count must be at least 1, not {global_shard_count!r}"
            raise ValueError(msg)
        rest_url = validate_rest_url(rest_url)
        self._link = OrchestratorLink(token, orchestrator_address)
        self._address = orchestrator_address
        self._host_id = host_id or f"bot-{uuid.uuid4().hex[:8]}"
        self._local_shard_count = local_shard_count
        self._global_shard_count = global_shard_count
        self._timings = timings or Timings()
        self._actor_handle = actor_handle
        self._intents = hikari.Intents(intents) if intents is not None else hikari.Intents.ALL_UNPRIVILEGED
        self._explicit_intents = intents is not None
        self._executor = executor
        self._http_settings = http_settings or config_impl.HTTPSettings()
        self._proxy_settings = proxy_settings or config_impl.ProxySettings()
        self._closed_event: asyncio.Event | None = None
        self._closing_event: asyncio.Event | None = None
        self._config: BotConfig | None = None
        self._presence = PresenceState()
        self._presence_version = 0
        self._slots: dict[int, _Slot] = {}
        # Numbers of this host's identify asks: unique for a lease holder, also across a restart of this Bot.
        self._asks = itertools.count(time.time_ns())
        # Highest lease epoch this host has ended, per shard: a late or resent adopt of such a lease (or an older
        # one) is never run again, or two sessions could run for one shard.
        self._ended: dict[int, int] = {}
        self._remote: dict[int, RemoteShard] = {}
        self._remote_table = TableView(full_every=30.0)
        # Sessions the Orchestrator holds from this host (sent in full in an answered sync): a sync sends only
        # the seq of those (ReportBatch). Forgotten whenever a sync fails or the Orchestrator asks for them.
        self._sent_sessions: dict[int, SessionState] = {}
        self._direct = DirectCommands(
            self._link, self.shard_info, self._refresh_remote_table, command_key(self._link.token),
            self._timings.command_timeout,
        )
        self._sync_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[typing.Any]] = set()
        self._failures: list[ShardFailedError] = []
        self._failed = asyncio.Event()
        self._metrics = ShardMetrics(self._link.bot_id, self._host_id, per_shard=shard_metrics_wanted(shard_metrics))

        self._cache = cache_impl.CacheImpl(self, cache_settings or config_impl.CacheSettings())
        self._entity_factory = entity_factory_impl.EntityFactoryImpl(self)
        self._event_factory = event_factory_impl.EventFactoryImpl(self)
        self._event_manager = GatedEventManager(
            self._entity_factory,
            self._event_factory,
            # With intents=None the bot's intents are the Orchestrator's, known only once start() registers: until
            # then listen() must not warn about intents the bot may well have (they are checked again at start).
            self._intents if self._explicit_intents else hikari.Intents.ALL,
            auto_chunk_members=auto_chunk_members,
            cache=self._cache,
            shadow=shadow,
            max_listener_lag=self._timings.max_listener_lag,
            buffer_cap=self._timings.reshard_buffer_cap,
            max_skew=self._timings.reshard_max_skew,
        )
        self._voice = voice_impl.VoiceComponentImpl(self)
        self._rest = rest_impl.RESTClientImpl(
            cache=self._cache,
            entity_factory=self._entity_factory,
            executor=self._executor,
            http_settings=self._http_settings,
            proxy_settings=self._proxy_settings,
            rest_url=rest_url,
            token=self._link.token,
            token_type=hikari.TokenType.BOT,
        )
        self.shards: typing.Mapping[int, hikari.api.GatewayShard] = _ShardsView(self)
        self._event_manager.subscribe(hikari.ShardReadyEvent, self._on_shard_ready)
        self._event_manager.subscribe(hikari.ShardDisconnectedEvent, self._on_shard_disconnected)

    def __repr__(self) -> str:
        return (
            f"Bot(host_id={self._host_id!r}, bot_id={self._link.bot_id}, local_shards={sorted(self._slots)}, "
            f"alive={self.is_alive})"
        )

    # -- GatewayBotAware -------------------------------------------------------------------------

    @property
    def bot_id(self) -> hikari.Snowflake:
        """The bot's user id (from the token's first segment)."""
        return hikari.Snowflake(self._link.bot_id)

    @property
    def host_id(self) -> str:
        """This bot's name among the bot's hosts."""
        return self._host_id

    @property
    def local_shards(self) -> typing.Mapping[int, hikari.api.GatewayShard]:
        """The shards running in this process."""
        return types.MappingProxyType({i: s.shard for i, s in self._slots.items()})

    @property
    @override
    def cache(self) -> cache_api.Cache:
        return self._cache

    @property
    @override
    def event_manager(self) -> event_manager_api.EventManager:
        return self._event_manager

    @property
    @override
    def entity_factory(self) -> entity_factory_api.EntityFactory:
        return self._entity_factory

    @property
    @override
    def event_factory(self) -> event_factory_api.EventFactory:
        return self._event_factory

    @property
    @override
    def executor(self) -> concurrent.futures.Executor | None:
        return self._executor

    @property
    @override
    def heartbeat_latencies(self) -> typing.Mapping[int, float]:
        """Heartbeat latency of every shard of the bot, in seconds; NaN for one that has none yet.

        Local shards are measured live; the others come from the Orchestrator's table
        (refreshed every few seconds).
        """
        return {shard_id: shard.heartbeat_latency for shard_id, shard in self.shards.items()}

    @property
    @override
    def heartbeat_latency(self) -> float:
        """Mean heartbeat latency of every shard of the bot (all hosts), in seconds; NaN when none has one.

        As in hikari, the mean of `heartbeat_latencies`: over the whole bot, not only
        this process's shards (`local_shards` gives those).
        """
        latencies = [x for x in self.heartbeat_latencies.values() if not math.isnan(x)]
        return sum(latencies) / len(latencies) if latencies else float("nan")

    @property
    @override
    def http_settings(self) -> config_impl.HTTPSettings:
        return self._http_settings

    @property
    @override
    def intents(self) -> hikari.Intents:
        return self._intents

    @property
    @override
    def proxy_settings(self) -> config_impl.ProxySettings:
        return self._proxy_settings

    @property
    @override
    def shard_count(self) -> int:
        return self._config.shard_count if self._config else 0

    @property
    @override
    def voice(self) -> voice_impl.VoiceComponentImpl:
        return self._voice

    @property
    @override
    def rest(self) -> rest_impl.RESTClientImpl:
        return self._rest

    @property
    @override
    def is_alive(self) -> bool:
        return self._closed_event is not None

    @override
    def get_me(self) -> hikari.OwnUser | None:
        return self._cache.get_me()

    def _check_if_alive(self) -> None:
        if self._closed_event is None:
            msg = "bot is not running so it cannot be interacted with"
            raise hikari.ComponentStateConflictError(msg)

    # -- event helpers (as on hikari.GatewayBot) -------------------------------------------------

    def listen(self, *event_types: type[typing.Any]) -> typing.Callable[[typing.Any], typing.Any]:
        """Decorator subscribing a listener, as `hikari.GatewayBot.listen`."""
        return self._event_manager.listen(*event_types)

    def subscribe(self, event_type: type[typing.Any], callback: typing.Any) -> None:
        """Subscribe ``callback`` to ``event_type``."""
        self._event_manager.subscribe(event_type, callback)

    def unsubscribe(self, event_type: type[typing.Any], callback: typing.Any) -> None:
        """Unsubscribe ``callback`` from ``event_type``."""
        self._event_manager.unsubscribe(event_type, callback)

    def get_listeners(self, event_type: type[typing.Any], /, *, polymorphic: bool = True) -> typing.Any:
        """Listeners of ``event_type``."""
        return self._event_manager.get_listeners(event_type, polymorphic=polymorphic)

    def dispatch(self, event: hikari.Event) -> None:
        """Dispatch ``event`` to its listeners."""
        self._event_manager.dispatch(event)

    async def wait_for(
        self, event_type: type[typing.Any], /, timeout: float | None, predicate: typing.Any = None
    ) -> typing.Any:
        """Wait for one event, as `hikari.GatewayBot.wait_for`."""
        self._check_if_alive()
        return await self._event_manager.wait_for(event_type, timeout=timeout, predicate=predicate)

    def stream(self, event_type: type[typing.Any], /, timeout: float | None, limit: int | None = None) -> typing.Any:
        """Stream events, as `hikari.GatewayBot.stream`."""
        self._check_if_alive()
        return self._event_manager.stream(event_type, timeout=timeout, limit=limit)

    # -- lifecycle -------------------------------------------------------------------------------

    def _check_can_start(self, **options: typing.Any) -> None:
        """What `run` and `start` refuse before doing anything: a second start, or an option not honoured."""
        if self._closed_event is not None:
            msg = "bot is already running"
            raise hikari.ComponentStateConflictError(msg)
        _check_start_options(**options)

    @override
    def run(
        self,
        *,
        activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED,
        afk: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        asyncio_debug: bool | None = None,
        check_for_updates: bool = False,
        close_passed_executor: bool = False,
        close_loop: bool = True,
        coroutine_tracking_depth: int | None = None,
        enable_signal_handlers: bool | None = None,
        idle_since: hikari.UndefinedNoneOr[datetime.datetime] = hikari.UNDEFINED,
        ignore_session_start_limit: bool = False,
        large_threshold: int | None = None,
        propagate_interrupts: bool = False,
        status: hikari.UndefinedOr[hikari.Status] = hikari.UNDEFINED,
        shard_ids: typing.Sequence[int] | None = None,
        shard_count: int | None = None,
        startup_window_delay: int = 5,
        shutdown_signals: typing.Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        """Start the bot and block until it closes, as `hikari.GatewayBot.run`.

        SIGINT and SIGTERM (Ctrl-C) stop it at any point: while it connects and
        registers, while its shards boot, and while it runs. Once running, the
        bot closes as `close` does by default (its shards are handed over).

        Parameters
        ----------
        activity, afk, idle_since, status
            The presence to start with, as in hikari. In ray_shards the presence is the
            bot's (every shard on every host, remembered by the Orchestrator), so passing
            any of them sets the bot's presence like `Client.update_presence`; left out,
            the bot keeps the presence it has.
        asyncio_debug
            If True, enable debugging of the event loop.
        check_for_updates
            If True, check PyPI for a newer hikari and log it. Off by default (hikari's is
            on): a bot on a cluster runs many hosts and each would ask PyPI.
        close_passed_executor
            If True, shut the ``executor`` given to the constructor down once the bot closed.
        close_loop
            If True, cancel what is left on the event loop and close it once the bot closed.
        coroutine_tracking_depth
            If given, track this many nested coroutine origins (`sys.set_coroutine_origin_tracking_depth`).
        enable_signal_handlers
            Whether SIGINT/SIGTERM stop the bot; by default only when called in the main thread.
        ignore_session_start_limit
            False only: the Orchestrator never starts more sessions than Discord's daily
            ``session_start_limit`` allows, and that cannot be turned off (True raises `ValueError`).
        large_threshold
            Members in a guild before Discord treats it as large, for this bot's shards; by
            default the Orchestrator's (250, as in hikari).
        propagate_interrupts
            If True, raise `hikari.errors.HikariInterrupt` once the bot closed after a signal.
        shard_ids
            Refused (`ValueError`): the Orchestrator chooses which shards a bot runs and moves them
            on failover. Use ``local_shard_count`` for how many.
        shard_count
            If given, the shard count the Orchestrator must run (checked on start), as ``global_shard_count``.
        startup_window_delay
            5 only: the Orchestrator spaces IDENTIFYs cluster-wide (``Timings.identify_window``
            where it starts); below 5 raises `ValueError` as in hikari, above it is refused.
        shutdown_signals
            The signals that stop the bot when signal handlers are enabled.

        Raises
        ------
        hikari.ComponentStateConflictError
            If the bot is already running.
        TypeError
            If ``shard_ids`` is passed without ``shard_count``.
        ValueError
            For an option ray_shards cannot honour (the message says why), or a bad value.
        hikari.errors.HikariInterrupt
            After a signal, when ``propagate_interrupts`` is True.
        """
        self._check_can_start(
            shard_ids=shard_ids,
            shard_count=shard_count,
            ignore_session_start_limit=ignore_session_start_limit,
            startup_window_delay=startup_window_delay,
            large_threshold=large_threshold,
        )
        loop = _get_or_make_loop()
        if asyncio_debug:
            loop.set_debug(True)
        if coroutine_tracking_depth is not None:
            sys.set_coroutine_origin_tracking_depth(coroutine_tracking_depth)
        if enable_signal_handlers is None:
            enable_signal_handlers = threading.current_thread() is threading.main_thread()
        main = loop.create_task(
            self._start_and_join(
                activity=activity,
                afk=afk,
                check_for_updates=check_for_updates,
                idle_since=idle_since,
                large_threshold=large_threshold,
                shard_count=shard_count,
                status=status,
            ),
            name=f"ray_shards bot {self._host_id}",
        )
        received: list[int] = []

        def on_signal(signum: int) -> None:
            if received:
                _LOGGER.warning("host %s is already stopping", self._host_id)
                return
            received.append(signum)
            _LOGGER.info("host %s received %s; stopping", self._host_id, signal.Signals(signum).name)
            # Cancelling the one task that starts and joins the bot stops it wherever it is: connecting,
            # registering, booting or running; that task then closes (or unregisters) the bot.
            main.cancel()

        installed: dict[int, typing.Any] = {}
        if enable_signal_handlers:
            for sig in shutdown_signals:
                try:
                    previous = signal.getsignal(sig)
                    loop.add_signal_handler(sig, on_signal, int(sig))
                    installed[int(sig)] = previous
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not POSIX
                    _LOGGER.debug("cannot handle signal %s here", sig)
        try:
            loop.run_until_complete(main)
        except asyncio.CancelledError:
            if not received:
                raise
        finally:
            for signum, previous in installed.items():
                loop.remove_signal_handler(signum)
                # Put back what was there (Ray's own handlers, say), as hikari does.
                with contextlib.suppress(TypeError, ValueError):
                    signal.signal(signum, previous)
            if close_passed_executor and self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if close_loop:
                _destroy_loop(loop)
        if received and propagate_interrupts:
            signum = received[0]
            raise hikari.errors.HikariInterrupt(signum, signal.strsignal(signum) or signal.Signals(signum).name)

    async def _start_and_join(self, **options: typing.Any) -> None:
        try:
            await self.start(**options)
            if self.is_alive:
                await self.join()
        finally:
            if self._closing_event is not None and not self._closing_event.is_set():
                await self.close()

    @override
    async def start(
        self,
        *,
        activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED,
        afk: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        check_for_updates: bool = False,
        idle_since: hikari.UndefinedNoneOr[datetime.datetime] = hikari.UNDEFINED,
        ignore_session_start_limit: bool = False,
        large_threshold: int | None = None,
        shard_ids: typing.Sequence[int] | None = None,
        shard_count: int | None = None,
        status: hikari.UndefinedOr[hikari.Status] = hikari.UNDEFINED,
        startup_window_delay: int = 5,
    ) -> None:
        """Join the bot: register with the Orchestrator, start the leased shards and wait until they are READY.

        Takes `hikari.GatewayBot.start`'s options; see `run` for what each means here.
        Cancelling it (Ctrl-C in `run`) stops cleanly at any point: shards leased
        to this bot are given back to the Orchestrator.

        Raises
        ------
        hikari.ComponentStateConflictError
            If the bot is already running.
        TypeError
            If ``shard_ids`` is passed without ``shard_count``.
        ValueError
            For an option ray_shards cannot honour (see `run`), or a shard count or
            intents that differ from the Orchestrator's.
        ray_shards.connection.OrchestratorNotFoundError
            When no Orchestrator runs for this bot.
        PermissionError
            When the token does not control the Orchestrator's bot.
        RuntimeError
            When a shard fails fatally while starting (bad token, invalid shard, disallowed intents).
        """
        self._check_can_start(
            shard_ids=shard_ids,
            shard_count=shard_count,
            ignore_session_start_limit=ignore_session_start_limit,
            startup_window_delay=startup_window_delay,
            large_threshold=large_threshold,
        )
        expected_count = self._global_shard_count
        if shard_count is not None:
            if expected_count is not None and expected_count != shard_count:
                msg = f"shard_count={shard_count} differs from global_shard_count={expected_count}"
                raise ValueError(msg)
            expected_count = shard_count
        presence = None
        if any(value is not hikari.UNDEFINED for value in (activity, afk, idle_since, status)):
            presence = validation.presence_update(idle_since=idle_since, afk=afk, activity=activity, status=status)
        start_time = time.monotonic()
        if check_for_updates:
            self._spawn(_check_for_updates(self._http_settings, self._proxy_settings), "check for package updates")
        if self._link.handle is None:
            # A Bot may start alongside its server: give the Orchestrator a moment to appear.
            await self._link.connect(wait=30.0)
        self._link.on_reauthenticated(self._register_again)
        if presence is not None:
            # Before registering, so this bot's shards IDENTIFY with it.
            await self._link.update_presence(**presence)
        registering = asyncio.ensure_future(
            self._link.register_host(
                self._host_id,
                node_id=self._node_id(),
                want=self._local_shard_count,
                handle=self._actor_handle,
                shard_count=expected_count,
            )
        )
        try:
            # Shielded: once the Orchestrator has leased shards to this bot, a Ctrl-C must give them back.
            registration = await asyncio.shield(registering)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._give_back((await asyncio.wait_for(registering, 10.0)).leases)
            raise
        config, leases = registration.config, registration.leases
        try:
            self._check_config(config, large_threshold, expected_count)
        except BaseException:
            await self._give_back(leases)
            raise
        self._presence, self._presence_version = registration.presence, registration.presence_version
        self._go_live_if_set_is(registration)
        self._failures.clear()
        self._failed.clear()
        self._closed_event = asyncio.Event()
        self._closing_event = asyncio.Event()
        try:
            self._rest.start()
            self._voice.start()
            await self._event_manager.dispatch(self._event_factory.deserialize_starting_event(), return_tasks=True)
            self._sync_task = asyncio.create_task(self._sync_forever(), name=f"ray_shards sync ({self._host_id})")
            if registration.record:
                # This host joins the old set of a reshard: record before the adopts (their `since`).
                self._event_manager.start_recording()
            for lease in leases:
                self._adopt(lease)
            await self._wait_started(
                [self._slots[lease.shard_id] for lease in leases if lease.shard_id in self._slots]
            )
        except BaseException as exc:
            # Leases not adopted yet are given back as they are; adopted shards are closed by close().
            await self._give_back([lease for lease in leases if lease.shard_id not in self._slots])
            if self._closing_event is not None and not self._closing_event.is_set():
                # Ctrl-C while booting: end the sessions as hikari does (1001). A failure (one shard could not
                # start) hands the others over instead: they may be sessions resumed from a dead host, and ending
                # them would lose every event Discord still holds for them.
                await self.close(hand_over=isinstance(exc, Exception))
            raise
        await self._event_manager.dispatch(self._event_factory.deserialize_started_event(), return_tasks=True)
        _LOGGER.info(
            "host %s started %s shard(s) %s in %.2f s",
            self._host_id,
            len(leases),
            [lease.shard_id for lease in leases],
            time.monotonic() - start_time,
        )

    async def _give_back(self, leases: typing.Iterable[Lease]) -> None:
        """Return leases this bot will not run to the Orchestrator (with their sessions, still resumable)."""
        await asyncio.gather(
            *(
                self._link.release(
                    self._host_id, lease.shard_id, lease.epoch, lease.session, stopped=False, retry_for=5.0
                )
                for lease in leases
            ),
            return_exceptions=True,
        )

    def _node_id(self) -> str | None:
        try:
            import ray

            return str(ray.get_runtime_context().get_node_id())
        except Exception:
            return None

    def _check_config(
        self, config: BotConfig, large_threshold: int | None = None, shard_count: int | None = None
    ) -> None:
        shard_count = shard_count if shard_count is not None else self._global_shard_count
        if shard_count is not None and shard_count != config.shard_count:
            msg = (
                f"global_shard_count is {shard_count} but the orchestrator runs "
                f"{config.shard_count} shards; pass global_shard_count={config.shard_count} or leave it out"
            )
            raise ValueError(msg)
        if self._explicit_intents and int(self._intents) != config.intents:
            msg = (
                f"intents {int(self._intents)} differ from the orchestrator's {config.intents}; every host of a bot "
                "must use the bot's intents (leave intents out to use them)"
            )
            raise ValueError(msg)
        if large_threshold is not None:
            # A per-session IDENTIFY field: this bot's shards may use their own.
            config = dataclasses.replace(config, large_threshold=large_threshold)
        self._config = config
        self._global_shard_count = shard_count
        if not self._explicit_intents:
            self._intents = hikari.Intents(config.intents)
            # The event manager was built before the intents were known: give it the real ones (member chunking
            # on GUILD_CREATE depends on them), and warn now about listeners they cannot serve.
            sessions.set_event_manager_intents(self._event_manager, self._intents)
            self._warn_missing_intents()

    def _warn_missing_intents(self) -> None:
        """Warn, as hikari's ``listen`` does, for each listened event type the bot's intents never deliver."""
        stack: list[type[typing.Any]] = [hikari.Event]
        seen: set[type[typing.Any]] = set()
        while stack:
            event_type = stack.pop()
            if event_type in seen:
                continue
            seen.add(event_type)
            stack.extend(event_type.__subclasses__())
            groups = base_events.get_required_intents_for(event_type)
            if not groups or not self._event_manager.get_listeners(event_type, polymorphic=False):
                continue
            if not any((self._intents & group) == group for group in groups):
                wanted = ", ".join(map(str, groups))
                warnings.warn(
                    f"You have tried to listen to {event_type.__name__}, but this will only ever be triggered if "
                    f"you enable one of the following intents: {wanted}.",
                    category=hikari.errors.MissingIntentWarning,
                    stacklevel=3,
                )

    async def _wait_started(self, slots: list[_Slot]) -> None:
        pending = {asyncio.ensure_future(slot.started.wait()): slot for slot in slots}
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    slot = pending.pop(future)
                    if slot.status is ShardStatus.FAILED:
                        msg = f"shard {slot.lease.shard_id} could not start: {slot.error}"
                        raise RuntimeError(msg)
        finally:
            for other in pending:
                other.cancel()

    @override
    async def join(self) -> None:
        """Wait until the bot closes, or one of its local shards fails for good.

        As `hikari.GatewayBot.join`, a shard's fatal error is raised here (`run` then
        closes the bot and raises it). Unlike hikari, the bot is not stopped by it: its
        other shards keep running, the Orchestrator marks the shard FAILED, and
        calling `join` again waits on (each failure is raised once).

        Raises
        ------
        hikari.ComponentStateConflictError
            If the bot is not running.
        ray_shards.errors.ShardFailedError
            When a shard of this bot stopped with a close code Discord says not to retry
            (4004 bad token, 4010-4014 sharding, version and intents) or another fatal error.
        """
        if self._closed_event is None:
            msg = "Cannot wait for an inactive bot to join"
            raise hikari.ComponentStateConflictError(msg)
        closed = asyncio.ensure_future(self._closed_event.wait())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait([closed, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            failed.cancel()
        if self._failures:
            error = self._failures.pop(0)
            if not self._failures:
                self._failed.clear()
            raise error

    def _note_failure(self, error: ShardFailedError) -> None:
        self._failures.append(error)
        self._failed.set()

    @override
    async def close(self, *, hand_over: bool | None = None) -> None:
        """Stop this bot.

        Unlike `hikari.GatewayBot.close`, which ends every session (close code 1001), the
        default hands the shards over: each connection is closed with 3000 (resumable)
        and its session goes to the Orchestrator, which moves it by RESUME to another
        host of the same Discord bot, with no IDENTIFY and no lost event (a rolling deploy).
        ``hand_over=False`` behaves as hikari.

        Parameters
        ----------
        hand_over
            True: leave every session open and give the shards back to the Orchestrator,
            which moves them (by RESUME) to the bot's other hosts. False: end the
            sessions (1001). Default: hand over unless the whole bot is shutting down.
        """
        if self._closed_event is None or self._closing_event is None:
            msg = "Cannot close an inactive bot"
            raise hikari.ComponentStateConflictError(msg)
        if self._closing_event.is_set():
            await self.join()
            return
        self._closing_event.set()
        _LOGGER.info("host %s closing (%s shards)", self._host_id, len(self._slots))
        await self._event_manager.dispatch(self._event_factory.deserialize_stopping_event(), return_tasks=True)
        if self._sync_task is not None and self._sync_task is not asyncio.current_task():
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        await asyncio.gather(
            *(self._leave(slot, hand_over=hand_over is not False) for slot in list(self._slots.values())),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            if task is not asyncio.current_task():  # close() itself may run as one of them
                task.cancel()
        with contextlib.suppress(Exception):
            await self._voice.close()
        with contextlib.suppress(Exception):
            await self._rest.close()
        self._cache.clear()
        await self._event_manager.dispatch(self._event_factory.deserialize_stopped_event(), return_tasks=True)
        self._closed_event.set()
        self._closed_event = None
        self._closing_event = None
        _LOGGER.info("host %s closed", self._host_id)

    # -- shards ----------------------------------------------------------------------------------

    def _spawn(self, coro: typing.Coroutine[typing.Any, typing.Any, typing.Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _adopt(self, lease: Lease) -> None:
        assert self._config is not None
        if lease.epoch <= self._ended.get(lease.shard_id, -1):
            _LOGGER.info("host %s: shard %s epoch %s was already ended here; giving the lease back", self._host_id,
                         lease.shard_id, lease.epoch)
            self._spawn(self._give_back_lease(lease), f"give back shard {lease.shard_id}")
            return
        old = self._slots.get(lease.shard_id)
        if old is not None and old.lease.epoch >= lease.epoch:
            return
        if old is not None and not old.leaving:
            # A newer lease of a shard that still runs here under an older one: hand the old run over first.
            self._spawn(self._leave(old, hand_over=True), f"replace shard {lease.shard_id}")
        shard = sessions.ManagedShard(
            hooks=self,
            http_settings=self._http_settings,
            proxy_settings=self._proxy_settings,
            event_manager=self._event_manager,
            event_factory=self._event_factory,
            intents=self._intents,
            large_threshold=self._config.large_threshold,
            shard_id=lease.shard_id,
            shard_count=lease.shard_count,
            token=self._link.token,
            url=self._config.gateway_url,
            **self._presence.to_initial_kwargs(),
        )
        slot = _Slot(lease=lease, shard=shard, previous=old)
        self._slots[lease.shard_id] = slot
        # Before the slot's task runs, so before its RESUME: replayed events are recorded after `since`.
        self._event_manager.adopted(lease.shard_id)
        slot.task = asyncio.create_task(self._run_slot(slot), name=f"shard {lease.shard_id}")

    async def _run_slot(self, slot: _Slot) -> None:
        shard_id = slot.lease.shard_id
        previous, slot.previous = slot.previous, None
        if previous is not None:
            await previous.left.wait()
        session = slot.lease.session
        if previous is not None and previous.handed is not None:
            session = previous.handed  # fresher than the table's copy: it is what that run handed over
        if session is not None:
            sessions.seed(slot.shard, session)
        resumed = session is not None
        try:
            await slot.shard.start()
            slot.status = ShardStatus.READY
            slot.started.set()
            if resumed and self._presence_version and slot.shard.is_connected:
                await slot.shard.update_presence(**self._presence.to_hikari_kwargs())
            await slot.shard.join()
            if not slot.leaving:
                slot.status = ShardStatus.STOPPED
        except asyncio.CancelledError:
            raise
        except LeaseLostError:
            slot.status = ShardStatus.STOPPED
        except hikari.GatewayServerClosedConnectionError as exc:
            if exc.code in _FATAL_CLOSE_CODES or not exc.can_reconnect:
                await self._fail(slot, f"Discord closed the connection with {exc.code} ({exc.reason})")
            else:
                await self._fail(slot, f"connection closed: {exc}")
        except Exception as exc:
            if not slot.leaving:
                await self._fail(slot, f"{type(exc).__name__}: {exc}")
        finally:
            slot.started.set()
            if not slot.leaving and self._slots.get(shard_id) is slot and slot.status is not ShardStatus.FAILED:
                self._slots.pop(shard_id, None)
                self._spawn(self._release(slot, stopped=False), f"release shard {shard_id}")

    async def _fail(self, slot: _Slot, error: str) -> None:
        error = redact(error, self._link.token)
        slot.status = ShardStatus.FAILED
        slot.error = error
        _LOGGER.error("shard %s on host %s failed: %s", slot.lease.shard_id, self._host_id, error)
        self._note_failure(ShardFailedError(slot.lease.shard_id, error))
        self._slots.pop(slot.lease.shard_id, None)
        slot.started.set()
        await self._release(slot, stopped=False, failed=error)

    async def _give_back_lease(self, lease: Lease) -> None:
        with contextlib.suppress(Exception):
            await self._link.release(self._host_id, lease.shard_id, lease.epoch, None, retry_for=10.0)

    async def _release(self, slot: _Slot, *, stopped: bool, failed: str | None = None) -> None:
        shard_id = slot.lease.shard_id
        self._ended[shard_id] = max(self._ended.get(shard_id, -1), slot.lease.epoch)
        with contextlib.suppress(Exception):
            await self._link.release(
                self._host_id,
                slot.lease.shard_id,
                slot.lease.epoch,
                sessions.snapshot(slot.shard),
                stopped=stopped,
                failed=failed,
                retry_for=10.0,
            )

    async def _leave(self, slot: _Slot, *, hand_over: bool) -> None:
        """Stop one shard: hand it over (session kept) or end it."""
        slot.leaving = True
        shard_id = slot.lease.shard_id
        if hand_over:
            # Graceful drain: the connection is closed first (no new events), then the listeners of what was
            # consumed get a bounded time to finish, and the session is handed over at what they finished.
            session = await sessions.detach(slot.shard)
            handled = await self._event_manager.drain(shard_id, self._timings.drain_timeout)
            mark = self._event_manager.watermark(shard_id)
            if session is not None and handled is not None and mark.session_id() == session.session_id:
                session = dataclasses.replace(session, seq=min(session.seq, handled))
            if session is not None and slot.reported is not None and slot.reported.session_id == session.session_id:
                session = dataclasses.replace(session, seq=max(session.seq, slot.reported.seq))
        else:
            session = None
            if slot.shard.is_alive:
                with contextlib.suppress(Exception):
                    await slot.shard.close()
            # The session ends, but what was consumed is still handled: the listeners get the same bounded time
            # (a reshard's old set retires this way, and the new set skipped what the old set delivered).
            await self._event_manager.drain(shard_id, self._timings.drain_timeout)
        if slot.task is not None and not slot.task.done():
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slot.task
        if self._slots.get(shard_id) is slot:
            self._slots.pop(shard_id, None)
            self._metrics.forget(shard_id)
            self._event_manager.forget_shard(shard_id)
        slot.status = ShardStatus.STOPPED
        self._ended[shard_id] = max(self._ended.get(shard_id, -1), slot.lease.epoch)
        slot.handed = session
        slot.left.set()
        with contextlib.suppress(Exception):
            await self._link.release(
                self._host_id,
                shard_id,
                slot.lease.epoch,
                session,
                stopped=not hand_over,
                retry_for=5.0,
            )
        _LOGGER.info("host %s %s shard %s", self._host_id, "handed over" if hand_over else "closed", shard_id)

    # -- GateHooks (called by ManagedShard before it authenticates) --------------------------------

    async def before_identify(self, shard_id: int) -> dict[str, typing.Any] | None:
        """Wait for the Orchestrator's identify grant; identify with the bot's current presence."""
        slot = self._slots.get(shard_id)
        if slot is None or slot.leaving:
            raise LeaseLostError(f"shard {shard_id} is not leased to host {self._host_id}")
        dropped: int | None = None
        while True:
            asked, ask = time.monotonic(), next(self._asks)
            try:
                answer = await self._link.request_identify(
                    self._host_id, shard_id, slot.lease.epoch, ask=ask, dropped=dropped, early=True, retry_for=60.0
                )
            except OrchestratorUnavailableError:
                _LOGGER.warning("shard %s waits for the orchestrator to identify", shard_id)
                continue
            dropped = None
            if not answer.granted or answer.presence is None:
                # Not yet: sleep here (no call parked in the Orchestrator) for the wait the scheduler told, a lower
                # bound of this shard's turn, and ask again then (the scheduler keeps its place in line meanwhile).
                await asyncio.sleep(min(max(answer.wait, 0.05), identify.MAX_WAIT))
                continue
            if time.monotonic() - asked > _GRANT_USE_LIMIT:
                # The grant took too long to arrive: the scheduler counts it as used no later than this limit
                # after it was asked for, so sending now could land in the next IDENTIFY's window. Ask again, and
                # say this grant went unused so its bucket is not closed for it (a busy host starting many shards
                # at once gets many grants late).
                _LOGGER.warning("shard %s: identify grant arrived late; asking again", shard_id)
                dropped = ask
                continue
            if answer.wait > 0:
                # A grant ahead of its bucket's opening. Sleep the wait from now, when the answer arrived (after
                # the grant was made), so the IDENTIFY cannot leave before the not-before time; it must still leave
                # within the limit of it, counted from the ask (before the grant was made).
                await asyncio.sleep(answer.wait)
                if time.monotonic() - asked > _GRANT_USE_LIMIT + answer.wait:
                    _LOGGER.warning("shard %s: woke too late to use its identify grant; asking again", shard_id)
                    dropped = ask
                    continue
                if slot.leaving or self._slots.get(shard_id) is not slot:
                    raise LeaseLostError(f"shard {shard_id} is not leased to host {self._host_id}")
            presence = answer.presence
            break
        self._presence = presence
        slot.identify_pending = True
        slot.identify_left_at = None
        slot.identify_ask = ask
        self._metrics.count("identifies")
        _LOGGER.info("shard %s on host %s identifies (granted by the orchestrator)", shard_id, self._host_id)
        return presence.to_hikari_kwargs()

    def after_identify(self, shard_id: int) -> None:
        """Stamp the departure of ``shard_id``'s IDENTIFY (its frame was just written to the socket)."""
        slot = self._slots.get(shard_id)
        if slot is not None:
            slot.identify_left_at = time.monotonic()

    async def before_resume(self, shard_id: int) -> None:
        """Check the lease before a RESUME; tolerate an Orchestrator that is away (it cannot re-grant then)."""
        slot = self._slots.get(shard_id)
        if slot is None or slot.leaving:
            raise LeaseLostError(f"shard {shard_id} is not leased to host {self._host_id}")
        # No RESUME without a positive lease check: while the Orchestrator is away it cannot say whether the
        # shard moved, and a RESUME on a stale lease would make two sessions for one shard.
        deadline = time.monotonic() + self._lease_cutoff()
        while True:
            try:
                ok = await self._link.check_lease(self._host_id, shard_id, slot.lease.epoch, retry_for=2.0)
                break
            except OrchestratorUnavailableError:
                if time.monotonic() > deadline or slot.leaving:
                    raise LeaseLostError(
                        f"shard {shard_id}: the orchestrator did not confirm the lease; not resuming"
                    ) from None
                _LOGGER.warning("shard %s waits for the orchestrator to confirm its lease before resuming", shard_id)
        if not ok:
            raise LeaseLostError(f"host {self._host_id} lost the lease of shard {shard_id}")
        self._metrics.count("resumes")
        _LOGGER.info("shard %s on host %s resumes its session", shard_id, self._host_id)

    async def _on_shard_disconnected(self, event: hikari.ShardDisconnectedEvent) -> None:
        slot = self._slots.get(event.shard.id)
        if slot is not None and not slot.leaving:
            self._metrics.count("reconnects")
            _LOGGER.info("shard %s on host %s disconnected; hikari reconnects", event.shard.id, self._host_id)

    async def _on_shard_ready(self, event: hikari.ShardReadyEvent) -> None:
        slot = self._slots.get(event.shard.id)
        if slot is None or not slot.identify_pending:
            return
        slot.identify_pending = False
        # The IDENTIFY's age is a duration on this host's clock, measured from after its frame was written (never
        # from a stamp before: on a busy loop the frame can leave long after). The Orchestrator subtracts it from
        # the report's arrival, which a retry or the transit only makes later, so the bound stays safe; it uses it
        # only with identify_window_from="sent", and counts from the report's arrival (after READY) otherwise.
        left_ago = None if slot.identify_left_at is None else max(0.0, time.monotonic() - slot.identify_left_at)
        with contextlib.suppress(Exception):
            await self._link.identify_done(
                event.shard.id, None, host_id=self._host_id, epoch=slot.lease.epoch, ask=slot.identify_ask,
                left_ago=left_ago, retry_for=10.0,
            )

    # -- sync with the Orchestrator --------------------------------------------------------------

    def _handled_session(self, slot: _Slot, state: SessionState | None, now: float) -> SessionState | None:
        """The session to report: its seq is the listener-completion watermark, never the seq received.

        Every event above it is replayed by the next owner's RESUME, so an event whose listeners
        had not finished when this host died is handled again (at-least-once), however slow the
        listener, the loop or a GC pause. Reports never go back within a session.
        """
        reported = slot.reported or slot.lease.session
        if state is not None:
            mark = self._event_manager.watermark(slot.lease.shard_id)
            handled = mark.value(now)
            if handled is not None and mark.session_id() == state.session_id:
                reported = dataclasses.replace(state, seq=min(state.seq, handled))
            elif reported is None or reported.session_id != state.session_id:
                # A session none of whose events was consumed here yet: nothing above its start is handled.
                reported = dataclasses.replace(state, seq=0)
        # Never report a seq below one already reported for the same session: a RESUME from a lower seq
        # than the Orchestrator once held could reach past Discord's replay buffer after a crash.
        if (
            reported is not None
            and slot.reported is not None
            and reported.session_id == slot.reported.session_id
            and reported.seq < slot.reported.seq
        ):
            reported = slot.reported
        slot.reported = reported
        return reported

    def _reports(self) -> list[ShardReport]:
        reports = []
        guilds_per_shard: collections.Counter[int] = collections.Counter()
        if self._config is not None:
            count = self._config.shard_count
            guilds_per_shard.update((int(g) >> 22) % count for g in self._cache.get_guilds_view())
        loop_now = time.monotonic()  # the clock the watermark's InFlight.started is taken with
        for shard_id, slot in list(self._slots.items()):
            state = sessions.snapshot(slot.shard)
            lagged = self._handled_session(slot, state, loop_now)
            status = slot.status
            if status is ShardStatus.READY and not slot.shard.is_connected:
                status = ShardStatus.RECONNECTING
            self._metrics.observe(shard_id, status, slot.shard.heartbeat_latency, state.seq if state else None)
            reports.append(
                ShardReport(
                    shard_id=shard_id,
                    epoch=slot.lease.epoch,
                    status=status,
                    session=lagged,
                    latency=slot.shard.heartbeat_latency,
                    guilds=guilds_per_shard[shard_id],
                    events=state.seq if state else 0,
                    error=slot.error,
                )
            )
        self._metrics.flush()
        return reports

    def _lease_cutoff(self) -> float:
        """Seconds without a sync after which this host's leases may be void.

        A standalone Bot cannot be killed, so the Orchestrator hands its shards on after
        ``standalone_lease_ttl`` of silence: it closes them itself (resumably) at half that.
        A host actor's shards move only once Ray says the actor is dead, or after the
        Orchestrator killed it (fencing): it keeps running through an Orchestrator or head
        restart of any length, and uses ``host_timeout`` only to bound a RESUME's wait for a
        lease check.
        """
        if self._actor_handle is None:
            return self._timings.standalone_lease_ttl / 2
        return self._timings.host_timeout

    def _self_fences(self) -> bool:
        return self._actor_handle is None

    async def _stop_cut_off_shards(self, silent: float) -> None:
        slots = [slot for slot in self._slots.values() if not slot.leaving]
        if not slots:
            return
        _LOGGER.error(
            "host %s: no sync with the orchestrator for %.1f s; closing its %s shard(s) resumably so no other "
            "host can ever run them at the same time",
            self._host_id,
            silent,
            len(slots),
        )
        await asyncio.gather(*(self._leave(slot, hand_over=True) for slot in slots), return_exceptions=True)

    async def _sync_forever(self) -> None:
        last_table = 0.0
        last_ok = time.monotonic()
        # report_seq must grow for the whole life of a host id, also across a restart of this Bot (the table
        # ignores a report_seq it has seen): start from the wall clock in microseconds, then count.
        report_seq = time.time_ns() // 1000
        last_state: tuple[list[int], list[str]] | None = None
        ready = ShardStatus.READY.value
        # The Orchestrator sizes a steady park by the bot's host count (Timings.steady_park) and says it in
        # every answer: until the first, the configured interval.
        steady_interval = self._timings.steady_sync_interval
        while True:
            try:
                report_seq += 1
                sent_at = time.monotonic()
                batch = ReportBatch.of(self._reports(), known=self._sent_sessions)
                # Park longer once every shard is READY and none changed since the last sync (Timings).
                state = (batch.shard_ids, batch.statuses)
                steady = state == last_state and all(s == ready for s in batch.statuses)
                last_state = state
                try:
                    directives = await self._link.sync(
                        self._host_id,
                        batch,
                        timeout=steady_interval if steady else self._timings.sync_interval,
                        report_seq=report_seq,
                        table_version=self._remote_table.position,
                        retry_for=min(5.0, self._lease_cutoff()),
                    )
                except BaseException:
                    self._sent_sessions.clear()
                    last_state = None
                    raise
                self._note_sent_sessions(batch, directives)
                if directives.steady_interval is not None:
                    steady_interval = directives.steady_interval
                # The lease is renewed as of when this sync was *sent*: the Orchestrator saw it no earlier.
                last_ok = sent_at
                self._apply(directives)
                if directives.table is not None:
                    self._take_table_rows(self._remote_table.apply(directives.table))
                # The answer carries the table's changes; a read of our own only for the full table every 30 s
                # (seqs and latencies), or before the first one.
                if time.monotonic() - last_table > 2.0 and (
                    self._remote_table.position is None or self._remote_table.full_due()
                ):
                    last_table = time.monotonic()
                    await self._refresh_remote_table(full=False)
            except asyncio.CancelledError:
                raise
            except BotStoppedError:
                self._spawn(self.close(hand_over=False), "close on bot stop")
                return
            except HostNotRegisteredError:
                _LOGGER.warning("host %s: the orchestrator does not know this host; registering again",
                                self._host_id)
                try:
                    await self._register_again()
                except Exception:
                    _LOGGER.exception("host %s: registering again failed; retrying", self._host_id)
                    await asyncio.sleep(self._timings.sync_interval)
            except OrchestratorUnavailableError:
                silent = time.monotonic() - last_ok
                if self._self_fences() and silent > self._lease_cutoff():
                    await self._stop_cut_off_shards(silent)
                else:
                    _LOGGER.warning("host %s: orchestrator unreachable; shards keep running", self._host_id)
            except Exception:
                _LOGGER.exception("host %s: sync failed; retrying", self._host_id)
                await asyncio.sleep(self._timings.sync_interval)

    def _note_sent_sessions(self, batch: ReportBatch, directives: HostDirectives) -> None:
        """After an answered sync: the Orchestrator holds the sessions the batch carried in full."""
        if directives.resend_sessions:
            self._sent_sessions.clear()
            return
        self._sent_sessions.update(batch.sessions)
        if len(self._sent_sessions) > len(batch.shard_ids):
            reported = set(batch.shard_ids)
            self._sent_sessions = {k: v for k, v in self._sent_sessions.items() if k in reported}

    def _apply(self, directives: HostDirectives) -> None:
        # Revokes first. A revoke of a shard that the same answer also adopts stops only a run below the
        # adopt's epoch: the revoke is for the older lease, and the adopt may already run here (resent).
        adopting = {lease.shard_id: lease.epoch for lease in directives.adopt}
        for shard_id in directives.revoke:
            slot = self._slots.get(shard_id)
            if slot is None or slot.leaving:
                continue
            if shard_id in adopting and slot.lease.epoch >= adopting[shard_id]:
                continue
            self._spawn(self._leave(slot, hand_over=True), f"hand over shard {shard_id}")
        for lease in directives.adopt:
            self._adopt(lease)
        for command in directives.commands:
            self._spawn(self._execute(command), f"command {command.command_id}")
        if directives.stop:
            self._spawn(self.close(hand_over=False), "close on bot stop")

    async def _wait_after_since(self) -> None:
        """Before muting for a reshard's switch: wait until ``3 * max_skew`` after the latest failover's ``since``.

        What this host receives after its mute then reaches the new set after ``since + max_skew``, which
        the cut-over's rule for guilds without a tail needs (`ray_shards.cutover`).
        """
        margin = 3 * self._timings.reshard_max_skew
        while True:
            latest = max(self._event_manager.recording_since().values(), default=0.0)
            wait = latest + margin - time.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _go_live_if_set_is(self, registration: Registration) -> None:
        """A host started in shadow mode whose reshard set went live while it started or was cut off (the switch's
        GO_LIVE went to the hosts registered then) delivers live from now on.

        A host of the bot's set with no switch in flight (`Registration.settled`) stops recording and delivers
        live: a RECORD or SWITCH_OUT from before an Orchestrator restart may have left it so, and the restarted
        Orchestrator's rollback told only the hosts registered at the time to go live again.
        """
        if not registration.shadow and self._event_manager.mode is DeliveryMode.SHADOW:
            self._event_manager.go_live(None)
        if registration.settled:
            self._event_manager.stop_recording()
            if self._event_manager.mode is DeliveryMode.MUTED:
                self._event_manager.go_live(None)

    async def _register_again(self) -> None:
        self._sent_sessions.clear()
        held = [(slot.lease.shard_id, slot.lease.epoch) for slot in self._slots.values() if not slot.leaving]
        registration = await self._link.register_host(
            self._host_id,
            node_id=self._node_id(),
            want=self._local_shard_count,
            handle=self._actor_handle,
            held=held,
            shard_count=self._global_shard_count,
        )
        self._presence, self._presence_version = registration.presence, registration.presence_version
        if registration.record:
            self._event_manager.start_recording()
        self._go_live_if_set_is(registration)
        for shard_id in registration.stale:
            slot = self._slots.get(shard_id)
            if slot is not None:
                self._spawn(self._leave(slot, hand_over=True), f"drop stale shard {shard_id}")
        for lease in registration.leases:
            self._adopt(lease)

    async def _refresh_remote_table(self, *, full: bool = True) -> None:
        # Only the rows that changed since the last read (and every row now and then): see ray_shards.table_view.
        self._take_table_rows(await self._remote_table.read(self._link, full=full))

    def _take_table_rows(self, rows: list[ShardInfo]) -> None:
        for row in rows:
            if row.shard_id not in self._remote:
                self._remote[row.shard_id] = RemoteShard(self, row.shard_id, row.shard_count)

    def shard_info(self, shard_id: int) -> ShardInfo | None:
        """The latest Orchestrator table row of ``shard_id`` (refreshed every few seconds)."""
        return self._remote_table.rows.get(shard_id)

    async def send_command(self, kind: CommandKind, shard_id: int, arguments: dict[str, typing.Any]) -> None:
        """Run a command on ``shard_id`` here if it is local, else on the host that runs it (directly if it can)."""
        slot = self._slots.get(shard_id)
        if slot is not None and not slot.leaving:
            error = await self._run_command(Command(0, kind, shard_id, arguments))
            if error is not None:
                raise RuntimeError(error)
            return
        if not await self._direct.send(kind, shard_id, arguments):
            await self._link.command(kind, shard_id, arguments)

    async def run_direct_command(
        self, kind: CommandKind, shard_id: int, epoch: int, arguments: dict[str, typing.Any]
    ) -> None:
        """Run a per-shard command sent straight to this host (see `ray_shards.direct_commands`).

        Raises
        ------
        StaleLeaseError
            When this host does not run ``shard_id`` under lease ``epoch`` (or it is not READY):
            the sender's table is out of date.
        CommandFailedError
            When running the command failed (the message says why).
        """
        if kind not in DIRECT_KINDS:
            msg = f"{kind.value} is not a per-shard command"
            raise ValueError(msg)
        slot = self._slots.get(shard_id)
        if slot is None or slot.leaving or slot.lease.epoch != epoch or slot.status is not ShardStatus.READY:
            held = "not here" if slot is None else f"epoch {slot.lease.epoch}, {slot.status.value}"
            msg = f"host {self._host_id} does not run shard {shard_id} at epoch {epoch} ({held})"
            raise StaleLeaseError(msg)
        error = await self._run_command(Command(0, kind, shard_id, arguments))
        if error is not None:
            raise CommandFailedError(error)

    async def _execute(self, command: Command) -> None:
        error = await self._run_command(command)
        with contextlib.suppress(Exception):
            await self._link.command_done(command.command_id, error, retry_for=5.0)

    async def _run_command(self, command: Command) -> str | None:
        try:
            if command.kind is CommandKind.RECORD:
                self._event_manager.start_recording()
                return None
            if command.kind is CommandKind.SHADOW_CHECK:
                return self._event_manager.overflow_message() if self._event_manager.near_cap else None
            if command.kind is CommandKind.SWITCH_OUT:
                await self._wait_after_since()
                since = self._event_manager.recording_since()
                tails = GuildTails(self._host_id, self._event_manager.mute(), since)
                await self._link.deliver_tails(self._host_id, tails, retry_for=10.0)
                return None
            if command.kind is CommandKind.GO_LIVE:
                given: GuildTails | None = command.arguments.get("tails")
                if given is not None:
                    self._event_manager.go_live(given.tails, since=given.since, old_count=given.old_count)
                else:
                    self._event_manager.go_live(None)
                if command.arguments.get("stop_recording"):
                    self._event_manager.stop_recording()
                return None
            if command.kind is CommandKind.PRESENCE and command.shard_id is None:
                await self.apply_presence(command.arguments["presence"], command.arguments["version"])
                return None
            slot = self._slots.get(command.shard_id) if command.shard_id is not None else None
            if slot is None:
                return f"shard {command.shard_id} is not on host {self._host_id}"
            if command.kind in SHARD_COMMANDS:
                await run_shard_command(slot.shard, command)
            elif command.kind is CommandKind.RECONNECT:
                await self._reconnect(slot)
            else:
                return f"unknown command {command.kind}"
        except Exception as exc:
            error = redact(f"{type(exc).__name__}: {exc}", self._link.token)
            _LOGGER.warning("host %s: command %s failed: %s", self._host_id, command.kind.value, error)
            return error
        return None

    async def apply_presence(self, presence: PresenceState, version: int) -> bool:
        """Take the bot-wide presence ``version`` from the Orchestrator and send it on every connected shard.

        Versions only move forward here: a push or mailbox command older than the presence
        this host already holds (two updates overtaking each other on their way) is ignored,
        so the shards never fall back to an older presence. The same version again is sent
        again (a retry after a lost answer is harmless). All shards send at once: each has its
        own connection and rate limit, so one slow send does not hold back the others.

        Returns
        -------
        bool
            False when ``version`` was older than this host's and nothing was sent.

        Raises
        ------
        RuntimeError
            When sending failed on a shard (the others were still sent; the message names it).
        """
        if version < self._presence_version:
            return False
        self._presence, self._presence_version = presence, version
        kwargs = presence.to_hikari_kwargs()
        slots = [s for s in self._slots.values() if s.shard.is_connected]
        results = await asyncio.gather(*(s.shard.update_presence(**kwargs) for s in slots), return_exceptions=True)
        failed = [(s.lease.shard_id, r) for s, r in zip(slots, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            shard_id, exc = failed[0]
            msg = f"presence not sent on {len(failed)} shard(s), e.g. shard {shard_id}: {type(exc).__name__}: {exc}"
            raise RuntimeError(msg)
        return True

    async def _reconnect(self, slot: _Slot) -> None:
        """Restart one shard in place: close its connection resumably, then RESUME it."""
        slot.leaving = True
        session = await sessions.detach(slot.shard)
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slot.task
        self._slots.pop(slot.lease.shard_id, None)
        self._adopt(dataclasses.replace(slot.lease, session=session))

    # -- bot-wide gateway operations ---------------------------------------------------------------

    @override
    async def update_presence(
        self,
        *,
        status: hikari.UndefinedOr[hikari.Status] = hikari.UNDEFINED,
        idle_since: hikari.UndefinedNoneOr[typing.Any] = hikari.UNDEFINED,
        activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED,
        afk: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
    ) -> None:
        """Update the presence of every shard of the bot (on every host); it is remembered across restarts."""
        self._check_if_alive()
        arguments = validation.presence_update(idle_since=idle_since, afk=afk, activity=activity, status=status)
        await self._link.update_presence(**arguments)

    @override
    async def update_voice_state(
        self,
        guild: hikari.SnowflakeishOr[hikari.PartialGuild],
        channel: hikari.SnowflakeishOr[hikari.GuildVoiceChannel] | None,
        *,
        self_mute: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        self_deaf: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
    ) -> None:
        self._check_if_alive()
        arguments = validation.voice_state(guild, channel, self_mute=self_mute, self_deaf=self_deaf)
        shard_id = validation.shard_for_guild(guild, self.shard_count)
        await self.send_command(CommandKind.VOICE_STATE, shard_id, arguments)

    @override
    async def request_guild_members(
        self,
        guild: hikari.SnowflakeishOr[hikari.PartialGuild],
        *,
        include_presences: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        query: str = "",
        limit: int = 0,
        users: hikari.UndefinedOr[hikari.SnowflakeishSequence[hikari.User]] = hikari.UNDEFINED,
        nonce: hikari.UndefinedOr[str] = hikari.UNDEFINED,
    ) -> None:
        self._check_if_alive()
        arguments = validation.member_request(
            self._intents, guild, include_presences=include_presences, query=query, limit=limit, users=users,
            nonce=nonce,
        )
        shard_id = validation.shard_for_guild(guild, self.shard_count)
        await self.send_command(CommandKind.REQUEST_MEMBERS, shard_id, arguments)

    @override
    async def request_channel_info(
        self, guild: hikari.SnowflakeishOr[hikari.PartialGuild], *, fields: typing.Sequence[typing.Any]
    ) -> None:
        self._check_if_alive()
        shard_id = validation.shard_for_guild(guild, self.shard_count)
        arguments = {"guild": int(guild), "fields": [str(field) for field in fields]}
        await self.send_command(CommandKind.REQUEST_CHANNEL_INFO, shard_id, arguments)
