"""`Client`: monitor and control a running ray_shards bot from any process.

A client proves it holds the bot token to the bot's Orchestrator, then keeps a
live copy of the shard table (`remote_shards`) and sends gateway commands
(presence, voice state, member requests) to whichever host runs the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
import typing
import uuid

import hikari

from ray_shards import sessions, validation
from ray_shards.auth import command_key
from ray_shards.bot import _tls_rejected
from ray_shards.direct_commands import DirectCommands
from ray_shards.errors import HostNotRegisteredError, LeaseLostError
from ray_shards.link import OrchestratorLink, OrchestratorUnavailableError
from ray_shards.models import CommandKind, Lease, ShardInfo, ShardReport, ShardStatus
from ray_shards.protocol import BotStatus, OperationState, ReshardProgress, ReshardState, RollingRestartProgress
from ray_shards.remote import RemoteShard
from ray_shards.shard_commands import SHARD_COMMANDS, run_shard_command
from ray_shards.table_view import TableView

__all__ = ["Client", "RecommendedShard"]

_LOGGER = logging.getLogger("ray_shards.client")

_TABLE_WAIT = 25.0
"""Seconds a table read parks in the Orchestrator when nothing changed (see `ray_shards.table_view`)."""

_DIRECT_COMMAND_TIMEOUT = 10.0
"""Seconds a command sent straight to a host may take before it goes through the Orchestrator instead."""

_ShardT = typing.TypeVar("_ShardT", bound=hikari.api.GatewayShard)


class _Progress(typing.Protocol):
    """A long operation's progress, as `Client._follow` polls it."""

    @property
    def state(self) -> OperationState | ReshardState: ...


_ProgressT = typing.TypeVar("_ProgressT", bound=_Progress)


def _rolling_of(status: BotStatus) -> RollingRestartProgress | None:
    return status.rolling_restart


def _reshard_of(status: BotStatus) -> ReshardProgress | None:
    return status.reshard


class RecommendedShard(int):
    """What `Client.recommended_shard` passes to ``make_shard``: the shard id (an `int`) and its state.

    Attributes
    ----------
    shard_count
        The bot's shard count.
    gateway_url
        The gateway URL to connect to.
    intents
        The bot's intents.
    session_id, seq, resume_gateway_url
        The session to RESUME (None when the shard starts with an IDENTIFY).
    """

    shard_count: int
    gateway_url: str
    intents: hikari.Intents
    session_id: str | None
    seq: int | None
    resume_gateway_url: str | None

    def __new__(
        cls,
        shard_id: int,
        *,
        shard_count: int,
        gateway_url: str,
        intents: hikari.Intents,
        session_id: str | None = None,
        seq: int | None = None,
        resume_gateway_url: str | None = None,
    ) -> RecommendedShard:
        self = super().__new__(cls, shard_id)
        self.shard_count = shard_count
        self.gateway_url = gateway_url
        self.intents = intents
        self.session_id = session_id
        self.seq = seq
        self.resume_gateway_url = resume_gateway_url
        return self

    @property
    def shard_id(self) -> int:
        """The shard id (the same as ``int(self)``)."""
        return int(self)


class Client:
    """Client for interacting with a ray_shards Orchestrator.

    Parameters
    ----------
    token
        The bot's Discord token (proves the right to control it; never sent to Ray's GCS).
    orchestrator_address
        Ray address of the cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        ignored when this process is already connected to Ray.
    ca_cert
        Not supported: TLS is Ray's (``RAY_USE_TLS``); passing one raises `ValueError`.
    refresh_interval
        Least seconds between two reads of the shard table behind `remote_shards`. Each read is
        a long poll that returns as soon as a shard's host, epoch or status changes (or after
        about 25 s) and carries only the changed rows; every 15 s a read fetches every row, for
        the latency, seq and event counts that change without a status change.
    """

    __slots__ = (
        "_direct",
        "_gateway_url",
        "_host_id",
        "_intents",
        "_link",
        "_own",
        "_refresh_interval",
        "_refresh_task",
        "_registered",
        "_remote",
        "_view",
    )

    def __init__(
        self,
        token: str,
        orchestrator_address: str | None,
        /,
        *,
        ca_cert: bytes | None = None,
        refresh_interval: float = 0.5,
    ) -> None:
        _tls_rejected(ca_cert)
        self._link = OrchestratorLink(token, orchestrator_address)
        self._refresh_interval = refresh_interval
        self._refresh_task: asyncio.Task[None] | None = None
        self._view = TableView()
        self._remote: dict[int, RemoteShard] = {}
        self._intents = hikari.Intents.NONE
        self._host_id = f"client-{uuid.uuid4().hex[:8]}"
        self._own: dict[int, tuple[Lease, hikari.api.GatewayShard]] = {}
        self._registered = False
        self._gateway_url = ""
        self._direct = DirectCommands(
            self._link, self.shard_info, self.refresh, command_key(self._link.token), _DIRECT_COMMAND_TIMEOUT
        )

    def __repr__(self) -> str:
        return f"Client(bot_id={self._link.bot_id}, running={self.is_running}, shards={len(self._view.rows)})"

    @property
    def is_running(self) -> bool:
        """Whether the client is started."""
        return self._refresh_task is not None

    @property
    def bot_id(self) -> int:
        """The bot's user id."""
        return self._link.bot_id

    @property
    def intents(self) -> hikari.Intents:
        """The bot's intents (known once started)."""
        return self._intents

    @property
    def remote_shards(self) -> typing.Mapping[int, RemoteShard]:
        """Mapping of shard IDs to shard objects.

        These shard objects can be used to remotely monitor and control shards and
        will only be populated while the client is active.
        """
        if self._refresh_task is None:
            return types.MappingProxyType({})
        return types.MappingProxyType(self._remote)

    def shard_info(self, shard_id: int) -> ShardInfo | None:
        """The latest table row of ``shard_id``."""
        return self._view.rows.get(shard_id)

    async def start(self) -> None:
        """Connect to the bot's Orchestrator and start following its shard table.

        Raises
        ------
        ray_shards.connection.RayUnreachableError
            When the Ray cluster cannot be reached.
        ray_shards.connection.OrchestratorNotFoundError
            When no Orchestrator runs for this bot.
        PermissionError
            When the token does not control the bot.
        """
        if self._refresh_task is not None:
            msg = "client is already running"
            raise hikari.ComponentStateConflictError(msg)
        await self._link.connect()
        status = await self._link.status()
        self._intents = hikari.Intents(status.config.intents)
        await self.refresh()
        self._refresh_task = asyncio.create_task(self._refresh_forever(), name="ray_shards client refresh")

    async def close(self) -> None:
        """Stop following the bot, and stop the shards this client runs itself (`recommended_shard`)."""
        if self._refresh_task is None:
            return
        task, self._refresh_task = self._refresh_task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for shard_id in list(self._own):
            await self._give_back(shard_id, hand_over=True)
        self._remote.clear()
        self._view = TableView()
        await self._link.revoke()

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _check_running(self) -> None:
        if self._refresh_task is None:
            msg = "client is not running; call start() or use 'async with'"
            raise hikari.ComponentStateConflictError(msg)

    async def refresh(self) -> list[ShardInfo]:
        """Fetch the whole shard table now (it is also followed in the background)."""
        await self._view.read(self._link, full=True)
        self._add_remote_shards()
        return list(self._view.rows.values())

    def _add_remote_shards(self) -> None:
        for row in self._view.rows.values():
            if row.shard_id not in self._remote:
                self._remote[row.shard_id] = RemoteShard(self, row.shard_id, row.shard_count)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                # A long poll: it returns as soon as a shard's owner, epoch or status changes, and costs the
                # Orchestrator only the changed rows. Shards this client runs itself need their sync each round.
                await self._view.read(self._link, wait=0.0 if self._own else _TABLE_WAIT)
                self._add_remote_shards()
                if self._own:
                    await self._sync_own()
            except asyncio.CancelledError:
                raise
            except OrchestratorUnavailableError:
                _LOGGER.warning("orchestrator unreachable; remote_shards shows the last known table")
            except Exception:
                _LOGGER.exception("refreshing the shard table failed")

    async def status(self) -> BotStatus:
        """Bot-wide state: config, hosts, boot progress (ready/total, identify ETA) and presence.

        Returns
        -------
        ray_shards.protocol.BotStatus
            The Orchestrator's view of the bot; ``to_dict()`` gives its JSON-safe form.
        """
        self._check_running()
        return await self._link.status()

    async def send_command(self, kind: CommandKind, shard_id: int, arguments: dict[str, typing.Any]) -> None:
        """Run a gateway command on the host that runs ``shard_id``.

        Sent straight to that host's actor with the shard's lease epoch when the table says
        where it runs (one hop); through the Orchestrator otherwise, or when the host says the
        shard moved twice in a row (see `ray_shards.direct_commands`).
        """
        self._check_running()
        if shard_id not in self._own and await self._direct.send(kind, shard_id, arguments):
            return
        await self._link.command(kind, shard_id, arguments)

    async def recommended_shard(self, make_shard: typing.Callable[[RecommendedShard], _ShardT]) -> _ShardT:
        """Acquire the next shard recommended by the server.

        ``make_shard(state)`` builds the shard: ``state`` is a `RecommendedShard`, an `int`
        (the shard id, so ``make_shard(shard_id)`` code keeps working) that also carries what
        the reference passes: ``shard_count``, ``gateway_url``, ``intents`` and, when the shard
        had a session, ``session_id``, ``seq`` and ``resume_gateway_url``. It is started within
        Discord's identify rate limit (or RESUMEd when it had a session) and returned once READY.

        The shard is first class: this client reports its state to the Orchestrator, runs
        the commands sent to it (presence, voice state, member and channel-info requests),
        hands it over when the Orchestrator revokes it, and closes it when the bot stops
        (`Client.shutdown`, ``ray-shards stop``). Placement never gives this client a shard
        of its own accord (not even a dead host's): it runs exactly what it claims. Closing
        the client hands the shard back with its session.

        Raises
        ------
        LookupError
            When every shard of the bot is already running somewhere.
        """
        self._check_running()
        if not self._registered:
            registration = await self._link.register_host(self._host_id, node_id=None, want=0, placeable=False)
            self._gateway_url = registration.config.gateway_url
            self._registered = True
        leases = await self._link.claim(self._host_id, 1)
        if not leases:
            msg = "every shard of this bot is already running; there is no shard to recommend"
            raise LookupError(msg)
        lease = leases[0]
        session = lease.session
        state = RecommendedShard(
            lease.shard_id,
            shard_count=lease.shard_count,
            gateway_url=self._gateway_url,
            intents=self._intents,
            session_id=session.session_id if session else None,
            seq=session.seq if session else None,
            resume_gateway_url=session.resume_gateway_url if session else None,
        )
        shard = make_shard(state)
        if session is not None and isinstance(shard, hikari.impl.GatewayShardImpl):
            sessions.seed(shard, session)
        else:
            await self._link.identify(self._host_id, lease.shard_id, lease.epoch, retry_for=60.0)
        try:
            await shard.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._link.identify_done(lease.shard_id, None, host_id=self._host_id, epoch=lease.epoch)
                await self._link.release(self._host_id, lease.shard_id, lease.epoch, None, retry_for=5.0)
            raise
        await self._link.identify_done(lease.shard_id, None, host_id=self._host_id, epoch=lease.epoch)
        self._own[lease.shard_id] = (lease, shard)
        return shard

    def _own_reports(self) -> list[ShardReport]:
        reports = []
        for shard_id, (lease, shard) in self._own.items():
            status = ShardStatus.READY if shard.is_connected else (
                ShardStatus.RECONNECTING if shard.is_alive else ShardStatus.STOPPED
            )
            reports.append(
                ShardReport(
                    shard_id=shard_id,
                    epoch=lease.epoch,
                    status=status,
                    session=sessions.snapshot(shard) or lease.session,
                    latency=shard.heartbeat_latency,
                )
            )
        return reports

    async def _sync_own(self) -> None:
        """Report this client's own shards and do what the Orchestrator asks of them."""
        try:
            directives = await self._link.sync(self._host_id, self._own_reports(), timeout=0.0, retry_for=2.0)
        except HostNotRegisteredError:
            # The Orchestrator restarted from a checkpoint that predates this client: join again with what it runs.
            held = [(shard_id, lease.epoch) for shard_id, (lease, _) in self._own.items()]
            registration = await self._link.register_host(
                self._host_id, node_id=None, want=0, held=held, placeable=False
            )
            for shard_id in registration.stale:
                if shard_id in self._own:
                    await self._give_back(shard_id, hand_over=True)
            return
        for shard_id in directives.revoke:
            if shard_id in self._own:
                await self._give_back(shard_id, hand_over=True)
        for command in directives.commands:
            error: str | None = None
            try:
                if command.kind in SHARD_COMMANDS and command.shard_id in self._own:
                    await run_shard_command(self._own[command.shard_id][1], command)
                elif command.kind is CommandKind.PRESENCE and command.shard_id is None:
                    kwargs = command.arguments["presence"].to_hikari_kwargs()
                    # Every shard at once: each has its own connection and rate limit.
                    connected = [shard for _, shard in self._own.values() if shard.is_connected]
                    await asyncio.gather(*(shard.update_presence(**kwargs) for shard in connected))
                else:
                    error = f"{command.kind.value} on shard {command.shard_id} is not run by a client"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._link.command_done(command.command_id, error, retry_for=5.0)
        if directives.stop:
            for shard_id in list(self._own):
                await self._give_back(shard_id, hand_over=False)

    async def _give_back(self, shard_id: int, *, hand_over: bool) -> None:
        """Stop one own shard: hand it over (session kept, closed with 3000) or end its session (1001)."""
        lease, shard = self._own.pop(shard_id)
        if hand_over:
            session = await sessions.detach(shard)
        else:
            session = None
            with contextlib.suppress(Exception):
                await shard.close()
        with contextlib.suppress(Exception):
            await self._link.release(
                self._host_id, shard_id, lease.epoch, session, stopped=not hand_over, retry_for=5.0
            )

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
        """Request for a guild chunk.

        The received guild chunks will be sent to the shard the guild is in, not
        necessarily the current shard.

        Note
        ----
        To request the full list of members, leave ``query`` as ``""`` (empty string)
        and ``limit`` as ``0``.

        Raises
        ------
        ValueError
            When trying to specify ``users`` with ``query``/``limit``, if ``limit`` is not
            between 0 and 100, both inclusive, or if ``users`` length is over 100.
        hikari.MissingIntentError
            When trying to request presences without ``GUILD_PRESENCES`` or the full list
            of members without ``GUILD_MEMBERS``.
        """
        self._check_running()
        arguments = validation.member_request(
            self._intents, guild, include_presences=include_presences, query=query, limit=limit, users=users,
            nonce=nonce,
        )
        shard_id = validation.shard_for_guild(guild, self._shard_count())
        await self.send_command(CommandKind.REQUEST_MEMBERS, shard_id, arguments)

    async def update_presence(
        self,
        *,
        idle_since: hikari.UndefinedNoneOr[typing.Any] = hikari.UNDEFINED,
        afk: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED,
        status: hikari.UndefinedOr[hikari.Status] = hikari.UNDEFINED,
    ) -> None:
        """Update the presence of every shard in this bot.

        This state will be remembered between restarts: shards that start or resume
        later identify with it.

        Raises
        ------
        ray_shards.errors.CheckpointWriteError
            When the presence applies but could not be put on record (Ray's GCS refused the write): an
            Orchestrator restart before the next checkpoint would forget it, so send it again.
        """
        self._check_running()
        arguments = validation.presence_update(idle_since=idle_since, afk=afk, activity=activity, status=status)
        await self._link.update_presence(**arguments)

    async def update_voice_state(
        self,
        guild: hikari.SnowflakeishOr[hikari.PartialGuild],
        channel: hikari.SnowflakeishOr[hikari.GuildVoiceChannel] | None,
        *,
        self_mute: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
        self_deaf: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
    ) -> None:
        """Update the voice state in a given guild (sent by the shard that owns the guild).

        ``channel`` None leaves the voice channel the bot is in for that guild.
        """
        self._check_running()
        arguments = validation.voice_state(guild, channel, self_mute=self_mute, self_deaf=self_deaf)
        shard_id = validation.shard_for_guild(guild, self._shard_count())
        await self.send_command(CommandKind.VOICE_STATE, shard_id, arguments)

    async def reconnect_shard(self, shard_id: int) -> None:
        """Restart one shard's connection on its host by RESUME (no IDENTIFY spent)."""
        await self.send_command(CommandKind.RECONNECT, shard_id, {})

    async def rolling_restart(
        self,
        callback: typing.Callable[[typing.Any], typing.Any] | None = None,
        *,
        wait: bool = True,
        progress: typing.Callable[[RollingRestartProgress], None] | None = None,
    ) -> RollingRestartProgress:
        """Replace every shard host with a new one, one host at a time, with no downtime.

        Each shard moves to the new host by RESUME (no IDENTIFY spent, no event lost);
        no shard is down longer than its own hand-over. ``callback`` deploys new bot
        code: new hosts run it instead of the old one. Pause, resume or abort with
        `control_rolling_restart`; it always stops between two hosts.

        Parameters
        ----------
        callback
            New ``callback(bot)`` for the new hosts (pickled with cloudpickle); None keeps the current one.
        wait
            Return only when the restart has finished (or was aborted, or failed).
        progress
            Called with the progress each time it changes while waiting.

        Returns
        -------
        ray_shards.protocol.RollingRestartProgress
            ``state`` (an `OperationState`: ``FINISHED``, ``ABORTED`` or ``FAILED`` once over), ``done`` of
            ``total`` hosts replaced, ``current``, ``replaced``, ``started_at``, ``finished_at`` and ``error``.

        Raises
        ------
        ray_shards.errors.CheckpointWriteError
            When the Orchestrator could not put the restart on record (Ray's GCS refused the write): it was not
            started and nothing changed; try again.
        RuntimeError
            When a rolling restart or a reshard is already in progress, or the bot was not launched by ray_shards.
        """
        self._check_running()
        import ray

        pickled = ray.cloudpickle.dumps(callback) if callback is not None else None  # type: ignore[no-untyped-call]
        state = await self._link.start_rolling_restart(pickled)
        return await self._follow(_rolling_of, state, wait, progress)

    async def _follow(
        self,
        select: typing.Callable[[BotStatus], _ProgressT | None],
        state: _ProgressT,
        wait: bool,
        progress: typing.Callable[[_ProgressT], None] | None,
    ) -> _ProgressT:
        """Poll ``select(status())`` until its state is final (when ``wait``), reporting each change."""
        last: _ProgressT | None = None
        while wait and state.state.active:
            if state != last and progress is not None:
                progress(state)
            last = state
            await asyncio.sleep(0.25)
            current = select(await self._link.status())
            if current is None:
                # The Orchestrator lost the operation (it restarted without a checkpoint): nothing left to follow.
                msg = "the orchestrator no longer knows the operation being followed"
                raise RuntimeError(msg)
            state = current
        if progress is not None:
            progress(state)
        return state

    async def control_rolling_restart(
        self, action: typing.Literal["pause", "resume", "abort"]
    ) -> RollingRestartProgress:
        """Pause, resume or abort the rolling restart in progress.

        Returns
        -------
        ray_shards.protocol.RollingRestartProgress
            The restart's progress after the change.

        Raises
        ------
        ray_shards.errors.CheckpointWriteError
            When the change applies but could not be put on record (Ray's GCS refused the write): an
            Orchestrator restart before the next checkpoint would forget it, so send it again.
        """
        self._check_running()
        return await self._link.control_rolling_restart(action)

    async def reshard(
        self,
        shard_count: int,
        *,
        wait: bool = True,
        progress: typing.Callable[[ReshardProgress], None] | None = None,
    ) -> ReshardProgress:
        """Move the bot to ``shard_count`` shards live, with no downtime and each event handled once.

        A complete second set of sessions starts beside the old one within Discord's
        identify rate limit; when every new shard is READY, event delivery switches to
        the new set (events are de-duplicated across the switch) and the old sessions
        close.

        Parameters
        ----------
        shard_count
            The new shard count.
        wait
            Return only when the reshard is over (finished, failed or rolled back).
        progress
            Called with the progress each time it changes while waiting.

        Raises
        ------
        ValueError
            When the daily identify budget is too small (the message says how many are needed),
            or for a bad count.
        ray_shards.errors.CheckpointWriteError
            When the Orchestrator could not put the reshard on record (Ray's GCS refused the write): it was not
            started and nothing changed; try again.

        Returns
        -------
        ray_shards.protocol.ReshardProgress
            ``state`` (a `ReshardState`), ``source`` and ``target`` shard counts, ``ready`` new shards,
            ``started_at``, ``finished_at`` and ``error``. ``state`` ends as ``FINISHED``, ``FAILED`` (the new set
            could not start: the old shards keep running, untouched) or ``ROLLED_BACK`` (the Orchestrator restarted
            before the switch: the old shards keep running). ``to_json()`` gives the form the CLI shows.
        """
        self._check_running()
        state = await self._link.start_reshard(shard_count)
        state = await self._follow(_reshard_of, state, wait, progress)
        if state.state is ReshardState.FINISHED:
            self._remote.clear()
            await self.refresh()
        return state

    async def shutdown(self) -> None:
        """Stop the whole bot: every host closes its shards and the Orchestrator forgets the bot."""
        self._check_running()
        await self._link.shutdown()

    def _shard_count(self) -> int:
        if not self._view.rows:
            raise LeaseLostError("the shard table is empty; is the bot initialised?")
        return next(iter(self._view.rows.values())).shard_count
