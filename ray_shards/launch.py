"""Launchers: `run_server`, `run_subprocesses`, `spawn_subprocesses` and `BotDeployment`.

``run_server`` starts a bot's Orchestrator on a Ray cluster and keeps it up;
``spawn_subprocesses`` (and its blocking twin ``run_subprocesses``) also starts
``subprocess_count`` ShardHost actors across the cluster, supervises them
(replacing hosts that die) and stops everything it started on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import typing

import hikari
import ray
from hikari.impl import config as config_impl

from ray_shards.auth import bot_id_from_token, validate_token
from ray_shards.bot import Bot
from ray_shards.connection import NAMESPACE, ensure_ray, orchestrator_name
from ray_shards.errors import CheckpointWriteError
from ray_shards.fleet import split_shards
from ray_shards.gateway_info import validate_rest_url
from ray_shards.host import HostCallbackError
from ray_shards.link import OrchestratorLink
from ray_shards.orchestrator import Orchestrator, OrchestratorOptions
from ray_shards.settings import HostSetup
from ray_shards.timings import Timings

__all__ = [
    "DEFAULT_SUBPROCESS_COUNT",
    "BotDeployment",
    "HostSetup",
    "run_server",
    "run_subprocesses",
    "spawn_subprocesses",
    "split_shards",
    "start_orchestrator",
]

_LOGGER = logging.getLogger("ray_shards.launch")

DEFAULT_SUBPROCESS_COUNT: typing.Final[int] = os.cpu_count() or 1
"""Default number of shard hosts: this machine's thread count."""

CallbackT = typing.Callable[[Bot], typing.Any]


def _intents_value(intents: hikari.Intents | int) -> int:
    if isinstance(intents, bool) or not isinstance(intents, int):
        msg = f"intents must be a hikari.Intents or an int, not {type(intents).__name__}"
        raise TypeError(msg)
    valid = 0
    for flag in hikari.Intents:
        valid |= int(flag)
    if intents < 0 or intents & ~valid:
        msg = f"intents {int(intents)} has bits Discord does not define; build it from hikari.Intents flags"
        raise ValueError(msg)
    return int(intents)


def _check_count(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a whole number of at least 1, not {value!r}"
        raise ValueError(msg)


def _reject_tls(ca_cert: bytes | None, private_key: bytes | None) -> None:
    if ca_cert is not None or private_key is not None:
        msg = (
            "ca_cert/private_key are not used by ray_shards: every connection goes through Ray, so TLS is Ray's "
            "own. Set RAY_USE_TLS=1, RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY and RAY_TLS_CA_CERT on every node "
            "and client instead (README, 'Security')."
        )
        raise ValueError(msg)


SettingsFactoryT = typing.Callable[[], typing.Mapping[str, typing.Any] | None]


def _host_setup(
    callback: CallbackT | HostSetup | None,
    *,
    cache_settings: config_impl.CacheSettings | None,
    http_settings: config_impl.HTTPSettings | None,
    proxy_settings: config_impl.ProxySettings | None,
    large_threshold: int | None,
    settings_factory: SettingsFactoryT | None,
) -> CallbackT | HostSetup | None:
    """The callback every host runs, with the settings for its Bot folded in (a `HostSetup`) when any is given."""
    given = sorted(
        name
        for name, value in (
            ("cache_settings", cache_settings),
            ("http_settings", http_settings),
            ("proxy_settings", proxy_settings),
            ("large_threshold", large_threshold),
            ("settings_factory", settings_factory),
        )
        if value is not None
    )
    if not given:
        return callback
    if isinstance(callback, HostSetup):
        msg = f"pass {', '.join(given)} in the HostSetup given as callback, or as arguments, not both"
        raise TypeError(msg)
    if callback is not None and not callable(callback):
        msg = f"callback must be callable, not {type(callback).__name__}"
        raise TypeError(msg)
    return HostSetup(
        callback=callback,
        cache_settings=cache_settings,
        http_settings=http_settings,
        proxy_settings=proxy_settings,
        large_threshold=large_threshold,
        settings_factory=settings_factory,
    )


_HEAD_RESOURCE = "node:__internal_head__"


def _head_placement() -> dict[str, typing.Any]:
    """Options that put the Orchestrator on the head node, whichever node is the head.

    A tiny share of the head's own resource rather than affinity to the head's node id: after a head
    restart with GCS fault tolerance the new head has a new id, and a hard affinity to the old one
    would leave the restarted Orchestrator unschedulable for ever.
    """
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("Alive") and _HEAD_RESOURCE in node.get("Resources", {}):
            return {"resources": {_HEAD_RESOURCE: 0.001}}
    return {"scheduling_strategy": "DEFAULT"}


async def start_orchestrator(
    token: str,
    address: str | None = None,
    *,
    rest_url: str = hikari.urls.REST_API_URL,
    shard_count: int | None = None,
    intents: hikari.Intents | int = hikari.Intents.ALL_UNPRIVILEGED,
    timings: Timings | None = None,
    auto_reshard: bool = False,
    guild_threshold: int = 2000,
) -> OrchestratorLink:
    """Start the bot's Orchestrator (or join the one already running) and return a link to it.

    Raises
    ------
    ValueError
        For a malformed token, bad ``shard_count``, unknown intents or a non-http ``rest_url``,
        and when a running Orchestrator of this bot has another shard count or intents.
    PermissionError
        When Discord rejects the token.
    """
    token = validate_token(token)
    _check_count("shard_count", shard_count, allow_none=True)
    intents_value = _intents_value(intents)
    rest_url = validate_rest_url(rest_url)
    await asyncio.to_thread(ensure_ray, address)
    bot_id = bot_id_from_token(token)
    options = OrchestratorOptions(
        rest_url=rest_url,
        shard_count=shard_count,
        intents=intents_value,
        timings=timings or Timings(),
        auto_reshard=auto_reshard,
        guild_threshold=guild_threshold,
    )
    orchestrator_class: typing.Any = ray.remote(Orchestrator)
    handle = (
        orchestrator_class.options(
            name=orchestrator_name(bot_id),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_concurrency=10_000,
            num_cpus=0,
            **_head_placement(),
        )
        .remote(bot_id, options)
    )
    link = OrchestratorLink(token, address)
    link.adopt_handle(handle)
    info = await link.ping()
    if info.initialised:
        await link.authenticate()
        config = (await link.status()).config
        if shard_count is not None and config.shard_count != shard_count:
            msg = (
                f"an orchestrator for bot {bot_id} already runs with {config.shard_count} shards; stop it first "
                f"(`ray-shards stop`) or use shard_count={config.shard_count}"
            )
            raise ValueError(msg)
        if config.intents != intents_value:
            msg = f"an orchestrator for bot {bot_id} already runs with intents {config.intents}; stop it first"
            raise ValueError(msg)
    else:
        try:
            await link.initialise()
        except BaseException:
            ray.kill(handle)
            raise
    return link


class BotDeployment:
    """A bot started by `spawn_subprocesses`: its Orchestrator and the ShardHost actors it runs.

    The hosts are detached actors owned by the Orchestrator, which replaces those that
    die; `stop` ends every session and kills every actor the deployment started.
    Use `BotDeployment.start` to get one.
    """

    __slots__ = ("_keep_orchestrator", "_link", "_stopping")

    def __init__(self, link: OrchestratorLink, *, keep_orchestrator: bool) -> None:
        self._link = link
        self._keep_orchestrator = keep_orchestrator
        self._stopping = False

    def __repr__(self) -> str:
        return f"BotDeployment(bot_id={self._link.bot_id}, stopping={self._stopping})"

    @property
    def link(self) -> OrchestratorLink:
        """The authenticated link to the Orchestrator."""
        return self._link

    @property
    def hosts(self) -> typing.Mapping[str, typing.Any]:
        """Host id to ShardHost actor handle, as the Orchestrator knows them now."""
        return typing.cast(typing.Mapping[str, typing.Any], self._link.call_sync("host_handles"))

    @classmethod
    async def start(
        cls,
        token: str,
        /,
        *,
        callback: CallbackT | HostSetup | None = None,
        shard_count: int | None = None,
        intents: hikari.Intents | int = hikari.Intents.ALL_UNPRIVILEGED,
        subprocess_count: int = DEFAULT_SUBPROCESS_COUNT,
        rest_url: str = hikari.urls.REST_API_URL,
        address: str | None = None,
        timings: Timings | None = None,
        keep_orchestrator: bool = False,
        auto_reshard: bool = False,
        cache_settings: config_impl.CacheSettings | None = None,
        http_settings: config_impl.HTTPSettings | None = None,
        proxy_settings: config_impl.ProxySettings | None = None,
        large_threshold: int | None = None,
        settings_factory: SettingsFactoryT | None = None,
    ) -> BotDeployment:
        """Start the Orchestrator and ``subprocess_count`` hosts; return once every shard is READY.

        Takes `run_subprocesses`' arguments.

        Raises
        ------
        ValueError
            For bad arguments (nothing is started).
        ray_shards.host.HostCallbackError
            When ``callback`` (or ``settings_factory``) raised in a host (everything started is stopped again).
        """
        _check_count("subprocess_count", subprocess_count)
        callback = _host_setup(
            callback,
            cache_settings=cache_settings,
            http_settings=http_settings,
            proxy_settings=proxy_settings,
            large_threshold=large_threshold,
            settings_factory=settings_factory,
        )
        if callback is not None and not callable(callback):
            msg = f"callback must be callable, not {type(callback).__name__}"
            raise TypeError(msg)
        pickled = ray.cloudpickle.dumps(callback) if callback is not None else None  # type: ignore[no-untyped-call]
        link = await start_orchestrator(
            token,
            address,
            rest_url=rest_url,
            shard_count=shard_count,
            intents=intents,
            timings=timings,
            auto_reshard=auto_reshard,
        )
        deployment = cls(link, keep_orchestrator=keep_orchestrator)
        progress = asyncio.create_task(deployment._report_progress(), name="ray_shards boot progress")
        try:
            hosts = await deployment._deploy(subprocess_count, pickled)
        except BaseException:
            await deployment.stop()
            raise
        finally:
            progress.cancel()
        _LOGGER.info("bot %s running on hosts %s", link.bot_id, ", ".join(hosts))
        return deployment

    async def _deploy(self, subprocess_count: int, pickled: bytes | None) -> list[str]:
        """Ask for the hosts, then follow the boot until every shard is READY.

        The Orchestrator checkpoints the deployment before it starts any host, and both calls
        are retried for a minute while the actor is away (or the GCS refuses the deployment's
        checkpoint), so a launcher rides out an Orchestrator restart in the middle of a boot
        instead of raising.
        """
        link = self._link
        give_up = time.monotonic() + 60.0
        while True:
            try:
                await link.deploy(subprocess_count, pickled, wait=False, retry_for=60.0)
                break
            except CheckpointWriteError as exc:
                # The GCS refused the deployment's intent, so nothing started: a GCS that is back within the
                # minute takes the next try.
                if time.monotonic() > give_up:
                    raise
                _LOGGER.warning("%s", exc)
                await asyncio.sleep(1.0)
        while True:
            status = await link.deploy_status(retry_for=60.0)
            if status.error is not None:
                if status.error_type == "HostCallbackError":
                    raise HostCallbackError(status.error)
                msg = f"the bot could not start: {status.error_type}: {status.error}"
                raise RuntimeError(msg)
            if status.ready == status.total and status.hosts:
                return list(status.hosts)
            await asyncio.sleep(0.2)

    async def _report_progress(self, every: float = 2.0) -> None:
        """Show boot progress (READY/total and the identify schedule's time left) until cancelled.

        A progress bar on a terminal (redrawn in place every second), a log line every ``every``
        seconds otherwise: escape codes and carriage returns are noise in a log file.
        """
        from ray_shards.progress import BootProgress

        progress = BootProgress.for_stream(sys.stderr)
        try:
            while True:
                await asyncio.sleep(progress.interval(every))
                with contextlib.suppress(Exception):
                    progress.update(await self._link.status(retry_for=1.0))
        finally:
            progress.close()

    async def wait(self) -> None:
        """Block until the bot stops (``Client.shutdown`` or ``ray-shards stop``)."""
        while not self._stopping:
            try:
                info = await self._link.ping()
            except Exception:
                return
            if info.stopping:
                return
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Stop the bot: end every shard's session, kill the hosts and (unless kept) the Orchestrator."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._link.shutdown(retry_for=3.0), 20.0)
        if not self._keep_orchestrator and self._link.handle is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._link.handle, no_restart=True)
        _LOGGER.info("bot %s stopped", self._link.bot_id)


async def spawn_subprocesses(
    token: str,
    /,
    *,
    callback: CallbackT | HostSetup | None = None,
    shard_count: int | None = None,
    intents: hikari.Intents | int = hikari.Intents.ALL_UNPRIVILEGED,
    subprocess_count: int = DEFAULT_SUBPROCESS_COUNT,
    rest_url: str = hikari.urls.REST_API_URL,
    address: str | None = None,
    timings: Timings | None = None,
    auto_reshard: bool = False,
    cache_settings: config_impl.CacheSettings | None = None,
    http_settings: config_impl.HTTPSettings | None = None,
    proxy_settings: config_impl.ProxySettings | None = None,
    large_threshold: int | None = None,
    settings_factory: SettingsFactoryT | None = None,
) -> None:
    """Asynchronous variant of `run_subprocesses`.

    The returned coroutine finishes once the bot has closed; cancelling it stops the bot.
    """
    deployment = await BotDeployment.start(
        token,
        callback=callback,
        shard_count=shard_count,
        intents=intents,
        subprocess_count=subprocess_count,
        rest_url=rest_url,
        address=address,
        timings=timings,
        auto_reshard=auto_reshard,
        cache_settings=cache_settings,
        http_settings=http_settings,
        proxy_settings=proxy_settings,
        large_threshold=large_threshold,
        settings_factory=settings_factory,
    )
    try:
        await deployment.wait()
    finally:
        await asyncio.shield(deployment.stop())


def _run_until_signalled(
    coro_factory: typing.Callable[[], typing.Coroutine[typing.Any, typing.Any, None]], address: str | None
) -> None:
    # Connect to Ray from the main thread (Ray installs its signal handlers there), and disconnect at the end.
    started_ray = not ray.is_initialized()
    ensure_ray(address)

    async def main() -> None:
        task = asyncio.ensure_future(coro_factory())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        if started_ray:
            ray.shutdown()


def run_subprocesses(
    token: str,
    /,
    *,
    callback: CallbackT | HostSetup | None = None,
    shard_count: int | None = None,
    intents: hikari.Intents | int = hikari.Intents.ALL_UNPRIVILEGED,
    subprocess_count: int = DEFAULT_SUBPROCESS_COUNT,
    rest_url: str = hikari.urls.REST_API_URL,
    address: str | None = None,
    timings: Timings | None = None,
    auto_reshard: bool = False,
    cache_settings: config_impl.CacheSettings | None = None,
    http_settings: config_impl.HTTPSettings | None = None,
    proxy_settings: config_impl.ProxySettings | None = None,
    large_threshold: int | None = None,
    settings_factory: SettingsFactoryT | None = None,
) -> None:
    """Run a bot across several processes: ``subprocess_count`` ShardHost actors on the Ray cluster.

    Parameters
    ----------
    token
        Discord token of the bot.
    callback
        Called with each host's bot (a `Bot`, a `hikari.traits.GatewayBotAware`) before it
        starts; set listeners up here. It is pickled and runs in the host processes.
    shard_count
        The amount of shards the bot is split into; Discord's recommendation when None.
    intents
        The gateway intents the bot runs with.
    subprocess_count
        The amount of host processes; never more than ``shard_count``.
    rest_url
        Discord REST base URL (the emulator's, in tests).
    address
        Ray address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None connects to a
        running cluster or starts a local one.
    timings
        Reaction times.
    auto_reshard
        Reshard live by itself when Discord recommends more shards than run, or a shard
        holds over 2000 guilds.
    cache_settings, http_settings, proxy_settings
        hikari's settings for every host's `Bot` (pickled and sent to the hosts).
    large_threshold
        Members in a guild before Discord treats it as large (50 to 250), for every shard.
    settings_factory
        Called in each host before its `Bot` is built; returns more `Bot` keyword arguments
        (``executor=``, ``auto_chunk_members=``...) and may configure logging there. See `HostSetup`,
        which is also how ``ray-shards run --entrypoint`` takes these settings.

    Blocks until the bot stops; SIGINT/SIGTERM stop it gracefully (every shard closed,
    every actor it started killed).
    """
    _run_until_signalled(
        lambda: spawn_subprocesses(
            token,
            callback=callback,
            shard_count=shard_count,
            intents=intents,
            subprocess_count=subprocess_count,
            rest_url=rest_url,
            address=address,
            timings=timings,
            auto_reshard=auto_reshard,
            cache_settings=cache_settings,
            http_settings=http_settings,
            proxy_settings=proxy_settings,
            large_threshold=large_threshold,
            settings_factory=settings_factory,
        ),
        address,
    )


def run_server(
    token: str,
    address: str | None,
    /,
    *,
    intents: hikari.Intents | int = hikari.Intents.ALL_UNPRIVILEGED,
    ca_cert: bytes | None = None,
    private_key: bytes | None = None,
    shard_count: int | None = None,
    rest_url: str = hikari.urls.REST_API_URL,
    timings: Timings | None = None,
) -> None:
    """Run an Orchestrator for the bot on the Ray cluster at ``address`` until SIGINT/SIGTERM.

    `Bot` instances (``Bot(address, token, local_shard_count=N)``) and `Client` connect to it.

    Parameters
    ----------
    token
        Discord token of the bot this orchestrator is managing.
    address
        The Ray cluster to run on (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``, or
        ``"local"`` for a new local cluster).
    intents
        The Discord gateway intents this bot should run with.
    ca_cert, private_key
        Refused with an explanation: TLS is configured through Ray (``RAY_USE_TLS``).
    shard_count
        The amount of shards this bot should be split into; Discord's recommendation when None.
    rest_url
        Discord REST base URL.
    """
    _reject_tls(ca_cert, private_key)

    async def serve() -> None:
        link = await start_orchestrator(
            token, address, rest_url=rest_url, shard_count=shard_count, intents=intents, timings=timings
        )
        _LOGGER.info("orchestrator of bot %s is running; Ctrl-C stops it", link.bot_id)
        try:
            while True:
                info = await link.ping()
                if info.stopping:
                    break
                await asyncio.sleep(1.0)
        finally:
            # Joins a shutdown already under way (a client's): it returns when that one is done, so the
            # client's own call has its answer before the actor goes.
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(link.shutdown(retry_for=3.0), 30.0))
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                ray.kill(link.handle, no_restart=True)

    _run_until_signalled(serve, address)
