"""Orchestrator cost: what one Orchestrator actor spends on S shards at the hosts' real cadence.

For each shard count S (default 1024, 4096, 16384) a fresh Orchestrator actor is started with
`ray_shards.launch.start_orchestrator` against the emulator, and S/128 simulated hosts (plain callers of
the public actor API, no real shards) follow what `ray_shards.bot.Bot` does (`Bot._sync_forever`,
`Bot._refresh_remote_table`, `Bot.before_identify`, `Bot._on_shard_ready`):

* boot: register (``want`` 128), then for every leased shard ``request_identify`` (sleeping locally for
  the answer's wait) and ``identify_done`` at "READY", then report it READY (``boot``);
* steady: a ``sync`` long poll (``timeout`` = ``Timings.steady_sync_interval``, 2 s, or the longer park the
  Orchestrator names past ``Timings.steady_sync_rate`` (`Timings.steady_park`), as a host whose shards are
  all READY parks; ``sync_interval``, 0.5 s, before that existed) with the host's full state
  and an increasing ``report_seq``, the seq of every session advancing by ``--events-per-sync``; after a
  sync, when more than 2 s passed since the last read, a table delta read (``TableView.read``:
  ``table_since`` with the version held, not parked) and a full read every 30 s (``full_every=30``;
  spread over the hosts as in a long-running bot), or less often past 60 hosts
  (`ray_shards.table_view.full_read_interval`: all hosts together make at most 2 a second).

Measured as CPU time of the Orchestrator's own process (psutil; all its threads, so Ray's (de)serialisation
and RPC handling are included), after subtracting its idle rate measured just before:

* ``sync_cpu_ms``: one ``sync`` with the host's 128 reports as the bot sends them (timeout 0);
  ``sync_cpu_empty_ms``: with none; ``per_report_us`` = their difference / 128;
* ``delta_cpu_ms``: one ``table_since`` delta read with nothing changed; ``full_table_cpu_ms``: one full read;
* ``idle_cpu_percent``: background work (reconcile loop every 0.2 s, checkpoints);
* ``steady``: the real cadence above for ``--steady-seconds``, for S <= ``--steady-max``: the actor's CPU
  utilisation (% of one core) and how late syncs come back (``sync_lateness_ms``: return time minus the
  park; queueing in the actor, and in the load generator when it is busy). The steady phase runs in
  ``--generator-procs`` processes: N >= 2 `SimHostGroup` Ray actors sharing the hosts (default 2), or 1 = this
  process (the old way, which saturates one core at 16,384+ shards); ``generator_cpu_percent_each`` and
  ``generator_loop_lag_ms`` (how late their event loops wake) show whether the generator kept up.

Also timed in this process (CPU time, pure logic, no Ray): the ShardTable work behind each path
(``pure_logic``). From both, ``model`` estimates the CPU of one Orchestrator (fraction of a core) at S shards
at the same cadence:
  U(S) = (S/128) / park * sync(128)          every host syncs once per park (actor-measured)
       + (S/128) * 0.5/s * delta              a delta read every 2 s per host (actor-measured)
       + (S/128) / 30 s  * full_table(S)      a full read every 30 s per host (actor, a + b*S)
       + idle(S)                              reconcile + checkpoints (actor-measured, c*S^k)
Unless ``--no-profile``, it also runs the same Orchestrator class in-process (no Ray RPC, no pickling) at
``--profile-shards``: its pure-Python cost per sync and the cProfile hot spots of syncs at that cadence,
with the reconcile loop and checkpoints running.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import pstats
import random
import time
import typing

import ray

from bench import _common
from ray_shards.launch import start_orchestrator
from ray_shards.models import Lease, SessionState, ShardReport, ShardStatus
from ray_shards.table_view import TableView

try:
    from ray_shards.table_view import full_read_interval
except ImportError:  # a ray_shards from before it (a baseline run): every host reads it all every full_every

    def full_read_interval(full_every: float, hosts: int) -> float:
        return full_every

from ray_shards.timings import Timings

try:
    from ray_shards.models import ReportBatch
except ImportError:  # ray_shards before compact reports (to measure a baseline with this same script)
    ReportBatch = None  # type: ignore[assignment,misc]

# The simulated hosts are standalone callers (no actor handle), which the Orchestrator drops after
# standalone_lease_ttl (10 s) of silence; host actors get host_timeout (30 s) and a health check. Use the
# latter, so that a phase measuring one kind of call cannot get the hosts dropped.
BENCH_TIMINGS = Timings(standalone_lease_ttl=30.0)
# Hosts get the table's changes in their sync answers (HostDirectives.table) and read only the full table
# themselves; before that, a delta read of their own every 2 s.
DELTA_IN_SYNC = hasattr(TableView, "full_due")

PER_HOST = 128
B = 10**6  # daily identify budget of the emulator
# The bot's sync long poll parks for Timings.sync_interval (0.5 s), or Timings.steady_sync_interval once every
# shard of the host is READY and none changed since the last sync (the simulated hosts' steady state). Older
# ray_shards had no steady interval: 0.5 s.
SYNC_INTERVAL = float(getattr(Timings(), "steady_sync_interval", Timings().sync_interval))


def steady_park(hosts: int) -> float:
    """How long a steady host of a bot with ``hosts`` hosts parks: the Orchestrator says it in each answer
    (`Timings.steady_park`, longer than `SYNC_INTERVAL` past `Timings.steady_sync_rate`); older ray_shards had
    no such budget."""
    park = getattr(Timings(), "steady_park", None)
    return float(park(hosts)) if park is not None else SYNC_INTERVAL
TABLE_EVERY = 2.0  # Bot._sync_forever: a table delta read after a sync when 2 s have passed
FULL_EVERY = 30.0  # Bot: TableView(full_every=30.0)


def _hosts_in(delta: typing.Any) -> int:
    """How many hosts own rows in a full read, from its columns (without building a row per shard)."""
    import pickle

    columns = delta.columns if delta.columns is not None else pickle.loads(delta.packed) if delta.packed else None
    owners = {row.host_id for row in delta.rows} | (set(columns.host_ids) if columns is not None else set())
    return len(owners - {None})


class _RowlessView(TableView):
    """A `TableView` that keeps its place (table id, version, full-read clock) but drops the rows it is given.

    A real host holds one view in a process of its own; 64-256 simulated hosts in one generator process held
    64-256 copies of the table (8 M rows at 32,768 shards), and collecting them stalled the generator's event
    loop for seconds. Nor are the rows built (`TableDelta.infos`): a full read's 16,384 rows took the generator
    about 100 ms each time, about once a second per generator process, which stalled every simulated host's
    loop behind it (py-spy: two thirds of a generator's busy samples), while a real host pays it in its own
    process once per full-read interval. Building the rows is the host's cost, not the Orchestrator's, and
    this benchmark measures the Orchestrator.
    """

    __slots__ = ()

    def apply(self, delta: typing.Any) -> list[typing.Any]:
        if delta.full:
            self._full_at = time.monotonic()
            self._interval = full_read_interval(self._full_every, _hosts_in(delta))
        self._table_id, self._version = delta.table_id, delta.version
        return []


class SimHost:
    """One simulated host: its leases and the reports it sends, the way `ray_shards.bot.Bot` builds them."""

    def __init__(self, host_id: str, leases: list[Lease], bot_id: int) -> None:
        self.host_id = host_id
        self.leases = leases
        self.bot_id = bot_id
        self.seq = 123_456
        self.report_seq = time.time_ns() // 1000
        self.view: TableView = _RowlessView(full_every=FULL_EVERY)
        self.sent: dict[int, SessionState] = {}  # as Bot._sent_sessions
        self._batch: ReportBatch | None = None
        self._steady_columns: tuple[list[int], list[int], list[str], list[float], list[int]] | None = None

    def advance(self, events: int) -> None:
        self.seq += events

    def reports(self) -> typing.Any:
        """The host's full state, as `Bot._sync_forever` sends it: a `ReportBatch` of every shard READY with its
        session (in full only when the Orchestrator does not have it yet)."""
        if ReportBatch is None:
            return self.shard_reports()
        if self._steady_columns is not None and len(self.sent) == len(self.leases):
            # Every session is known (the steady state): the same batch `ReportBatch.of` builds, without building
            # 128 ShardReports first (the load generator's own cost, not the Orchestrator's).
            ids, epochs, statuses, latencies, guilds = self._steady_columns
            count = len(ids)
            self._batch = ReportBatch(shard_ids=ids, epochs=epochs, statuses=statuses, seqs=[self.seq] * count,
                                      latencies=latencies, guilds=guilds, events=[self.seq] * count)
            return self._batch
        self._batch = ReportBatch.of(self.shard_reports(), known=self.sent)
        if not self._batch.sessions:
            batch = self._batch
            self._steady_columns = (batch.shard_ids, batch.epochs, batch.statuses, batch.latencies, batch.guilds)
        return self._batch

    def shard_reports(self) -> list[ShardReport]:
        """The host's shards as `Bot._reports` builds them."""
        return [
            ShardReport(
                shard_id=lease.shard_id,
                epoch=lease.epoch,
                status=ShardStatus.READY,
                session=SessionState(
                    session_id=f"{lease.shard_id:032x}", seq=self.seq,
                    resume_gateway_url="wss://gateway-us-east1-b.discord.gg", user_id=self.bot_id,
                ),
                latency=0.042,
                guilds=1000,
                events=self.seq,
            )
            for lease in self.leases
        ]

    def answered(self, directives: typing.Any) -> None:
        """A sync was answered: the Orchestrator holds the sessions it carried (`Bot._note_sent_sessions`)."""
        if getattr(directives, "resend_sessions", False):
            self.sent.clear()
        elif self._batch is not None:
            self.sent.update(self._batch.sessions)
        if getattr(directives, "table", None) is not None:
            self.view.apply(directives.table)

    def state(self) -> dict[str, typing.Any]:
        """What another process needs to go on as this host (`from_state`): no table rows, only the view's place."""
        view = self.view
        return {
            "host_id": self.host_id, "leases": self.leases, "bot_id": self.bot_id, "seq": self.seq,
            "report_seq": self.report_seq, "sent": dict(self.sent),
            "view": (view._table_id, view._version, view._full_at, view._interval),
        }

    @classmethod
    def from_state(cls, state: dict[str, typing.Any]) -> SimHost:
        """The host `state` describes (time.monotonic is machine-wide on Linux, so the view's full-read clock holds)."""
        host = cls(state["host_id"], state["leases"], state["bot_id"])
        host.seq, host.report_seq, host.sent = state["seq"], state["report_seq"], state["sent"]
        host.view._table_id, host.view._version, host.view._full_at, host.view._interval = state["view"]
        return host

    async def sync(self, link: typing.Any, timeout: float) -> typing.Any:
        self.report_seq += 1
        extra = {"table_version": self.view.position} if DELTA_IN_SYNC else {}
        try:
            directives = await link.sync(
                self.host_id, self.reports(), timeout=timeout, report_seq=self.report_seq, **extra
            )
        except BaseException:
            self.sent.clear()
            raise
        self.answered(directives)
        return directives


class _Cpu:
    """CPU seconds of one process (all threads)."""

    def __init__(self, proc: typing.Any) -> None:
        self.proc = proc

    def __call__(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)


async def _cpu_of(cpu: _Cpu, idle_rate: float, work: typing.Callable[[], typing.Awaitable[int]]) -> tuple[float, int]:
    """Run ``work`` (returns how many operations it did); return (busy CPU seconds, operations)."""
    before, started = cpu(), time.monotonic()
    operations = await work()
    # psutil's numbers of another process lag a little: let the actor finish accounting.
    await asyncio.sleep(0.05)
    used = cpu() - before - idle_rate * (time.monotonic() - started)
    return max(used, 0.0), operations


async def _one_size(shards: int, args: argparse.Namespace) -> dict[str, typing.Any]:
    token = _common.new_token()
    with _common.emulator(token, shards=shards, max_concurrency=args.max_concurrency or shards, session_total=B,
                          session_remaining=B) as emu:
        return await _measure(emu.rest_url, token, shards, args)


async def _boot_host(link: typing.Any, host: SimHost, parallel: int) -> None:
    """Identify every leased shard as `Bot.before_identify` / `Bot._on_shard_ready` do, then report READY."""
    gate = asyncio.Semaphore(parallel)

    async def one(lease: Lease) -> None:
        async with gate:
            while True:
                answer = await link.request_identify(host.host_id, lease.shard_id, lease.epoch)
                if answer.granted:
                    break
                await asyncio.sleep(min(max(answer.wait, 0.05), 5.0))
            await link.identify_done(lease.shard_id, None, host_id=host.host_id, epoch=lease.epoch)

    await asyncio.gather(*(one(lease) for lease in host.leases))
    await host.sync(link, 0.0)


async def _measure(emu_url: str, token: str, shards: int, args: argparse.Namespace) -> dict[str, typing.Any]:
    before = {p.pid for p in _common.own_ray_processes("ray::Orchestrator")}
    timings = Timings(standalone_lease_ttl=args.host_ttl)
    link = await start_orchestrator(token, None, rest_url=emu_url, shard_count=shards, timings=timings)
    procs = [p for p in _common.own_ray_processes("ray::Orchestrator") if p.pid not in before]
    assert len(procs) == 1, procs
    cpu = _Cpu(procs[0])
    # Started now, so that their processes are up (and idle) before the steady phase hands them the hosts.
    groups = start_groups(args.generator_procs) if args.generator_procs > 1 else []
    await asyncio.gather(*(group.ready.remote() for group in groups))
    count = math.ceil(shards / PER_HOST)
    hosts: list[SimHost] = []
    registering, boot_cpu = time.monotonic(), cpu()
    keepalive = asyncio.Event()

    async def keep_registered_alive() -> None:
        # Hosts that registered sync while the others register (they would be dropped after 10 s otherwise).
        while not keepalive.is_set():
            await asyncio.gather(*(h.sync(link, 0.0) for h in list(hosts)))
            await asyncio.sleep(SYNC_INTERVAL)

    alive = asyncio.ensure_future(keep_registered_alive())
    for i in range(count):
        host_id = f"sim{i}"
        leases = (await link.register_host(host_id, node_id=None, want=PER_HOST)).leases
        host = SimHost(host_id, leases, link.bot_id)
        await _boot_host(link, host, args.identify_parallel)
        hosts.append(host)
    keepalive.set()
    await alive
    boot = {"seconds": round(time.monotonic() - registering, 2), "actor_cpu_s": round(cpu() - boot_cpu, 2)}
    assert sum(len(h.leases) for h in hosts) == shards
    try:

        async def sync_all(empty: bool = False) -> int:
            if empty:
                await asyncio.gather(*(link.sync(h.host_id, [], timeout=0.0) for h in hosts))
            else:
                for h in hosts:
                    h.advance(args.events_per_sync)
                await asyncio.gather(*(h.sync(link, 0.0) for h in hosts))
            return count

        # Every host holds the table, as a bot does after its first read (one read, applied to every view:
        # 128 full reads in a row by old code at 16k took longer than the hosts may stay silent).
        first = await link.table_since(0, -1, 0.0)
        for h in hosts:
            h.view.apply(first)
        await sync_all()
        await asyncio.sleep(1.0)
        # Idle: reconcile every 0.2 s and checkpoints. Standalone hosts are dropped after 10 s without a sync.
        idle_start, idle_t = cpu(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        idle_rate = (cpu() - idle_start) / (time.monotonic() - idle_t)
        await sync_all()

        async def sync_rounds(empty: bool = False) -> int:
            done = 0
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline or done < 3 * count:
                done += await sync_all(empty)
            return done

        sync_cpu, syncs = await _cpu_of(cpu, idle_rate, sync_rounds)
        empty_cpu, empties = await _cpu_of(cpu, idle_rate, lambda: sync_rounds(True))
        await sync_all()

        async def reads(full: bool) -> int:
            done = 0
            deadline = time.monotonic() + min(args.seconds, 5.0)
            while time.monotonic() < deadline or done < 6:
                host = hosts[done % count]
                await host.view.read(link, full=full)
                done += 1
            return done

        for h in hosts:
            h.view._full_at = time.monotonic()  # no full read is due during the delta phase
        delta_cpu, delta_calls = await _cpu_of(cpu, idle_rate, lambda: reads(False))
        await sync_all()
        full_cpu, full_calls = await _cpu_of(cpu, idle_rate, lambda: reads(True))
        steady = await _steady(link, cpu, hosts, args, groups) if shards <= args.steady_max else None
    finally:
        await link.shutdown(retry_for=3.0)
        ray.kill(link.handle, no_restart=True)
        for group in groups:
            ray.kill(group, no_restart=True)
    per_sync = sync_cpu / syncs
    per_empty = empty_cpu / empties
    return {
        "shards": shards,
        "hosts": count,
        "boot": boot,
        "sync_calls": syncs,
        "sync_cpu_ms": round(per_sync * 1e3, 3),
        "sync_cpu_empty_ms": round(per_empty * 1e3, 3),
        "per_report_us": round((per_sync - per_empty) / PER_HOST * 1e6, 2),
        "per_round_ms": round(per_sync * count * 1e3, 2),
        "delta_cpu_ms": round(delta_cpu / delta_calls * 1e3, 3),
        "full_table_cpu_ms": round(full_cpu / full_calls * 1e3, 2),
        "idle_cpu_percent": round(idle_rate * 100, 2),
        "steady": steady,
    }


class _LoopLag:
    """How late this process's event loop wakes a 0.1 s sleep: the load generator's own queueing."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = False
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stop:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            self.samples.append(time.monotonic() - before - 0.1)

    async def stop(self) -> None:
        self._stop = True
        await self._task


async def _host_loop(
    link: typing.Any, host: SimHost, offset: float, *, stop: asyncio.Event, late: list[float], calls: dict[str, int],
    rng: random.Random, events_per_sync: int, park: bool = True,
) -> None:
    """`Bot._sync_forever`'s loop for one simulated host: sync long poll, delta read every 2 s, full every 30 s+.

    Without ``park`` (``--no-park``, an experiment): the sync is answered at once and the host sleeps out the
    interval itself; its lateness is then the call's round trip.
    """
    await asyncio.sleep(offset)
    last_table = time.monotonic() - rng.uniform(0, TABLE_EVERY)
    interval = SYNC_INTERVAL
    while not stop.is_set():
        started = time.monotonic()
        host.advance(events_per_sync)
        asked = interval
        directives = await host.sync(link, asked if park else 0.0)
        calls["sync"] += 1
        # As Bot._sync_forever: the next steady park is the one the Orchestrator named in this answer.
        interval = getattr(directives, "steady_interval", None) or interval
        if not park:
            late.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, asked - (time.monotonic() - started)))
        elif not directives:
            late.append(time.monotonic() - started - asked)
        full = host.view.full_due() if DELTA_IN_SYNC else time.monotonic() - host.view._full_at > FULL_EVERY
        if time.monotonic() - last_table > TABLE_EVERY and (full or not DELTA_IN_SYNC):
            last_table = time.monotonic()
            await host.view.read(link)
            calls["full" if full else "delta"] += 1


class SimHostGroup:
    """A share of the simulated hosts running their steady cadence in a process of its own (a Ray actor).

    One Python process cannot simulate 128+ hosts at the real cadence on this machine (65 % of a core at 16,384
    shards, saturated at 32,768), so with ``--generator-procs N`` (N >= 2) N of these run the steady phase, each
    on its own event loop with its own link (capability) to the Orchestrator, and report their lateness samples,
    call counts, event-loop lag and their own CPU time for the measured window.
    """

    def __init__(self) -> None:
        import psutil

        self.cpu = _Cpu(psutil.Process())
        self.link: typing.Any = None
        self.tasks: list[asyncio.Future[None]] = []
        self.late: list[float] = []
        self.calls = {"sync": 0, "delta": 0, "full": 0}
        self.stop_event: asyncio.Event | None = None
        self.lag: _LoopLag | None = None
        self.marked = (0.0, 0.0)

    async def ready(self) -> int:
        import os

        return os.getpid()

    async def start(
        self, token: str, states: list[tuple[dict[str, typing.Any], float]], events_per_sync: int, seed: int,
        park: bool = True,
    ) -> int:
        """Take over ``states`` (host state, start offset) and run their loops until `stop`; returns this pid."""
        import os

        from ray_shards.link import OrchestratorLink

        self.link = OrchestratorLink(token, None)
        await self.link.connect()
        self.late, self.calls = [], dict.fromkeys(self.calls, 0)
        self.stop_event = asyncio.Event()
        rng = random.Random(seed)
        self.tasks = [
            asyncio.ensure_future(_host_loop(self.link, SimHost.from_state(state), offset, stop=self.stop_event,
                                             late=self.late, calls=self.calls, rng=rng,
                                             events_per_sync=events_per_sync, park=park))
            for state, offset in states
        ]
        self.lag = _LoopLag()
        return os.getpid()

    async def mark(self) -> None:
        """The measured window starts: forget the warm-up."""
        self.late.clear()
        self.calls.update(dict.fromkeys(self.calls, 0))
        if self.lag is not None:
            self.lag.samples.clear()
        self.marked = (self.cpu(), time.monotonic())

    async def collect(self) -> dict[str, typing.Any]:
        """The window ends: its samples, calls and this process's CPU seconds since `mark`."""
        cpu_s, elapsed = self.cpu() - self.marked[0], time.monotonic() - self.marked[1]
        failed = [t for t in self.tasks if t.done() and not t.cancelled() and t.exception() is not None]
        return {
            "late": list(self.late), "calls": dict(self.calls), "cpu_s": cpu_s, "elapsed": elapsed,
            "hosts": len(self.tasks), "loop_lag": list(self.lag.samples) if self.lag is not None else [],
            "failed_hosts": len(failed), "first_error": repr(failed[0].exception()) if failed else None,
        }

    async def stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.lag is not None:
            await self.lag.stop()
        if self.link is not None:
            await self.link.revoke()


def start_groups(count: int) -> list[typing.Any]:
    """``count`` `SimHostGroup` actors (no CPU reservation, like the Orchestrator), not yet running anything."""
    group_class: typing.Any = ray.remote(SimHostGroup)
    return [group_class.options(num_cpus=0, max_concurrency=1000).remote() for _ in range(count)]


def _spread_full_reads(hosts: list[SimHost]) -> None:
    rng = random.Random(7)
    for host in hosts:
        # A long-running bot's full reads are spread over the 30 s, not all due at once.
        host.view._full_at = time.monotonic() - rng.uniform(0, full_read_interval(FULL_EVERY, len(hosts)))


def _steady_result(
    elapsed: float, used: float, counted: dict[str, int], late: list[float], load_before: float,
    generators: list[dict[str, typing.Any]], driver_percent: float, hosts: int,
) -> dict[str, typing.Any]:
    lag = [x for g in generators for x in g["loop_lag"]]
    each = [round(g["cpu_s"] / g["elapsed"] * 100, 1) for g in generators]
    return {
        "seconds": round(elapsed, 1),
        "cpu_percent": round(used / elapsed * 100, 1),
        # All the generator processes together (with one, the old meaning: the driver's own CPU).
        "load_generator_cpu_percent": round(sum(each), 1),
        "generator_procs": len(generators),
        "generator_cpu_percent_each": each,
        "generator_hosts_each": [g["hosts"] for g in generators],
        "generator_loop_lag_ms": _common.summary(lag, 1000, 1),
        "driver_cpu_percent": driver_percent,
        "failed_hosts": sum(g["failed_hosts"] for g in generators),
        "first_error": next((g["first_error"] for g in generators if g["first_error"]), None),
        "calls_per_s": {k: round(v / elapsed, 1) for k, v in counted.items()},
        # What the hosts' cadence asks for: one sync per host per steady park (jitter shortens parks a little).
        "steady_park_s": round(steady_park(hosts), 3),
        "syncs_due_per_s": round(hosts / steady_park(hosts), 1),
        "sync_lateness_ms": _common.summary(late, 1000, 1),
        "load1_before_after": [round(load_before, 2), round(_common.loadavg()[0], 2)],
    }


async def _steady(
    link: typing.Any, cpu: _Cpu, hosts: list[SimHost], args: argparse.Namespace, groups: list[typing.Any]
) -> dict[str, typing.Any]:
    """Every simulated host runs `Bot._sync_forever`'s loop: sync long poll, delta read every 2 s, full every 30 s.

    In this process (``--generator-procs 1``, the old way) or spread over the `SimHostGroup` actors ``groups``.
    """
    import psutil

    _spread_full_reads(hosts)
    driver = _Cpu(psutil.Process())
    if not groups:
        return await _steady_here(link, cpu, hosts, args, driver)
    spread = steady_park(len(hosts)) / len(hosts)
    shares = [[(h.state(), i * spread) for i, h in enumerate(hosts) if i % len(groups) == g]
              for g in range(len(groups))]
    await asyncio.gather(*(group.start.remote(link.token, share, args.events_per_sync, 7 + g, args.park)
                           for g, (group, share) in enumerate(zip(groups, shares, strict=True))))
    await asyncio.sleep(2.0)
    await asyncio.gather(*(group.mark.remote() for group in groups))
    load_before, used, elapsed, driver_used = await _measured_window(cpu, driver, args.steady_seconds)
    collected = await asyncio.gather(*(group.collect.remote() for group in groups))
    await asyncio.gather(*(group.stop.remote() for group in groups))
    counted = {k: sum(c["calls"][k] for c in collected) for k in ("sync", "delta", "full")}
    late = [x for c in collected for x in c["late"]]
    return _steady_result(elapsed, used, counted, late, load_before, list(collected),
                          round(driver_used / elapsed * 100, 1), len(hosts))


async def _measured_window(cpu: _Cpu, driver: _Cpu, seconds: float) -> tuple[float, float, float, float]:
    """Wait ``seconds`` while the cadence runs: the load before, and the actor's CPU, the wall time and the
    driver's CPU over that window."""
    load_before = _common.loadavg()[0]
    before, driver_before, started = cpu(), driver(), time.monotonic()
    await asyncio.sleep(seconds)
    return load_before, cpu() - before, time.monotonic() - started, driver() - driver_before


async def _steady_here(
    link: typing.Any, cpu: _Cpu, hosts: list[SimHost], args: argparse.Namespace, driver: _Cpu
) -> dict[str, typing.Any]:
    """The steady cadence of every host in this one process (the driver)."""
    late: list[float] = []
    calls = {"sync": 0, "delta": 0, "full": 0}
    stop = asyncio.Event()
    rng = random.Random(7)
    spread = steady_park(len(hosts)) / len(hosts)
    tasks = [
        asyncio.ensure_future(_host_loop(link, h, i * spread, stop=stop, late=late, calls=calls,
                                         rng=rng, events_per_sync=args.events_per_sync, park=args.park))
        for i, h in enumerate(hosts)
    ]
    lag = _LoopLag()
    await asyncio.sleep(2.0)
    late.clear()
    calls.update(dict.fromkeys(calls, 0))
    lag.samples.clear()
    load_before, used, elapsed, driver_used = await _measured_window(cpu, driver, args.steady_seconds)
    counted = dict(calls)
    samples = list(lag.samples)
    stop.set()
    await asyncio.gather(*tasks)
    await lag.stop()
    here = {"late": late, "calls": counted, "cpu_s": driver_used, "elapsed": elapsed, "hosts": len(hosts),
            "loop_lag": samples, "failed_hosts": 0, "first_error": None}
    return _steady_result(elapsed, used, counted, late, load_before, [here], round(driver_used / elapsed * 100, 1),
                          len(hosts))


def _timed(function: typing.Callable[[], object], at_least: float = 0.2) -> float:
    """CPU seconds of this process per call of ``function`` (repeated for at least ``at_least`` CPU s).

    CPU time, not wall time: other processes on the machine then barely disturb it.
    """
    calls, started = 0, time.process_time()
    while True:
        function()
        calls += 1
        elapsed = time.process_time() - started
        if elapsed >= at_least and calls >= 3:
            return elapsed / calls


def _pure(shards: int) -> dict[str, typing.Any]:
    """The pure-logic ShardTable operations behind each Orchestrator path, timed in this process (no Ray)."""
    import json
    import pickle

    from ray_shards.table import ShardTable

    now = time.time()
    hosts = math.ceil(shards / PER_HOST)
    table = ShardTable(shards)
    for i in range(hosts):
        table.register_host(f"sim{i}", node_id=None, want=PER_HOST, has_handle=True, now=now)
    started = time.process_time()
    placed = table.place()
    boot_place = time.process_time() - started
    sims = {h: SimHost(h, leases, 1) for h, leases in placed.items()}
    for host_id, sim in sims.items():
        table.apply_reports(host_id, sim.reports(), now)
    some = next(iter(sims.values()))
    some.sent = {r.shard_id: r.session for r in some.shard_reports() if r.session is not None}
    some_reports = some.reports()
    wire = pickle.dumps(some_reports, protocol=5)
    infos = table.infos()
    return {
        "shards": shards,
        "boot_place_all_ms": round(boot_place * 1e3, 2),
        "apply_reports_128_us": round(_timed(lambda: table.apply_reports(some.host_id, some_reports, now)) * 1e6, 1),
        "unpickle_reports_128_us": round(_timed(lambda: pickle.loads(wire)) * 1e6, 1),
        "reconcile_place_ms": round(_timed(table.place) * 1e3, 3),
        "reconcile_rebalance_ms": round(_timed(table.rebalance_move) * 1e3, 3),
        "table_infos_ms": round(_timed(table.infos) * 1e3, 3),
        "table_pickle_ms": round(_timed(lambda: pickle.dumps(infos, protocol=5)) * 1e3, 3),
        "checkpoint_json_ms": round(_timed(lambda: json.dumps(table.to_json())) * 1e3, 3),
    }


def _power_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares of log y = log c + k log x; returns (c, k)."""
    usable = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(usable) < 2:
        return 0.0, 1.0
    n = len(usable)
    mean_x = sum(x for x, _ in usable) / n
    mean_y = sum(y for _, y in usable) / n
    k = sum((x - mean_x) * (y - mean_y) for x, y in usable) / sum((x - mean_x) ** 2 for x, _ in usable)
    return math.exp(mean_y - k * mean_x), k


def _linear_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares of y = a + b x; returns (a, b)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0
    return mean_y - b * mean_x, b


def _model(actor: list[dict[str, typing.Any]]) -> dict[str, typing.Any]:
    """CPU of one Orchestrator (fraction of a core) at S shards, 128 per host, from the actor-measured parts."""
    sync_s = sorted(r["sync_cpu_ms"] for r in actor)[len(actor) // 2] / 1e3
    delta_s = sorted(r["delta_cpu_ms"] for r in actor)[len(actor) // 2] / 1e3
    full = _linear_fit([(r["shards"], r["full_table_cpu_ms"] / 1e3) for r in actor])
    idle = _power_fit([(r["shards"], max(r["idle_cpu_percent"], 0.01) / 100) for r in actor])

    def parts(s: float) -> dict[str, float]:
        hosts = s / PER_HOST
        result = {
            "sync": hosts / steady_park(round(hosts)) * sync_s,
            "delta_reads": 0.0 if DELTA_IN_SYNC else hosts / TABLE_EVERY * delta_s,  # else carried by syncs
            "full_reads": hosts / full_read_interval(FULL_EVERY, round(hosts)) * max(full[0] + full[1] * s, 0.0),
            "idle_reconcile_checkpoint": idle[0] * s ** idle[1],
        }
        result["total"] = sum(result.values())
        return result

    def solve(level: float) -> int:
        low, high = 128, 256
        while parts(high)["total"] < level and high < 100_000_000:
            low, high = high, high * 2
        while high - low > 64:
            mid = (low + high) // 2
            low, high = (mid, high) if parts(mid)["total"] < level else (low, mid)
        return high

    return {
        "sync_cpu_ms_per_call_128_reports": round(sync_s * 1e3, 3),
        "delta_cpu_ms_per_call": round(delta_s * 1e3, 3),
        "fits": {
            "full_table_s_linear_a_plus_b_S": [round(full[0], 6), round(full[1], 12)],
            "idle_fraction_c_times_S_pow_k": [round(idle[0], 12), round(idle[1], 2)],
        },
        "cpu_percent_at": {
            str(s): {k: round(v * 100, 1) for k, v in parts(s).items()} for s in (1024, 4096, 16384, 32768)
        },
        "saturates_50_percent_at_shards": solve(0.5),
        "saturates_100_percent_at_shards": solve(1.0),
    }


async def _profile(shards: int, args: argparse.Namespace) -> dict[str, typing.Any]:
    token = _common.new_token()
    with _common.emulator(token, shards=shards, max_concurrency=args.max_concurrency or shards, session_total=B,
                          session_remaining=B) as emu:
        return await _profile_in(emu.rest_url, token, shards, args)


async def _profile_in(emu_url: str, token: str, shards: int, args: argparse.Namespace) -> dict[str, typing.Any]:
    """cProfile an in-process Orchestrator (same code, no Ray RPC) through a few seconds of the hosts' cadence.

    Every host syncs every 0.5 s (back to back here, timeout 0, spread over the 0.5 s) with advancing seqs,
    and reads a table delta every 2 s; the reconcile loop and its checkpoints run as in the actor.
    """
    from ray_shards.auth import bot_id_from_token
    from ray_shards.orchestrator import Orchestrator, OrchestratorOptions

    bot_id = bot_id_from_token(token)
    orchestrator = Orchestrator(bot_id, OrchestratorOptions(rest_url=emu_url, shard_count=shards,
                                                            timings=BENCH_TIMINGS))
    capability = await orchestrator.initialise(token)

    class _Local:
        """The link's calls, straight into the in-process Orchestrator."""

        bot_id = 0

        async def sync(self, host_id: str, reports: typing.Any, **kwargs: typing.Any) -> typing.Any:
            return await orchestrator.sync(capability, host_id, reports, **kwargs)

        async def table_since(self, table_id: int, version: int, wait: float, **_: typing.Any) -> typing.Any:
            return await orchestrator.table_since(capability, table_id, version, wait)

    local = _Local()
    hosts = []
    for i in range(math.ceil(shards / PER_HOST)):
        leases = (await orchestrator.register_host(capability, f"sim{i}", node_id=None, want=PER_HOST)).leases
        hosts.append(SimHost(f"sim{i}", leases, bot_id))
        await hosts[-1].sync(local, 0.0)
    for host in hosts:
        await host.view.read(local, full=True)  # type: ignore[arg-type]
    started = time.process_time()
    for _ in range(10):
        for host in hosts:
            host.advance(args.events_per_sync)
            await host.sync(local, 0.0)
    sync_us = (time.process_time() - started) / (10 * len(hosts)) * 1e6

    async def cadence(seconds: float) -> int:
        done, begin = 0, time.monotonic()
        while time.monotonic() - begin < seconds:
            round_start = time.monotonic()
            for i, host in enumerate(hosts):
                host.advance(args.events_per_sync)
                await host.sync(local, 0.0)
                if (done // len(hosts) + i) % 4 == 0:
                    await host.view.read(local)  # type: ignore[arg-type]
                done += 1
            await asyncio.sleep(max(0.0, SYNC_INTERVAL - (time.monotonic() - round_start)))
        return done

    profiler = cProfile.Profile()
    cpu_before, wall_before = time.process_time(), time.monotonic()
    profiler.enable()
    syncs = await cadence(args.profile_seconds)
    profiler.disable()
    cpu_used, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    await orchestrator.shutdown(capability, timeout=0.1)
    task = getattr(orchestrator, "_reconcile_task", None)
    if task is not None:
        task.cancel()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    cum = io.StringIO()
    pstats.Stats(profiler, stream=cum).sort_stats("cumulative").print_stats("ray_shards", 15)
    return {
        "shards": shards,
        "sync_128_reports_us": round(sync_us, 1),
        "cadence_seconds": round(wall, 1),
        "cadence_syncs": syncs,
        "cadence_cpu_percent_in_process_with_profiler": round(cpu_used / wall * 100, 1),
        "top_tottime": [" ".join(line.split()) for line in out.getvalue().splitlines() if line.strip()][-16:],
        "top_cumulative_ray_shards": [
            " ".join(line.split()) for line in cum.getvalue().splitlines() if "ray_shards" in line
        ][-15:],
    }


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    results = []
    profile = None
    pure = []
    if args.pure:
        for shards in args.shard_counts:
            pure.append(_pure(shards))
            _common.LOGGER.info("%s", pure[-1])
    with _common.local_ray():
        if args.profile:
            profile = await _profile(args.profile_shards, args)
            _common.LOGGER.info("%s", profile)
        if not args.profile_only:
            for shards in args.shard_counts:
                result = await _one_size(shards, args)
                _common.LOGGER.info("%s", result)
                results.append(result)
    model = _model(results) if len(results) >= 2 else None
    return {
        "load": await sampler.stop(),
        "settings": {"shard_counts": args.shard_counts, "shards_per_host": PER_HOST, "seconds": args.seconds,
                     "steady_seconds": args.steady_seconds, "steady_max": args.steady_max,
                     "events_per_sync": args.events_per_sync, "generator_procs": args.generator_procs,
                     "max_concurrency": args.max_concurrency or "= shards", "steady_park": args.park},
        "actor": results,
        "pure_logic": pure,
        "model": model,
        "profile_in_process": profile,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard-counts", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 4096, 16384])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per hammering phase (default 4)")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--steady-max", type=int, default=32768, help="largest S with a steady-cadence run")
    parser.add_argument("--events-per-sync", type=int, default=3,
                        help="how far every session's seq advances between two syncs (default 3)")
    parser.add_argument("--max-concurrency", type=int, default=0,
                        help="the emulator's max_concurrency (default 0: = shards, so the boot is not rate-limited)")
    parser.add_argument("--host-ttl", type=float, default=BENCH_TIMINGS.standalone_lease_ttl,
                        help="seconds of silence after which a simulated host is dropped (default 30; the 32k "
                             "boot on a loaded 2-core machine needed more)")
    parser.add_argument("--generator-procs", type=int, default=2,
                        help="processes simulating the hosts' steady cadence: 1 = this process (the old way), N >= 2 = "
                             "N SimHostGroup Ray actors sharing the hosts (default 2); the boot and the per-call "
                             "phases stay in this process")
    parser.add_argument("--no-park", dest="park", action="store_false",
                        help="experiment: steady hosts sync without parking (timeout 0) and sleep the interval "
                             "themselves, to tell what the parked long poll costs the actor")
    parser.add_argument("--identify-parallel", type=int, default=32, help="identifies in flight per simulated host")
    parser.add_argument("--no-pure", dest="pure", action="store_false", help="skip the in-process ShardTable timings")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the in-process cProfile run")
    parser.add_argument("--profile-only", action="store_true", help="only the in-process cProfile run")
    parser.add_argument("--profile-shards", type=int, default=16384, help="S of the in-process cProfile run")
    parser.add_argument("--profile-seconds", type=float, default=6.0)
    _common.run("orchestrator_cost", parser, main)


if __name__ == "__main__":
    cli()
