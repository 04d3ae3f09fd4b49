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
import functools
import gc
import logging
import random
import time
import typing

import hikari

from ray_shards import admission, checkpoint, checkpoint_state, control
from ray_shards import resharding as rs
from ray_shards import rolling as roll
from ray_shards.auth import TokenHash, bot_id_from_token, command_key, validate_token
from ray_shards.bot_sets import BotSets
from ray_shards.capabilities import Capabilities
from ray_shards.checkpoint_schedule import Write as CheckpointWrite
from ray_shards.checkpoint_writer import CheckpointWriter
from ray_shards.errors import (
    BotStoppedError,
    CapabilityExpiredError,
    CheckpointWriteError,
    HostNotRegisteredError,
    LeaseLostError,
    NotInitialisedError,
    ShardUnavailableError,
)
from ray_shards.fleet import HostFleet
from ray_shards.gateway_info import fetch_gateway_bot, validate_rest_url
from ray_shards.gateway_watch import GatewayWatch
from ray_shards.host_mailboxes import Mailboxes
from ray_shards.host_watch import HostWatch
from ray_shards.identify import GRANT_USE_LIMIT, IdentifyScheduler, window_start
from ray_shards.models import (
    BotConfig,
    CommandKind,
    HostDirectives,
    Lease,
    ReportBatch,
    SessionState,
    ShardInfo,
    ShardReport,
    ShardStatus,
)
from ray_shards.orchestrator_metrics import OrchestratorMetrics
from ray_shards.presence import PresenceState, merge_presence
from ray_shards.presence_push import push_presence
from ray_shards.protocol import (
    BotStatus,
    DeployStatus,
    FleetSummary,
    GuildTails,
    HostSummary,
    IdentifyAnswer,
    PingInfo,
    Registration,
    ReshardProgress,
    RollingRestartProgress,
    TableDelta,
)
from ray_shards.ray_errors import log_background_failure, unwrap_ray_error
from ray_shards.reshard_runner import ReshardRunner
from ray_shards.roll_runner import RollRunner
from ray_shards.table import CheckpointSchemaError, ShardTable
from ray_shards.table_feed import TableFeed
from ray_shards.timings import Timings

__all__ = ["Orchestrator", "OrchestratorOptions"]

_Core = typing.TypeVar("_Core", roll.RollingRestart, rs.Reshard)

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


class Orchestrator:
    """The actor class; see the module docstring. Created by `ray_shards.launch`, found by name.

    ``kv`` is where the checkpoint lives (None: Ray's GCS internal KV, as the actor uses it); the in-process
    tests inject a store that can refuse writes.
    """

    def __init__(self, bot_id: int, options: OrchestratorOptions, *, kv: checkpoint.KeyValue | None = None) -> None:
        # Its decisions (hand-overs, fencing, restarts, roll and reshard steps) are what an operator reads.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [orchestrator] %(name)s: %(message)s")
        self._bot_id = bot_id
        self._kv = kv
        self._options = options
        self._timings = options.timings
        self._config: BotConfig | None = None
        self._token_hash: TokenHash | None = None
        # The key hosts check on a pushed presence (auth.command_key); known once a token holder authenticated,
        # and never checkpointed (a restarted Orchestrator learns it again from the first authenticate).
        self._command_key: str | None = None
        self._sets = BotSets()
        self._scheduler: IdentifyScheduler | None = None
        self._presence = PresenceState()
        self._presence_version = 0
        self._capabilities = Capabilities(
            limit=options.timings.max_capabilities, idle_ttl=options.timings.capability_idle_ttl
        )
        self._error: str | None = None
        self._deploy_error: str | None = None
        self._deploy_error_type: str | None = None
        self._deploy_failure: BaseException = RuntimeError("the deployment failed")
        self._gateway = GatewayWatch(options.timings.auto_reshard_interval)
        self._ensured: set[str] = set()
        self._shutdown_task: asyncio.Task[int] | None = None
        # (host, shard, epoch) -> when it first asked for an identify grant (for the queue-wait metric).
        self._identify_asked: dict[tuple[str, int, int], float] = {}
        self._mail = Mailboxes()
        self._hosts = HostWatch(bot_id, self._timings, on_gone=self._host_gone)
        self._table_changed = asyncio.Event()
        self._feed = TableFeed(lambda: self._sets.table)
        # Per table object, the (version, hosts_version) its last placement pass saw: nothing placement or
        # rebalancing decide on changed since, so the pass is skipped.
        self._reconciled: dict[int, tuple[int, int]] = {}
        self._recovering_until = 0.0
        self._stopping = False
        self._started_at = time.time()
        self._reconcile_task: asyncio.Task[None] | None = None
        # Jitter for the steady parks of a big bot's hosts (Timings.steady_park), so hosts whose syncs arrived
        # together (after a restart of this actor) do not stay in step.
        self._park_jitter = random.Random()
        # Set when an asynchronous result (a host command's, a start's) is in: the reconcile pass runs at once.
        self._reconcile_wake = asyncio.Event()
        # The rolling restart's pure core (ray_shards.rolling); the reconcile pass steps it and carries out its effects.
        self._roll = RollRunner(
            self._timings, checkpoint=functools.partial(self._checkpoint_now, strict=True),
            head_changed=self._head_changed, table_changed=self._changed, wake_host=self._mail.wake,
            wake_reconcile=self._reconcile_wake.set,
        )
        # The reshard's pure core (ray_shards.resharding), stepped the same way, and the last reshard's progress.
        self._reshard = ReshardRunner(
            self._timings, self._sets, self._mail, new_fleet=self._new_fleet,
            checkpoint=functools.partial(self._checkpoint_now, strict=True), committed=self._reshard_committed,
            table_changed=self._changed, wake_reconcile=self._reconcile_wake.set, fenced=lambda: self._hosts.fenced,
        )
        # A roll or reshard a client started, until it is on record (_record_new_operation): not stepped before.
        self._unrecorded: roll.RollingRestart | rs.Reshard | None = None
        self._metrics = OrchestratorMetrics(bot_id)
        self._writer = CheckpointWriter(
            bot_id, self._timings, self._checkpoint_data, self._bot_table,
            wanted=lambda: (self._config is not None and self._token_hash is not None and self._sets.table is not None
                            and not self._stopping),
            kv=kv, saved=lambda size: self._metrics.checkpoint_saved(size, time.time()),
        )
        self._restore()

    # -- lifecycle -------------------------------------------------------------------------------

    def _restore(self) -> None:
        try:
            data = checkpoint.load_checkpoint(self._bot_id, kv=self._kv)
        except CheckpointSchemaError as exc:
            # Crashing here would make Ray restart the actor into the same crash forever: stay up, refuse work,
            # and say why (ping shows it without a capability).
            self._error = str(exc)
            _LOGGER.error("cannot restore bot %s: %s", self._bot_id, exc)
            return
        except Exception:
            _LOGGER.exception("could not read the checkpoint; waiting to be initialised")
            return
        if data is None:
            return
        now = time.time()
        try:
            state = checkpoint_state.restored(data, now)
        except CheckpointSchemaError as exc:
            self._error = str(exc)
            _LOGGER.error("cannot restore bot %s: %s", self._bot_id, exc)
            return
        self._config, self._token_hash, self._sets.table = state.config, state.token_hash, state.table
        # Its rows are stored as they are now: only the head (a new incarnation) must be written.
        self._writer.restored(self._sets.table, state.chunk_generations, state.seq)
        self._presence, self._presence_version = state.presence, state.presence_version
        self._scheduler = self._new_scheduler(state.remaining)
        # An IDENTIFY may have been granted (and sent) just before the crash, and the old schedule died with
        # the process: every bucket starts with a full window, so the next IDENTIFY cannot come too early.
        # Hosts drop a grant they could not use within grant_use_limit of asking (of its not-before time, for a
        # grant made up to identify_lead ahead: start_full adds the lead), so that is all a grant of the dead
        # Orchestrator may still be used after now.
        self._scheduler.start_full(time.monotonic(), in_flight=GRANT_USE_LIMIT)
        # When the daily budget resets was not checkpointed (a monotonic time means nothing to another
        # process): ask Discord again as soon as a token is known.
        self._scheduler.set_budget(self._scheduler.remaining, 0.0, time.monotonic())
        # Monotonic: a wall-clock step must not cut the grace short (or stretch it).
        self._recovering_until = time.monotonic() + self._timings.recovery_grace
        self._sets.fleet = self._new_fleet(str(state.fleet.get("prefix", "h")))
        self._sets.fleet.restore(state.fleet)
        keep = set(self._sets.fleet.hosts)
        if state.old_fleet is not None:
            keep |= self._restore_old_set(*state.old_fleet)
        # Hosts started just before the crash whose names never reached a checkpoint would leak: kill them.
        # Hosts of a reshard's shadow fleet are not checkpointed either: the reshard is rolled back (below). The
        # old hosts of a reshard past its commit point are kept: the reshard retires them (closing their sessions).
        self._sets.fleet.kill_strays(keep=keep, any_prefix=True)
        for host in self._sets.table.live_hosts():
            self._mail.open(host.host_id)
        if state.rolling is not None:
            # Only the target state was checkpointed; the first step re-derives the slot's phase from the fleet and
            # the table, and starts that phase's timer again.
            self._roll.resume(state.rolling)
        if state.reshard is not None:
            self._reshard.restore(state.reshard)
        # The restored table has a new incarnation: write it before any lease of that incarnation is granted, or
        # a second crash would restore the old incarnation again and hand out the same epochs twice.
        self._writer.write_restored()
        _LOGGER.warning(
            "orchestrator of bot %s restarted from its checkpoint: %s shards, %s hosts to hear back from",
            self._bot_id,
            self._sets.table.shard_count,
            len(self._sets.table.live_hosts()),
        )
        self._ensure_reconcile()

    def _restore_old_set(self, data: dict[str, typing.Any], shard_count: int) -> set[str]:
        """The old set of a reshard restored at its commit point, for `_retire_old_set`; returns its live hosts.

        Its fleet is found again by name (`HostFleet.restore`) and is never repaired (``desired`` 0) nor
        one of `_fleets`. Its table was not checkpointed; `_old_table_stand_in` answers its hosts until
        they are retired.
        """
        fleet = self._new_fleet(str(data.get("prefix", "h")))
        fleet.restore(data)
        fleet.desired = 0
        table = self._old_table_stand_in(shard_count, [(h.host_id, h.want) for h in fleet.hosts.values()], time.time())
        for host_id in fleet.hosts:
            self._sets.host_tables[host_id] = table
        self._sets.old_set = (table, fleet)
        return set(fleet.hosts)

    @staticmethod
    def _old_table_stand_in(shard_count: int, hosts: typing.Iterable[tuple[str, int]], now: float) -> ShardTable:
        """A table of ``shard_count`` shards standing in for a committed reshard's old one, with ``hosts`` registered.

        The old hosts sync, and release their shards when retired, until then. Answered by the bot's
        table they would re-register there and be told that their shards (of the old count) have no
        lease: they would hand the sessions over (close 3000, resumable) instead of ending them. Here
        their reports make their leases current (a lease above the table's epoch is taken as current,
        as after a restore from an older checkpoint), and nothing is ever placed: they are not
        ``placeable`` and the reconcile pass does not place this table.
        """
        table = ShardTable(shard_count)
        for host_id, want in hosts:
            table.register_host(host_id, node_id=None, want=want, has_handle=True, now=now, placeable=False)
        return table

    def _new_fleet(self, prefix: str = "h") -> HostFleet:
        assert self._config is not None
        return HostFleet(
            self._bot_id,
            rest_url=self._config.rest_url,
            intents=self._config.intents,
            timings=self._timings,
            prefix=prefix,
            persist=self._checkpoint_now,
            progress=self._start_progress,
        )

    def _start_progress(self, host_id: str) -> tuple[bool, int]:
        """A starting host's progress: whether it registered, and how many of the bot's shards are READY (the
        identify queue moving, which its own shards wait in)."""
        tables = self._sets.tables()
        registered = any(host_id in t.hosts for t in tables)
        return registered, sum(1 for t in tables for r in t.shards.values() if r.status is ShardStatus.READY)

    def _new_scheduler(self, remaining: int) -> IdentifyScheduler:
        assert self._config is not None
        return IdentifyScheduler(
            self._config.max_concurrency,
            remaining=remaining,
            window=self._timings.identify_window,
            margin=self._timings.identify_margin,
            grant_timeout=self._timings.grant_timeout,
            grant_use_limit=GRANT_USE_LIMIT,
            lead=self._timings.identify_lead,
        )

    def _recovering(self) -> bool:
        """Within the recovery grace after a restart: every host reports before anything is placed.

        Also while the restored table's new incarnation is not on record: a lease granted before that write
        lands would carry an epoch a second restart (from the same older checkpoint) grants again.
        """
        return time.monotonic() < self._recovering_until or not self._writer.incarnation_written

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
        if self._error is not None:
            raise RuntimeError(self._error)
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
        self._command_key = command_key(token)
        self._sets.table = ShardTable(shard_count)
        self._sets.fleet = self._new_fleet()
        self._sets.fleet.remember_token(token)
        self._scheduler = self._new_scheduler(info.remaining)
        self._scheduler.set_budget(info.remaining, info.reset_after, time.monotonic())
        _LOGGER.info(
            "orchestrating bot %s: %s shards, max_concurrency %s, %s identifies left today",
            self._bot_id,
            shard_count,
            info.max_concurrency,
            info.remaining,
        )
        self._head_changed()
        await self._writer.write()
        self._ensure_reconcile()
        return self._new_capability()

    async def authenticate(self, token: str) -> str:
        """Prove the caller holds the bot token; return a capability for later calls.

        Raises
        ------
        PermissionError
            When the token does not match.
        """
        if self._error is not None:
            raise RuntimeError(self._error)
        if self._token_hash is None:
            raise NotInitialisedError("this orchestrator has not been given its bot yet")
        if not isinstance(token, str) or not await asyncio.to_thread(self._token_hash.matches, token.strip()):
            msg = "permission denied: that token does not control this bot"
            raise PermissionError(msg)
        for fleet in self._sets.fleets():
            fleet.remember_token(token.strip())
        self._command_key = command_key(token.strip())
        self._ensure_reconcile()
        return self._new_capability()

    def _new_capability(self) -> str:
        return self._capabilities.issue(time.monotonic())

    def revoke(self, capability: str) -> bool:
        """Forget ``capability`` (a Client or CLI call that is done with it). Returns whether it was known."""
        return self._capabilities.revoke(capability)

    def _check(self, capability: str) -> tuple[BotConfig, ShardTable, IdentifyScheduler]:
        if not self._capabilities.use(capability, time.monotonic()):
            msg = "unknown capability (the orchestrator restarted or the caller never authenticated)"
            raise CapabilityExpiredError(msg)
        assert self._config is not None and self._sets.table is not None and self._scheduler is not None
        return self._config, self._sets.table, self._scheduler

    def ping(self) -> PingInfo:
        """Liveness probe; also says whether the bot is initialised (no capability needed, nothing secret).

        ``error`` says why the Orchestrator cannot run the bot (a checkpoint it cannot read), with what to do.
        """
        stopped = self._shutdown_task is not None and self._shutdown_task.done()
        return PingInfo(
            bot_id=self._bot_id, initialised=self._config is not None, stopping=self._stopping, stopped=stopped,
            error=self._error,
        )

    async def shutdown(self, capability: str, *, timeout: float = 10.0) -> int:
        """Stop the whole bot: every host closes its shards (ending their sessions) and leaves.

        Returns the number of hosts that were asked to stop. The checkpoint is deleted.
        Concurrent and repeated calls (a launcher and a client both stopping the bot, or a
        retry after a lost reply) wait for the same shutdown and get the same answer.
        """
        _, table, _ = self._check(capability)
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown(table, timeout))
        return await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, table: ShardTable, timeout: float) -> int:
        self._stopping = True
        for shard in table.shards.values():
            shard.stopped = True
        self._mail.stop_all()
        hosts = [h.host_id for h in table.live_hosts()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(table.owned_by(h) for h in hosts):
            await asyncio.sleep(0.05)
        self._mail.fail_all(BotStoppedError("the bot is shutting down"))
        for table_ in self._sets.tables():
            for shard in table_.shards.values():
                shard.stopped = True
        killed = sum(fleet.kill_all() for fleet in self._sets.every_fleet())
        _LOGGER.info("killed %s host actor(s)", killed)
        await asyncio.to_thread(checkpoint.delete_checkpoint, self._bot_id, kv=self._kv)
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
        placeable: bool = True,
    ) -> Registration:
        """A host joins (or rejoins after an Orchestrator restart).

        A host that is not ``placeable`` (a `Client` running shards it claimed) is never
        handed a shard by placement: it runs exactly what it claims.

        ``held`` lists the ``(shard_id, epoch)`` leases the host still runs; those that
        are still current are kept. Returns the config, new leases for it, the held
        shards it must stop, and the presence with its version (a `Registration`).
        """
        config, table, _ = self._check(capability)
        if self._stopping:
            raise BotStoppedError("the bot is shutting down")
        old_set, new_table = self._sets.old_set, self._sets.next_table
        joins = control.set_to_join(
            host_id, shard_count, live_count=table.shard_count,
            new_count=new_table.shard_count if new_table is not None else None,
            old_hosts=old_set[1].hosts if old_set is not None else (),
        )
        if joins is control.JoinSet.OLD:
            # An old host of a committed reshard (re-registering after an Orchestrator restart) until it is retired:
            # that table never places anything again.
            assert old_set is not None
            table, placeable = old_set[0], False
        elif joins is control.JoinSet.NEW:
            assert new_table is not None
            table = new_table
        config = dataclasses.replace(config, shard_count=table.shard_count)
        self._sets.host_tables[host_id] = table
        now = time.time()
        # A fleet host's share is the fleet's to decide, not the host's: one re-registering after an Orchestrator
        # restart still asks for its start-up share, but if a rolling restart is replacing it, it wants none.
        fleet_host = next((f.hosts[host_id] for f in self._sets.fleets() if host_id in f.hosts), None)
        if fleet_host is not None:
            want = 0 if fleet_host.retiring else fleet_host.want
        # Placement waits for the recovery grace: see control.host_joined.
        joined = control.host_joined(
            table, host_id, node_id=node_id, want=want, has_handle=handle is not None, now=now, held=held or (),
            placeable=placeable, place=not self._recovering(),
        )
        self._mail.open(host_id)
        if handle is not None:
            self._hosts.watch(host_id, handle)
        record = table is self._sets.table and self._reshard.old_set_records
        if record:
            # A replacement in the old set during a reshard records what it delivers like the others, so the
            # switch can skip those events in the new set. Registration.record has it start recording before
            # it adopts the leases below (so it notes their `since` before their RESUME); the command covers
            # a host that re-registers while its shards keep running.
            self._mail.post(host_id, CommandKind.RECORD)
        self._deliver(joined.placed)
        self._changed()
        _LOGGER.info("host %s joined on node %s wanting %s shards; granted %s", host_id, node_id, want,
                     len(joined.leases))
        return Registration(
            config=config, leases=joined.leases, stale=joined.stale, presence=self._presence,
            presence_version=self._presence_version, record=record, shadow=table is self._sets.next_table,
            settled=joins is control.JoinSet.LIVE and not record,
        )

    def _host_gone(self, host_id: str, reason: str) -> None:
        if self._sets.table is None:
            return
        table = self._sets.table_of(host_id)
        host = table.hosts.get(host_id)
        if host is None or not host.alive:
            return
        # While recovering, nothing is placed (control.host_lost): the reconcile pass places afterwards.
        assert self._scheduler is not None
        lost = control.host_lost(table, self._scheduler, host_id, place=not self._recovering())
        orphans = lost.orphans
        for fleet in self._sets.fleets():
            fleet.host_gone(host_id)
        self._hosts.forget(host_id)
        self._mail.close(host_id, reason)
        for key in [k for k in self._identify_asked if k[0] == host_id]:
            del self._identify_asked[key]
        level = logging.INFO if reason == "closed" or not orphans else logging.WARNING
        _LOGGER.log(level, "host %s %s; %s shard(s) to move: %s", host_id, reason, len(orphans), orphans)
        self._deliver(lost.placed)
        if host_id not in table.hosts:
            self._sets.host_tables.pop(host_id, None)
        self._changed()

    def _deliver(self, placed: dict[str, list[Lease]]) -> None:
        """Wake the parked syncs of hosts given new leases (the table keeps them as pending adopts)."""
        for host_id, leases in placed.items():
            self._mail.wake(host_id)
            _LOGGER.info("host %s takes over shards %s", host_id, [lease.shard_id for lease in leases])

    def _head_changed(self) -> None:
        """The checkpoint head's state (hosts, fleet, presence, operations) changed: the next write takes it."""
        self._writer.dirty = True

    def _changed(self) -> None:
        self._head_changed()
        self._table_changed.set()
        self._feed.moved()

    async def sync(
        self,
        capability: str,
        host_id: str,
        reports: list[ShardReport] | ReportBatch,
        *,
        timeout: float | None = None,
        report_seq: int | None = None,
        table_version: tuple[int, int] | None = None,
    ) -> HostDirectives:
        """A host's heartbeat and long poll: take its reports, answer with its work.

        ``reports`` is the host's full actual state (every shard it runs; hosts send a compact
        `ReportBatch`) and ``report_seq`` increases with every sync, so a late or repeated call is
        recognised and ignored.
        With ``table_version`` (the ``(table id, version)`` the host's view holds) the answer also
        carries the table rows changed since (`HostDirectives.table`), so a host follows the table
        without calls of its own but for a full read now and then.
        Returns at once when there is work (new leases, revocations, commands, stop),
        else after ``timeout`` (default ``sync_interval``). Adopts are repeated on every
        answer until the host reports the shard: a lost reply loses no lease.
        """
        self._check(capability)
        table = self._sets.table_of(host_id)
        host = table.hosts.get(host_id)
        if host is None or not host.alive:
            # Unknown (registered after the checkpoint this Orchestrator restarted from) or taken for gone: it
            # registers again. Never tell it to *stop*: that ends the sessions (1001), and a session a live lease
            # still needs, or another host is about to RESUME, would be lost with every event in its buffer.
            msg = f"host {host_id} is not registered with this orchestrator; register again"
            raise HostNotRegisteredError(msg)
        self._hosts.synced(host_id)
        synced = control.reports_applied(
            table, host_id, reports, time.time(), report_seq=report_seq, recovering=self._recovering()
        )
        if synced.stale:
            _LOGGER.info("host %s runs shard(s) %s without a current lease; revoking", host_id, synced.stale)
        # Costs what the host reported: the table marks the checkpoint chunks whose rows changed, and the head
        # (hosts, pending adopts) is rewritten only when those changed.
        if synced.hosts_changed:
            self._head_changed()
        self._table_changed.set()
        self._feed.moved()
        if not (host.pending_adopt or host.pending_revoke or self._mail.has_work(host_id)):
            await self._mail.wait(host_id, self._timings.sync_interval if timeout is None else timeout)
        host = table.hosts.get(host_id)
        if host is None or not host.alive:
            msg = f"host {host_id} was taken for gone while it waited; register again"
            raise HostNotRegisteredError(msg)
        adopt, revoke = control.directives(table, host_id, recovering=self._recovering())
        commands, stop = self._mail.take(host_id)
        directives = HostDirectives(
            adopt=adopt,
            revoke=revoke,
            commands=commands,
            presence_version=self._presence_version,
            stop=stop,
            resend_sessions=table.answered(host_id, time.time()),
            table=self._feed.delta_for(table_version),
            steady_interval=self._timings.steady_park(
                self._live_hosts(), standalone=not host.has_handle, jitter=self._park_jitter.random()
            ),
        )
        self._hosts.synced(host_id)
        return directives

    def _live_hosts(self) -> int:
        """Live hosts of every set (a reshard's two sets both sync): what the steady parks are sized by."""
        return sum(1 for table in self._sets.tables() for h in table.hosts.values() if h.alive)

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
        table = self._sets.table_of(host_id)
        released = control.shard_released(
            table, scheduler, host_id, shard_id, epoch, session, stopped=stopped or self._stopping, failed=failed,
            place=not self._stopping and not self._recovering(),
        )
        if not released.released:
            return False
        if failed is not None:
            _LOGGER.error("shard %s failed on host %s and will not be retried: %s", shard_id, host_id, failed)
        self._deliver(released.placed)
        self._changed()
        return True

    async def claim(self, capability: str, host_id: str, count: int = 1) -> list[Lease]:
        """Lease up to ``count`` more unassigned shards to ``host_id`` (for ``Client.recommended_shard``).

        Waits out the recovery after an Orchestrator restart (up to ``recovery_grace`` and a little more): until
        every host reported, a shard the restored table shows as unassigned may still run somewhere.
        """
        self._check(capability)
        give_up = time.monotonic() + self._timings.recovery_grace + 5.0
        while self._recovering():
            if time.monotonic() > give_up:
                msg = "the orchestrator is still recovering from a restart; try again shortly"
                raise ShardUnavailableError(msg)
            await asyncio.sleep(0.1)
        table = self._sets.table_of(host_id)
        if host_id not in table.hosts or not table.hosts[host_id].alive:
            msg = f"host {host_id} is not registered"
            raise LeaseLostError(msg)
        leases = table.claim(host_id, count)
        self._changed()
        return leases

    # -- identify / resume gate ------------------------------------------------------------------

    async def request_identify(
        self,
        capability: str,
        host_id: str,
        shard_id: int,
        epoch: int,
        *,
        ask: int | None = None,
        dropped: int | None = None,
        early: bool = False,
    ) -> IdentifyAnswer:
        """Ask once whether ``shard_id`` may IDENTIFY now; never parks the call.

        The answer is a grant (with the presence to identify with) or a not-before wait: the
        host sleeps locally and asks again, so no actor slot waits per shard and nothing
        wakes a herd of parked calls. A host must send its IDENTIFY within the scheduler's
        ``grant_use_limit`` of asking, or drop the grant and ask again, naming the dropped
        grant's ask in ``dropped`` (``ask`` numbers each ask) so its bucket is not closed for it.
        With ``early`` the host takes a grant up to `Timings.identify_lead` before its bucket opens:
        the answer's ``wait`` is then how long to sleep from its arrival before sending, and the
        send must come within ``wait`` plus the grant-use limit of asking.

        Raises
        ------
        LeaseLostError
            When ``host_id`` no longer holds the shard's lease.
        """
        _, _, scheduler = self._check(capability)
        table = self._sets.table_of(host_id)
        key = (host_id, shard_id, epoch)
        now = time.monotonic()
        decision = control.identify_requested(
            table, scheduler, host_id, shard_id, epoch, now, ask=ask, dropped=dropped, early=early
        )
        if decision.lease_lost:
            self._identify_asked.pop(key, None)
            msg = f"host {host_id} no longer holds shard {shard_id} (epoch {epoch})"
            raise LeaseLostError(msg)
        if decision.granted:
            self._metrics.identify_waited(now - self._identify_asked.pop(key, now))
            return IdentifyAnswer(granted=True, wait=decision.wait, presence=self._presence)
        if decision.refresh_budget:
            self._refresh_budget(now, force=True)
        self._identify_asked.setdefault(key, now)
        return IdentifyAnswer(granted=False, wait=decision.wait, presence=None)

    async def identify(self, capability: str, host_id: str, shard_id: int, epoch: int) -> PresenceState:
        """Wait until ``shard_id`` may IDENTIFY by Discord's rate limit; return the presence to identify with.

        The parked form of `request_identify`, for callers that identify right away on return
        (``Client.recommended_shard``); hosts ask with `request_identify` and wait locally.

        Raises
        ------
        LeaseLostError
            When ``host_id`` no longer holds the shard's lease.
        """
        while True:
            answer = await self.request_identify(capability, host_id, shard_id, epoch)
            if answer.granted and answer.presence is not None:
                return answer.presence
            await asyncio.sleep(min(answer.wait, 1.0))

    async def identify_done(
        self,
        capability: str,
        shard_id: int,
        sent_at: float | None,
        *,
        host_id: str | None = None,
        epoch: int | None = None,
        ask: int | None = None,
        left_ago: float | None = None,
    ) -> None:
        """The IDENTIFY of ``shard_id`` was answered (READY) or failed: free its bucket.

        With ``host_id`` and ``epoch`` only the grant's own holder frees it, so a late message from a host
        that lost the lease cannot open the bucket early; with ``ask`` (the ask whose grant the IDENTIFY used)
        only that very grant, so a late or repeated message about the holder's previous IDENTIFY of the shard
        cannot either. ``sent_at`` is ignored: it was taken on another
        machine's clock, and the release time is never earlier, so always safe. ``left_ago`` is how long before
        the host sent this message its IDENTIFY's frame was written, on the host's monotonic clock: with
        ``Timings.identify_window_from == "sent"`` the window counts from ``now - left_ago``, which this
        message's transit (or a retry) only makes later than the departure (`ray_shards.identify`, "Where a
        window starts"); otherwise from now.
        """
        _, _, scheduler = self._check(capability)
        holder = (host_id, epoch) if host_id is not None and epoch is not None else None
        now = time.monotonic()
        identified_at = window_start(now, left_ago, from_sent=self._timings.identify_window_from == "sent")
        scheduler.release(shard_id, now, identified_at=identified_at, holder=holder, ask=ask)

    async def check_lease(self, capability: str, host_id: str, shard_id: int, epoch: int) -> bool:
        """Whether ``host_id`` may RESUME ``shard_id`` now (it holds the current lease)."""
        self._check(capability)
        return control.lease_checked(self._sets.table_of(host_id), host_id, shard_id, epoch)

    # -- commands --------------------------------------------------------------------------------

    async def command_done(self, capability: str, command_id: int, error: str | None) -> None:
        """A host finished a command (``error`` is None on success)."""
        self._check(capability)
        self._mail.finish(command_id, error)

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
        await self._mail.run(record.host_id, kind, shard_id, arguments, max(1.0, deadline - time.monotonic()))

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

        The new presence and its version are in memory before any host hears of it, so a host
        that registers or a shard that identifies meanwhile already gets it. Each host is sent
        it in one hop, all at once: pushed to its actor handle (`ShardHost.apply_presence`),
        or through its mailbox when there is no handle (a Client's own shards) or the push
        failed. The checkpoint is written while the pushes travel, and the call returns once
        both are done: a presence this call reported is remembered across restarts.

        Returns the number of hosts that applied it. Raises `CheckpointWriteError` when the GCS refused the
        write: the presence applies, but a restart before the next checkpoint would forget it.
        """
        _, table, _ = self._check(capability)
        self._presence = merge_presence(self._presence, idle_since=idle_since, afk=afk, activity=activity,
                                        status=status)
        self._presence_version += 1
        self._head_changed()
        presence, version = self._presence, self._presence_version
        hosts = [h.host_id for h in table.live_hosts() if table.owned_by(h.host_id)]
        loop = asyncio.get_running_loop()
        pushes = [
            loop.create_task(push_presence(host_id, self._hosts.handle(host_id), self._command_key, presence, version,
                                           mail=self._mail, timeout=self._timings.command_timeout))
            for host_id in hosts
        ]
        # Let the pushes leave before the checkpoint's own work (serialising the head, the GCS write) runs.
        await asyncio.sleep(0)
        refused: CheckpointWriteError | None = None
        try:
            await self._writer.write(strict=True)
        except CheckpointWriteError as exc:
            refused = exc
        results = await asyncio.gather(*pushes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            _LOGGER.warning("presence not applied on one host (it will get it when its shards restart): %s",
                            failure)
        if refused is not None:
            # Applied (and written once the GCS takes writes again), but not remembered across a restart before that.
            msg = f"the presence applies now but {refused}: an orchestrator restart now would forget it; send it again"
            raise CheckpointWriteError(msg) from refused.__cause__
        return len(hosts) - len(failures)

    # -- views -----------------------------------------------------------------------------------

    async def table(self, capability: str) -> list[ShardInfo]:
        """The shard table."""
        _, table, _ = self._check(capability)
        return table.infos()

    async def table_since(self, capability: str, table_id: int, version: int, wait: float = 0.0) -> TableDelta:
        """The rows changed since ``version`` of table ``table_id``; a long poll of up to ``wait`` s.

        When nothing changed the call parks (at most 30 s) until something does, so a follower
        costs one call per change instead of one full table per poll. A caller holding another
        table (the Orchestrator restarted, or a reshard switched tables) gets the full table.
        """
        _, table, _ = self._check(capability)
        if wait > 0 and table.instance == table_id and table.version == version:
            await self._feed.wait_for_change(table, version, wait, lambda: self._stopping)
            _, table, _ = self._check(capability)
        return self._feed.delta(table, table_id, version)

    async def status(self, capability: str) -> BotStatus:
        """Bot-wide state: config, hosts, identify queue progress and presence."""
        config, table, scheduler = self._check(capability)
        ready = sum(1 for r in table.shards.values() if r.status is ShardStatus.READY)
        pending = sum(
            1 for r in table.shards.values() if r.status in (ShardStatus.UNASSIGNED, ShardStatus.STARTING)
        )
        mono = time.monotonic()
        return BotStatus(
            bot_id=self._bot_id,
            config=config,
            ready=ready,
            total=table.shard_count,
            identify_eta=scheduler.eta(pending),
            identifies_remaining=scheduler.remaining,
            hosts={
                h.host_id: HostSummary(
                    node_id=h.node_id, want=h.want, shards=table.owned_by(h.host_id),
                    since_sync=self._hosts.since_sync(h.host_id, mono),
                )
                for h in table.live_hosts()
            },
            presence=self._presence,
            presence_version=self._presence_version,
            stopping=self._stopping,
            uptime=time.time() - self._started_at,
            rolling_restart=self._roll.progress(),
            reshard=self._reshard.progress.snapshot() if self._reshard.progress is not None else None,
            fleet=FleetSummary.from_json(self._sets.fleet.to_json()) if self._sets.fleet else None,
        )

    # -- reconcile loop --------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self._reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("reconcile pass failed; trying again")
            # Every 0.2 s, or at once when a result a long operation waits for is in.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_wake.wait(), 0.2)
            self._reconcile_wake.clear()

    async def _reconcile_once(self) -> None:
        table, scheduler = self._sets.table, self._scheduler
        if table is None or scheduler is None:
            return
        now = time.time()
        mono = time.monotonic()
        scheduler.expire(mono)
        self._capabilities.expire(mono)
        self._refresh_budget(mono)
        self._metrics.observe(
            now, table, scheduler, fenced=self._hosts.fenced,
            sync_interval=self._timings.longest_sync_interval_at(self._live_hosts()),
        )
        self._feed.moved()
        if not self._writer.incarnation_written:
            await self._checkpoint_now()  # its success ends this part of the recovery
        if self._recovering():
            return
        if not self._stopping:
            self._start_unregistered_hosts()
            await self._step_operations(table)
        await self._hosts.check_silent(h for t in self._sets.tables() for h in t.live_hosts())
        if not self._stopping:
            self._repair_fleets()
            self._place()
        if self._options.auto_reshard:
            await self._auto_reshard_policy()
        write = self._writer.due()
        if write is not None:
            await self._writer.write(batched=write is CheckpointWrite.BATCH)

    async def _step_operations(self, table: ShardTable) -> None:
        """Step the rolling restart and the reshard; one a client just started is not stepped before it is on
        record (`_record_new_operation`)."""
        fleet = self._sets.fleet
        if fleet is not None and self._roll.core is not self._unrecorded:
            await self._roll.step(fleet, table)
        if self._reshard.core is not self._unrecorded:
            await self._reshard.step()

    def _repair_fleets(self) -> None:
        """Start a host in every slot of a fleet that has none (but the slot the rolling restart replaces)."""
        rolled = self._roll.current_slot
        for fleet in self._sets.fleets():
            for slot in fleet.missing_slots() if fleet.desired else []:
                if fleet is self._sets.fleet and slot == rolled:
                    continue  # the rolling restart owns the slot it replaces: it starts (or not) its host
                _LOGGER.warning("host slot %s has no live host; starting a replacement", slot)
                fleet.start_slot(slot).add_done_callback(self._log_start_failure)

    def _place(self) -> None:
        """A placement pass over each table whose hosts or shards changed since its last one."""
        tables = self._sets.tables()
        for each in tables:
            if self._reconciled.get(each.instance) == (each.version, each.hosts_version):
                continue  # nothing placement or rebalancing read has changed since the last pass
            # No graceful moves in the old set during a reshard (it is retired at the switch anyway): every shard
            # an old-set host adopts then is a failover, which the switch accounts for by `since`.
            old_set_records = each is self._sets.table and self._reshard.old_set_records
            placement = control.placement_pass(each, rebalance=not old_set_records)
            self._deliver(placement.placed)
            if placement.move is not None:
                shard_id, donor = placement.move
                self._mail.wake(donor)
                _LOGGER.info("rebalancing: shard %s moves off host %s", shard_id, donor)
            first_pass = each.instance not in self._reconciled
            self._reconciled[each.instance] = (each.version, each.hosts_version)
            if first_pass:
                # The actor's start-up heap (Ray, hikari: ~140 k objects) and a new table's rows live as long as
                # the table. Frozen out of the collector, a full collection (which the syncs' garbage triggers every
                # few seconds) stops walking them: 94 ms a full collection at 16k shards, 9 ms frozen (BENCHMARKS
                # F2). Refcounting still frees them; only reference cycles among them would stay.
                gc.freeze()
        if len(self._reconciled) > len(tables):
            live = {t.instance for t in tables}
            self._reconciled = {k: v for k, v in self._reconciled.items() if k in live}

    def _start_unregistered_hosts(self) -> None:
        """Fleet hosts restored from the checkpoint that never registered: make sure they were started."""
        for fleet in self._sets.fleets():
            table = self._sets.next_table if fleet is self._sets.next_fleet else self._sets.table
            assert table is not None
            for host_id, host in list(fleet.hosts.items()):
                if host.handle is None or host_id in self._ensured or host_id in table.hosts:
                    continue
                if fleet.is_starting(host.slot):
                    continue
                self._ensured.add(host_id)
                task = asyncio.get_running_loop().create_task(fleet.ensure_started(host_id))
                task.add_done_callback(log_background_failure)

    def _refresh_budget(self, now: float, *, force: bool = False) -> None:
        """Fetch the new daily identify budget once it reset (or at once with ``force``)."""
        if self._scheduler is not None and self._config is not None:
            token = next((f.token for f in self._sets.fleets() if f.token is not None), None)
            self._gateway.refresh_budget(self._scheduler, self._config.rest_url, token, now, force=force)

    @staticmethod
    def _log_start_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("starting a host failed (will retry): %s", task.exception())

    # -- fleet -----------------------------------------------------------------------------------

    async def deploy(self, capability: str, hosts: int, callback: bytes | None, *, wait: bool = True) -> list[str]:
        """Run the bot on ``hosts`` ShardHost actors across the cluster.

        Hosts are detached actors owned by the Orchestrator: it replaces those that die
        and kills them on `shutdown`. ``callback`` is the cloudpickled ``callback(bot)``.
        The intent (host count and callback) is checkpointed before any host starts, so an
        Orchestrator restart in the middle of a boot carries the boot on. With ``wait``
        the call returns once every host started; without it, at once (follow the boot
        with `status`: ``deploy`` holds a start failure). Calling it again with the same
        host count (a retry after a lost reply or a restart) changes nothing.

        Raises
        ------
        ray_shards.host.HostCallbackError
            When the callback raised in a host.
        CheckpointWriteError
            When the GCS refused the deployment's checkpoint: no host was started; try again.
        """
        import ray

        config, _, _ = self._check(capability)
        assert self._sets.fleet is not None
        count = max(1, min(hosts, config.shard_count))
        if self._sets.fleet.desired:
            if self._sets.fleet.desired == count and self._sets.fleet.callback == callback:
                return sorted(self._sets.fleet.hosts)
            msg = f"bot {self._bot_id} already runs on {self._sets.fleet.desired} hosts; stop it first"
            raise RuntimeError(msg)
        self._deploy_error = self._deploy_error_type = None
        self._sets.fleet.use_resource = "shard_host" in ray.cluster_resources()  # type: ignore[no-untyped-call]
        self._sets.fleet.configure(desired=count, shard_count=config.shard_count, callback=callback)
        try:
            # Intent first: a restart in the middle of the boot carries on the deployment on record.
            await self._checkpoint_now(strict=True)
        except CheckpointWriteError as exc:
            self._sets.fleet.desired = 0
            msg = f"{exc}, so no host was started; try again"
            raise CheckpointWriteError(msg) from exc.__cause__
        tasks = [self._sets.fleet.start_slot(slot) for slot in range(count)]
        watcher = asyncio.get_running_loop().create_task(self._watch_deploy(tasks))
        if wait:
            await asyncio.shield(watcher)
            if self._deploy_error is not None:
                raise self._deploy_failure
        return sorted(self._sets.fleet.hosts)

    async def _watch_deploy(self, tasks: list[asyncio.Task[None]]) -> None:
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            await self._checkpoint_now()
            return
        # The callback raised (or a host could not start): stop the half-started deployment, keep the reason
        # as the host raised it (not wrapped in Ray's RayTaskError, whose text carries a remote traceback).
        fleet = self._sets.fleet
        assert fleet is not None
        fleet.desired = 0
        failure = unwrap_ray_error(errors[0])
        self._deploy_failure = failure
        self._deploy_error = str(failure)
        self._deploy_error_type = type(failure).__name__
        for host_id in list(fleet.hosts):
            await fleet.retire(host_id, hand_over=False)
        await self._checkpoint_now()

    async def deploy_status(self, capability: str) -> DeployStatus:
        """How a deployment's boot goes: shards READY of the total, and the start failure if there was one."""
        _, table, _ = self._check(capability)
        ready = sum(1 for r in table.shards.values() if r.status is ShardStatus.READY)
        return DeployStatus(
            ready=ready,
            total=table.shard_count,
            hosts=sorted(self._sets.fleet.hosts) if self._sets.fleet else [],
            error=self._deploy_error,
            error_type=self._deploy_error_type,
        )

    async def host_handles(self, capability: str) -> dict[str, typing.Any]:
        """The fleet's host actors by host id."""
        self._check(capability)
        return {h.host_id: h.handle for h in self._sets.fleet.hosts.values()} if self._sets.fleet else {}

    async def start_rolling_restart(self, capability: str, callback: bytes | None = None) -> RollingRestartProgress:
        """Replace every host, one slot at a time, handing each shard over by RESUME.

        ``callback`` (cloudpickled) replaces the hosts' callback, to deploy new bot code.
        The restart is target state (the slots still to replace), checkpointed before every
        step; the reconcile pass converges on it (`ray_shards.rolling`): an Orchestrator restart
        in the middle carries it on. A new host that cannot start (callback error, no room in
        the cluster within ``host_start_timeout``) fails the restart and the slot's old host
        keeps running. Returns the restart's progress; follow it with `status`.
        """
        self._check(capability)
        admission.check_roll(self._shape())  # at once; again when it is recorded (another may begin meanwhile)
        fleet, table = self._sets.fleet, self._sets.table
        assert fleet is not None and table is not None
        previous_callback, previous = fleet.callback, self._roll.core

        def begin() -> roll.RollingRestart:
            admission.check_roll(self._shape())
            if callback is not None:
                fleet.set_callback(callback)
            begun = roll.RollingRestart.begin(self._roll.view(fleet, table), started_at=time.time())
            return self._roll.resume(begun.progress)

        def undo() -> None:
            self._roll.core = previous
            if callback is not None:
                fleet.set_callback(previous_callback)

        rolling = await self._record_new_operation(begin, undo)
        return rolling.progress.snapshot()

    async def _record_new_operation(self, begin: typing.Callable[[], _Core], undo: typing.Callable[[], None]) -> _Core:
        """Begin a roll or reshard a client asked for, on record before the client is answered; returns its core.

        A client told that the operation started follows it with `status`. Were its intent not on record,
        an Orchestrator restart would forget it and the client would find it gone. So the operation begins
        (``begin``) in the checkpoint writer's turn, just before the write that records it, and no other
        write can record it first: if this write fails, ``undo`` puts back what was, nothing is on record,
        and the client gets `CheckpointWriteError` and tries again. ``begin`` checks admission again: another
        operation may have begun while this one waited for its turn. Not stepped before it is on record.
        """
        begun: list[_Core] = []

        def stage() -> None:
            begun.append(begin())
            self._unrecorded = begun[0]
            self._head_changed()

        try:
            written = await self._writer.write(strict=True, stage=(stage, undo))
        except CheckpointWriteError as exc:
            msg = f"{exc}, so the operation was not started and nothing changed; try again"
            raise CheckpointWriteError(msg) from exc.__cause__
        finally:
            self._unrecorded = None
        if not written:
            raise BotStoppedError("the bot is shutting down")
        return begun[0]

    async def control_rolling_restart(self, capability: str, action: str) -> RollingRestartProgress:
        """``pause``, ``resume`` or ``abort`` the rolling restart (it stops between hosts, never mid-hand-over)."""
        self._check(capability)
        rolling = self._roll.core
        if rolling is None:
            msg = "no rolling restart is in progress"
            raise RuntimeError(msg)
        rolling.control(action)
        try:
            await self._checkpoint_now(strict=True)
        except CheckpointWriteError as exc:
            # Applied in memory (and written once the GCS takes writes again), but an Orchestrator restart before
            # that would forget it: say so, so that the operator sends it again.
            msg = f"{action} applies now but {exc}: an orchestrator restart now would forget it; send it again"
            raise CheckpointWriteError(msg) from exc.__cause__
        return rolling.progress.snapshot()

    # -- live resharding ---------------------------------------------------------------------------

    async def start_reshard(self, capability: str, shard_count: int) -> ReshardProgress:
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
        assert self._sets.table is not None
        admission.check_reshard(self._shape(), shard_count)  # at once; again when it is recorded
        previous = self._reshard.core, self._reshard.progress

        def begin() -> rs.Reshard:
            self._begin_reshard(shard_count)
            assert self._reshard.core is not None
            return self._reshard.core

        def undo() -> None:
            self._reshard.core, self._reshard.progress = previous

        # Intent first: once this call returns the reshard is on record, so an Orchestrator crash before the
        # reconcile pass's first step rolls it back (and says so) instead of forgetting it.
        core = await self._record_new_operation(begin, undo)
        return core.progress.snapshot()

    def _begin_reshard(self, shard_count: int) -> ReshardProgress:
        table = self._sets.table
        assert table is not None
        progress = self._reshard.begin(table.shard_count, admission.check_reshard(self._shape(), shard_count))
        self._head_changed()
        return progress

    def _shape(self) -> admission.BotShape:
        """What `ray_shards.admission` reads to decide whether a long operation may begin."""
        table, scheduler, fleet = self._sets.table, self._scheduler, self._sets.fleet
        assert table is not None and scheduler is not None
        return admission.BotShape(
            shard_count=table.shard_count,
            identifies_left=scheduler.remaining,
            launched=fleet is not None and bool(fleet.desired),
            rolling=self._roll.busy,
            resharding=self._reshard.busy,
            last_reshard_failed=self._reshard.last_failed,
            stopping=self._stopping,
        )

    async def deliver_tails(self, capability: str, host_id: str, tails: GuildTails) -> None:
        """An old-set host hands in, per guild, the last events it delivered (resharding switch)."""
        self._check(capability)
        self._reshard.tails_delivered(host_id, tails)

    def _reshard_committed(self, shard_count: int) -> None:
        """A reshard's new set became the bot: its config has the new count."""
        assert self._config is not None
        self._config = dataclasses.replace(self._config, shard_count=shard_count)

    async def _auto_reshard_policy(self) -> None:
        """Start a reshard when Discord recommends more shards, or a shard outgrows ``guild_threshold``."""
        if not self._gateway.policy_due():
            return
        table, fleet, scheduler, config = self._sets.table, self._sets.fleet, self._scheduler, self._config
        if table is None or fleet is None or scheduler is None or config is None:
            return
        if not admission.auto_reshard_may_look(self._shape()):
            return
        recommended = await self._gateway.recommended_shards(scheduler, config.rest_url, fleet.token)
        busiest = max((r.guilds for r in table.shards.values()), default=0)
        want = admission.auto_reshard_target(
            self._shape(), busiest_guilds=busiest, guild_threshold=self._options.guild_threshold,
            recommended=recommended,
        )
        if want is None:
            return
        _LOGGER.warning("auto-reshard: %s -> %s shards (%s)", table.shard_count, want.target, want.reason)
        try:
            self._begin_reshard(want.target)
        except Exception as exc:
            _LOGGER.error("auto-reshard to %s refused: %s", want.target, exc)
            self._reshard.refused(table.shard_count, want.target, str(exc))

    def _bot_table(self) -> ShardTable:
        assert self._sets.table is not None
        return self._sets.table

    def _checkpoint_data(self, seq: int) -> dict[str, typing.Any]:
        assert self._config is not None and self._sets.table is not None and self._token_hash is not None
        return checkpoint_state.head(
            seq=seq, config=self._config, token_hash=self._token_hash, table=self._sets.table, presence=self._presence,
            presence_version=self._presence_version, remaining=self._scheduler.remaining if self._scheduler else 0,
            fleet=self._sets.fleet.to_json() if self._sets.fleet else None,
            rolling=self._roll.core.progress if self._roll.core is not None else None, reshard=self._reshard.progress,
            old_fleet=self._sets.old_set[1].to_json() if self._sets.old_set is not None else None,
        )

    async def _checkpoint_now(self, *, strict: bool = False) -> None:
        """Write the checkpoint now (intent before acting: a host's name before its actor exists).

        With ``strict`` a write that fails raises `CheckpointWriteError` instead of being retried later: a
        long operation's core checkpoints its intent before the effects that act on it, and must not act on
        an intent that is not on record (`carry_out` reports the failure to the core, which skips what
        builds on it).
        """
        self._head_changed()
        await self._writer.write(strict=strict)
