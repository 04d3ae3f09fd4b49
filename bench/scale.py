"""Scale: 1024 shards over 8 ShardHost actors on this machine, watched for ``--minutes`` (default 5).

The emulator (``--max-concurrency``, default the shard count, enforcing Discord's 5 s identify window;
heartbeat interval ``--heartbeat-ms``, default 10 s; one guild per shard) runs in this process; the
benchmark wraps its gateway's payload handler to note the arrival time of every heartbeat (op 1) per shard
(bench-side instrumentation only). Reported:

* boot: whole `BotDeployment.start` time and first IDENTIFY -> last IDENTIFY (the emulator sends READY in
  the same handler as it accepts an IDENTIFY, so this is also first IDENTIFY -> last READY sent), against
  Discord's floor ``(ceil(N/c)-1) * 5 s`` and the target ``1.05 * floor + 2 s``; every shard READY;
* heartbeats: per shard the gaps between consecutive heartbeats over the window (and the silence at
  either end of it); ``late`` counts gaps longer than interval + 1 s; hikari's heartbeat ACK latency
  as the hosts report it to the Orchestrator table;
* zombie reconnects: IDENTIFYs, RESUMEs and closes the emulator saw after boot (all must be 0);
* CPU: process CPU time of each host actor, the Orchestrator and this process (the emulator) over the
  window, as % of one core; memory: USS of each host (``ShardHost.memory()``) and of the Orchestrator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import time
import typing

from bench import _common
from ray_shards import BotDeployment, Client, ShardStatus
from ray_shards.timings import Timings

HEARTBEATS: dict[int, list[float]] = {}
_RECORDING = {"on": False}


@contextlib.contextmanager
def _heartbeat_probe() -> typing.Iterator[None]:
    """Note the arrival (monotonic) of every op 1 per shard id, in this process's emulator."""
    from ray_shards.emulator import gateway

    original = gateway.Gateway._on_payload

    def on_payload(self: typing.Any, conn: typing.Any, op: int, data: object) -> None:
        if op == 1 and _RECORDING["on"] and conn.shard_id is not None:
            HEARTBEATS.setdefault(conn.shard_id, []).append(time.monotonic())
        original(self, conn, op, data)

    gateway.Gateway._on_payload = on_payload  # type: ignore[method-assign]
    try:
        yield
    finally:
        gateway.Gateway._on_payload = original  # type: ignore[method-assign]


async def _boot_failed(emu: typing.Any, args: argparse.Namespace, sampler: _common.LoadSampler, exc: Exception,
                       after: float) -> dict[str, typing.Any]:
    """`BotDeployment.start` raised: report what the emulator saw instead of the steady-state numbers."""
    stats = emu.control.stats()
    by_server = [c for c in stats["closes"] if c["by"] == "server"]
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "hosts": args.hosts, "minutes": args.minutes,
                     "host_timeout_s": args.host_timeout if args.host_timeout is not None else Timings().host_timeout,
                     "heartbeat_interval_ms": args.heartbeat_ms, "max_concurrency": _concurrency(args)},
        "boot_failed": f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
        "boot_failed_after_s": round(after, 1),
        "emulator": {"identifies": stats["identifies"], "resumes": stats["resumes"],
                     "closes_by_client": len(stats["closes"]) - len(by_server), "closes_by_server": len(by_server),
                     "rate_limit_violations": stats["rate_limit_violations"], "split_brain": stats["split_brain"]},
        "targets": {"all_ready": False, "heartbeats_on_time": None, "no_zombie_reconnects": None},
    }


def _concurrency(args: argparse.Namespace) -> int:
    return int(args.max_concurrency or args.shards)


def _floor(args: argparse.Namespace) -> float:
    """Discord's floor for a cold boot: one IDENTIFY per bucket per 5 s window."""
    return (math.ceil(args.shards / _concurrency(args)) - 1) * 5.0


def _cpu(proc: typing.Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    import psutil

    sampler = _common.LoadSampler()
    sampler.start()
    token = _common.new_token()
    interval = args.heartbeat_ms / 1000
    with _heartbeat_probe(), _common.local_ray(), _common.emulator(
        token, shards=args.shards, max_concurrency=_concurrency(args), guilds=args.shards,
        heartbeat_interval_ms=args.heartbeat_ms, session_total=10_000, session_remaining=10_000,
    ) as emu:
        started = time.monotonic()
        try:
            deployment = await BotDeployment.start(
                token, shard_count=args.shards, subprocess_count=args.hosts, rest_url=emu.rest_url,
                timings=Timings() if args.host_timeout is None else Timings(host_timeout=args.host_timeout),
            )
        except Exception as exc:
            return await _boot_failed(emu, args, sampler, exc, time.monotonic() - started)
        boot_s = time.monotonic() - started
        client = Client(token, None, refresh_interval=1.0)
        await client.start()
        try:
            def all_ready() -> bool:
                infos = [s.info for s in client.remote_shards.values()]
                return len(infos) == args.shards and all(i is not None and i.status is ShardStatus.READY for i in infos)

            await _common.wait_for(all_ready, 120, "every shard READY in the table", 0.5)
            identifies = sorted(e["time"] for e in emu.control.identify_log())
            hosts = await asyncio.to_thread(lambda: dict(deployment.hosts))
            described = await asyncio.gather(*(h.describe.remote() for h in hosts.values()))
            host_procs = {d["host_id"]: psutil.Process(d["pid"]) for d in described}
            (orchestrator,) = _common.own_ray_processes("ray::Orchestrator")
            me = psutil.Process()
            base = emu.control.stats()
            base_counts = (len(emu.control.identify_log()), len(emu.control.resume_log()), len(base["closes"]))
            _RECORDING["on"] = True
            window_start = time.monotonic()
            cpu_start = {h: _cpu(p) for h, p in host_procs.items()}
            orch_start, me_start = _cpu(orchestrator), _cpu(me)
            not_ready_samples = 0
            latencies: list[float] = []
            deadline = window_start + args.minutes * 60
            while time.monotonic() < deadline:
                await asyncio.sleep(min(args.sample, max(deadline - time.monotonic(), 0)))
                infos = [s.info for s in client.remote_shards.values()]
                not_ready = sum(1 for i in infos if i is None or i.status is not ShardStatus.READY)
                not_ready_samples += not_ready
                latencies.extend(i.latency for i in infos if i is not None and not math.isnan(i.latency))
                _common.LOGGER.info("t=%.0f s: %s shards not READY, load %s", time.monotonic() - window_start,
                                    not_ready, _common.loadavg())
            window_end = time.monotonic()
            _RECORDING["on"] = False
            elapsed = window_end - window_start
            cpu = {h: round((_cpu(p) - cpu_start[h]) / elapsed * 100, 1) for h, p in host_procs.items()}
            orchestrator_cpu = round((_cpu(orchestrator) - orch_start) / elapsed * 100, 1)
            me_cpu = round((_cpu(me) - me_start) / elapsed * 100, 1)
            memory = await asyncio.gather(*(h.memory.remote() for h in hosts.values()))
            orchestrator_uss = _common.uss_of(orchestrator.pid)["uss"]
            stats = emu.control.stats()
            after = (len(emu.control.identify_log()), len(emu.control.resume_log()), len(stats["closes"]))
        finally:
            await client.close()
            await deployment.stop()
    gaps: list[float] = []
    silent_shards = 0
    for shard_id in range(args.shards):
        beats = HEARTBEATS.get(shard_id, [])
        if not beats:
            silent_shards += 1
            continue
        edges = [beats[0] - window_start, window_end - beats[-1]]
        gaps.extend(b - a for a, b in itertools.pairwise(beats))
        gaps.extend(e for e in edges if e > interval + 1.0)  # a shard that stopped heartbeating shows here
    late = sum(1 for g in gaps if g > interval + 1.0)
    zombies = {"identifies": after[0] - base_counts[0], "resumes": after[1] - base_counts[1],
               "closes": after[2] - base_counts[2]}
    host_uss = [m["uss"] for m in memory]
    span = identifies[-1] - identifies[0]
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "hosts": args.hosts, "minutes": args.minutes,
                     "host_timeout_s": args.host_timeout if args.host_timeout is not None else Timings().host_timeout,
                     "heartbeat_interval_ms": args.heartbeat_ms, "max_concurrency": _concurrency(args)},
        "boot": {"whole_start_s": round(boot_s, 1), "identify_span_s": round(span, 2),
                 "floor_s": _floor(args), "target_s": round(1.05 * _floor(args) + 2.0, 2),
                 "ratio_to_floor": round(span / _floor(args), 4) if _floor(args) else None,
                 "identifies": len(identifies), "rate_limit_violations": stats["rate_limit_violations"]},
        "window_s": round(elapsed, 1),
        "shard_not_ready_samples": not_ready_samples,
        "heartbeats": {
            "count": sum(len(v) for v in HEARTBEATS.values()),
            "expected_about": int(args.shards * elapsed / interval),
            "gap_s": _common.summary(gaps, digits=3),
            "late_gt_interval_plus_1s": late,
            "shards_without_heartbeat": silent_shards,
        },
        "heartbeat_ack_latency_ms": _common.summary(latencies, 1000, 1),
        "after_boot": zombies,
        "split_brain": stats["split_brain"],
        "cpu_percent_of_one_core": {
            "hosts": cpu, "hosts_total": round(sum(cpu.values()), 1), "orchestrator": orchestrator_cpu,
            "bench_and_emulator_process": me_cpu,
        },
        "memory_mib": {
            "host_uss": [round(u / 2**20, 1) for u in host_uss],
            "hosts_total_uss": round(sum(host_uss) / 2**20, 1),
            "per_shard_kib_incl_host_share": round(sum(host_uss) / args.shards / 1024, 1),
            "orchestrator_uss": round(orchestrator_uss / 2**20, 1),
        },
        "targets": {
            "boot_within_1_05_floor_plus_2s": span <= 1.05 * _floor(args) + 2.0
            and stats["rate_limit_violations"] == 0,
            "all_ready": not_ready_samples == 0,
            "heartbeats_on_time": late == 0 and silent_shards == 0,
            "no_zombie_reconnects": zombies == {"identifies": 0, "resumes": 0, "closes": 0},
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1024)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--max-concurrency", type=int, default=0,
                        help="the emulator's max_concurrency (default 0: = --shards, one window)")
    parser.add_argument("--heartbeat-ms", type=int, default=10_000)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between table checks")
    parser.add_argument("--host-timeout", type=float, default=None,
                        help="Timings.host_timeout (default: ray_shards' own, 30 s)")
    _common.run("scale", parser, main)


if __name__ == "__main__":
    cli()
