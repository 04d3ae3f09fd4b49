"""A deterministic model of one bot's control plane under faults, driven from one seed.

Everything runs on a virtual clock in a single event queue; one ``random.Random(seed)``
decides every delay, fault and workload. The real `ShardTable` and
`IdentifyScheduler` are driven by a model of the Orchestrator's shell (`Shell`),
talking to modelled shard hosts (`Host`) over a lossy RPC layer, with a strict
model of Discord's gateway (`Gateway`) on the other side. After every event the
invariants of ``docs/control-plane.md`` are checked; the first broken one raises
`Violation`.

Clocks: every process reads its own monotonic clock (virtual time plus a random base per process,
and a new base per Orchestrator incarnation), so a monotonic time carried across a restart or
compared across processes shows up as a violation. The wall clock steps by seconds and hours;
only checkpoint metadata reads it.

The model follows the protocol the Orchestrator and hosts must implement:

- a host syncs with its *full* state and an increasing ``report_seq``, applies
  revokes before adopts, adopts idempotently by ``(shard, epoch)``, and releases a
  revoked shard with its session;
- a host never RESUMEs without a positive lease check, never IDENTIFYs without a
  grant it asked for less than ``grant_use_limit`` ago (plus the wait of a not-before
  grant, slept from the answer's arrival), and closes every shard
  (resumably) when its own lease, renewed by each answered sync, is older than
  ``lease_ttl``;
- a reshard (`ray_shards.resharding.Reshard`, driven as `ray_shards.reshard_runner.ReshardRunner.step` does) runs a
  second table and fleet of another shard count beside the bot's; hosts register with their count,
  Discord keys sessions by (count, shard id) and shares one bucket window and budget between both;
  host commands ride on sync replies and are answered with ``command_done``; new-set hosts hold
  events (shadow) until GO_LIVE, old-set hosts record after RECORD and mute on SWITCH_OUT;
- the shell declares a host lost on a death notice (after a quarantine) or after
  ``host_timeout`` without a sync (``lease_ttl < host_timeout``), and after a restart
  from its checkpoint it checkpoints the new incarnation at once, starts every
  identify bucket full, and places nothing for ``recovery_grace > lease_ttl``.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
import random
import typing

from ray_shards import admission, control, liveness, operation_views, resharding, rolling
from ray_shards.checkpoint_schedule import CheckpointSchedule
from ray_shards.effects import carry_out
from ray_shards.errors import CheckpointWriteError
from ray_shards.identify import GRANT_USE_LIMIT, IdentifyScheduler, WindowFrom, window_start
from ray_shards.models import CommandKind, Lease, SessionState, ShardReport, ShardStatus
from ray_shards.protocol import GuildTails, OperationState, ReshardProgress, ReshardState, RollingRestartProgress
from ray_shards.table import ShardTable

__all__ = ["Params", "SimResult", "Violation", "World", "run_seed"]

WINDOW = 5.0
"""Discord's identify window per bucket, as the gateway model enforces it."""

COMMAND_TIMEOUT = 30.0
"""The reshard core's ``command_timeout``."""

FULL_CHECK_SHARDS = 256
"""Up to this many shards, every row of the table is checked after every Orchestrator event."""

FULL_CHECK_EVERY = 50_000
"""Above `FULL_CHECK_SHARDS`, every row is checked at least once in this many steps (and rows that changed always)."""


T = typing.TypeVar("T")


def run_now(coroutine: typing.Coroutine[typing.Any, typing.Any, T]) -> T:
    """Run a coroutine that never waits to its end, without an event loop.

    The shell carries out the cores' effects with the actor's own `ray_shards.effects.carry_out`; the
    simulated effects are immediate (what takes time is scheduled on the simulated clock), so the
    coroutine finishes on its first step.
    """
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return typing.cast(T, stop.value)
    coroutine.close()
    msg = "a simulated effect waited on something: schedule it on the simulated clock instead"
    raise RuntimeError(msg)


class Violation(AssertionError):
    """An invariant broke; the message says which, when and where."""


@dataclasses.dataclass(slots=True)
class Params:
    """Everything one seed decides up front (drawn by `Params.draw`)."""

    shards: int
    hosts: int
    max_concurrency: int
    budget: int
    day: float
    replay_buffer: int
    fault_time: float
    p_loss: float
    p_dup: float
    p_delay: float
    sync_interval: float = 0.5
    """Seconds between a host's syncs."""
    lease_ttl: float = 6.0
    host_timeout: float = 9.0
    recovery_grace: float = 7.0
    quarantine: float = 1.0
    grant_use_limit: float = GRANT_USE_LIMIT
    identify_lead: float = 0.5
    """`Timings.identify_lead`: hosts ask ``early`` and take not-before grants this far ahead of an opening."""
    rpc_timeout: float = 2.0
    identify_margin: float = 0.1
    """`Timings.identify_margin`."""
    identify_window_from: WindowFrom = "ready"
    """`Timings.identify_window_from`: ``"sent"`` counts a bucket's window from the age the host reports with READY."""
    identify_poll: float = 2.0
    """The longest a host sleeps before asking for an identify grant again."""
    identify_delay: float = 0.0
    """Discord receives each IDENTIFY up to this long after it left (uniform, drawn per frame; 0: as it leaves),
    and READY comes after that. ``"sent"`` windows stay apart at Discord only while this is below
    ``identify_margin`` (the assumption `Timings.identify_window_from` states); ``"ready"`` windows hold whatever
    it is."""
    events: bool = True
    """Whether events flow on the sessions (Discord's seq advances every second, hosts observe it)."""

    @classmethod
    def draw(cls, rng: random.Random, *, fault_time: float | None = None, window_from: WindowFrom = "ready",
             identify_delay: float = 0.0) -> Params:
        """Draw a small bot and a fault mix from ``rng`` (``window_from``, ``identify_delay``: not drawn)."""
        shards = rng.randint(1, 6)
        return cls(
            shards=shards,
            hosts=rng.randint(1, 3),
            max_concurrency=rng.choice([1, 1, 2, 3]),
            budget=rng.randint(shards + 1, shards * 4 + 4),
            day=rng.choice([40.0, 60.0, 90.0]),
            replay_buffer=rng.choice([20, 50, 200]),
            fault_time=rng.uniform(10.0, 40.0) if fault_time is None else fault_time,
            p_loss=rng.choice([0.0, 0.02, 0.1]),
            p_dup=rng.choice([0.0, 0.02, 0.1]),
            p_delay=rng.choice([0.0, 0.05, 0.2, 0.5]),
            identify_window_from=window_from,
            identify_delay=identify_delay,
        )


@dataclasses.dataclass(slots=True)
class SimResult:
    """What one seed did."""

    seed: int
    steps: int
    time: float
    identifies: int
    resumes: int
    replay_overflows: int
    restarts: int
    host_deaths: int
    converged_after: float
    roll: str | None = None
    """How the seed's rolling restart ended (``finished``, ``aborted``, ``failed``), or None without one."""
    reshard: str | None = None
    """How the seed's reshard ended (``finished``, ``rolled back``, ``failed``), or None without one."""
    reshard_error: str | None = None
    """Why it did not finish (the core's error)."""
    reshards: int = 0
    """Reshards the Orchestrator accepted (one a seed, at most)."""
    reshard_restarts: int = 0
    """Orchestrator restarts while the reshard was active."""
    reshard_carried_on: int = 0
    """Restarts that found the reshard at its commit point (``closing``) and carried it on."""
    kv_outages: int = 0
    """Outages of the KV store the checkpoint lives in (Ray's GCS)."""
    kv_refused: int = 0
    """Checkpoint writes refused by those outages (a long operation's intent among them, sometimes)."""


# -- Discord ---------------------------------------------------------------------------------------


Shard = tuple[int, int]
"""A shard at Discord: (shard_count, shard_id). Sessions of different shard counts are different shards."""


@dataclasses.dataclass(slots=True)
class _Session:
    shard_id: Shard
    session_id: str
    seq: int
    valid: bool = True
    conn: int | None = None
    disconnected_at: float = 0.0


@dataclasses.dataclass(slots=True)
class _Conn:
    conn_id: int
    shard_id: Shard
    session_id: str
    host_id: str


class Gateway:
    """A strict Discord gateway: sessions, a replay buffer, identify windows and a daily budget."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.sessions: dict[str, _Session] = {}
        self.conns: dict[int, _Conn] = {}
        self.open_by_shard: dict[Shard, set[int]] = {}
        self.connected: dict[int, int] = {}
        """Per shard count, shards with at least one open connection (kept as connections open and close)."""
        self.doubled: set[Shard] = set()
        """Shards with more than one open connection (kept as connections open and close)."""
        self.last_identify: dict[int, float] = {}
        self.first_identify_at: float | None = None
        self.last_identify_at: float | None = None
        self.day_start = 0.0
        self.used = 0
        self.next_id = 0
        self.identifies = 0
        self.resumes = 0
        self.overflows = 0

    def _roll_day(self) -> None:
        while self.w.t >= self.day_start + self.w.p.day:
            self.day_start += self.w.p.day
            self.used = 0

    def budget(self) -> tuple[int, float]:
        """``session_start_limit`` as GET /gateway/bot answers it: (remaining, reset_after)."""
        self._roll_day()
        return self.w.p.budget - self.used, self.day_start + self.w.p.day - self.w.t

    def _open(self, shard_id: Shard, session: _Session, host_id: str) -> int:
        self.next_id += 1
        conn = _Conn(self.next_id, shard_id, session.session_id, host_id)
        self.conns[conn.conn_id] = conn
        session.conn = conn.conn_id
        live = self.open_by_shard.setdefault(shard_id, set())
        live.add(conn.conn_id)
        if len(live) == 1:
            self.connected[shard_id[0]] = self.connected.get(shard_id[0], 0) + 1
        if len(live) > 1:
            self.doubled.add(shard_id)
            owners = sorted(self.conns[c].host_id for c in live)
            self.w.fail(f"shard {shard_id} has {len(live)} connected sessions at Discord (hosts {owners})")
        return conn.conn_id

    def close(self, conn_id: int) -> None:
        """Close a connection (resumable: the session stays)."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        live = self.open_by_shard[conn.shard_id]
        if conn_id in live:
            live.discard(conn_id)
            if not live:
                self.connected[conn.shard_id[0]] -= 1
            if len(live) <= 1:
                self.doubled.discard(conn.shard_id)
        session = self.sessions.get(conn.session_id)
        if session is not None and session.conn == conn_id:
            session.conn = None
            session.disconnected_at = self.w.t

    def identify(self, shard_id: Shard, host_id: str, *, delay: float = 0.0) -> tuple[int, _Session]:
        """An IDENTIFY that left now: checks the bucket window and the budget, opens a new session.

        The bucket is ``shard_id % max_concurrency`` whatever the shard count: the sets of a reshard share
        the buckets, the window and the daily budget (one bot). The window is Discord's, so it is checked
        at the frame's receipt, ``delay`` after it left (`Params.identify_delay`); with delays two frames of
        a bucket can even arrive in the other order, hence the distance both ways.
        """
        self._roll_day()
        bucket = shard_id[1] % self.w.p.max_concurrency
        received = self.w.t + delay
        last = self.last_identify.get(bucket)
        if last is not None and abs(received - last) < WINDOW:
            self.w.fail(f"two IDENTIFYs in bucket {bucket} {abs(received - last):.3f} s apart at Discord "
                        f"(shard {shard_id})")
        self.last_identify[bucket] = received if last is None else max(last, received)
        if self.used >= self.w.p.budget:
            self.w.fail(f"IDENTIFY of shard {shard_id} overspends the daily budget of {self.w.p.budget}")
        self.used += 1
        self.identifies += 1
        if self.first_identify_at is None:
            self.first_identify_at = self.w.t
        self.last_identify_at = self.w.t
        self.next_id += 1
        session = _Session(shard_id, f"s{self.next_id}", seq=0)
        self.sessions[session.session_id] = session
        return self._open(shard_id, session, host_id), session

    def resume(self, shard_id: Shard, session_id: str, seq: int, host_id: str) -> tuple[int, _Session] | None:
        """A RESUME: None is op 9 (unknown, invalid or too far behind the replay buffer)."""
        session = self.sessions.get(session_id)
        if session is None or not session.valid or session.shard_id != shard_id:
            return None
        if session.seq - seq > self.w.p.replay_buffer:
            session.valid = False
            self.overflows += 1
            return None
        self.resumes += 1
        return self._open(shard_id, session, host_id), session

    def tick(self) -> None:
        """Events flow on every valid session; sessions away too long expire."""
        for session in self.sessions.values():
            if not session.valid:
                continue
            if session.conn is None and self.w.t - session.disconnected_at > 60.0:
                session.valid = False
                continue
            session.seq += self.w.rng.randint(0, 3)

    def fault(self) -> None:
        """Op 7 (reconnect), op 9 (invalid session) or a zombie connection, on a random open connection."""
        if not self.conns:
            return
        conn = self.conns[self.w.rng.choice(sorted(self.conns))]
        kind = self.w.rng.choice(["op7", "op9", "zombie"])
        host = self.w.hosts.get(conn.host_id)
        if kind == "op9":
            self.sessions[conn.session_id].valid = False
        self.close(conn.conn_id)
        if host is not None:
            # A zombie is noticed only when heartbeats go unanswered.
            delay = 1.5 if kind == "zombie" else 0.01
            self.w.at(delay, lambda: host.conn_lost(conn.conn_id, resumable=kind != "op9"))


# -- hosts -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Granted:
    """The model's answer to an identify ask that was granted: sleep ``wait`` (a not-before grant), then send."""

    wait: float


@dataclasses.dataclass(frozen=True, slots=True)
class _Command:
    """A host-wide command of the reshard, as the mailbox hands it to a host with a sync reply."""

    command_id: int
    kind: CommandKind
    tails: GuildTails | None = None
    stop_recording: bool = False


@dataclasses.dataclass(slots=True)
class _Slot:
    lease: Lease
    session: SessionState | None
    phase: str = "new"
    conn: int | None = None
    asked_at: float = 0.0
    identified: bool = False


class Host:
    """A ShardHost as the protocol requires it to behave."""

    def __init__(
        self, world: World, host_id: str, want: int, *, broken: bool = False, count: int = 0, shadow: bool = False
    ) -> None:
        self.w = world
        self.host_id = host_id
        self.want = want
        self.count = count or world.p.shards
        """The shard count of the set this host runs shards of (it registers with it)."""
        self.shadow = shadow
        """A reshard's new-set host started in shadow mode: it holds every event until GO_LIVE."""
        self.recording = False
        """An old-set host records what it delivers (RECORD, or `Registration.record`) until GO_LIVE stop_recording."""
        self.muted = False
        """An old-set host stopped delivering (SWITCH_OUT) until GO_LIVE."""
        self.alive = True
        self.broken = broken
        """Its start fails (the user callback raises, or the cluster has no room): it never registers."""
        self.cut_until = -1.0
        self.doomed = False
        """A kill was ordered (`World.kill`); it takes effect once the host is reachable."""
        self.offset = world.rng.uniform(-1000.0, 1000.0)
        self.slots: dict[int, _Slot] = {}
        self.renewed_at: float | None = None
        self.report_seq = 0
        self.asks = 0
        """Numbers of this host's identify asks (`IdentifyScheduler.request`'s ``ask``)."""
        self.syncing = False
        self.registered = False
        self.reported: dict[str, int] = {}
        self.releases: dict[tuple[int, int], SessionState | None] = {}
        self.ended: dict[int, tuple[int, SessionState | None]] = {}
        """Per shard, the highest epoch this host has run and ended (and its last session): never adopted again."""

    def now(self) -> float:
        """The host's monotonic clock."""
        return self.w.t + self.offset

    def cut(self) -> bool:
        """Whether the host cannot reach Ray (transient unavailability)."""
        return self.w.t < self.cut_until

    def start(self) -> None:
        """The actor is up: register, then sync forever."""
        if self.broken:
            return
        self._register()
        self.w.at(self.w.p.sync_interval, self._tick)

    def _register(self) -> None:
        self.w.call(self, "register", (self.host_id, self.want, self.count), self._registered, self._register_failed)

    def _registered(self, reply: typing.Any) -> None:
        if reply == "stop":
            self.stop()
            return
        if reply == "record":
            # Joins the old set of a reshard: records before it adopts anything.
            self.recording = True
        elif reply == "settled" and not self.shadow:
            # Bot._go_live_if_set_is: whatever an earlier Orchestrator life left it doing ends.
            self.recording = self.muted = False
        self.registered = True
        self.renewed_at = self.now()

    def _register_failed(self) -> None:
        if self.alive:
            self.w.at(0.5, self._register)

    def _tick(self) -> None:
        if not self.alive:
            return
        self.w.at(self.w.p.sync_interval, self._tick)
        if self.renewed_at is not None and self.now() - self.renewed_at > self.w.p.lease_ttl and self.slots:
            # Cut off for longer than the lease: close everything, resumably, before anyone may reassign it.
            for shard_id in sorted(self.slots):
                self._drop(shard_id, release=True)
        if self.registered and not self.syncing:
            self._sync()
        for (shard_id, epoch), session in list(self.releases.items()):
            self._send_release(shard_id, epoch, session)

    def _reports(self) -> list[ShardReport]:
        reports = []
        for shard_id, slot in sorted(self.slots.items()):
            session = slot.session
            if session is not None:
                # Never report a seq below one already reported for this session.
                last = self.reported.get(session.session_id, -1)
                if session.seq < last:
                    self.w.fail(f"host {self.host_id} would report seq {session.seq} < {last} of {session}")
                self.reported[session.session_id] = session.seq
            status = ShardStatus.READY if slot.phase == "running" else ShardStatus.STARTING
            reports.append(ShardReport(shard_id, slot.lease.epoch, status, session))
        return reports

    def _sync(self) -> None:
        self.syncing = True
        self.report_seq += 1
        sent = self.now()
        args = (self.host_id, self._reports(), self.report_seq)

        def done(reply: typing.Any) -> None:
            self.syncing = False
            if reply == "unknown":
                self.registered = False
                self._register()
                return
            if reply == "stop":
                self.stop()
                return
            adopt, revoke, commands = typing.cast(tuple[list[Lease], list[int], list[_Command]], reply)
            self.renewed_at = sent if self.renewed_at is None else max(self.renewed_at, sent)
            self.apply(adopt, revoke)
            for command in commands:
                self.run_command(command)

        def failed() -> None:
            self.syncing = False

        self.w.call(self, "sync", args, done, failed)

    def run_command(self, command: _Command) -> None:
        """Run a reshard command (as `ShardHost._run_command` does), then report it with ``command_done``."""
        if command.kind is CommandKind.RECORD:
            self.recording = True
        elif command.kind is CommandKind.SHADOW_CHECK:
            if self.w.faulty() and self.w.reshard_rng.random() < 0.05:
                self._command_done(command, "the shadow buffer overflowed")
                return
        elif command.kind is CommandKind.SWITCH_OUT:
            self.muted = True
            tails = GuildTails(self.host_id, {}, old_count=self.count)
            # deliver_tails is retried (for 10 s) before the command counts as failed.
            self._call_retrying("tails", (self.host_id, tails), 3, lambda: self._command_done(command, None),
                                lambda: self._command_done(command, "TimeoutError: deliver_tails"))
            return
        elif command.kind is CommandKind.GO_LIVE:
            self.muted = self.shadow = False
            if command.stop_recording:
                self.recording = False
        self._command_done(command, None)

    def _command_done(self, command: _Command, error: str | None) -> None:
        self._call_retrying("command_done", (self.host_id, command.command_id, error), 2, lambda: None, lambda: None)

    def _call_retrying(
        self, method: str, args: tuple[typing.Any, ...], tries: int, done: typing.Callable[[], None],
        failed: typing.Callable[[], None],
    ) -> None:
        def again() -> None:
            if tries > 1:
                self.w.at(0.5, lambda: self._call_retrying(method, args, tries - 1, done, failed))
            else:
                failed()

        self.w.call(self, method, args, lambda _: done(), again)

    def apply(self, adopt: list[Lease], revoke: list[int]) -> None:
        """Revokes before adopts; a revoke of a shard the same reply adopts stops only older runs."""
        adopting = {lease.shard_id: lease.epoch for lease in adopt}
        for shard_id in revoke:
            slot = self.slots.get(shard_id)
            if slot is None or slot.lease.epoch >= adopting.get(shard_id, math.inf):
                continue
            self._drop(shard_id, release=True)
        for lease in adopt:
            slot = self.slots.get(lease.shard_id)
            if slot is not None and slot.lease.epoch >= lease.epoch:
                continue  # idempotent by (shard, epoch)
            if self.has_ended(lease):
                continue
            session = lease.session
            if slot is not None:
                if slot.session is not None and (session is None or slot.session.session_id == session.session_id):
                    session = slot.session
                self._drop(lease.shard_id, release=False)
            if session is not None and self.reported.get(session.session_id, -1) > session.seq:
                # The table's copy is older than what this host already reported (say, it was restored from an
                # older checkpoint): never report, nor resume from, a seq below one reported.
                session = dataclasses.replace(session, seq=self.reported[session.session_id])
            self.slots[lease.shard_id] = _Slot(lease, session)
            self._begin(lease.shard_id)

    def has_ended(self, lease: Lease) -> bool:
        """Whether this host already ran and ended ``lease`` (then it is released again, never run again).

        A late adopt of a lease the host released must not run: the release may be on its way and the
        table then hands the shard to someone else. A table restored from a checkpoint that missed the
        release re-sends the adopt for ever unless the host releases it again.
        """
        ended, last = self.ended.get(lease.shard_id, (-1, None))
        if ended < lease.epoch:
            return False
        # Released at the adopt's epoch: the table holds that lease for this host until told otherwise
        # (an older one than the host ended, when the table's checkpoint predates both).
        self.release_again(lease.shard_id, lease.epoch, last)
        return True

    def release_again(self, shard_id: int, epoch: int, session: SessionState | None) -> None:
        """Answer an adopt of an ended lease by releasing it again."""
        self._send_release(shard_id, epoch, session)

    def _drop(self, shard_id: int, *, release: bool) -> None:
        slot = self.slots.pop(shard_id, None)
        if slot is None:
            return
        if slot.lease.epoch >= self.ended.get(shard_id, (-1, None))[0]:
            self.ended[shard_id] = (slot.lease.epoch, slot.session)
        if slot.conn is not None:
            self.w.gateway.close(slot.conn)
        if release:
            self.releases[(shard_id, slot.lease.epoch)] = slot.session
            self._send_release(shard_id, slot.lease.epoch, slot.session)

    def _send_release(self, shard_id: int, epoch: int, session: SessionState | None) -> None:
        def done(_: typing.Any) -> None:
            self.releases.pop((shard_id, epoch), None)

        self.w.call(self, "release", (self.host_id, shard_id, epoch, session), done, lambda: None)

    def _current(self, shard_id: int, epoch: int, phase: str) -> _Slot | None:
        slot = self.slots.get(shard_id)
        if not self.alive or slot is None or slot.lease.epoch != epoch or slot.phase != phase:
            return None
        return slot

    def _begin(self, shard_id: int) -> None:
        slot = self.slots[shard_id]
        epoch = slot.lease.epoch
        if slot.session is not None:
            slot.phase = "check"

            def checked(ok: typing.Any) -> None:
                current = self._current(shard_id, epoch, "check")
                if current is None:
                    return
                if not ok:
                    self._drop(shard_id, release=False)
                    return
                self._resume(current)

            def unanswered() -> None:
                # No RESUME without a positive lease check: ask again.
                if self._current(shard_id, epoch, "check") is not None:
                    self.w.at(0.5, lambda: self._retry_begin(shard_id, epoch, "check"))

            self.w.call(self, "check_lease", (self.host_id, shard_id, epoch), checked, unanswered)
        else:
            slot.phase = "identify"
            self._ask_identify(shard_id, epoch)

    def _retry_begin(self, shard_id: int, epoch: int, phase: str) -> None:
        if self._current(shard_id, epoch, phase) is not None:
            self._begin(shard_id)

    def _resume(self, slot: _Slot) -> None:
        assert slot.session is not None
        opened = self.w.gateway.resume(
            (self.count, slot.lease.shard_id), slot.session.session_id, slot.session.seq, self.host_id
        )
        if opened is None:
            slot.session = None
            slot.phase = "identify"
            self._ask_identify(slot.lease.shard_id, slot.lease.epoch)
            return
        conn, session = opened
        slot.conn = conn
        slot.phase = "running"
        slot.session = SessionState(session.session_id, session.seq, "wss://resume")

    def _ask_identify(self, shard_id: int, epoch: int, dropped: int | None = None) -> None:
        slot = self._current(shard_id, epoch, "identify")
        if slot is None:
            return
        slot.asked_at = self.now()
        asked = slot.asked_at
        self.asks += 1
        ask = self.asks

        def answered(reply: typing.Any) -> None:
            current = self._current(shard_id, epoch, "identify")
            if current is None or current.asked_at != asked:
                return
            if reply == "lost":
                self._drop(shard_id, release=False)
                return
            if isinstance(reply, _Granted):
                if self.now() - asked > self.w.p.grant_use_limit:
                    # Too old to use safely: the scheduler may count it as spent already. Say it went unused.
                    self.w.at(0.1, lambda: self._ask_identify(shard_id, epoch, dropped=ask))
                    return
                # As the real host: sleep a not-before grant's wait from the answer's arrival, then send.
                self.w.at(reply.wait, lambda: self._send_identify(shard_id, epoch, asked, ask, reply.wait))
                return
            self.w.at(min(float(reply), self.w.p.identify_poll), lambda: self._ask_identify(shard_id, epoch))

        # Like the real host, always early: the scheduler grants ahead only as far as its lead allows.
        self.w.call(self, "identify", (self.host_id, shard_id, epoch, ask, dropped, True), answered,
                    lambda: self.w.at(0.5, lambda: self._ask_identify(shard_id, epoch, dropped)))

    def _send_identify(self, shard_id: int, epoch: int, asked: float, ask: int, wait: float) -> None:
        current = self._current(shard_id, epoch, "identify")
        if current is None or current.asked_at != asked:
            return
        if self.now() - asked > self.w.p.grant_use_limit + wait:
            self.w.at(0.1, lambda: self._ask_identify(shard_id, epoch, dropped=ask))
            return
        # Drawn only when modelled, so that every seed without it replays exactly as before.
        delay = self.w.rng.uniform(0.0, self.w.p.identify_delay) if self.w.p.identify_delay > 0 else 0.0
        conn, session = self.w.gateway.identify((self.count, shard_id), self.host_id, delay=delay)
        current.conn = conn
        current.phase = "running"
        current.session = SessionState(session.session_id, session.seq, "wss://resume")
        left = self.now()
        ready = delay + self.w.rng.uniform(0.05, 0.5)
        self.w.at(ready, lambda: self._ready(shard_id, epoch, ask, left))

    def _ready(self, shard_id: int, epoch: int, ask: int, left: float) -> None:
        if not self.alive:
            return
        if self.count == self.w.p.shards:
            self.w.ready_at[shard_id] = self.w.t
        # Names the ask whose grant it used: a delayed or repeated READY report of an earlier IDENTIFY of this shard
        # on this lease must not free a later grant. Like the real host, it says how long ago its IDENTIFY left, on
        # its own clock (the model's gateway receives a frame the moment it leaves).
        self.w.call(self, "identify_done", (self.host_id, shard_id, epoch, ask, self.now() - left),
                    lambda _: None, lambda: None)

    def observe(self) -> None:
        """Pick up the seq Discord has delivered on every open connection."""
        for slot in self.slots.values():
            if slot.conn is not None and slot.session is not None:
                session = self.w.gateway.sessions[slot.session.session_id]
                slot.session = SessionState(session.session_id, session.seq, "wss://resume")

    def conn_lost(self, conn_id: int, *, resumable: bool) -> None:
        """Discord closed a connection: resume on this host (after a lease check), or identify again."""
        for shard_id, slot in list(self.slots.items()):
            if slot.conn == conn_id:
                slot.conn = None
                if not resumable:
                    slot.session = None
                self._begin(shard_id)

    def die(self) -> None:
        """The process is gone: its connections close with it."""
        if not self.alive:
            return
        self.alive = False
        for slot in self.slots.values():
            if slot.conn is not None:
                self.w.gateway.close(slot.conn)
        self.slots.clear()
        self.w.host_died(self)

    def stop(self) -> None:
        """Told to stop: hand everything over with its session, then exit."""
        for shard_id in sorted(self.slots):
            self._drop(shard_id, release=True)
        self.die()


# -- the Orchestrator's shell ----------------------------------------------------------------------


class Shell:
    """One incarnation of the Orchestrator actor: events in, table and scheduler calls, effects out."""

    def __init__(self, world: World, checkpoint: dict[str, typing.Any] | None) -> None:
        self.w = world
        self.alive = True
        self.offset = world.rng.uniform(-1e6, 1e6)
        # The actor's schedule; the sim's table has no chunks, so every change is one that must not wait.
        self.checkpoints = CheckpointSchedule(interval=world.checkpoint_every, batch_interval=math.inf)
        # As the actor's _incarnation_written: False from a restore until the restored table is on record.
        self.incarnation_written = checkpoint is None
        now = self.now()
        p = world.p
        if checkpoint is None:
            self.table = ShardTable(p.shards)
            self.scheduler = self._new_scheduler(remaining=0)
            self.recovering_until = -math.inf
            self.fleet_next = 0
            self.fleet_slot: dict[str, int] = {}
            self.retiring: set[str] = set()
            self.roll: rolling.RollingRestart | None = None
            self.fleet_desired = p.hosts
            self.fleet_paused = False
            self.fleet_prefix = "h"
            self.reshard: resharding.Reshard | None = None
        else:
            self.table = ShardTable.from_json(checkpoint["table"], now)
            self.scheduler = self._new_scheduler(remaining=int(checkpoint["remaining"]))
            # A grant may have left just before the crash: full windows, and count it against the budget.
            self.scheduler.start_full(now, in_flight=p.grant_use_limit)
            self.recovering_until = now + p.recovery_grace
            self.fleet_next = int(checkpoint["fleet_next"])
            # The fleet's records: a host whose actor is gone is dropped (the real fleet looks each up by name).
            self.fleet_slot = {
                h: s for h, s in checkpoint["fleet_slot"].items() if h in world.hosts and world.hosts[h].alive
            }
            self.retiring = set(checkpoint["retiring"]) & set(self.fleet_slot)
            roll = checkpoint["roll"]
            self.roll = self._new_roll(RollingRestartProgress.from_json(roll)) if roll is not None else None
            self.fleet_desired = int(checkpoint["fleet_desired"])
            self.fleet_paused = bool(checkpoint["fleet_paused"])
            self.fleet_prefix = str(checkpoint["fleet_prefix"])
            reshard = checkpoint["reshard"]
            self.reshard = None
            if reshard is not None:
                # Before the commit point the new set is abandoned (rolled back), at it the reshard carries on.
                self.reshard = resharding.Reshard.restore(
                    ReshardProgress.from_json(reshard, now=world.wall()), **self._reshard_options()
                )
                if self.reshard.phase is resharding.ReshardPhase.CLOSING:
                    world.reshard_carried_on += 1
            # kill_strays: actors of the bot outside the checkpointed fleet's set are killed (the new set's hosts,
            # never checkpointed, before the commit point; the old set's after it). The live fleet's own hosts
            # started after the checkpoint are adopted below, as before.
            for stray in sorted(world.hosts.values(), key=lambda h: h.host_id):
                if stray.alive and stray.count != self.table.shard_count:
                    world.kill(stray.host_id)
        self.incarnation = self.table.incarnation
        self.host_tables: dict[str, ShardTable] = {}
        """The table each registered host works on (the reshard's new table for the new set; the old one after the
        commit for the old set), as `BotSets.table_of` routes calls."""
        self.next_table: ShardTable | None = None
        """The reshard's new set: its table, its fleet (host -> slot) and how many hosts it keeps."""
        self.next_slot: dict[str, int] = {}
        self.next_desired = 0
        self.set_starts: dict[str, tuple[int, float, bool]] = {}
        """New-set hosts not registered yet: slot, when the start gives up, whether the core waits for it."""
        self.old_set: tuple[ShardTable, list[str]] | None = None
        """After the commit, until retired: the old set's table and fleet."""
        self.mailbox: dict[str, list[_Command]] = {}
        self.pending: dict[int, typing.Callable[[str | None], None]] = {}
        """Host commands in flight, by command id (what `command_done` resolves)."""
        self.fetching = False
        self.checking: set[str] = set()
        """Hosts whose health check is in flight (`liveness.CheckHealth`)."""
        self.starting: dict[str, float] = {}
        self.roll_starts: dict[str, tuple[int, float]] = {}
        """Hosts the roll started that have not registered yet: slot, and when the start gives up."""
        if checkpoint is not None:
            # A start call of the rolling restart may have died with the previous incarnation: ask again
            # (ensure_started), with the same timeout; a host that cannot start is killed and forgotten.
            for host_id in checkpoint["unstarted"]:
                if host_id in self.fleet_slot and host_id not in self.table.hosts:
                    self.roll_starts[host_id] = (self.fleet_slot[host_id], self.w.t + self.w.host_start_timeout)
                    self.starting[host_id] = self.w.t
        # Intent first: the new incarnation is on record before any lease is granted.
        self.checkpoint()
        self.fetch_budget()
        for host in self.table.live_hosts():
            process = world.hosts.get(host.host_id)
            if process is None or not process.alive:
                self.w.at(0.2, functools.partial(self.death_notice, host.host_id))
        world.at(1.0, self.tick)

    def now(self) -> float:
        """The Orchestrator's monotonic clock (its own base, unrelated to any earlier incarnation's)."""
        return self.w.t + self.offset

    def recovering(self) -> bool:
        """In the recovery grace after a restart, or until the restored table is written (as the actor)."""
        return self.now() < self.recovering_until or not self.incarnation_written

    def checkpoint(self, *, strict: bool = False) -> bool:
        """Write the table (ordered writes to one KV key); False if the KV store refused it.

        With ``strict`` a refused write raises, as `Orchestrator._checkpoint_now` does for a core's intent.
        """
        if not self.w.kv_writable():
            self.w.kv_refused += 1
            self.dirty = True
            if strict:
                msg = "the checkpoint could not be written (the KV store refused it)"
                raise CheckpointWriteError(msg)
            return False
        self.w.kv = {
            "table": self.table.to_json(),
            "remaining": self.scheduler.remaining,
            "fleet_next": self.fleet_next,
            "fleet_slot": dict(self.fleet_slot),
            "retiring": sorted(self.retiring),
            "roll": self.roll.progress.to_json() if self.roll is not None else None,
            "unstarted": sorted(self.roll_starts),
            "fleet_desired": self.fleet_desired,
            "fleet_paused": self.fleet_paused,
            "fleet_prefix": self.fleet_prefix,
            "reshard": self.reshard.progress.to_json() if self.reshard is not None else None,
            "written_at_wall": self.w.wall(),
        }
        self.dirty = False
        self.incarnation_written = True
        self.checkpoints.written(self.w.t, batched=False)
        return True

    def fetch_budget(self) -> None:
        """GET /gateway/bot: the answer comes back after a network delay."""
        if self.fetching:
            return
        self.fetching = True
        asked = self.now()

        def answer() -> None:
            if not self.alive:
                return
            self.fetching = False
            # Discord counts at some point between ask and answer; the model answers at the end.
            remaining, reset_after = self.w.gateway.budget()
            self.scheduler.set_budget(remaining, reset_after, self.now(), asked_at=asked)

        self.w.at(self.w.rng.uniform(0.01, 2.0), answer)

    def place(self) -> None:
        if not self.recovering():
            self.table.place()
            if self.next_table is not None:
                self.next_table.place()
        self.dirty = True

    def table_of(self, host_id: str) -> ShardTable:
        """The table a host works on (`ray_shards.bot_sets.BotSets.table_of`)."""
        return self.host_tables.get(host_id, self.table)

    # -- calls from hosts --------------------------------------------------------------------------

    def handle(self, method: str, args: tuple[typing.Any, ...]) -> typing.Any:
        """Run one call; the result is the reply."""
        now = self.now()
        if method == "register":
            host_id, want, count = args
            try:
                joins = control.set_to_join(
                    host_id, count, live_count=self.table.shard_count,
                    new_count=self.next_table.shard_count if self.next_table is not None else None,
                )
            except ValueError:
                # "this bot runs N shards, not M": the host's start fails and it exits (an abandoned set's host).
                return "stop"
            table = self.next_table if joins is control.JoinSet.NEW and self.next_table is not None else self.table
            record = table.hosts.get(host_id)
            if record is not None and not record.alive:
                return "stop"
            self.host_tables[host_id] = table
            self.starting.pop(host_id, None)
            self.roll_starts.pop(host_id, None)
            start = self.set_starts.pop(host_id, None)
            if start is not None and start[2] and self.reshard is not None:
                self.reshard.start_done(start[0], None)
            if table is self.table and host_id not in self.fleet_slot:
                # Started by an earlier incarnation after its last checkpoint: give it a free slot (or an extra one).
                self.fleet_slot[host_id] = self.free_slot()
            if host_id in self.retiring:
                want = 0
            control.host_joined(table, host_id, node_id=None, want=want, has_handle=True, now=now, place=False)
            process = self.w.hosts.get(host_id)
            if process is None or not process.alive:
                self.w.at(0.2, lambda: self.death_notice(host_id))
            self.place()
            # A host joining the old set while it records records before it adopts (Registration.record); one
            # joining the bot's set with no switch in flight settles (Registration.settled).
            recording = table is self.table and self.reshard is not None and self.reshard.old_set_records
            return "record" if recording else "settled" if joins is control.JoinSet.LIVE else "ok"
        if method == "sync":
            host_id, reports, report_seq = args
            table = self.table_of(host_id)
            record = table.hosts.get(host_id)
            if record is None:
                return "unknown"
            if not record.alive or (record.draining and not table.owned_by(host_id)):
                return "stop"
            control.reports_applied(table, host_id, reports, now, report_seq=report_seq, recovering=self.recovering())
            self.place()
            adopt, revoke = control.directives(table, host_id, recovering=self.recovering())
            # The commands go out with this reply (and are lost with it).
            return adopt, revoke, self.mailbox.pop(host_id, [])
        if method == "tails":
            host_id, tails = args
            if self.reshard is not None:
                self.reshard.tails_delivered(host_id, tails)
            return None
        if method == "command_done":
            _, command_id, error = args
            finish = self.pending.pop(command_id, None)
            if finish is not None:
                finish(error)
            return None
        if method == "release":
            host_id, shard_id, epoch, session = args
            table = self.table_of(host_id)
            if control.shard_released(table, self.scheduler, host_id, shard_id, epoch, session, place=False).released:
                self.place()
            self.dirty = True
            return True
        if method == "identify":
            host_id, shard_id, epoch, ask, dropped, early = args
            decision = control.identify_requested(
                self.table_of(host_id), self.scheduler, host_id, shard_id, epoch, now, ask=ask, dropped=dropped,
                early=early,
            )
            if decision.lease_lost:
                return "lost"
            if decision.refresh_budget:
                self.fetch_budget()
            if decision.granted:
                self.dirty = True
                return _Granted(decision.wait)
            return decision.wait
        if method == "identify_done":
            host_id, shard_id, epoch, ask, left_ago = args
            identified_at = window_start(now, left_ago, from_sent=self.w.p.identify_window_from == "sent")
            self.scheduler.release(shard_id, now, identified_at=identified_at, holder=(host_id, epoch), ask=ask)
            return None
        if method == "check_lease":
            host_id, shard_id, epoch = args
            return control.lease_checked(self.table_of(host_id), host_id, shard_id, epoch)
        msg = f"unknown method {method}"
        raise AssertionError(msg)

    # -- timers and notices ------------------------------------------------------------------------

    def death_notice(self, host_id: str) -> None:
        """``wait_closed`` raised ActorDiedError: certain death; quarantine, then hand its shards on."""
        if not self.alive:
            return

        def lost() -> None:
            if self.alive:
                self.lose(host_id)

        self.w.at(self.w.p.quarantine, lost)

    def lose(self, host_id: str) -> None:
        table = self.table_of(host_id)
        record = table.hosts.get(host_id)
        if record is None or not record.alive:
            return
        control.host_lost(table, self.scheduler, host_id, place=False)
        self.w.kill(host_id)
        self.fleet_slot.pop(host_id, None)
        self.next_slot.pop(host_id, None)
        self.retiring.discard(host_id)
        for command in self.mailbox.pop(host_id, []):
            finish = self.pending.pop(command.command_id, None)
            if finish is not None:
                finish(f"host {host_id} died before running the command")
        self.place()
        if host_id not in table.hosts:
            self.host_tables.pop(host_id, None)

    def check_silent_hosts(self, now: float) -> None:
        """What the actor's `HostWatch.check_silent` does: a host silent past ``host_timeout`` gets a health check,
        and is fenced (killed, then lost) only when the check fails. The check answers when the host process is
        alive and can reach Ray (not cut); a host whose syncs are merely lost answers, and is kept."""
        tables = [self.table] if self.next_table is None else [self.table, self.next_table]
        silences = [
            liveness.HostSilence(h.host_id, silent=now - h.last_sync, watched=True, has_handle=True,
                                 checking=h.host_id in self.checking)
            for table in tables for h in table.live_hosts()
        ]
        actions = liveness.silent_host_actions(
            silences, host_timeout=self.w.p.host_timeout, sync_interval=self.w.p.sync_interval,
            standalone_lease_ttl=math.inf,
        )
        for action in actions:
            assert isinstance(action, liveness.CheckHealth)
            self.checking.add(action.host_id)
            self.w.at(0.05, functools.partial(self.health_answered, action.host_id))

    def health_answered(self, host_id: str) -> None:
        self.checking.discard(host_id)
        if not self.alive:
            return
        process = self.w.hosts.get(host_id)
        answered = process is not None and process.alive and not process.cut()
        if liveness.fence_reason(answered=answered, failure="unreachable", host_timeout=self.w.p.host_timeout):
            self.lose(host_id)

    def tick(self) -> None:
        """The reconcile loop: budget, silent hosts, placement, rebalance, fleet size, checkpoint."""
        if not self.alive:
            return
        self.w.at(1.0, self.tick)
        now = self.now()
        if self.scheduler.budget_stale(now) or self.scheduler.reset_at is None:
            self.fetch_budget()
        self.check_silent_hosts(now)
        if not self.incarnation_written:
            self.checkpoint()  # its success ends this part of the recovery
        if not self.recovering():
            # No graceful moves in the old set while it records (it is retired at the switch anyway).
            recording = self.reshard is not None and self.reshard.old_set_records
            for table in [self.table] if self.next_table is None else [self.table, self.next_table]:
                control.placement_pass(table, rebalance=not (table is self.table and recording))
            self.dirty = True
            self.step_roll()
            self.step_reshard()
            self.fleet()
        due = self.checkpoints.due(self.w.t, dirty=self.dirty, rows_now=False, rows_later=False, new_table=False)
        if due is not None:
            self.checkpoint()
        self.w.after_orchestrator(self)

    def fleet(self) -> None:
        """Keep ``hosts`` hosts: start replacements, retire extras (no host leaks)."""
        # A host the rolling restart replaces counts as gone: its replacement (in `starting`) takes its place.
        live = [h.host_id for h in self.table.live_hosts() if not h.draining and h.host_id not in self.retiring]
        self.starting = {h: at for h, at in self.starting.items() if self.w.t - at < 10.0}
        # Paused by a reshard's switch (desired 0): a host of the old set that dies now is not replaced.
        missing = 0 if self.fleet_paused else self.fleet_desired - len(live) - len(self.starting)
        for _ in range(max(0, missing)):
            self.fleet_next += 1
            host_id = self.fleet_host_id()
            self.starting[host_id] = self.w.t
            self.fleet_slot[host_id] = self.free_slot()
            self.w.spawn(host_id, count=self.table.shard_count, want=self.want())
            self.dirty = True
        if self.next_table is not None:
            # The new set's fleet replaces its dead hosts too (their starts are not the core's to wait for).
            for slot in range(self.next_desired):
                if slot not in self.next_slot.values():
                    self.start_new_host(slot, report=False)
        if not self.fleet_paused and len(live) > self.fleet_desired:
            rolled = self.roll.current_slot if self.roll is not None else None
            # Never the replacement the rolling restart is waiting for.
            extras = [h for h in live if rolled is None or self.fleet_slot.get(h) != rolled]
            self.table.drain(sorted(extras or live)[-1])
        for host in self.table.live_hosts():
            if host.draining:
                self.table.drain(host.host_id)  # again: a failover may have raced the first drain
        self.dirty = True


    def fleet_host_id(self) -> str:
        """A new name for a host of the bot's fleet (``s<count>-h…`` once a reshard made that fleet the bot's)."""
        if self.fleet_prefix == "h":
            return f"h{self.incarnation}.{self.fleet_next}"
        return f"{self.fleet_prefix}x{self.w.next_name()}"

    def want(self) -> int:
        """A fleet host's share of the bot's shards."""
        return -(-self.table.shard_count // max(1, self.fleet_desired))

    # -- the rolling restart ------------------------------------------------------------------------

    def free_slot(self) -> int:
        """The lowest slot with no live, starting or replaced host (past the last one when all are taken)."""
        rolled = self.roll.current_slot if self.roll is not None else None
        taken = {rolled} if rolled is not None else set()
        for host_id, slot in self.fleet_slot.items():
            record = self.table.hosts.get(host_id)
            if host_id in self.starting or (record is not None and record.alive and host_id not in self.retiring):
                taken.add(slot)
        return next(s for s in range(len(taken) + 1) if s not in taken)

    def _new_scheduler(self, *, remaining: int) -> IdentifyScheduler:
        """The identify schedule, built as the actor's `Orchestrator._new_scheduler` builds it."""
        p = self.w.p
        return IdentifyScheduler(
            p.max_concurrency, remaining=remaining, margin=p.identify_margin, grant_use_limit=p.grant_use_limit,
            lead=p.identify_lead,
        )

    def _new_roll(self, progress: RollingRestartProgress) -> rolling.RollingRestart:
        return rolling.RollingRestart(progress, drain_timeout=20.0, drain_per_shard=2.0, join_timeout=15.0)

    def roll_view(self) -> rolling.RollView:
        """The fleet and the table as the rolling restart's core reads them (built as the Orchestrator does)."""
        fleet = [operation_views.FleetHost(host_id, slot, self.want(), host_id in self.retiring)
                 for host_id, slot in sorted(self.fleet_slot.items())]
        return operation_views.roll_view(
            self.table, fleet, starting=(slot for slot, _ in self.roll_starts.values())
        )

    def shape(self) -> admission.BotShape:
        """What `ray_shards.admission` reads, as the actor's `Orchestrator._shape` builds it."""
        return admission.BotShape(
            shard_count=self.table.shard_count,
            identifies_left=self.scheduler.remaining,
            # The actor's fleet has no desired hosts while the reshard pauses it; the sim keeps the count apart.
            launched=self.fleet_desired > 0 and not self.fleet_paused,
            rolling=self.roll is not None and self.roll.active,
            resharding=self.next_table is not None or (self.reshard is not None and self.reshard.active),
        )

    def start_roll(self) -> bool:
        """A client asks for a rolling restart; False when one is in progress or the shell cannot take it now."""
        if not self.alive or self.recovering():
            return False
        try:
            admission.check_roll(self.shape())
        except RuntimeError:
            return False
        previous = self.roll
        self.roll = self._new_roll(rolling.RollingRestart.begin(self.roll_view()).progress)
        if not self.checkpoint():
            # Not on record (`Orchestrator._record_new_operation`): not started, and the client tries again.
            self.roll = previous
            return False
        return True

    def step_roll(self) -> None:
        """One reconcile step of the rolling restart: starts that gave up become events, then the core's effects."""
        roll = self.roll
        for host_id, (slot, give_up) in sorted(self.roll_starts.items()):
            if self.w.t >= give_up:
                # HostStartTimeoutError (or the callback raised): the fleet kills the actor and forgets it, whether
                # or not the roll that started it is still on.
                del self.roll_starts[host_id]
                self.starting.pop(host_id, None)
                self.fleet_slot.pop(host_id, None)
                self.w.kill(host_id)
                if roll is not None:
                    roll.start_failed(slot, f"host {host_id} did not start in time")
        if roll is None or not roll.active:
            return
        effects = roll.step(self.roll_view(), self.now())
        run_now(carry_out(effects, self.roll_effect, roll.effect_failed, what="rolling restart", quiet=True))
        self.dirty = True
        self.w.roll_stepped(roll)

    async def roll_effect(self, effect: rolling.Effect) -> None:
        """Carry out one effect of the rolling restart's core (`carry_out` reports a failure to it)."""
        if isinstance(effect, rolling.Checkpoint):
            self.checkpoint(strict=True)
        elif isinstance(effect, rolling.StartHost):
            self.fleet_next += 1
            host_id = self.fleet_host_id()
            self.fleet_slot[host_id] = effect.slot
            self.starting[host_id] = self.w.t
            self.roll_starts[host_id] = (effect.slot, self.w.t + self.w.host_start_timeout)
            self.checkpoint()  # intent first: the host's name is on record before its actor exists
            broken = self.w.faulty() and self.w.roll_rng.random() < self.w.p_start_fail
            self.w.spawn(host_id, broken=broken, count=self.table.shard_count, want=self.want())
        elif isinstance(effect, rolling.SetRetiring):
            if effect.retiring:
                self.retiring.add(effect.host_id)
            else:
                self.retiring.discard(effect.host_id)
        elif isinstance(effect, rolling.Drain):
            self.table.drain(effect.host_id)
        elif isinstance(effect, rolling.Undrain):
            self.table.undrain(effect.host_id, effect.want)
        elif isinstance(effect, rolling.Retire):
            # Close (its shards were handed over) and kill; the fleet forgets it.
            self.w.kill(effect.host_id)
            self.fleet_slot.pop(effect.host_id, None)
            self.retiring.discard(effect.host_id)
            self.roll_starts.pop(effect.host_id, None)
            self.starting.pop(effect.host_id, None)
        elif isinstance(effect, rolling.Ended):
            self.w.roll_ended(effect.state)

    # -- the live reshard ---------------------------------------------------------------------------

    def _reshard_options(self) -> dict[str, float]:
        return {"identify_window": WINDOW, "max_skew": 1.0, "command_timeout": COMMAND_TIMEOUT}

    def reshard_view(self) -> resharding.ReshardView:
        """The two sets as the reshard's core reads them (built as `ReshardRunner.view` does)."""
        return operation_views.reshard_view(
            self.table, self.next_table, old_desired=self.fleet_desired,
            new_starting=sum(1 for h in self.set_starts if h in self.next_slot),
        )

    def start_reshard(self, target: int) -> bool:
        """A client asks for a reshard to ``target`` shards; False when the Orchestrator refuses it now."""
        if not self.alive or self.recovering():
            return False
        try:
            admission.check_reshard(self.shape(), target)
        except (ValueError, RuntimeError):
            return False
        # Target state, on record before the client hears it started (`Orchestrator._record_new_operation`).
        previous = self.reshard
        self.reshard = resharding.Reshard.begin(
            self.table.shard_count, target, started_at=self.w.wall(), **self._reshard_options()
        )
        if not self.checkpoint():
            self.reshard = previous  # not started: the client tries again
            return False
        return True

    def step_reshard(self) -> None:
        """One reconcile step of the reshard: starts that gave up become events, then the core's effects, in order."""
        core = self.reshard
        for host_id, (slot, give_up, report) in sorted(self.set_starts.items()):
            if self.w.t >= give_up:
                # HostStartTimeoutError: the fleet kills the actor and forgets it.
                del self.set_starts[host_id]
                self.next_slot.pop(host_id, None)
                self.fleet_slot.pop(host_id, None)
                self.w.kill(host_id)
                if report and core is not None:
                    core.start_done(slot, f"HostStartTimeoutError: host {host_id} did not start in time")
        if core is None or not core.active:
            return
        effects = core.step(self.reshard_view(), self.now())
        run_now(carry_out(effects, functools.partial(self.reshard_effect, core), core.effect_failed,
                          what="reshard", quiet=True))
        self.dirty = True
        self.w.reshard_stepped(core)

    async def reshard_effect(self, core: resharding.Reshard, effect: resharding.Effect) -> None:
        """Carry out one effect of the reshard's core (`carry_out` reports a failure to it)."""
        if isinstance(effect, resharding.Checkpoint):
            self.checkpoint(strict=True)
        elif isinstance(effect, resharding.HostCommand):
            self.send_command(core, effect)
        elif isinstance(effect, resharding.StartNewSet):
            self.next_table = ShardTable(effect.shard_count)
            self.next_desired = effect.hosts
            self.next_slot = {}
            for slot in range(effect.hosts):
                self.start_new_host(slot, report=True)
        elif isinstance(effect, resharding.PauseOldFleet):
            self.fleet_paused = True
        elif isinstance(effect, resharding.ResumeOldFleet):
            self.fleet_paused = False
        elif isinstance(effect, resharding.KillNewSet):
            for host_id in sorted(set(self.next_slot) | set(self.set_starts)):
                self.w.kill(host_id)
            self.next_table, self.next_slot, self.next_desired = None, {}, 0
            self.set_starts.clear()
        elif isinstance(effect, resharding.Commit):
            self.commit(effect.shard_count)
        elif isinstance(effect, resharding.RetireOldSet):
            self.retire_old_set(core)
        elif isinstance(effect, resharding.Ended):
            self.w.reshard_ended(effect)

    def start_new_host(self, slot: int, *, report: bool) -> None:
        """Start a host of the new set in shadow mode (``report``: the core waits for its `start_done`)."""
        assert self.next_table is not None
        count = self.next_table.shard_count
        host_id = f"s{count}-h{slot}r{self.w.next_name()}"
        self.next_slot[host_id] = slot
        self.set_starts[host_id] = (slot, self.w.t + self.w.host_start_timeout, report)
        broken = self.w.faulty() and self.w.reshard_rng.random() < self.w.p_start_fail
        self.w.spawn(host_id, broken=broken, count=count, want=-(-count // max(1, self.next_desired)), shadow=True)

    def send_command(self, core: resharding.Reshard, effect: resharding.HostCommand) -> None:
        """Put the command in the host's mailbox (it leaves with a sync reply); its outcome goes to the core."""
        command = _Command(self.w.next_name(), effect.kind, effect.tails, effect.stop_recording)
        self.mailbox.setdefault(effect.host_id, []).append(command)

        def finish(error: str | None) -> None:
            if self.alive:
                core.command_done(effect.token, error)

        def timed_out() -> None:
            if self.pending.pop(command.command_id, None) is not None:
                finish(f"ShardUnavailableError: host {effect.host_id} did not run {effect.kind.value} within "
                       f"{COMMAND_TIMEOUT + 5.0:.0f} s")

        self.pending[command.command_id] = finish
        # The call is bounded a little beyond the core's own timeout.
        self.w.at(COMMAND_TIMEOUT + 5.0, timed_out)

    def commit(self, shard_count: int) -> None:
        """The new set is live: its table and fleet become the bot's (`BotSets.commit`)."""
        assert self.next_table is not None and self.next_table.shard_count == shard_count
        self.old_set = (self.table, sorted(self.fleet_slot))
        self.table = self.next_table
        self.fleet_slot = dict(self.next_slot)
        self.fleet_desired = self.next_desired
        self.fleet_paused = False
        self.fleet_prefix = f"s{shard_count}-h"
        self.starting = {h: self.w.t for h in self.set_starts}
        self.retiring.clear()
        self.next_table, self.next_slot, self.next_desired = None, {}, 0
        for host in self.table.live_hosts():
            self.host_tables.pop(host.host_id, None)

    def retire_old_set(self, core: resharding.Reshard) -> None:
        """Close the old hosts without hand-over and kill them, one at a time; then tell the core."""
        if self.old_set is None:
            core.old_set_retired()  # restarted after the commit point: the old hosts were killed as strays
            return
        hosts = list(self.old_set[1])

        def next_one() -> None:
            if not self.alive:
                return
            if not hosts:
                self.old_set = None
                core.old_set_retired()
                return
            # Each closes its sessions after draining its listeners (up to drain_timeout), then is killed.
            self.w.kill(hosts.pop(0))
            self.w.at(self.w.rng.uniform(0.5, 4.0), next_one)

        next_one()


# -- the world -------------------------------------------------------------------------------------


class World:
    """One seed's universe: the clock, the event queue, the network, the processes."""

    def __init__(
        self,
        seed: int,
        *,
        fault_time: float | None = None,
        fault_steps: int | None = None,
        params: Params | None = None,
        reshard: bool = True,
        window_from: WindowFrom = "ready",
        identify_delay: float = 0.0,
    ) -> None:
        """``params`` replaces the drawn bot and fault mix (and then no rolling restart or reshard is started).

        ``window_from`` is the drawn bot's `Timings.identify_window_from` and ``identify_delay`` its
        `Params.identify_delay` (neither drawn: a seed replays as before).

        ``reshard=False`` runs the seed as it ran before the simulator drove reshards (a seed that found a bug
        then keeps finding it).
        """
        self.seed = seed
        self.fault_steps = fault_steps
        self.faults_ended_at: float | None = None
        self.rng = random.Random(seed)
        self.p = (
            Params.draw(self.rng, fault_time=fault_time, window_from=window_from, identify_delay=identify_delay)
            if params is None
            else params
        )
        self.t = 0.0
        self.step = 0
        self._queue: list[tuple[float, int, typing.Callable[[], None]]] = []
        self._n = 0
        self.gateway = Gateway(self)
        self.hosts: dict[str, Host] = {}
        self.kv: dict[str, typing.Any] | None = None
        self.shell: Shell | None = None
        self.checkpoint_every = self.rng.choice([0.0, 1.0, 3.0])
        self.wall_offset = 0.0
        self.restarts = 0
        self.deaths = 0
        self.grants: dict[tuple[int, int, int], str] = {}
        self.ready_at: dict[int, float] = {}
        """When each shard's host last saw READY after an IDENTIFY."""
        self.checked: tuple[int, int] | None = None
        """(table instance, version) the table's rows were last checked at (see `after_orchestrator`)."""
        self.full_checked_at = 0
        self.owners: dict[int, str | None] = {}
        """Each row's owner at the last check (what `_check_ownership_rows` compares with)."""
        self.table_seq: dict[str, int] = {}
        self.last_incarnation: dict[int, int] = {}
        # The rolling restart draws from its own generator, so seeds that do not roll run as they always did.
        self.roll_rng = random.Random(seed * 1_000_003 + 17)
        self.roll_at: float | None = (
            self.roll_rng.uniform(2.0, self.p.fault_time + 10.0) if self.roll_rng.random() < 0.4 else None
        )
        if params is not None:
            self.roll_at = None
        self.reliable = params is not None and params.fault_time <= 0 and params.p_loss == 0
        """No faults ever (explicit `Params` with ``fault_time`` 0 and no loss): every call is answered, so no
        call schedules its timeout (the Orchestrator never restarts, no host is cut off or dies)."""
        self.p_start_fail = self.roll_rng.choice([0.0, 0.2, 0.5])
        self.host_start_timeout = 8.0
        self.roll_state: OperationState | None = None
        self.rolls = 0
        self.roll_controls = 0
        """Pause, resume and abort actions the operator sent (a retry is dropped once a later one was sent)."""
        self.roll_restarts = 0
        """Orchestrator restarts that hit the rolling restart in the middle of a slot."""
        # The reshard draws from a generator of its own too: seeds that do not reshard run as they always did.
        self.reshard_rng = random.Random(seed * 2_000_003 + 29)
        self.reshard_at: float | None = None
        self.reshard_target = 0
        if self.reshard_rng.random() < 0.25 and params is None and reshard:
            # Mostly while faults run (the convergence bound counts from when they stop).
            self.reshard_at = self.reshard_rng.uniform(2.0, self.p.fault_time + 5.0)
            # Discord refuses a reshard the daily budget cannot identify.
            self.reshard_target = self.reshard_rng.choice(
                [n for n in range(1, 8) if n != self.p.shards and n <= self.p.budget]
            )
        self.reshard_crash: resharding.ReshardPhase | None = None
        if self.reshard_at is not None and self.reshard_rng.random() < 0.3:
            self.reshard_crash = self.reshard_rng.choice([
                resharding.ReshardPhase.IDENTIFYING, resharding.ReshardPhase.SWITCHING,
                resharding.ReshardPhase.CLOSING, resharding.ReshardPhase.CLOSING, resharding.ReshardPhase.ROLLING_BACK,
            ])
        self.reshard_crashes = 0
        self.reshard_kills = 0
        # Host deaths aimed at the reshard (a generator of their own, so the draws above stay as they were).
        self.kill_rng = random.Random(seed * 3_000_017 + 5)
        self.reshard_kill: tuple[resharding.ReshardPhase, bool] | None = None
        if self.reshard_at is not None and self.kill_rng.random() < 0.4:
            phase = self.kill_rng.choice([resharding.ReshardPhase.IDENTIFYING, resharding.ReshardPhase.SWITCHING])
            self.reshard_kill = (phase, self.kill_rng.random() < 0.6)
        self.reshard_requested = False
        self.reshard_state: ReshardState | None = None
        self.reshard_error: str | None = None
        self.reshard_ended_at: float | None = None
        self.reshard_detail: str | None = None
        """What the rollback could not do (`resharding.Ended.detail`)."""
        self.reshard_restarts = 0
        """Orchestrator restarts while the reshard was active."""
        self.reshard_carried_on = 0
        """Restarts that restored the reshard at its commit point (``closing``) and carried it on."""
        # Outages of the KV store (Ray's GCS) that refuse checkpoint writes, from a generator of their own again.
        # Some seeds have a few at random while faults run; some aim one at a phase of the reshard or at the
        # rolling restart's slot, with an Orchestrator crash inside it, so an intent the core needed on record
        # is refused and the restart finds the checkpoint from before it.
        self.kv_rng = random.Random(seed * 4_000_037 + 53)
        self.kv_down_until = -math.inf
        self.kv_outages = 0
        self.kv_refused = 0
        self.kv_plan: list[tuple[float, float]] = []
        if params is None and self.kv_rng.random() < 0.3:
            self.kv_plan = [
                (self.kv_rng.uniform(1.0, self.p.fault_time), self.kv_rng.choice([0.3, 1.5, 5.0]))
                for _ in range(self.kv_rng.randint(1, 4))
            ]
        self.kv_aim: resharding.ReshardPhase | None = None
        if self.reshard_at is not None and self.kv_rng.random() < 0.4:
            self.kv_aim = self.kv_rng.choice([
                resharding.ReshardPhase.IDENTIFYING, resharding.ReshardPhase.SWITCHING,
                resharding.ReshardPhase.SWITCHING, resharding.ReshardPhase.CLOSING,
            ])
        self.roll_kv_aim = self.roll_at is not None and self.kv_rng.random() < 0.4
        self._names = 0

    # -- infrastructure ----------------------------------------------------------------------------

    def next_name(self) -> int:
        """A number never handed out before in this world (host names, command ids)."""
        self._names += 1
        return self._names

    def fail(self, what: str) -> typing.NoReturn:
        """Raise a `Violation` naming the seed, the step and the time."""
        msg = f"seed {self.seed}, step {self.step}, t={self.t:.3f}: {what}"
        raise Violation(msg)

    def at(self, delay: float, action: typing.Callable[[], None]) -> None:
        """Run ``action`` ``delay`` seconds from now."""
        self._n += 1
        heapq.heappush(self._queue, (self.t + delay, self._n, action))

    def wall(self) -> float:
        """The wall clock, which steps (only checkpoint metadata may read it)."""
        return self.t + self.wall_offset

    def faulty(self) -> bool:
        """Whether faults are still being injected (until ``fault_time``, or ``fault_steps`` steps)."""
        if self.faults_ended_at is not None:
            return False
        if self.t < self.p.fault_time and (self.fault_steps is None or self.step < self.fault_steps):
            return True
        self.faults_ended_at = self.t
        return False

    def kv_writable(self) -> bool:
        """Whether the KV store takes a write now."""
        return self.t >= self.kv_down_until

    def _kv_outage(self, duration: float, *, crash: bool = False) -> None:
        """The KV store refuses writes for ``duration`` seconds; with ``crash`` the Orchestrator dies within it."""
        self.kv_outages += 1
        self.kv_down_until = max(self.kv_down_until, self.t + duration)
        if crash:

            def die() -> None:
                if self.shell is not None and self.shell.alive:
                    self._crash(self.kv_rng)

            self.at(self.kv_rng.uniform(0.0, duration + 1.0), die)

    def _delay(self, method: str = "") -> float:
        if self.faulty() and self.rng.random() < self.p.p_delay:
            if method in ("identify_done", "release"):
                # Fire-and-forget calls retried with backoff can land seconds later.
                return self.rng.uniform(0.3, 8.0)
            return self.rng.uniform(0.3, 1.5)
        return self.rng.uniform(0.001, 0.02)

    def call(
        self,
        host: Host,
        method: str,
        args: tuple[typing.Any, ...],
        on_reply: typing.Callable[[typing.Any], None],
        on_fail: typing.Callable[[], None],
    ) -> None:
        """A Ray call from ``host`` to the Orchestrator: lost, delayed or duplicated under faults."""
        state = {"done": False}

        def finish(reply: typing.Any) -> None:
            if state["done"] or not host.alive:
                return
            state["done"] = True
            on_reply(reply)

        def timeout() -> None:
            if not state["done"] and host.alive:
                state["done"] = True
                on_fail()

        if not self.reliable:
            self.at(self.p.rpc_timeout, timeout)
        if host.cut() or (self.faulty() and self.rng.random() < self.p.p_loss):
            return
        copies = 2 if self.faulty() and self.rng.random() < self.p.p_dup else 1
        for _ in range(copies):
            self.at(self._delay(method), lambda: self._deliver(host, method, args, finish))

    def _deliver(
        self, host: Host, method: str, args: tuple[typing.Any, ...], finish: typing.Callable[[typing.Any], None]
    ) -> None:
        shell = self.shell
        if shell is None or not shell.alive:
            return
        reply = shell.handle(method, args)
        if method == "sync":
            touched: list[int] = [r.shard_id for r in args[1]]
        elif method == "register":
            touched = []
        else:
            touched = [args[1]]
        self.after_orchestrator(shell, touched)
        if host.cut() or (self.faulty() and self.rng.random() < self.p.p_loss):
            return
        # A reply sent before a crash still arrives; nothing is sent after it.
        self.at(self._delay(), lambda: finish(reply))

    def spawn(
        self, host_id: str, *, broken: bool = False, count: int = 0, want: int = 0, shadow: bool = False
    ) -> None:
        """Start a ShardHost actor; it is up after a while (if the cluster does not lose it)."""
        want = want or -(-self.p.shards // self.p.hosts)
        host = Host(self, host_id, want, broken=broken, count=count, shadow=shadow)
        self.hosts[host_id] = host
        self.at(self.rng.uniform(0.3, 2.0), lambda: host.start() if host.alive else None)

    def kill(self, host_id: str) -> None:
        """``ray.kill``: takes effect once the host is reachable."""
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return
        host.doomed = True
        self.at(max(0.05, host.cut_until - self.t), host.die)

    def host_died(self, host: Host) -> None:
        """A host process ended: the Orchestrator's watch hears of it."""
        self.deaths += 1
        shell = self.shell
        if shell is not None and shell.alive:
            self.at(self.rng.uniform(0.05, 0.5), lambda: shell.death_notice(host.host_id))

    # -- faults ------------------------------------------------------------------------------------

    def _fault(self) -> None:
        if not self.faulty():
            return
        self.at(self.rng.expovariate(1 / 3.0), self._fault)
        kind = self.rng.choices(
            ["host_death", "cut", "restart", "discord", "clock"], weights=[2, 2, 1.5, 3, 1]
        )[0]
        live = sorted(h for h, host in self.hosts.items() if host.alive)
        if kind == "host_death" and live:
            self.hosts[self.rng.choice(live)].die()
        elif kind == "cut" and live:
            host = self.hosts[self.rng.choice(live)]
            host.cut_until = self.t + self.rng.choice([1.0, 3.0, 8.0, 15.0])
        elif kind == "restart" and self.shell is not None and self.shell.alive:
            self._crash(self.rng)
        elif kind == "discord":
            self.gateway.fault()
        elif kind == "clock":
            self.wall_offset += self.rng.choice([-3600.0, -2.0, 2.0, 3600.0])

    def _crash(self, rng: random.Random) -> None:
        """The Orchestrator dies; Ray starts it again from its last checkpoint after a while."""
        assert self.shell is not None
        self.shell.alive = False
        if self.shell.roll is not None and self.shell.roll.current_slot is not None:
            self.roll_restarts += 1
        if self.shell.reshard is not None and self.shell.reshard.active:
            self.reshard_restarts += 1
        self.restarts += 1
        self.at(rng.choice([rng.uniform(0.05, 0.5), rng.uniform(0.5, 5.0)]), self._restart)

    def reshard_stepped(self, core: resharding.Reshard) -> None:
        """After each step of the reshard: the crash and the host death this seed aims at a phase (once each).

        Random faults rarely land in the short phases (the switch, the commit point, ``closing``): some seeds
        crash the Orchestrator, or kill a host of the new set (or of the old one), on purpose when the
        reshard first reaches one, whether the other faults still run or not.
        """
        if self.reshard_kill is not None and core.phase is self.reshard_kill[0]:
            new_set = self.reshard_kill[1]
            self.reshard_kill = None
            self.reshard_kills += 1

            def kill() -> None:
                shell = self.shell
                if shell is None:
                    return
                hosts = sorted(shell.next_slot) if new_set else sorted(h.host_id for h in shell.table.live_hosts())
                live = [h for h in hosts if h in self.hosts and self.hosts[h].alive]
                if live:
                    self.hosts[self.kill_rng.choice(live)].die()

            self.at(self.kill_rng.uniform(0.0, 3.0), kill)
        if self.kv_aim is not None and core.phase is self.kv_aim:
            self.kv_aim = None
            crash_inside = self.kv_rng.random() < 0.7
            self.reshard_crashes += crash_inside
            self._kv_outage(self.kv_rng.uniform(0.5, 4.0), crash=crash_inside)
        if self.reshard_crash is not None and core.phase is self.reshard_crash:
            self.reshard_crash = None
            self.reshard_crashes += 1

            def crash() -> None:
                if self.shell is not None and self.shell.alive:
                    self._crash(self.reshard_rng)

            self.at(self.reshard_rng.uniform(0.0, 2.0), crash)

    def _start_roll(self) -> None:
        """A client starts the rolling restart (retrying while the Orchestrator is down or recovering)."""
        shell = self.shell
        if shell is None or not shell.start_roll():
            self.at(1.0, self._start_roll)
            return
        self.rolls += 1
        self.roll_state = OperationState.RUNNING
        # Sometimes an operator pauses it (and resumes it), or aborts it.
        action = self.roll_rng.choice(["none", "none", "pause", "abort"])
        if action == "pause":
            pause = self.roll_rng.uniform(0.0, 20.0)
            self.at(pause, lambda: self._control_roll("pause"))
            self.at(pause + self.roll_rng.uniform(0.5, 10.0), lambda: self._control_roll("resume"))
        elif action == "abort":
            self.at(self.roll_rng.uniform(0.0, 30.0), lambda: self._control_roll("abort"))

    def _control_roll(self, action: str, *, retry_of: int | None = None) -> None:
        """An operator's pause, resume or abort; sent again after an error, unless a later one was sent since."""
        if retry_of is None:
            self.roll_controls += 1
        elif retry_of != self.roll_controls:
            return  # overtaken: the operator sent another action meanwhile
        sent = self.roll_controls
        shell = self.shell
        if shell is None or not shell.alive or shell.roll is None:
            if action == "resume":
                # The client retries a resume until it lands.
                self.at(1.0, lambda: self._control_roll(action, retry_of=sent))
            return
        try:
            shell.roll.control(action)
        except RuntimeError:
            return
        if not shell.checkpoint():
            # CheckpointWriteError: it applies now but is not on record; the client sends it again (a repeat of
            # what is already in force is refused, and the periodic checkpoint writes it once the KV store is back).
            self.at(1.0, lambda: self._control_roll(action, retry_of=sent))

    def _start_reshard(self) -> None:
        """A client asks for the reshard (retrying while the Orchestrator refuses: down, recovering, busy, budget)."""
        shell = self.shell
        if shell is None or not shell.start_reshard(self.reshard_target):
            self.at(1.0, self._start_reshard)
            return
        self.reshard_requested = True

    def reshard_ended(self, ended: resharding.Ended) -> None:
        """The reshard ended (the core said so): a restart's rollback ends ``rolled back``, whatever else happened."""
        if ended.error == resharding.RESTARTED and ended.state is not ReshardState.ROLLED_BACK:
            self.fail(f"a reshard rolled back by an Orchestrator restart ended {ended.state.value!r}")
        self.reshard_state, self.reshard_error, self.reshard_ended_at = ended.state, ended.error, self.t
        self.reshard_detail = ended.detail

    def roll_stepped(self, roll: rolling.RollingRestart) -> None:
        """After each step of the rolling restart: the KV outage this seed aims at its slot (once)."""
        if self.roll_kv_aim and roll.current_slot is not None:
            self.roll_kv_aim = False
            self._kv_outage(self.kv_rng.uniform(0.5, 4.0), crash=self.kv_rng.random() < 0.7)

    def roll_ended(self, state: OperationState) -> None:
        """The rolling restart ended (the core said so)."""
        self.roll_state = state

    def _restart(self) -> None:
        self.shell = Shell(self, self.kv)
        self.after_orchestrator(self.shell)

    def _gateway_tick(self) -> None:
        self.gateway.tick()
        for host in self.hosts.values():
            if host.alive:
                host.observe()
        self.at(1.0, self._gateway_tick)

    # -- invariants --------------------------------------------------------------------------------

    def after_orchestrator(self, shell: Shell, touched: typing.Iterable[int] = ()) -> None:
        """Invariants on the table after each Orchestrator event.

        A bot of up to `FULL_CHECK_SHARDS` shards has every row checked after every event. A larger one
        has checked, after each event, the rows the table logged as changed (`ShardTable.changed_since`:
        owner, epoch, status) and the rows the event named (``touched``: the shards a sync reported, the
        shard of a release, identify or lease check, whose sessions the change log does not record), and
        every row every `FULL_CHECK_EVERY` steps and whenever the change log cannot tell (a new table).
        """
        table = shell.table
        # Per table: a reshard's new table counts its own incarnations.
        last = self.last_incarnation.get(table.shard_count, -1)
        if table.incarnation < last:
            self.fail(f"incarnation of the {table.shard_count}-shard table went back to {table.incarnation}")
        self.last_incarnation[table.shard_count] = max(last, table.incarnation)
        if shell.next_table is not None:
            for record in shell.next_table.shards.values():
                self._check_grant(shell.next_table, record)
        roll = shell.roll
        if roll is not None and roll.current_slot is not None:
            # Never doubled: the slot in progress has its old host(s) and at most one replacement process.
            news = [
                h for h, slot in shell.fleet_slot.items()
                if slot == roll.current_slot and h not in roll.progress.old_hosts and self.hosts[h].alive
            ]
            if len(news) > 1:
                self.fail(f"slot {roll.current_slot} of the rolling restart has {len(news)} replacements: {news}")
        rows: typing.Iterable[int] | None = None
        if self.p.shards > FULL_CHECK_SHARDS:
            if self.step - self.full_checked_at < FULL_CHECK_EVERY:
                changed = (
                    table.changed_since(self.checked[1])
                    if self.checked is not None and self.checked[0] == table.instance
                    else None
                )
                if changed is not None:
                    rows = set(changed).union(touched)
            self.checked = (table.instance, table.version)
        if rows is None:
            self.full_checked_at = self.step
            self._check_ownership_index(table)
            records: typing.Iterable[typing.Any] = table.shards.values()
        else:
            self._check_ownership_rows(table, rows)
            records = (table.shards[s] for s in sorted(rows) if s in table.shards)
        for record in records:
            self._check_grant(table, record)
            session = record.session
            if session is not None:
                # Within one Orchestrator life; a restart may go back to its checkpoint's seq.
                key = f"{self.restarts}/{session.session_id}"
                if session.seq < self.table_seq.get(key, -1):
                    self.fail(f"the table's seq of {session.session_id} went back to {session.seq}")
                self.table_seq[key] = session.seq

    def _check_grant(self, table: ShardTable, record: typing.Any) -> None:
        """No epoch of a shard (of one shard count) is ever granted to two hosts."""
        if record.host_id is not None:
            owner = self.grants.setdefault((table.shard_count, record.shard_id, record.epoch), record.host_id)
            if owner != record.host_id:
                self.fail(
                    f"epoch {record.epoch} of shard {record.shard_id}/{table.shard_count} was granted to {owner} and "
                    f"{record.host_id}"
                )

    def _check_ownership_index(self, table: ShardTable) -> None:
        """Every host's ownership index matches the records (one pass over the records)."""
        by_host: dict[str, list[int]] = {}
        for r in table.shards.values():
            if r.host_id is not None:
                by_host.setdefault(r.host_id, []).append(r.shard_id)
        self.owners = {r.shard_id: r.host_id for r in table.shards.values()}
        for host_id in set(by_host) | set(table.hosts):
            if host_id is not None and table.owned_by(host_id) != by_host.get(host_id, []):
                self.fail(f"the table's ownership index of {host_id} is out of step with its records")

    def _check_ownership_rows(self, table: ShardTable, rows: typing.Iterable[int]) -> None:
        """The ownership index lists each of ``rows`` under its owner, and no longer under its previous owner.

        The previous owner is the one the last check saw (``owners``); an index entry under a host that never
        owned the row shows up at the next full check.
        """
        index = table._owned
        for shard_id in rows:
            record = table.shards.get(shard_id)
            owner = record.host_id if record is not None else None
            if owner is not None and shard_id not in index.get(owner, ()):
                self.fail(f"the table's ownership index of {owner} is out of step with its records")
            before = self.owners.get(shard_id)
            if before is not None and before != owner and shard_id in index.get(before, ()):
                self.fail(f"the table's ownership index of {before} is out of step with its records")
            self.owners[shard_id] = owner

    def check(self) -> None:
        """Invariants after every step."""
        gw = self.gateway
        gw._roll_day()
        if gw.used > self.p.budget:
            self.fail(f"{gw.used} identifies today, budget {self.p.budget}")
        if gw.doubled:
            # `Gateway` keeps the shards with more than one open connection as connections open and close.
            shard_id = min(gw.doubled)
            self.fail(f"shard {shard_id} has {len(gw.open_by_shard[shard_id])} open connections")

    def converged(self) -> bool:
        """Every shard runs exactly once, on a live host the table agrees owns it; no host leaks."""
        shell = self.shell
        if shell is None or not shell.alive or shell.recovering():
            return False
        count = shell.table.shard_count
        if self.roll_at is None and self.gateway.connected.get(count, 0) != count:
            return False  # cheap: some shard has no connection (the loop below would say so too)
        reshard = shell.reshard
        if self.reshard_at is not None and (not self.reshard_requested or (reshard is not None and reshard.active)):
            return False
        if any(n for c, n in self.gateway.connected.items() if c != count):
            return False  # the abandoned (or retired) set still has sessions at Discord
        alive = {h for h, host in self.hosts.items() if host.alive}
        table_live = {h.host_id for h in shell.table.live_hosts()}
        if self.reshard_ended_at is not None and self.t - self.reshard_ended_at > 30.0:
            # The reshard ended a while ago: no host of the abandoned set may still run (ray.kill takes effect once
            # the host is reachable, within a cut of at most 15 s).
            leaked = sorted(h for h in alive if self.hosts[h].count != count)
            if leaked:
                self.fail(f"the reshard ended ({self.reshard_state}) but hosts of the other set still run: {leaked}")
        if alive != table_live or len(alive) != shell.fleet_desired:
            return False
        if any(self.hosts[h].doomed for h in alive):
            return False  # a kill is on its way (a cut host dies once reachable): the fleet replaces it after
        if any(self.hosts[h].shadow or self.hosts[h].muted or self.hosts[h].recording for h in alive):
            return False  # every host delivers live again (no events held, muted or recorded for ever)
        if self.roll_at is not None:
            # The rolling restart has ended (finished, aborted or failed), cleanly: nothing left half-replaced.
            roll = shell.roll
            if roll is None or roll.active or alive & shell.retiring:
                return False
            survivors = alive & set(roll.progress.old_hosts)
            if roll.progress.state is OperationState.FINISHED and survivors:
                self.fail(f"the rolling restart finished but old hosts still run: {sorted(survivors)}")
        for shard_id in range(count):
            conns = self.gateway.open_by_shard.get((count, shard_id), set())
            if len(conns) != 1:
                return False
            conn = self.gateway.conns[next(iter(conns))]
            host = self.hosts[conn.host_id]
            slot = host.slots.get(shard_id)
            if slot is None or slot.conn != conn.conn_id:
                return False
            if not shell.table.holds(conn.host_id, shard_id, slot.lease.epoch):
                return False
        return True

    def bound(self) -> float:
        """How long after the faults stop convergence may take."""
        p = self.p
        rounds = -(-p.shards // p.max_concurrency)
        bound = p.host_timeout + p.recovery_grace + 10.0 + 2 * rounds * (WINDOW + 0.5) + p.day
        if self.roll_at is not None:
            # Each slot: a start (or its timeout), the join, the hand-overs; plus a pause of up to 10 s.
            bound += max(0.0, self.roll_at - p.fault_time) + p.hosts * (self.host_start_timeout + 40.0) + 10.0
        if self.reshard_at is not None:
            # Waiting for a roll or the budget to let it start, the new set's READY deadline, the command batches
            # (each up to the command timeout), the old set's retirement, and the old set's identifies again.
            target = self.reshard_target
            bound += (max(0.0, self.reshard_at - p.fault_time) + p.day + 60.0 + target * (WINDOW + 1.0)
                      + 4 * (COMMAND_TIMEOUT + 5.0) + self.host_start_timeout + 30.0
                      + 2 * -(-max(target, p.shards) // p.max_concurrency) * (WINDOW + 0.5))
            if self.roll_at is not None:
                bound += p.hosts * (self.host_start_timeout + 40.0) + 10.0
            if self.reshard_crashes or self.reshard_kills:
                bound += 5.0 + p.recovery_grace + p.host_timeout + 2 * (COMMAND_TIMEOUT + 5.0)
        return bound

    # -- running -----------------------------------------------------------------------------------

    def run(self, *, trace: typing.Callable[[str], None] | None = None) -> SimResult:
        """Run faults for ``fault_time``, then require convergence within `bound`."""
        self.shell = Shell(self, None)
        self.at(0.0, self._gateway_tick)
        self.at(self.rng.uniform(0.5, 3.0), self._fault)
        if self.roll_at is not None:
            self.at(self.roll_at, self._start_roll)
        if self.reshard_at is not None:
            self.at(self.reshard_at, self._start_reshard)
        for when, duration in self.kv_plan:
            self.at(when, functools.partial(self._kv_outage, duration))

        def overdue() -> str | None:
            if self.faulty() or self.step % 8 or self.faults_ended_at is None:
                return None
            if self.t > self.faults_ended_at + self.bound():
                return f"not converged {self.bound():.0f} s after the faults stopped: {self._describe()}"
            return None

        converged_at = self._drive(trace, done=lambda: not self.faulty() and self.converged(), overdue=overdue)
        return SimResult(
            seed=self.seed,
            steps=self.step,
            time=self.t,
            identifies=self.gateway.identifies,
            resumes=self.gateway.resumes,
            replay_overflows=self.gateway.overflows,
            restarts=self.restarts,
            host_deaths=self.deaths,
            converged_after=math.nan if converged_at is None or self.faults_ended_at is None
            else converged_at - self.faults_ended_at,
            roll=self.roll_state.value if self.roll_state is not None else None,
            reshard=self.reshard_state.value if self.reshard_state is not None else None,
            reshard_error=self.reshard_error,
            reshards=int(self.reshard_requested),
            reshard_restarts=self.reshard_restarts,
            reshard_carried_on=self.reshard_carried_on,
            kv_outages=self.kv_outages,
            kv_refused=self.kv_refused,
        )

    def _drive(
        self,
        trace: typing.Callable[[str], None] | None,
        *,
        done: typing.Callable[[], bool],
        overdue: typing.Callable[[], str | None],
    ) -> float | None:
        """Carry out the queued actions in time order, checking every invariant after each, until ``done()``
        (asked every 8 steps); returns when that was (None: the queue ran dry). ``overdue()``, asked after every
        step, fails the run with what it says."""
        while self._queue:
            when, _, action = heapq.heappop(self._queue)
            self.t = when
            self.step += 1
            action()
            self.check()
            if trace is not None:
                trace(self._describe())
            if self.step % 8 == 0 and done():
                return self.t
            late = overdue()
            if late is not None:
                self.fail(late)
        return None

    def run_boot(self, *, limit: float | None = None, trace: typing.Callable[[str], None] | None = None) -> SimResult:
        """A cold start without faults: run until every shard is READY once and the bot has converged.

        Use with explicit `Params` (``fault_time`` 0). Every invariant is checked as in `run`; the bot must
        converge within ``limit`` seconds (default: twice Discord's floor plus a minute).
        """
        p = self.p
        rounds = -(-p.shards // p.max_concurrency)
        limit = 2 * rounds * WINDOW + 60.0 if limit is None else limit
        self.shell = Shell(self, None)
        if p.events:
            self.at(0.0, self._gateway_tick)
        converged_at = self._drive(
            trace, done=lambda: len(self.ready_at) == p.shards and self.converged(),
            overdue=lambda: f"the boot has not converged after {limit:.0f} s: {len(self.ready_at)} shards READY"
            if self.t > limit else None,
        )
        if self.shell is not None:
            self.full_checked_at = self.step - FULL_CHECK_EVERY  # a last check of every row
            self.after_orchestrator(self.shell)
        return SimResult(
            seed=self.seed,
            steps=self.step,
            time=self.t,
            identifies=self.gateway.identifies,
            resumes=self.gateway.resumes,
            replay_overflows=self.gateway.overflows,
            restarts=self.restarts,
            host_deaths=self.deaths,
            converged_after=math.nan if converged_at is None else converged_at,
        )

    def _describe(self) -> str:
        shell = self.shell
        owners = []
        if shell is not None:
            for r in shell.table.shards.values():
                owners.append(f"{r.shard_id}:{r.host_id}@{r.epoch & 0xFFFFFFFF}/{r.epoch >> 32}:{r.status.value[:4]}")
        conns = {s: sorted(self.gateway.conns[c].host_id for c in cs) for s, cs in self.gateway.open_by_shard.items()}
        hosts = {
            h: ({s: f"{slot.phase}@{slot.lease.epoch & 0xFFFFFFFF}" for s, slot in host.slots.items()}, host.cut(),
                "".join(flag for flag, on in (("S", host.shadow), ("M", host.muted), ("R", host.recording)) if on))
            for h, host in self.hosts.items()
            if host.alive
        }
        if shell is not None:
            hosts["table"] = ([h.host_id for h in shell.table.live_hosts()], shell.recovering())  # type: ignore[assignment]
        up = "up" if shell is not None and shell.alive else "down"
        reshard = ""
        if shell is not None and shell.reshard is not None:
            core = shell.reshard
            progress = core.progress
            reshard = f"; reshard {progress.source}->{progress.target} {core.phase.name} {progress.error}"
            if shell.next_table is not None:
                new = [h.host_id for h in shell.next_table.live_hosts()]
                reshard += f" new {new} starting {sorted(shell.set_starts)}"
        return f"t={self.t:.2f} orchestrator {up}; table {owners}; discord {conns}; hosts {hosts}{reshard}"


def run_seed(
    seed: int,
    *,
    fault_time: float | None = None,
    fault_steps: int | None = None,
    trace: typing.Callable[[str], None] | None = None,
    reshard: bool = True,
    window_from: WindowFrom = "ready",
    identify_delay: float = 0.0,
) -> SimResult:
    """Simulate one seed; raises `Violation` when an invariant breaks (``reshard`` and the rest: see `World`)."""
    world = World(seed, fault_time=fault_time, fault_steps=fault_steps, reshard=reshard, window_from=window_from,
                  identify_delay=identify_delay)
    return world.run(trace=trace)
