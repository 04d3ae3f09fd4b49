"""A caller's authenticated connection to its bot's Orchestrator actor.

Wraps every Ray call to the Orchestrator: proves the token once and then uses
the capability it got, authenticates again when the Orchestrator restarted, and
retries while the actor is restarting. The token stays in this object's memory
and is only ever sent as a method argument (never a constructor argument Ray
would record).
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

import ray
import ray.exceptions

from ray_shards.auth import bot_id_from_token, validate_token
from ray_shards.connection import NAMESPACE, OrchestratorNotFoundError, ensure_ray, orchestrator_name
from ray_shards.errors import CapabilityExpiredError, NotInitialisedError
from ray_shards.ray_errors import unwrap_ray_error

if typing.TYPE_CHECKING:
    from ray_shards.presence import PresenceState
    from ray_shards.protocol import (
        BotStatus,
        CommandKind,
        DeployStatus,
        GuildTails,
        HostDirectives,
        IdentifyAnswer,
        Lease,
        PingInfo,
        Registration,
        ReportBatch,
        ReshardProgress,
        RollingRestartProgress,
        SessionState,
        ShardInfo,
        ShardReport,
        TableDelta,
    )

__all__ = ["OrchestratorLink", "OrchestratorUnavailableError", "unwrap_ray_error"]

_LOGGER = logging.getLogger("ray_shards.link")

_UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class OrchestratorUnavailableError(ConnectionError):
    """The Orchestrator did not answer (it died and was not restarted in time)."""


class OrchestratorLink:
    """Authenticated calls to one bot's Orchestrator.

    Parameters
    ----------
    token
        The bot token (kept private to this object).
    address
        Ray address used when this process is not connected to Ray yet.
    """

    __slots__ = ("_address", "_bot_id", "_capability", "_handle", "_lock", "_on_reauthenticated", "_token")

    def __init__(self, token: str, address: str | None) -> None:
        self._token = validate_token(token)
        self._bot_id = bot_id_from_token(self._token)
        self._address = address
        self._handle: typing.Any = None
        self._capability: str | None = None
        self._lock = asyncio.Lock()
        self._on_reauthenticated: typing.Callable[[], typing.Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"OrchestratorLink(bot_id={self._bot_id}, connected={self._capability is not None})"

    def __reduce__(self) -> typing.NoReturn:
        msg = "an OrchestratorLink holds the bot token and is never pickled"
        raise TypeError(msg)

    @property
    def bot_id(self) -> int:
        """The bot's user id."""
        return self._bot_id

    @property
    def handle(self) -> typing.Any:
        """The Orchestrator's actor handle (None before `connect`)."""
        return self._handle

    @property
    def token(self) -> str:
        """The bot token, for the hikari objects of this process."""
        return self._token

    def on_reauthenticated(self, callback: typing.Callable[[], typing.Awaitable[None]] | None) -> None:
        """Run ``callback`` after every re-authentication (an Orchestrator restart)."""
        self._on_reauthenticated = callback

    async def connect(self, *, wait: float = 0.0) -> None:
        """Connect to Ray if needed, find the Orchestrator and authenticate.

        Raises
        ------
        OrchestratorNotFoundError
            When no Orchestrator runs for this bot (after waiting up to ``wait`` seconds).
        PermissionError
            When the token does not control that Orchestrator's bot.
        """
        await asyncio.to_thread(ensure_ray, self._address)
        deadline = time.monotonic() + wait
        while True:
            try:
                self._handle = ray.get_actor(orchestrator_name(self._bot_id), namespace=NAMESPACE)
                break
            except ValueError:
                if time.monotonic() >= deadline:
                    msg = (
                        f"no ray_shards orchestrator runs for bot {self._bot_id} on this Ray cluster; start one with "
                        "`ray-shards server` or `ray_shards.run_server`, or launch the bot with run_subprocesses"
                    )
                    raise OrchestratorNotFoundError(msg) from None
                await asyncio.sleep(0.2)
        # The actor may exist a moment before its launcher has given it the bot. That launcher first hashes the
        # token and asks Discord for /gateway/bot: on a loaded 2-core machine that took over 30 s once.
        deadline = time.monotonic() + max(wait, 60.0)
        while True:
            try:
                await self.authenticate()
                return
            except NotInitialisedError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)

    def adopt_handle(self, handle: typing.Any) -> None:
        """Use an Orchestrator handle this process already has (the launcher created the actor)."""
        self._handle = handle

    async def authenticate(self) -> None:
        """Prove the token to the Orchestrator and keep the capability it gives."""
        self._capability = await self._raw("authenticate", self._token, retry_for=30.0)

    async def revoke(self) -> None:
        """Give the capability back (the caller is done): the Orchestrator forgets it at once."""
        capability, self._capability = self._capability, None
        if capability is None or self._handle is None:
            return
        try:
            await asyncio.wait_for(self._handle.revoke.remote(capability), 5.0)
        except Exception as exc:  # the Orchestrator also forgets idle capabilities by itself
            _LOGGER.debug("revoking the capability failed: %s", type(exc).__name__)

    async def initialise(self) -> None:
        """Give a fresh Orchestrator its bot and keep the capability it gives."""
        self._capability = await self._raw("initialise", self._token, retry_for=30.0)

    async def _raw(self, method: str, *args: typing.Any, retry_for: float, **kwargs: typing.Any) -> typing.Any:
        if self._handle is None:
            msg = "not connected to the orchestrator; call connect() first"
            raise RuntimeError(msg)
        deadline = time.monotonic() + retry_for
        delay = 0.05
        while True:
            try:
                return await getattr(self._handle, method).remote(*args, **kwargs)
            except ray.exceptions.RayTaskError as exc:
                raise unwrap_ray_error(exc) from None
            except _UNAVAILABLE as exc:
                if time.monotonic() >= deadline:
                    msg = f"the orchestrator of bot {self._bot_id} is unavailable ({type(exc).__name__})"
                    raise OrchestratorUnavailableError(msg) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def call_sync(self, method: str, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        """Blocking `call` without retries, for synchronous properties (never from inside an actor)."""
        if self._handle is None:
            msg = "not connected to the orchestrator; call connect() first"
            raise RuntimeError(msg)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                return ray.get(getattr(self._handle, method).remote(self._capability, *args, **kwargs))
            except ray.exceptions.RayTaskError as exc:
                cause = unwrap_ray_error(exc)
                if not isinstance(cause, CapabilityExpiredError) or time.monotonic() > deadline:
                    raise cause from None
                self._capability = ray.get(self._handle.authenticate.remote(self._token))
            except _UNAVAILABLE:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    async def call(self, method: str, *args: typing.Any, retry_for: float = 30.0, **kwargs: typing.Any) -> typing.Any:
        """Call ``method`` on the Orchestrator with this link's capability (untyped: prefer the typed methods below).

        Retries for up to ``retry_for`` seconds while the actor restarts, and
        authenticates again when the Orchestrator forgot the capability.

        Raises
        ------
        OrchestratorUnavailableError
            When the Orchestrator did not come back within ``retry_for``.
        """
        for attempt in range(3):
            capability = self._capability
            try:
                return await self._raw(method, capability, *args, retry_for=retry_for, **kwargs)
            except CapabilityExpiredError:
                if attempt == 2:
                    raise
                async with self._lock:
                    if self._capability != capability:
                        continue  # another call already authenticated again
                    _LOGGER.info("orchestrator of bot %s restarted; authenticating again", self._bot_id)
                    await self.authenticate()
                    if self._on_reauthenticated is not None:
                        await self._on_reauthenticated()
        raise AssertionError("unreachable")

    # -- typed calls ------------------------------------------------------------------------------
    # One method per Orchestrator method, with its arguments (less the capability) and its return type, so that
    # callers are type checked. Each is `call` with the same retries; tests/test_protocol.py checks that these
    # signatures match the Orchestrator's.

    async def ping(self) -> PingInfo:
        """`Orchestrator.ping` (no capability, no retries: a liveness probe)."""
        if self._handle is None:
            msg = "not connected to the orchestrator; call connect() first"
            raise RuntimeError(msg)
        info: PingInfo = await self._handle.ping.remote()
        return info

    async def register_host(
        self,
        host_id: str,
        *,
        node_id: str | None,
        want: int,
        handle: typing.Any = None,
        held: list[tuple[int, int]] | None = None,
        shard_count: int | None = None,
        placeable: bool = True,
        retry_for: float = 30.0,
    ) -> Registration:
        """`Orchestrator.register_host`."""
        result: Registration = await self.call(
            "register_host", host_id, node_id=node_id, want=want, handle=handle, held=held, shard_count=shard_count,
            placeable=placeable, retry_for=retry_for,
        )
        return result

    async def sync(
        self,
        host_id: str,
        reports: list[ShardReport] | ReportBatch,
        *,
        timeout: float | None = None,
        report_seq: int | None = None,
        table_version: tuple[int, int] | None = None,
        retry_for: float = 30.0,
    ) -> HostDirectives:
        """`Orchestrator.sync`."""
        result: HostDirectives = await self.call(
            "sync", host_id, reports, timeout=timeout, report_seq=report_seq, table_version=table_version,
            retry_for=retry_for,
        )
        return result

    async def release(
        self,
        host_id: str,
        shard_id: int,
        epoch: int,
        session: SessionState | None,
        *,
        stopped: bool = False,
        failed: str | None = None,
        retry_for: float = 30.0,
    ) -> bool:
        """`Orchestrator.release`."""
        result: bool = await self.call(
            "release", host_id, shard_id, epoch, session, stopped=stopped, failed=failed, retry_for=retry_for
        )
        return result

    async def claim(self, host_id: str, count: int = 1, *, retry_for: float = 30.0) -> list[Lease]:
        """`Orchestrator.claim`."""
        result: list[Lease] = await self.call("claim", host_id, count, retry_for=retry_for)
        return result

    async def request_identify(
        self,
        host_id: str,
        shard_id: int,
        epoch: int,
        *,
        ask: int | None = None,
        dropped: int | None = None,
        early: bool = False,
        retry_for: float = 30.0,
    ) -> IdentifyAnswer:
        """`Orchestrator.request_identify`."""
        result: IdentifyAnswer = await self.call(
            "request_identify", host_id, shard_id, epoch, ask=ask, dropped=dropped, early=early, retry_for=retry_for
        )
        return result

    async def identify(self, host_id: str, shard_id: int, epoch: int, *, retry_for: float = 30.0) -> PresenceState:
        """`Orchestrator.identify`."""
        result: PresenceState = await self.call("identify", host_id, shard_id, epoch, retry_for=retry_for)
        return result

    async def identify_done(
        self,
        shard_id: int,
        sent_at: float | None,
        *,
        host_id: str | None = None,
        epoch: int | None = None,
        ask: int | None = None,
        left_ago: float | None = None,
        retry_for: float = 30.0,
    ) -> None:
        """`Orchestrator.identify_done`."""
        await self.call(
            "identify_done", shard_id, sent_at, host_id=host_id, epoch=epoch, ask=ask, left_ago=left_ago,
            retry_for=retry_for,
        )

    async def check_lease(self, host_id: str, shard_id: int, epoch: int, *, retry_for: float = 30.0) -> bool:
        """`Orchestrator.check_lease`."""
        result: bool = await self.call("check_lease", host_id, shard_id, epoch, retry_for=retry_for)
        return result

    async def command_done(self, command_id: int, error: str | None, *, retry_for: float = 30.0) -> None:
        """`Orchestrator.command_done`."""
        await self.call("command_done", command_id, error, retry_for=retry_for)

    async def command(
        self, kind: CommandKind, shard_id: int, arguments: dict[str, typing.Any], *, retry_for: float = 30.0
    ) -> None:
        """`Orchestrator.command`."""
        await self.call("command", kind, shard_id, arguments, retry_for=retry_for)

    async def update_presence(self, *, retry_for: float = 30.0, **presence: typing.Any) -> int:
        """`Orchestrator.update_presence` with `validation.presence_update`'s keyword arguments."""
        result: int = await self.call("update_presence", retry_for=retry_for, **presence)
        return result

    async def table(self, *, retry_for: float = 30.0) -> list[ShardInfo]:
        """`Orchestrator.table`."""
        result: list[ShardInfo] = await self.call("table", retry_for=retry_for)
        return result

    async def status(self, *, retry_for: float = 30.0) -> BotStatus:
        """`Orchestrator.status`."""
        result: BotStatus = await self.call("status", retry_for=retry_for)
        return result

    async def deploy(
        self, hosts: int, callback: bytes | None, *, wait: bool = True, retry_for: float = 30.0
    ) -> list[str]:
        """`Orchestrator.deploy`."""
        result: list[str] = await self.call("deploy", hosts, callback, wait=wait, retry_for=retry_for)
        return result

    async def deploy_status(self, *, retry_for: float = 30.0) -> DeployStatus:
        """`Orchestrator.deploy_status`."""
        result: DeployStatus = await self.call("deploy_status", retry_for=retry_for)
        return result

    async def table_since(
        self, table_id: int, version: int, wait: float = 0.0, *, retry_for: float = 30.0
    ) -> TableDelta:
        """`Orchestrator.table_since` (a long poll of up to ``wait`` s)."""
        result: TableDelta = await self.call("table_since", table_id, version, wait, retry_for=retry_for)
        return result

    async def host_handles(self, *, retry_for: float = 30.0) -> dict[str, typing.Any]:
        """`Orchestrator.host_handles` (Ray actor handles are untyped)."""
        result: dict[str, typing.Any] = await self.call("host_handles", retry_for=retry_for)
        return result

    async def start_rolling_restart(
        self, callback: bytes | None = None, *, retry_for: float = 30.0
    ) -> RollingRestartProgress:
        """`Orchestrator.start_rolling_restart`."""
        result: RollingRestartProgress = await self.call("start_rolling_restart", callback, retry_for=retry_for)
        return result

    async def control_rolling_restart(self, action: str, *, retry_for: float = 30.0) -> RollingRestartProgress:
        """`Orchestrator.control_rolling_restart`."""
        result: RollingRestartProgress = await self.call("control_rolling_restart", action, retry_for=retry_for)
        return result

    async def start_reshard(self, shard_count: int, *, retry_for: float = 30.0) -> ReshardProgress:
        """`Orchestrator.start_reshard`."""
        result: ReshardProgress = await self.call("start_reshard", shard_count, retry_for=retry_for)
        return result

    async def deliver_tails(self, host_id: str, tails: GuildTails, *, retry_for: float = 30.0) -> None:
        """`Orchestrator.deliver_tails`."""
        await self.call("deliver_tails", host_id, tails, retry_for=retry_for)

    async def shutdown(self, *, timeout: float = 10.0, retry_for: float = 30.0) -> int:
        """`Orchestrator.shutdown`."""
        result: int = await self.call("shutdown", timeout=timeout, retry_for=retry_for)
        return result
