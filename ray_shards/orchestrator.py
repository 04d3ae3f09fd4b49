"""The Orchestrator: one detached Ray actor per bot that owns shard assignment.

It keeps the shard table (owner, lease epoch, session, latency), the
cluster-wide identify queue and the bot's presence; it hands shards to hosts,
moves them when a host dies, routes client commands to the owning host and
checkpoints itself to the GCS so a restart loses nothing. Hosts only ever call
the Orchestrator (a sync long-poll brings them their work), so the Orchestrator
never blocks on a host and hosts ride out its restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
import typing

import hikari

from ray_shards import checkpoint
from ray_shards.auth import TokenHash, bot_id_from_token, new_capability, validate_token
from ray_shards.errors import (
    BotStoppedError,
    CapabilityExpiredError,
    CommandFailedError,
    LeaseLostError,
    NotInitialisedError,
    ShardUnavailableError,
)
from ray_shards.fleet import HostFleet
from ray_shards.gateway_info import fetch_gateway_bot, validate_rest_url
from ray_shards.identify import IdentifyGrant, IdentifyScheduler
from ray_shards.models import (
    BotConfig,
    Command,
    CommandKind,
    HostDirectives,
    Lease,
    SessionState,
    ShardInfo,
    ShardReport,
    ShardStatus,
)
from ray_shards.orchestrator_metrics import OrchestratorMetrics
from ray_shards.presence import PresenceState, merge_presence
from ray_shards.table import ShardTable
from ray_shards.timings import Timings

__all__ = ["Orchestrator", "OrchestratorOptions"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


@dataclasses.dataclass(frozen=True, slots=True)
class OrchestratorOptions:
    """How the Orchestrator runs a bot. Contains no secret: Ray records it as a constructor argument."""

    rest_url: str = hikari.urls.REST_API_URL
    shard_count: int | None = None
    intents: int = int(hikari.Intents.ALL_UNPRIVILEGED)
    large_threshold: int = 250
    timings: Timings = dataclasses.field(default_factory=Timings)
    auto_reshard: bool = False
    """Reshard by itself when Discord recommends more shards or a shard holds over ``guild_threshold`` guilds."""
    guild_threshold: int = 2000


@dataclasses.dataclass(slots=True)
class _RollingRestart:
    """Progress of a rolling restart."""

    total: int
    done: int = 0
    state: str = "running"  # running, paused, aborting, finished, aborted, failed
    current: str | None = None
    started_at: float = dataclasses.field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    replaced: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class _Mailbox:
    """Work waiting for one host, and the event that wakes its parked sync."""

    commands: list[Command] = dataclasses.field(default_factory=list)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    stop: bool = False


class Orchestrator:
    """The actor class; see the module docstring. Created by `ray_shards.launch`, found by name."""

    def __init__(self, bot_id: int, options: OrchestratorOptions) -> None:
        self._bot_id = bot_id
        self._options = options
        self._timings = options.timings
        self._config: BotConfig | None = None
        self._token_hash: TokenHash | None = None
        self._table: ShardTable | None = None
        self._scheduler: IdentifyScheduler | None = None
        self._presence = PresenceState()
        self._presence_version = 0
        self._capabilities: set[str] = set()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._handles: dict[str, typing.Any] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._fenced: set[str] = set()
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._command_ids = itertools.count(1)
        self._identify_changed = asyncio.Condition()
        self._table_changed = asyncio.Event()
        self._dirty = False
        self._last_checkpoint = 0.0
        self._recovering_until = 0.0
        self._stopping = False
        self._started_at = time.time()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._fleet: HostFleet | None = None
        self._host_tables: dict[str, ShardTable] = {}
        self._next_table: ShardTable | None = None
        self._next_fleet: HostFleet | None = None
        self._reshard: dict[str, typing.Any] = {}
        self._reshard_ids: dict[str, list[str]] = {}
        self._rolling: _RollingRestart | None = None
        self._rolling_task: asyncio.Task[None] | None = None
        self._reshard_task: asyncio.Task[None] | None = None
        self._last_policy_check = time.monotonic()
        self._metrics = OrchestratorMetrics(bot_id)
        self._restore()

    # -- lifecycle -------------------------------------------------------------------------------

    def _restore(self) -> None:
        try:
            data = checkpoint.load_checkpoint(self._bot_id)
        except Exception:
            _LOGGER.exception("could not read the checkpoint; waiting to be initialised")
            return
        if data is None:
            return
        now = time.time()
        self._config = BotConfig(**data["config"])
        self._token_hash = TokenHash.from_json(data["token_hash"])
        self._table = ShardTable.from_json(data["table"], now)
        presence = data.get("presence") or {}
        activity = presence.pop("activity", None)
        from ray_shards.presence import ActivityState

        self._presence = PresenceState(**presence, activity=ActivityState(**activity) if activity else None)
        self._presence_version = int(data.get("presence_version", 0))
        self._scheduler = self._new_scheduler(int(data.get("remaining", 1000)))
        # An identify may have been granted just before the crash: start every bucket with a full window.
        for shard_id in range(self._config.max_concurrency):
            self._scheduler.release(shard_id, now)
        self._recovering_until = now + self._timings.recovery_grace
        self._fleet = self._new_fleet()
        self._fleet.restore(data.get("fleet") or {})
        for host in self._table.live_hosts():
            self._mailboxes[host.host_id] = _Mailbox()
        _LOGGER.warning(
            "orchestrator of bot %s restarted from its checkpoint: %s shards, %s hosts to hear back from",
            self._bot_id,
            self._table.shard_count,
            len(self._table.live_hosts()),
        )
        self._ensure_reconcile()

    def _new_fleet(self, prefix: str = "h") -> HostFleet:
        assert self._config is not None
        return HostFleet(
            self._bot_id,
            rest_url=self._config.rest_url,
            intents=self._config.intents,
            timings=self._timings,
            prefix=prefix,
        )

    def _table_of(self, host_id: str) -> ShardTable:
        """The shard table a host works on (the resharding target's, for the new set of hosts)."""
        table = self._host_tables.get(host_id, self._table)
        assert table is not None
        return table

    def _tables(self) -> list[ShardTable]:
        return [t for t in (self._table, self._next_table) if t is not None]

    def _fleets(self) -> list[HostFleet]:
        return [f for f in (self._fleet, self._next_fleet) if f is not None]

    def _new_scheduler(self, remaining: int) -> IdentifyScheduler:
        assert self._config is not None
        return IdentifyScheduler(
            self._config.max_concurrency,
            remaining=remaining,
            window=self._timings.identify_window,
            margin=self._timings.identify_margin,
            grant_timeout=self._timings.grant_timeout,
        )

    def _ensure_reconcile(self) -> None:
        if self._reconcile_task is None or self._reconcile_task.done():
            with contextlib.suppress(RuntimeError):
                self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile_forever())

    async def initialise(self, token: str) -> str:
        """Give the Orchestrator its bot (first start) or prove the token (later); return a capability.

        Raises
        ------
        PermissionError
            When the token is not this bot's.
        ValueError
            For a malformed token, a bad ``rest_url`` or ``shard_count``.
        """
        token = validate_token(token)
        if bot_id_from_token(token) != self._bot_id:
            msg = "this token belongs to another bot than this orchestrator's"
            raise PermissionError(msg)
        if self._token_hash is not None:
            return await self.authenticate(token)
        rest_url = validate_rest_url(self._options.rest_url)
        info = await fetch_gateway_bot(rest_url, token)
        shard_count = self._options.shard_count or info.shards
        if shard_count < 1:
            msg = f"shard_count must be at least 1, not {shard_count}"
            raise ValueError(msg)
        if info.remaining < shard_count:
            msg = (
                f"starting {shard_count} shards needs {shard_count} identifies but Discord's daily budget has only "
                f"{info.remaining} left (resets in {info.reset_after:.0f} s); wait or use fewer shards"
            )
            raise RuntimeError(msg)
        self._config = BotConfig(
            bot_id=self._bot_id,
            shard_count=shard_count,
            intents=self._options.intents,
            max_concurrency=info.max_concurrency,
            gateway_url=info.url,
            rest_url=rest_url,
            large_threshold=self._options.large_threshold,
        )
        self._token_hash = await asyncio.to_thread(TokenHash.of, token)
        self._table = ShardTable(shard_count)
        self._fleet = self._new_fleet()
        self._fleet.remember_token(token)
        self._scheduler = self._new_scheduler(info.remaining)
        _LOGGER.info(
            "orchestrating bot %s: %s shards, max_concurrency %s, %s identifies left today",
            self._bot_id,
            shard_count,
            info.max_concurrency,
            info.remaining,
        )
        self._dirty = True
        await self._checkpoint()
        self._ensure_reconcile()
        capability = new_capability()
        self._capabilities.add(capability)
        return capability

    async def authenticate(self, token: str) -> str:
        """Prove the caller holds the bot token; return a capability for later calls.

        Raises
        ------
        PermissionError
            When the token does not match.
        """
        if self._token_hash is None:
            raise NotInitialisedError("this orchestrator has not been given its bot yet")
        if not isinstance(token, str) or not await asyncio.to_thread(self._token_hash.matches, token.strip()):
            msg = "permission denied: that token does not control this bot"
            raise PermissionError(msg)
        capability = new_capability()
        self._capabilities.add(capability)
        for fleet in self._fleets():
            fleet.remember_token(token.strip())
        self._ensure_reconcile()
        return capability

    def _check(self, capability: str) -> tuple[BotConfig, ShardTable, IdentifyScheduler]:
        if capability not in self._capabilities:
            msg = "unknown capability (the orchestrator restarted or the caller never authenticated)"
            raise CapabilityExpiredError(msg)
        assert self._config is not None and self._table is not None and self._scheduler is not None
        return self._config, self._table, self._scheduler

    def ping(self) -> dict[str, typing.Any]:
        """Liveness probe; also says whether the bot is initialised (no capability needed, nothing secret)."""
        return {"bot_id": self._bot_id, "initialised": self._config is not None, "stopping": self._stopping}

    async def shutdown(self, capability: str, *, timeout: float = 10.0) -> int:
        """Stop the whole bot: every host closes its shards (ending their sessions) and leaves.

        Returns the number of hosts that were asked to stop. The checkpoint is deleted.
        """
        _, table, _ = self._check(capability)
        self._stopping = True
        for shard in table.shards.values():
            shard.stopped = True
        for mailbox in self._mailboxes.values():
            mailbox.stop = True
            mailbox.wake.set()
        hosts = [h.host_id for h in table.live_hosts()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(table.owned_by(h) for h in hosts):
            await asyncio.sleep(0.05)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BotStoppedError("the bot is shutting down"))
        if self._rolling_task is not None:
            self._rolling_task.cancel()
        if self._reshard_task is not None:
            self._reshard_task.cancel()
        for table_ in self._tables():
            for shard in table_.shards.values():
                shard.stopped = True
        killed = sum(fleet.kill_all() for fleet in self._fleets())
        _LOGGER.info("killed %s host actor(s)", killed)
        await asyncio.to_thread(checkpoint.delete_checkpoint, self._bot_id)
        _LOGGER.info("bot %s shut down (%s hosts stopped)", self._bot_id, len(hosts))
        return len(hosts)

    # -- hosts -----------------------------------------------------------------------------------

    async def register_host(
        self,
        capability: str,
        host_id: str,
        *,
        node_id: str | None,
        want: int,
        handle: typing.Any = None,
        held: list[tuple[int, int]] | None = None,
        shard_count: int | None = None,
    ) -> tuple[BotConfig, list[Lease], list[int], PresenceState, int]:
        """A host joins (or rejoins after an Orchestrator restart).

        ``held`` lists the ``(shard_id, epoch)`` leases the host still runs; those that
        are still current are kept. Returns the config, new leases for it, the held
        shards it must stop, and the presence with its version.
        """
        config, table, _ = self._check(capability)
        if self._stopping:
            raise BotStoppedError("the bot is shutting down")
        if self._next_table is not None and shard_count == self._next_table.shard_count:
            table = self._next_table
            config = dataclasses.replace(config, shard_count=table.shard_count)
        elif shard_count is not None and shard_count != table.shard_count:
            msg = f"this bot runs {table.shard_count} shards, not {shard_count}"
            raise ValueError(msg)
        self._host_tables[host_id] = table
        now = time.time()
        table.register_host(host_id, node_id=node_id, want=want, has_handle=handle is not None, now=now)
        self._mailboxes.setdefault(host_id, _Mailbox())
        stale = [shard_id for shard_id, epoch in (held or []) if not table.holds(host_id, shard_id, epoch)]
        if handle is not None:
            self._watch(host_id, handle)
        placed = table.place() if time.time() >= self._recovering_until else {}
        leases = placed.pop(host_id, [])
        self._deliver(placed, table)
        self._changed()
        _LOGGER.info("host %s joined on node %s wanting %s shards; granted %s", host_id, node_id, want, len(leases))
        return config, leases, stale, self._presence, self._presence_version

    def _watch(self, host_id: str, handle: typing.Any) -> None:
        self._handles[host_id] = handle
        old = self._watches.get(host_id)
        if old is not None and not old.done():
            return
        self._watches[host_id] = asyncio.get_running_loop().create_task(self._watch_host(host_id, handle))

    async def _watch_host(self, host_id: str, handle: typing.Any) -> None:
        try:
            await handle.wait_closed.remote()
            reason = "closed"
        except Exception as exc:
            reason = f"died ({type(exc).__name__})"
        await asyncio.sleep(self._timings.death_quarantine)
        self._host_gone(host_id, reason)

    def _host_gone(self, host_id: str, reason: str) -> None:
        if self._table is None:
            return
        table = self._table_of(host_id)
        host = table.hosts.get(host_id)
        if host is None or not host.alive:
            return
        orphans = table.host_lost(host_id)
        for fleet in self._fleets():
            fleet.host_gone(host_id)
        self._handles.pop(host_id, None)
        self._fenced.discard(host_id)
        mailbox = self._mailboxes.pop(host_id, None)
        if mailbox is not None:
            for command in mailbox.commands:
                self._finish_command(command.command_id, f"host {host_id} {reason} before running the command")
        if self._scheduler is not None:
            for shard_id in orphans:
                self._scheduler.cancel(shard_id)
        level = logging.INFO if reason == "closed" or not orphans else logging.WARNING
        _LOGGER.log(level, "host %s %s; %s shard(s) to move: %s", host_id, reason, len(orphans), orphans)
        self._deliver(table.place(), table)
        table.forget_host(host_id)
        if host_id not in table.hosts:
            self._host_tables.pop(host_id, None)
        self._changed()

    def _deliver(self, placed: dict[str, list[Lease]], table: ShardTable) -> None:
        for host_id, leases in placed.items():
            host = table.hosts[host_id]
            host.pending_adopt.extend(leases)
            mailbox = self._mailboxes.setdefault(host_id, _Mailbox())
            mailbox.wake.set()
            _LOGGER.info("host %s takes over shards %s", host_id, [lease.shard_id for lease in leases])

    def _changed(self) -> None:
        self._dirty = True
        self._table_changed.set()

    async def sync(
        self,
        capability: str,
        host_id: str,
        reports: list[ShardReport],
        *,
        timeout: float | None = None,
    ) -> HostDirectives:
        """A host's heartbeat and long poll: take its reports, answer with its work.

        Returns at once when there is work (new leases, revocations, commands, stop),
        else after ``timeout`` (default ``sync_interval``).
        """
        self._check(capability)
        table = self._table_of(host_id)
        host = table.hosts.get(host_id)
        if host is None or not host.alive:
            # Presumed dead (fenced) or unknown: it must stop everything it runs.
            return HostDirectives(revoke=[r.shard_id for r in reports], stop=True)
        stale = table.apply_reports(host_id, reports, time.time())
        if stale:
            host.pending_revoke.extend(s for s in stale if s not in host.pending_revoke)
        self._changed()
        mailbox = self._mailboxes.setdefault(host_id, _Mailbox())
        if not (host.pending_adopt or host.pending_revoke or mailbox.commands or mailbox.stop):
            mailbox.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    mailbox.wake.wait(), self._timings.sync_interval if timeout is None else timeout
                )
        host = table.hosts.get(host_id)
        if host is None or not host.alive:
            return HostDirectives(revoke=[r.shard_id for r in reports], stop=True)
        directives = HostDirectives(
            adopt=host.pending_adopt[:],
            revoke=host.pending_revoke[:],
            commands=mailbox.commands[:],
            presence_version=self._presence_version,
            stop=mailbox.stop,
        )
        host.pending_adopt.clear()
        mailbox.commands.clear()
        host.last_sync = time.time()
        return directives

    async def release(
        self,
        capability: str,
        host_id: str,
        shard_id: int,
        epoch: int,
        session: SessionState | None,
        *,
        stopped: bool = False,
        failed: str | None = None,
    ) -> bool:
        """A host gave a shard back; it is handed on (with its session) at once."""
        _, _, scheduler = self._check(capability)
        table = self._table_of(host_id)
        if not table.release(host_id, shard_id, epoch, session, stopped=stopped or self._stopping):
            return False
        scheduler.cancel(shard_id)
        if failed is not None:
            record = table.shards[shard_id]
            record.status = ShardStatus.FAILED
            record.error = failed
            _LOGGER.error("shard %s failed on host %s and will not be retried: %s", shard_id, host_id, failed)
        elif not self._stopping:
            self._deliver(table.place(), table)
        self._changed()
        return True

    async def claim(self, capability: str, host_id: str, count: int = 1) -> list[Lease]:
        """Lease up to ``count`` more unassigned shards to ``host_id`` (for ``Client.recommended_shard``)."""
        self._check(capability)
        table = self._table_of(host_id)
        if host_id not in table.hosts or not table.hosts[host_id].alive:
            msg = f"host {host_id} is not registered"
            raise LeaseLostError(msg)
        leases = table.claim(host_id, count)
        self._changed()
        return leases

    # -- identify / resume gate ------------------------------------------------------------------

    async def identify(self, capability: str, host_id: str, shard_id: int, epoch: int) -> PresenceState:
        """Wait until ``shard_id`` may IDENTIFY by Discord's rate limit; return the presence to identify with.

        Raises
        ------
        LeaseLostError
            When ``host_id`` no longer holds the shard's lease.
        """
        _, _, scheduler = self._check(capability)
        table = self._table_of(host_id)
        asked_at = time.time()
        while True:
            if not table.holds(host_id, shard_id, epoch):
                scheduler.cancel(shard_id)
                msg = f"host {host_id} no longer holds shard {shard_id} (epoch {epoch})"
                raise LeaseLostError(msg)
            outcome: IdentifyGrant | float = scheduler.request(shard_id, time.time())
            if isinstance(outcome, IdentifyGrant):
                table.shards[shard_id].identifies += 1
                self._dirty = True
                self._metrics.identify_waited(time.time() - asked_at)
                return self._presence
            async with self._identify_changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._identify_changed.wait(), min(outcome, 1.0))

    async def identify_done(self, capability: str, shard_id: int, sent_at: float | None) -> None:
        """The IDENTIFY of ``shard_id`` was answered (READY) or failed: free its bucket."""
        _, _, scheduler = self._check(capability)
        scheduler.release(shard_id, time.time(), identified_at=sent_at)
        async with self._identify_changed:
            self._identify_changed.notify_all()

    async def check_lease(self, capability: str, host_id: str, shard_id: int, epoch: int) -> bool:
        """Whether ``host_id`` may RESUME ``shard_id`` now (it holds the current lease)."""
        self._check(capability)
        table = self._table_of(host_id)
        if table.holds(host_id, shard_id, epoch):
            table.shards[shard_id].resumes += 1
            self._dirty = True
            return True
        return False

    # -- commands --------------------------------------------------------------------------------

    def _finish_command(self, command_id: int, error: str | None) -> None:
        future = self._pending.pop(command_id, None)
        if future is not None and not future.done():
            future.set_result(error)

    async def command_done(self, capability: str, command_id: int, error: str | None) -> None:
        """A host finished a command (``error`` is None on success)."""
        self._check(capability)
        self._finish_command(command_id, error)

    async def _run_on_host(self, host_id: str, command: Command, timeout: float) -> None:
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[command.command_id] = future
        mailbox = self._mailboxes.setdefault(host_id, _Mailbox())
        mailbox.commands.append(command)
        mailbox.wake.set()
        try:
            error = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(command.command_id, None)
            msg = f"host {host_id} did not run {command.kind.value} within {timeout:.0f} s"
            raise ShardUnavailableError(msg) from None
        if error is not None:
            raise CommandFailedError(error)

    async def command(
        self, capability: str, kind: CommandKind, shard_id: int, arguments: dict[str, typing.Any]
    ) -> None:
        """Run a command on the host that owns ``shard_id``, waiting for a hand-over in progress to finish.

        Raises
        ------
        ShardUnavailableError
            When no host runs the shard within ``command_timeout``.
        CommandFailedError
            When the host reports an error (the message is the host's).
        """
        _, table, _ = self._check(capability)
        if self._stopping:
            raise BotStoppedError("the bot is shutting down")
        if shard_id not in table.shards:
            msg = f"shard {shard_id} does not exist (the bot has {table.shard_count} shards)"
            raise ValueError(msg)
        deadline = time.monotonic() + self._timings.command_timeout
        while True:
            record = table.shards[shard_id]
            if record.status is ShardStatus.FAILED:
                msg = f"shard {shard_id} has failed: {record.error}"
                raise ShardUnavailableError(msg)
            if record.host_id is not None and record.status is ShardStatus.READY:
                break
            if time.monotonic() > deadline:
                msg = f"no host runs shard {shard_id} right now (status {record.status.value}); try again shortly"
                raise ShardUnavailableError(msg)
            self._table_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._table_changed.wait(), 0.1)
        command = Command(next(self._command_ids), kind, shard_id, arguments)
        await self._run_on_host(record.host_id, command, max(1.0, deadline - time.monotonic()))

    async def update_presence(
        self,
        capability: str,
        *,
        idle_since: typing.Any = hikari.UNDEFINED,
        afk: typing.Any = hikari.UNDEFINED,
        activity: typing.Any = hikari.UNDEFINED,
        status: typing.Any = hikari.UNDEFINED,
    ) -> int:
        """Store a new presence (kept across restarts) and apply it to every running shard.

        Returns the number of hosts that applied it.
        """
        _, table, _ = self._check(capability)
        self._presence = merge_presence(self._presence, idle_since=idle_since, afk=afk, activity=activity,
                                        status=status)
        self._presence_version += 1
        self._dirty = True
        await self._checkpoint()
        hosts = [h.host_id for h in table.live_hosts() if table.owned_by(h.host_id)]
        arguments = {"presence": self._presence, "version": self._presence_version}
        results = await asyncio.gather(
            *(
                self._run_on_host(
                    host_id,
                    Command(next(self._command_ids), CommandKind.PRESENCE, None, arguments),
                    self._timings.command_timeout,
                )
                for host_id in hosts
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            _LOGGER.warning("presence not applied on one host (it will get it when its shards restart): %s",
                            failure)
        return len(hosts) - len(failures)

    # -- views -----------------------------------------------------------------------------------

    async def table(self, capability: str) -> list[ShardInfo]:
        """The shard table."""
        _, table, _ = self._check(capability)
        return table.infos()

    async def status(self, capability: str) -> dict[str, typing.Any]:
        """Bot-wide state: config, hosts, identify queue progress and presence."""
        config, table, scheduler = self._check(capability)
        ready = sum(1 for r in table.shards.values() if r.status is ShardStatus.READY)
        pending = sum(
            1 for r in table.shards.values() if r.status in (ShardStatus.UNASSIGNED, ShardStatus.STARTING)
        )
        return {
            "bot_id": self._bot_id,
            "config": dataclasses.asdict(config),
            "ready": ready,
            "total": table.shard_count,
            "identify_eta": scheduler.eta(pending),
            "identifies_remaining": scheduler.remaining,
            "hosts": {
                h.host_id: {"node_id": h.node_id, "want": h.want, "shards": table.owned_by(h.host_id)}
                for h in table.live_hosts()
            },
            "presence": dataclasses.asdict(self._presence),
            "presence_version": self._presence_version,
            "stopping": self._stopping,
            "uptime": time.time() - self._started_at,
            "rolling_restart": self._rolling_progress(),
            "reshard": dict(self._reshard),
            "fleet": self._fleet.to_json() | {"callback": None} if self._fleet else None,
        }

    # -- reconcile loop --------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self._reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("reconcile pass failed; trying again")
            await asyncio.sleep(0.2)

    async def _reconcile_once(self) -> None:
        table, scheduler = self._table, self._scheduler
        if table is None or scheduler is None:
            return
        now = time.time()
        scheduler.expire(now)
        self._metrics.observe(now, table, scheduler, fenced=self._fenced, sync_interval=self._timings.sync_interval)
        if now < self._recovering_until:
            return
        for host in [h for t in self._tables() for h in t.live_hosts()]:
            silent = now - host.last_sync
            if host.host_id not in self._handles:
                if host.has_handle and silent > self._timings.sync_interval * 2:
                    await self._find_handle(host.host_id)
                elif not host.has_handle and silent > self._timings.standalone_lease_ttl:
                    self._host_gone(host.host_id, f"stopped syncing for {silent:.1f} s")
                continue
            if silent > self._timings.host_timeout and host.host_id not in self._fenced:
                self._fence(host.host_id, silent)
        for fleet in self._fleets() if not self._stopping else []:
            for slot in fleet.missing_slots() if fleet.desired else []:
                _LOGGER.warning("host slot %s has no live host; starting a replacement", slot)
                fleet.start_slot(slot).add_done_callback(self._log_start_failure)
        for each in self._tables() if not self._stopping else []:
            self._deliver(each.place(), each)
            move = each.rebalance_move()
            if move is not None:
                shard_id, donor = move
                each.hosts[donor].pending_revoke.append(shard_id)
                self._mailboxes.setdefault(donor, _Mailbox()).wake.set()
                _LOGGER.info("rebalancing: shard %s moves off host %s", shard_id, donor)
        if self._options.auto_reshard:
            await self._auto_reshard_policy()
        if self._dirty and now - self._last_checkpoint > self._timings.checkpoint_interval:
            await self._checkpoint()

    @staticmethod
    def _log_start_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("starting a host failed (will retry): %s", task.exception())

    # -- fleet -----------------------------------------------------------------------------------

    async def deploy(self, capability: str, hosts: int, callback: bytes | None) -> list[str]:
        """Run the bot on ``hosts`` ShardHost actors across the cluster; return once all started.

        Hosts are detached actors owned by the Orchestrator: it replaces those that die
        and kills them on `shutdown`. ``callback`` is the cloudpickled ``callback(bot)``.

        Raises
        ------
        ray_shards.host.HostCallbackError
            When the callback raised in a host.
        """
        import ray

        config, _, _ = self._check(capability)
        assert self._fleet is not None
        if self._fleet.desired:
            msg = f"bot {self._bot_id} already runs on {self._fleet.desired} hosts; stop it first"
            raise RuntimeError(msg)
        count = max(1, min(hosts, config.shard_count))
        self._fleet.use_resource = "shard_host" in ray.cluster_resources()  # type: ignore[no-untyped-call]
        self._fleet.configure(desired=count, shard_count=config.shard_count, callback=callback)
        self._dirty = True
        tasks = [self._fleet.start_slot(slot) for slot in range(count)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self._fleet.desired = 0
            raise errors[0]
        await self._checkpoint()
        return sorted(self._fleet.hosts)

    async def host_handles(self, capability: str) -> dict[str, typing.Any]:
        """The fleet's host actors by host id."""
        self._check(capability)
        return {h.host_id: h.handle for h in self._fleet.hosts.values()} if self._fleet else {}

    async def start_rolling_restart(self, capability: str, callback: bytes | None = None) -> dict[str, typing.Any]:
        """Replace every host, one slot at a time, handing each shard over by RESUME.

        ``callback`` (cloudpickled) replaces the hosts' callback, to deploy new bot code.
        Returns the restart's progress; follow it with `status`.
        """
        self._check(capability)
        fleet = self._fleet
        if fleet is None or not fleet.desired:
            msg = "only a bot launched by ray_shards (run_subprocesses / BotDeployment) can be rolled"
            raise RuntimeError(msg)
        if self._rolling is not None and self._rolling.state in ("running", "paused", "aborting"):
            msg = "a rolling restart is already in progress; pause, resume or abort it"
            raise RuntimeError(msg)
        if callback is not None:
            fleet.set_callback(callback)
        self._rolling = _RollingRestart(total=len({h.slot for h in fleet.hosts.values()}))
        self._rolling_task = asyncio.get_running_loop().create_task(self._roll(self._rolling))
        return self._rolling_progress()

    async def control_rolling_restart(self, capability: str, action: str) -> dict[str, typing.Any]:
        """``pause``, ``resume`` or ``abort`` the rolling restart (it stops between hosts, never mid-hand-over)."""
        self._check(capability)
        rolling = self._rolling
        if rolling is None or rolling.state not in ("running", "paused"):
            msg = "no rolling restart is in progress"
            raise RuntimeError(msg)
        if action == "pause":
            rolling.state = "paused"
        elif action == "resume":
            rolling.state = "running"
        elif action == "abort":
            rolling.state = "aborting"
        else:
            msg = f"unknown action {action!r}; use pause, resume or abort"
            raise ValueError(msg)
        return self._rolling_progress()

    def _rolling_progress(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self._rolling) if self._rolling is not None else {}

    async def _roll(self, rolling: _RollingRestart) -> None:
        fleet, table = self._fleet, self._table
        assert fleet is not None and table is not None
        try:
            for slot in sorted({h.slot for h in fleet.hosts.values() if not h.retiring}):
                while rolling.state == "paused":
                    await asyncio.sleep(0.2)
                if rolling.state == "aborting":
                    rolling.state = "aborted"
                    break
                await self._roll_slot(slot, rolling)
                rolling.done += 1
            else:
                rolling.state = "finished"
        except Exception as exc:
            rolling.state = "failed"
            rolling.error = f"{type(exc).__name__}: {exc}"
            _LOGGER.exception("rolling restart failed")
        finally:
            rolling.current = None
            rolling.finished_at = time.time()
            _LOGGER.info("rolling restart %s: %s/%s hosts replaced", rolling.state, rolling.done, rolling.total)

    async def _roll_slot(self, slot: int, rolling: _RollingRestart) -> None:
        fleet, table = self._fleet, self._table
        assert fleet is not None and table is not None
        olds = fleet.active_in_slot(slot)
        want = sum(h.want for h in olds) or fleet.wants[slot]
        rolling.current = ",".join(h.host_id for h in olds)
        for old in olds:
            old.retiring = True
        try:
            await fleet.start_slot(slot, want)
        except BaseException:
            for old in olds:
                old.retiring = False
            raise
        for old in olds:
            record = table.hosts.get(old.host_id)
            if record is not None:
                record.want = 0
        deadline = time.monotonic() + 30.0 + 5.0 * want
        while any(table.owned_by(o.host_id) for o in olds) or any(
            r.status is not ShardStatus.READY for r in table.shards.values() if r.host_id is not None
        ):
            if time.monotonic() > deadline:
                msg = f"slot {slot}: shards did not move off {rolling.current} in time"
                raise TimeoutError(msg)
            await asyncio.sleep(0.1)
        for old in olds:
            await fleet.retire(old.host_id)
            rolling.replaced.append(old.host_id)
        self._dirty = True

    # -- live resharding ---------------------------------------------------------------------------

    async def start_reshard(self, capability: str, shard_count: int) -> dict[str, typing.Any]:
        """Move the bot to ``shard_count`` shards without downtime.

        A complete second set of sessions with the new count starts beside the old one
        (on new hosts, within the identify rate limit and budget) with its events held;
        when all are READY, the old set stops delivering and hands in what it delivered,
        the new set delivers what it holds minus that, goes live, and the old set closes.

        Raises
        ------
        ValueError
            For a count below 1, the current count, or more identifies than the daily budget has left.
        """
        self._check(capability)
        return self._begin_reshard(shard_count)

    def _begin_reshard(self, shard_count: int) -> dict[str, typing.Any]:
        table, scheduler = self._table, self._scheduler
        assert table is not None and scheduler is not None
        if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
            msg = f"shard_count must be a whole number of at least 1, not {shard_count!r}"
            raise ValueError(msg)
        if shard_count == table.shard_count:
            msg = f"the bot already runs {shard_count} shards"
            raise ValueError(msg)
        if scheduler.remaining < shard_count:
            msg = (
                f"resharding to {shard_count} shards needs {shard_count} identifies but Discord's daily budget has "
                f"only {scheduler.remaining} left; wait for the reset or reshard to fewer shards"
            )
            raise ValueError(msg)
        if self._fleet is None or not self._fleet.desired:
            msg = "only a bot launched by ray_shards (run_subprocesses / BotDeployment) can be resharded"
            raise RuntimeError(msg)
        if self._next_table is not None or self._rolling_busy():
            msg = "a reshard or rolling restart is already in progress"
            raise RuntimeError(msg)
        self._reshard = {"state": "starting", "from": table.shard_count, "to": shard_count, "ready": 0,
                         "started_at": time.time(), "finished_at": None, "error": None, "replayed": 0}
        self._reshard_task = asyncio.get_running_loop().create_task(self._do_reshard(shard_count))
        return dict(self._reshard)

    def _rolling_busy(self) -> bool:
        return self._rolling is not None and self._rolling.state in ("running", "paused", "aborting")

    async def deliver_identities(self, capability: str, host_id: str, identities: list[str]) -> None:
        """An old-set host hands in the identities of the events it delivered (resharding switch)."""
        self._check(capability)
        self._reshard_ids[host_id] = identities

    async def _broadcast(self, hosts: list[str], kind: CommandKind, arguments: dict[str, typing.Any]) -> None:
        results = await asyncio.gather(
            *(
                self._run_on_host(h, Command(next(self._command_ids), kind, None, arguments), 30.0)
                for h in hosts
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    async def _do_reshard(self, shard_count: int) -> None:
        old_table, old_fleet = self._table, self._fleet
        assert old_table is not None and old_fleet is not None and self._config is not None
        progress = self._reshard
        new_table = ShardTable(shard_count)
        new_fleet = self._new_fleet(prefix=f"s{shard_count}-h")
        try:
            old_hosts = [h.host_id for h in old_table.live_hosts()]
            await self._broadcast(old_hosts, CommandKind.RECORD, {})
            self._next_table, self._next_fleet = new_table, new_fleet
            old_fleet.share_token(new_fleet)
            new_fleet.use_resource = old_fleet.use_resource
            new_fleet.configure(desired=min(old_fleet.desired, shard_count), shard_count=shard_count, callback=old_fleet.callback)
            new_fleet.shard_count = shard_count
            new_fleet.shadow = True
            progress["state"] = "identifying"
            starts = [new_fleet.start_slot(slot) for slot in range(new_fleet.desired)]
            errors = [r for r in await asyncio.gather(*starts, return_exceptions=True) if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            deadline = time.monotonic() + 60.0 + shard_count * (self._timings.identify_window + 1.0)
            while True:
                ready = sum(1 for r in new_table.shards.values() if r.status is ShardStatus.READY)
                progress["ready"] = ready
                if ready == shard_count:
                    break
                if time.monotonic() > deadline:
                    msg = f"only {ready}/{shard_count} new shards became READY"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.2)
            progress["state"] = "switching"
            old_fleet.desired = 0
            self._reshard_ids.clear()
            await self._broadcast(old_hosts, CommandKind.SWITCH_OUT, {})
            skip = sorted({i for ids in self._reshard_ids.values() for i in ids})
            new_hosts = [h.host_id for h in new_table.live_hosts()]
            await self._broadcast(new_hosts, CommandKind.GO_LIVE, {"skip": skip})
            # The new set is live: make it the bot, then end the old sessions.
            self._table, self._fleet = new_table, new_fleet
            self._next_table, self._next_fleet = None, None
            new_fleet.shadow = False
            self._config = dataclasses.replace(self._config, shard_count=shard_count)
            for host_id in new_hosts:
                self._host_tables.pop(host_id, None)
            progress["state"] = "closing old sessions"
            for host in list(old_fleet.hosts):
                self._host_tables[host] = old_table
                await old_fleet.retire(host, hand_over=False)
            progress["state"] = "finished"
            self._dirty = True
            await self._checkpoint()
        except Exception as exc:
            progress["state"] = "failed"
            progress["error"] = f"{type(exc).__name__}: {exc}"
            _LOGGER.exception("reshard to %s shards failed; the old shards keep running", shard_count)
            if self._next_fleet is not None:
                self._next_fleet.kill_all()
            self._next_table, self._next_fleet = None, None
            old_fleet.desired = old_fleet.desired or len(old_fleet.wants)
        finally:
            progress["finished_at"] = time.time()
            self._reshard_ids.clear()
            self._changed()

    async def _auto_reshard_policy(self) -> None:
        """Start a reshard when Discord recommends more shards, or a shard outgrows ``guild_threshold``."""
        if time.monotonic() - self._last_policy_check < self._timings.auto_reshard_interval:
            return
        self._last_policy_check = time.monotonic()
        table, fleet, scheduler = self._table, self._fleet, self._scheduler
        if table is None or fleet is None or scheduler is None or not fleet.desired or self._stopping:
            return
        if self._next_table is not None or self._rolling_busy() or self._reshard.get("state") == "failed":
            return
        target = table.shard_count
        busiest = max((r.guilds for r in table.shards.values()), default=0)
        if busiest > self._options.guild_threshold:
            target = max(target, table.shard_count * 2)
        token = fleet.token
        if token is not None and self._config is not None:
            try:
                info = await fetch_gateway_bot(self._config.rest_url, token)
                target = max(target, info.shards)
                scheduler.set_remaining(info.remaining)
            except Exception as exc:
                _LOGGER.warning("auto-reshard: GET /gateway/bot failed: %s", exc)
        if target > table.shard_count:
            reason = f"busiest shard has {busiest} guilds" if busiest > self._options.guild_threshold else (
                "Discord recommends more shards"
            )
            _LOGGER.warning("auto-reshard: %s -> %s shards (%s)", table.shard_count, target, reason)
            try:
                self._begin_reshard(target)
            except Exception as exc:
                _LOGGER.error("auto-reshard to %s refused: %s", target, exc)
                self._reshard = {"state": "failed", "from": table.shard_count, "to": target, "ready": 0,
                                 "error": str(exc), "started_at": time.time(), "finished_at": time.time()}

    async def _find_handle(self, host_id: str) -> None:
        """After a restart: re-watch a checkpointed host actor by name, or declare it gone."""
        import ray

        from ray_shards.connection import NAMESPACE, host_actor_name

        try:
            handle = ray.get_actor(host_actor_name(self._bot_id, host_id), namespace=NAMESPACE)
        except ValueError:
            self._host_gone(host_id, "did not come back after the orchestrator restarted")
            return
        self._watch(host_id, handle)

    def _fence(self, host_id: str, silent: float) -> None:
        import ray

        self._fenced.add(host_id)
        _LOGGER.warning("host %s has not synced for %.1f s; killing it so its shards can move", host_id, silent)
        with contextlib.suppress(Exception):
            ray.kill(self._handles[host_id], no_restart=True)

    async def _checkpoint(self) -> None:
        if self._config is None or self._table is None or self._token_hash is None or self._stopping:
            return
        data = {
            "config": dataclasses.asdict(self._config),
            "token_hash": self._token_hash.to_json(),
            "table": self._table.to_json(),
            "presence": dataclasses.asdict(self._presence),
            "presence_version": self._presence_version,
            "remaining": self._scheduler.remaining if self._scheduler else 0,
            "fleet": self._fleet.to_json() if self._fleet else None,
        }
        self._dirty = False
        self._last_checkpoint = time.time()
        try:
            size = await asyncio.to_thread(checkpoint.save_checkpoint, self._bot_id, data)
            self._metrics.checkpoint_saved(size, self._last_checkpoint)
        except Exception:
            self._dirty = True
            _LOGGER.exception("checkpoint failed; will retry")
