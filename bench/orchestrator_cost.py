"""Orchestrator cost: what one Orchestrator actor spends per host sync (lease renewal + seq reports).

For each shard count S (default 1024, 4096, 16384) a fresh Orchestrator actor is started with
`ray_shards.launch.start_orchestrator` against the emulator, and S/128 simulated hosts (plain callers of
the public actor API, no real shards) register, take 128 leases each and report them READY. Measured
as CPU time of the Orchestrator's own process (psutil; all its threads, so Ray's (de)serialisation and
RPC handling are included), after subtracting its idle rate measured just before:

* ``sync_cpu_ms``: one ``sync`` call with 128 reports (timeout 0); ``sync_cpu_empty_ms``: with none;
  ``per_report_us`` = their difference / 128; ``per_round_ms``: every host syncing once (S/128 calls);
* ``table_cpu_ms``: one ``table`` call (every host fetches the whole table every 2 s);
* ``idle_cpu_percent``: background work (reconcile loop every 0.2 s, checkpoint of the table every 1 s);
* ``steady``: the real cadence (every host long-polls ``sync`` with a 0.5 s timeout and fetches the table
  every 2 s) for ``--steady-seconds``, for S <= ``--steady-max``: the actor's CPU utilisation and how late
  syncs come back (queueing in the actor).

Also timed in this process (CPU time, pure logic, no Ray): the ShardTable work behind each path
(``pure_logic``). From both, ``model`` gives the CPU of one Orchestrator (fraction of a core) at S shards:
  U(S) = (S/128) * 2/s * sync(128)            every host syncs every 0.5 s (actor-measured, constant)
       + (S/128) * 0.5/s * table(S)           every host fetches the whole table every 2 s (actor, a + b*S)
       + 5/s * (place + rebalance_move)(S)    the reconcile loop every 0.2 s (pure, c*S^k fitted)
       + 1/s * checkpoint JSON(S)             a checkpoint per second while anything changed (pure, c*S^k)
and the shard count where U reaches 50 % and 100 % of a core, now and with the proposed fixes.
Unless ``--no-profile``, it also runs the same Orchestrator class in-process (no Ray RPC, no pickling) at the largest S:
its pure-Python cost per sync and per table call, and the cProfile hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import pstats
import time
import typing

import ray

from bench import _common
from ray_shards.launch import start_orchestrator
from ray_shards.models import SessionState, ShardReport, ShardStatus

PER_HOST = 128
B = 10**6  # daily identify budget of the emulator (never spent: no shard connects)


def _reports(leases: list[typing.Any], bot_id: int) -> list[ShardReport]:
    return [
        ShardReport(
            shard_id=lease.shard_id,
            epoch=lease.epoch,
            status=ShardStatus.READY,
            session=SessionState(
                session_id=f"{lease.shard_id:032x}", seq=123_456, resume_gateway_url="ws://127.0.0.1:1/gateway-resume",
                user_id=bot_id,
            ),
            latency=0.042,
            guilds=1000,
            events=123_456,
        )
        for lease in leases
    ]


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
    with _common.emulator(token, shards=shards, max_concurrency=16, session_total=B, session_remaining=B) as emu:
        return await _measure(emu.rest_url, token, shards, args)


async def _measure(emu_url: str, token: str, shards: int, args: argparse.Namespace) -> dict[str, typing.Any]:
    before = {p.pid for p in _common.own_ray_processes("ray::Orchestrator")}
    link = await start_orchestrator(token, None, rest_url=emu_url, shard_count=shards)
    procs = [p for p in _common.own_ray_processes("ray::Orchestrator") if p.pid not in before]
    assert len(procs) == 1, procs
    cpu = _Cpu(procs[0])
    hosts = math.ceil(shards / PER_HOST)
    reports: dict[str, list[ShardReport]] = {}
    registering = time.monotonic()
    for i in range(hosts):
        host_id = f"sim{i}"
        leases = (await link.register_host(host_id, node_id=None, want=PER_HOST)).leases
        reports[host_id] = _reports(leases, link.bot_id)
        await link.sync(host_id, reports[host_id], timeout=0.0)  # keep it alive while others register
    register_s = time.monotonic() - registering
    assert sum(len(r) for r in reports.values()) == shards
    try:

        async def sync_all(empty: bool = False) -> int:
            await asyncio.gather(*(link.sync(h, [] if empty else r, timeout=0.0) for h, r in reports.items()))
            return hosts

        await sync_all()
        await asyncio.sleep(1.0)
        # Idle: reconcile every 0.2 s and (table dirty) a checkpoint every 1 s. Standalone hosts are dropped
        # after 10 s without a sync, so keep this short.
        idle_start, idle_t = cpu(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        idle_rate = (cpu() - idle_start) / (time.monotonic() - idle_t)
        await sync_all()

        async def sync_rounds(empty: bool = False) -> int:
            done = 0
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline or done < 3 * hosts:
                done += await sync_all(empty)
            return done

        sync_cpu, syncs = await _cpu_of(cpu, idle_rate, sync_rounds)
        empty_cpu, empties = await _cpu_of(cpu, idle_rate, lambda: sync_rounds(True))
        await sync_all()

        async def tables() -> int:
            # Shorter than the 10 s after which silent standalone hosts are dropped.
            done = 0
            deadline = time.monotonic() + min(args.seconds, 5.0)
            while time.monotonic() < deadline or done < 6:
                await link.table()
                done += 1
            return done

        table_cpu, table_calls = await _cpu_of(cpu, idle_rate, tables)
        steady = await _steady(link, cpu, reports, args) if shards <= args.steady_max else None
    finally:
        await link.shutdown(retry_for=3.0)
        ray.kill(link.handle, no_restart=True)
    per_sync = sync_cpu / syncs
    per_empty = empty_cpu / empties
    return {
        "shards": shards,
        "hosts": hosts,
        "register_all_hosts_s": round(register_s, 2),
        "sync_calls": syncs,
        "sync_cpu_ms": round(per_sync * 1e3, 3),
        "sync_cpu_empty_ms": round(per_empty * 1e3, 3),
        "per_report_us": round((per_sync - per_empty) / PER_HOST * 1e6, 2),
        "per_round_ms": round(per_sync * hosts * 1e3, 2),
        "table_calls": table_calls,
        "table_cpu_ms": round(max(table_cpu, 0.0) / table_calls * 1e3, 2),
        "idle_cpu_percent": round(idle_rate * 100, 2),
        "steady": steady,
    }


async def _steady(link: typing.Any, cpu: _Cpu, reports: dict[str, list[ShardReport]],
                  args: argparse.Namespace) -> dict[str, typing.Any]:
    """Every simulated host long-polls sync (0.5 s) and fetches the table every 2 s, as real hosts do."""
    late: list[float] = []
    stop = asyncio.Event()

    async def host_loop(host_id: str, host_reports: list[ShardReport], offset: float) -> None:
        await asyncio.sleep(offset)
        last_table = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            await link.sync(host_id, host_reports, timeout=0.5)
            late.append(time.monotonic() - started - 0.5)
            if time.monotonic() - last_table > 2.0:
                last_table = time.monotonic()
                await link.table()

    tasks = [
        asyncio.ensure_future(host_loop(h, r, i * 0.5 / len(reports))) for i, (h, r) in enumerate(reports.items())
    ]
    await asyncio.sleep(1.0)
    late.clear()
    import psutil

    driver = _Cpu(psutil.Process())
    before, driver_before, started = cpu(), driver(), time.monotonic()
    await asyncio.sleep(args.steady_seconds)
    used = cpu() - before
    elapsed = time.monotonic() - started
    driver_used = driver() - driver_before
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "seconds": round(elapsed, 1),
        "cpu_percent": round(used / elapsed * 100, 1),
        "load_generator_cpu_percent": round(driver_used / elapsed * 100, 1),
        "sync_lateness_ms": _common.summary(late, 1000, 1),
        "load1": round(_common.loadavg()[0], 2),
    }


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
    reports = {h: _reports(leases, 1) for h, leases in placed.items()}
    for host_id, host_reports in reports.items():
        table.apply_reports(host_id, host_reports, now)
    some_host, some_reports = next(iter(reports.items()))
    wire = pickle.dumps(some_reports, protocol=5)
    infos = table.infos()
    return {
        "shards": shards,
        "boot_place_all_ms": round(boot_place * 1e3, 2),
        "apply_reports_128_us": round(_timed(lambda: table.apply_reports(some_host, some_reports, now)) * 1e6, 1),
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


def _model(actor: list[dict[str, typing.Any]], pure: list[dict[str, typing.Any]]) -> dict[str, typing.Any]:
    """CPU of one Orchestrator (fraction of a core) at S shards, 128 per host, from the measured parts."""
    sync_s = sorted(r["sync_cpu_ms"] for r in actor)[len(actor) // 2] / 1e3
    table = _linear_fit([(r["shards"], r["table_cpu_ms"] / 1e3) for r in actor])  # O(S) by construction
    reconcile = _power_fit([(r["shards"], (r["reconcile_place_ms"] + r["reconcile_rebalance_ms"]) / 1e3) for r in pure])
    checkpoint = _power_fit([(r["shards"], r["checkpoint_json_ms"] / 1e3) for r in pure])
    s0 = min(r["shards"] for r in pure)

    def reconcile_at(s: float) -> float:
        return float(reconcile[0] * s ** reconcile[1])

    def parts(s: float, *, fixed: bool = False) -> dict[str, float]:
        hosts = s / PER_HOST
        result = {
            "sync": hosts * 2.0 * sync_s,
            "table_fetches": 0.0 if fixed else hosts * 0.5 * max(table[0] + table[1] * s, 0.0),
            # Fixed: O(S) from the smallest measured size instead of the measured growth.
            "reconcile": 5.0 * (reconcile_at(s0) * s / s0 if fixed else reconcile_at(s)),
            "checkpoint": 1.0 * checkpoint[0] * s ** checkpoint[1],
        }
        result["total"] = sum(result.values())
        return result

    def solve(level: float, *, fixed: bool = False) -> int:
        low, high = 128, 256
        while parts(high, fixed=fixed)["total"] < level and high < 100_000_000:
            low, high = high, high * 2
        while high - low > 64:
            mid = (low + high) // 2
            low, high = (mid, high) if parts(mid, fixed=fixed)["total"] < level else (low, mid)
        return high

    return {
        "sync_cpu_ms_per_call_128_reports": round(sync_s * 1e3, 3),
        "fits_c_times_S_pow_k": {
            "table_call_s_linear_a_plus_b_S": [round(table[0], 6), round(table[1], 12)],
            "reconcile_pass_s": [round(reconcile[0], 12), round(reconcile[1], 2)],
            "checkpoint_json_s": [round(checkpoint[0], 12), round(checkpoint[1], 2)],
        },
        "cpu_percent_at": {
            str(s): {k: round(v * 100, 1) for k, v in parts(s).items()} for s in (1024, 4096, 8192, 16384)
        },
        "saturates_50_percent_at_shards": solve(0.5),
        "saturates_100_percent_at_shards": solve(1.0),
        "if_fixed": {
            "assumes": "hosts fetch table deltas (no full-table fetches) and reconcile is O(S), sync cost unchanged",
            "saturates_100_percent_at_shards": solve(1.0, fixed=True),
        },
    }


async def _profile(shards: int) -> dict[str, typing.Any]:
    token = _common.new_token()
    with _common.emulator(token, shards=shards, max_concurrency=16, session_total=B, session_remaining=B) as emu:
        return await _profile_in(emu.rest_url, token, shards)


async def _profile_in(emu_url: str, token: str, shards: int) -> dict[str, typing.Any]:
    """cProfile an in-process Orchestrator (same code, no Ray RPC) through syncs and table fetches."""
    from ray_shards.auth import bot_id_from_token
    from ray_shards.orchestrator import Orchestrator, OrchestratorOptions

    bot_id = bot_id_from_token(token)
    orchestrator = Orchestrator(bot_id, OrchestratorOptions(rest_url=emu_url, shard_count=shards))
    capability = await orchestrator.initialise(token)
    reports = {}
    for i in range(math.ceil(shards / PER_HOST)):
        leases = (await orchestrator.register_host(capability, f"sim{i}", node_id=None, want=PER_HOST)).leases
        reports[f"sim{i}"] = _reports(leases, bot_id)
        await orchestrator.sync(capability, f"sim{i}", reports[f"sim{i}"], timeout=0.0)
    started = time.perf_counter()
    for _ in range(10):
        for host_id, host_reports in reports.items():
            await orchestrator.sync(capability, host_id, host_reports, timeout=0.0)
    sync_us = (time.perf_counter() - started) / (10 * len(reports)) * 1e6
    started = time.perf_counter()
    for _ in range(10):
        await orchestrator.table(capability)
    table_ms = (time.perf_counter() - started) / 10 * 1e3
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(10):
        for host_id, host_reports in reports.items():
            await orchestrator.sync(capability, host_id, host_reports, timeout=0.0)
        await orchestrator.table(capability)
    profiler.disable()
    await orchestrator.shutdown(capability, timeout=0.1)
    task = getattr(orchestrator, "_reconcile_task", None)
    if task is not None:
        task.cancel()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
    return {
        "shards": shards,
        "sync_128_reports_us": round(sync_us, 1),
        "table_ms": round(table_ms, 2),
        "top_tottime": [" ".join(line.split()) for line in out.getvalue().splitlines() if line.strip()][-11:],
    }


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    results = []
    profile = None
    pure = []
    for shards in args.shard_counts:
        pure.append(_pure(shards))
        _common.LOGGER.info("%s", pure[-1])
    with _common.local_ray():
        for shards in args.shard_counts:
            result = await _one_size(shards, args)
            _common.LOGGER.info("%s", result)
            results.append(result)
        if args.profile:
            profile = await _profile(args.profile_shards)
    model = _model(results, pure) if len(results) >= 2 else None
    return {
        "load": await sampler.stop(),
        "settings": {"shard_counts": args.shard_counts, "shards_per_host": PER_HOST, "seconds": args.seconds,
                     "steady_seconds": args.steady_seconds, "steady_max": args.steady_max},
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
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--steady-max", type=int, default=4096, help="largest S with a steady-cadence run")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the in-process cProfile run")
    parser.add_argument("--profile-shards", type=int, default=4096, help="S of the in-process cProfile run")
    _common.run("orchestrator_cost", parser, main)


if __name__ == "__main__":
    cli()
