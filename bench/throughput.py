"""Throughput: dispatch events/s delivered to a user listener in one ShardHost vs plain hikari.GatewayBot.

Both sides run the *same* listener (`bench._listener.on_message`: count, note burst start/end) on the
same emulator, with the same shards, intents, cache settings and compression, one after the other in
the same run (rounds alternate which side goes first):

* ray_shards: `BotDeployment.start` with one ShardHost actor running every shard;
* reference: `bench._plain_bot`, a plain `hikari.GatewayBot` in one subprocess.

Each burst starts the emulator's MESSAGE_CREATE stream at a rate above what one process can consume
(``--rate``) for ``--burst-seconds``, so frames queue up and the consumer runs flat out. The delivery
rate of a burst = events / (last delivery at the listener - start of the stream), both on the
machine's monotonic clock. Also reported: the consumer's CPU time per event (process time
of all its threads, so Ray's own threads are charged to the ShardHost; the process's idle CPU rate,
measured just before each burst, is subtracted) - a view of the same ratio that the load of other
processes on the machine disturbs much less. ``cpu_capacity_ratio`` = plain CPU/event / host CPU/event.

``--watermark`` (issue #12: what the listener-completion watermark costs) measures instead, in one run,
three consumers side by side on the same emulator, rounds rotating which goes first:

* plain: a hikari.GatewayBot with hikari's own event manager;
* current: the same GatewayBot with ray_shards' ``GatedEventManager`` from this checkout;
* baseline: the same with ``GatedEventManager`` from ``--baseline REV`` (default: the parent of the
  commit that added ray_shards/watermark.py), checked out in a temporary ``git worktree add --detach``
  (removed afterwards) and imported through ``PYTHONPATH``.

Each consumer is ``bench/_dispatch_bot.py`` in its own subprocess, so this measures the in-process
event-dispatch path (emulator -> hikari shard -> event manager -> one listener), not a ShardHost in a
Ray worker (no Ray is started in this mode). The JSON holds per-round events/s and CPU per event,
medians, the ratios current/baseline and current/plain, both commits and the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing
import uuid

import ray

from bench import _common
from bench._callbacks import message_counter
from ray_shards import BotDeployment, Client
from ray_shards.timings import Timings

# Minor page faults and context switches, counted per 1,000 events (the whole process; loop_*: the loop thread
# alone): a consumer whose allocator keeps handing pages back to the kernel, or whose loop thread keeps losing the
# GIL or the CPU, pays for it here whatever the load on the machine.
_COUNTERS = ("minflt", "nvcsw", "nivcsw", "loop_nvcsw", "loop_nivcsw")
# Each burst's diagnostic fields, summarised per side in the result, with their rounding.
_DIAGNOSTICS = (
    *((f"{counter}_per_1k_events", 2) for counter in _COUNTERS),
    ("loop_thread_cpu_us_per_event", 1),
    ("other_threads_cpu_us_per_event", 1),
)


async def _bursts(emu: typing.Any, stats: typing.Callable[[], dict[str, typing.Any]], args: argparse.Namespace,
                  side: str, sync_gap: typing.Callable[[], float] | None = None) -> list[dict[str, typing.Any]]:
    results: list[dict[str, typing.Any]] = []
    total = emu.control.stop_stream()
    for index in range(args.warmup + args.bursts):
        idle_start = stats()
        await asyncio.sleep(1.5)
        before = stats()
        idle_cpu_rate = (before["cpu"] - idle_start["cpu"]) / max(before["t"] - idle_start["t"], 1e-3)
        started = time.monotonic()
        emu.control.start_stream(args.rate)
        await asyncio.sleep(args.burst_seconds)
        now_total = emu.control.stop_stream()
        generation_s = time.monotonic() - started
        sent, total = now_total - total, now_total
        if sent < 100:
            # The emulator sent (next to) nothing: no rate to measure. Seen once in round 6 of a 6-round run.
            result = {"side": side, "sent": sent, "stalled": True, "why": "the emulator sent no stream"}
            _common.LOGGER.warning("%s", result)
            results.append(result)
            continue
        target = before["count"] + sent
        longest_gap = 0.0

        def drained() -> bool:
            nonlocal longest_gap
            if sync_gap is not None:
                longest_gap = max(longest_gap, sync_gap())
            return bool(stats()["count"] >= target)  # noqa: B023

        try:
            await _common.wait_for(drained, args.drain_timeout, f"{side} to drain", 0.25)
        except TimeoutError:
            result = {"side": side, "sent": sent, "delivered": stats()["count"] - before["count"], "stalled": True,
                      "longest_sync_gap_s": round(longest_gap, 2)}
            _common.LOGGER.warning("%s", result)
            results.append(result)
            return results
        await asyncio.sleep(0.6)
        after = stats()
        # From the stream's start (this process's clock) to the last delivery (the consumer's CLOCK_MONOTONIC).
        rate = (after["count"] - before["count"]) / (after["last"] - started)
        cpu = after["cpu"] - before["cpu"]
        busy_cpu = cpu - idle_cpu_rate * (after["t"] - before["t"])
        result = {
            "side": side,
            "sent": sent,
            "delivered": after["count"] - before["count"],
            "events_per_s": round(rate, 1),
            "emulator_generation_per_s": round(sent / generation_s, 1),
            "cpu_us_per_event": round(cpu / max(sent, 1) * 1e6, 1),
            "cpu_us_per_event_minus_idle": round(busy_cpu / max(sent, 1) * 1e6, 1),
            "idle_cpu_percent": round(idle_cpu_rate * 100, 2),
            "load1": round(os.getloadavg()[0], 2),
        }
        # The snapshot is taken on the shards' event loop thread: what the loop itself spent, and what every other
        # thread of the process (Ray's core worker, the health loop) spent beside it during the burst.
        loop_cpu = after["loop_cpu"] - before["loop_cpu"]
        result["loop_thread_cpu_us_per_event"] = round(loop_cpu / max(sent, 1) * 1e6, 1)
        result["other_threads_cpu_us_per_event"] = round((cpu - loop_cpu) / max(sent, 1) * 1e6, 1)
        for counter in _COUNTERS:
            result[f"{counter}_per_1k_events"] = round((after[counter] - before[counter]) / max(sent, 1) * 1e3, 2)
        if sync_gap is not None:
            result["longest_sync_gap_s"] = round(longest_gap, 2)
        if index < args.warmup:
            # A fresh consumer's first burst ran 20-40 % slower than its second (caches, allocator arenas,
            # the message cache filling), whichever side it was: kept in the JSON, left out of the ratios.
            result["warmup"] = True
        _common.LOGGER.info("%s", result)
        results.append(result)
    return results


async def _ray_side(emu: typing.Any, token: str, args: argparse.Namespace) -> list[dict[str, typing.Any]]:
    notes_name = f"notes-{uuid.uuid4().hex[:8]}"
    notes = _common.start_notes(notes_name)
    deployment = await BotDeployment.start(
        token, shard_count=args.shards, subprocess_count=1, rest_url=emu.rest_url,
        callback=message_counter(notes_name, switch_interval=args.switch_interval), timings=_timings(args),
    )
    client = Client(token, None, refresh_interval=1.0)  # cheap: only to see the host's sync gaps
    await client.start()
    # The Orchestrator's own measure of each host's silence (`HostSummary.since_sync`), read every 0.25 s.
    # Not the rows' `last_seen` in the Client's copy: the delta table sends a row only when it changes.
    latest_gap = [0.0]

    async def watch_sync_gap() -> None:
        while True:
            status = await client.status()
            gaps = [h.since_sync for h in status.hosts.values() if h.since_sync is not None]
            latest_gap[0] = max(gaps, default=0.0)
            await asyncio.sleep(0.25)

    watcher = asyncio.get_running_loop().create_task(watch_sync_gap())
    try:
        await _common.wait_for(lambda: bool(ray.get(notes.get.remote("stats"))), 30, "host stats")

        def stats() -> dict[str, typing.Any]:
            latest: dict[str, typing.Any] = ray.get(notes.get.remote("stats"))[-1]
            return latest

        def sync_gap() -> float:
            """How long ago the host's last sync reached the Orchestrator (the watcher's latest reading)."""
            if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
                raise RuntimeError("reading the bot's status failed") from watcher.exception()
            return latest_gap[0]

        await asyncio.sleep(1.0)
        slack = ray.get(notes.get.remote("main_thread_timer_slack_ns"))
        young = ray.get(notes.get.remote("gc_threshold"))
        results = await _bursts(emu, stats, args, "ray_shards", sync_gap)
        for result in results:
            result["host_main_thread_timer_slack_ns"] = slack[-1] if slack else None
            result["host_gc_threshold"] = young[-1] if young else None
        return results
    finally:
        watcher.cancel()
        await client.close()
        await deployment.stop()
        ray.kill(notes)


def _timings(args: argparse.Namespace) -> Timings:
    extra: dict[str, typing.Any] = {}
    if args.host_timeout is not None:
        extra["host_timeout"] = args.host_timeout
    if args.timer_slack_ns != "default":
        extra["host_main_thread_timer_slack_ns"] = None if args.timer_slack_ns == "off" else int(args.timer_slack_ns)
    if args.gc_threshold != "default":
        extra["host_gc_threshold"] = None if args.gc_threshold == "off" else int(args.gc_threshold)
    return Timings(identify_window=0.5, **extra)


def _default_off_or_count(option: str, unit: str) -> typing.Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in ("default", "off") and not (value.isdigit() and int(value) >= 1):
            msg = f"{option} takes 'default', 'off' or a whole number of {unit} >= 1, not {value!r}"
            raise argparse.ArgumentTypeError(msg)
        return value
    return parse


async def _plain_side(emu: typing.Any, token: str, args: argparse.Namespace) -> list[dict[str, typing.Any]]:
    plain = await asyncio.to_thread(_common.PlainBot, token, emu.rest_url, args.shards)
    try:
        await plain.wait_ready()

        def stats() -> dict[str, typing.Any]:
            assert plain.latest is not None
            return plain.latest

        await asyncio.sleep(1.0)
        return await _bursts(emu, stats, args, "plain_hikari")
    finally:
        await asyncio.to_thread(plain.stop)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DISPATCH_BOT = os.path.join(_ROOT, "bench", "_dispatch_bot.py")
_WATERMARK_SIDES = ("plain", "current", "baseline")


def _git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", _ROOT, *arguments], check=True, capture_output=True, text=True).stdout.strip()


def _default_baseline() -> str:
    """The parent of the commit that added ray_shards/watermark.py."""
    added = _git("log", "--diff-filter=A", "--format=%H", "--", "ray_shards/watermark.py").splitlines()
    if not added:
        msg = "no commit adds ray_shards/watermark.py; pass --baseline REV"
        raise RuntimeError(msg)
    return _git("rev-parse", f"{added[-1]}^")


@contextlib.contextmanager
def _baseline_tree(rev: str) -> typing.Iterator[str]:
    """A temporary detached worktree of ``rev``; removed (and pruned) on exit, also after a failure."""
    parent = tempfile.mkdtemp(prefix="rsbench_baseline_")
    tree = os.path.join(parent, "tree")
    # A SIGTERM (timeout, kill) would skip the cleanup below and leave a registered worktree behind.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _git("worktree", "add", "--detach", tree, rev)
        yield tree
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _git("worktree", "remove", "--force", tree)
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            _git("worktree", "prune")
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _check_imported_from(path: str, root: str, side: str) -> None:
    """Fail unless the consumer imported ray_shards from ``root`` (PYTHONPATH must beat the editable install)."""
    imported = os.path.realpath(path)
    if not imported.startswith(os.path.realpath(root) + os.sep):
        msg = f"{side}: ray_shards was imported from {imported}, not from {root}"
        raise RuntimeError(msg)


_ALL_CPUS = sorted(os.sched_getaffinity(0))
_CONSUMER_CPUS = {_ALL_CPUS[-1]}
_BENCH_CPUS = set(_ALL_CPUS[:-1]) or _CONSUMER_CPUS
_PINNED = {"consumer": sorted(_CONSUMER_CPUS), "emulator": sorted(_BENCH_CPUS)}


async def _dispatch_side(emu: typing.Any, token: str, args: argparse.Namespace, side: str,
                         root: str) -> list[dict[str, typing.Any]]:
    manager = "plain" if side == "plain" else "gated"
    bot = await asyncio.to_thread(
        _common.PlainBot, token, emu.rest_url, args.shards,
        command=[sys.executable, _DISPATCH_BOT, "--manager", manager], env={"PYTHONPATH": root},
    )
    try:
        await bot.wait_ready()
        assert bot.latest is not None
        _check_imported_from(bot.latest["ray_shards_file"], root, side)
        if args.pin:
            os.sched_setaffinity(bot.pid, _CONSUMER_CPUS)

        def stats() -> dict[str, typing.Any]:
            assert bot.latest is not None
            return bot.latest

        await asyncio.sleep(1.0)
        runs = await _bursts(emu, stats, args, side)
        for run in runs:
            run["event_manager"] = bot.latest["event_manager"]
            run["has_watermark"] = bot.latest["has_watermark"]
        return runs
    finally:
        await asyncio.to_thread(bot.stop)


def _ratio(a: list[float], b: list[float]) -> float | None:
    return round(statistics.median(a) / statistics.median(b), 4) if a and b else None


async def watermark_main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    if args.pin:
        # The consumer on a CPU of its own, the emulator (this process) on the others: on 2 cores the scheduler
        # otherwise moves them onto one CPU now and then, and the same code measured 150 or 205 us/event.
        os.sched_setaffinity(0, _BENCH_CPUS)
    token = _common.new_token()
    head = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "ray_shards"))
    baseline = _git("rev-parse", args.baseline or _default_baseline())
    runs: list[dict[str, typing.Any]] = []
    with _baseline_tree(baseline) as tree, _common.emulator(
        token, shards=args.shards, max_concurrency=args.shards, guilds=args.shards * 2, identify_window_s=0.5
    ) as emu:
        roots = {"plain": _ROOT, "current": _ROOT, "baseline": tree}
        for r in range(args.rounds):
            order = _WATERMARK_SIDES[r % 3:] + _WATERMARK_SIDES[:r % 3]
            for side in order:
                for run in await _dispatch_side(emu, token, args, side, roots[side]):
                    run["round"] = r
                    runs.append(run)
    stalled = [b for b in runs if b.get("stalled")]
    warmups = [b for b in runs if b.get("warmup") and not b.get("stalled")]
    runs = [b for b in runs if not b.get("stalled") and not b.get("warmup")]
    rate = {s: [b["events_per_s"] for b in runs if b["side"] == s] for s in _WATERMARK_SIDES}
    cpu = {s: [b["cpu_us_per_event_minus_idle"] for b in runs if b["side"] == s] for s in _WATERMARK_SIDES}
    per_round = []
    for r in range(args.rounds):
        row: dict[str, typing.Any] = {"round": r}
        for s in _WATERMARK_SIDES:
            values = [b["events_per_s"] for b in runs if b["side"] == s and b["round"] == r]
            row[f"{s}_events_per_s"] = values
            row[f"{s}_cpu_us_per_event"] = [
                b["cpu_us_per_event_minus_idle"] for b in runs if b["side"] == s and b["round"] == r
            ]
        if row["current_events_per_s"] and row["baseline_events_per_s"]:
            row["current_over_baseline"] = round(
                statistics.mean(row["current_events_per_s"]) / statistics.mean(row["baseline_events_per_s"]), 4
            )
        per_round.append(row)
    current_over_baseline = _ratio(rate["current"], rate["baseline"])
    # CPU per event: baseline/current is the capacity ratio (1 = same cost; 0.97 = 3 % more CPU per event).
    cpu_capacity = _ratio(cpu["baseline"], cpu["current"])
    return {
        "load": await sampler.stop(),
        "mode": "watermark",
        "measured": (
            "in-process event-dispatch path, not a ShardHost in a Ray worker: emulator -> hikari GatewayShardImpl "
            "-> event manager -> one listener (bench/_dispatch_bot.py in a subprocess per side). plain = "
            "hikari.GatewayBot with hikari's EventManagerImpl; current / baseline = the same GatewayBot with "
            "ray_shards.delivery.GatedEventManager (LIVE mode) imported from this checkout / from a temporary "
            "worktree of the baseline commit."
        ),
        "commits": {"current": head, "current_ray_shards_uncommitted_changes": dirty, "baseline": baseline,
                    "baseline_subject": _git("log", "-1", "--format=%h %s", baseline)},
        "settings": {"pinned": _PINNED if args.pin else None,
                     "shards": args.shards, "guilds": args.shards * 2, "rate": args.rate,
                     "burst_seconds": args.burst_seconds, "bursts_per_side_per_round": args.bursts,
                     "rounds": args.rounds, "order": "rotates plain, current, baseline by one each round"},
        **{f"{s}_events_per_s": _common.summary(rate[s], digits=0) for s in _WATERMARK_SIDES},
        **{f"{s}_cpu_us_per_event": _common.summary(cpu[s], digits=1) for s in _WATERMARK_SIDES},
        "ratios": {
            "current_over_baseline": current_over_baseline,
            "current_over_plain": _ratio(rate["current"], rate["plain"]),
            "baseline_over_plain": _ratio(rate["baseline"], rate["plain"]),
            "cpu_capacity_current_vs_baseline": cpu_capacity,
            "cpu_capacity_current_vs_plain": _ratio(cpu["plain"], cpu["current"]),
        },
        "watermark_cost_percent": {
            "events_per_s": round((1 - current_over_baseline) * 100, 2) if current_over_baseline else None,
            "cpu_per_event": round((1 - cpu_capacity) * 100, 2) if cpu_capacity else None,
        },
        "per_round": per_round,
        "consumer_bound": all(b["events_per_s"] < 0.9 * b["emulator_generation_per_s"] for b in runs),
        "stalled": stalled,
        "warmup_bursts": warmups,
        "bursts": runs,
        "targets": {"watermark_cost_lt_3_percent": bool(current_over_baseline and current_over_baseline > 0.97)},
    }


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    if args.watermark:
        return await watermark_main(args)
    sampler = _common.LoadSampler()
    sampler.start()
    token = _common.new_token()
    runs: list[dict[str, typing.Any]] = []
    with _common.local_ray(), _common.emulator(
        token, shards=args.shards, max_concurrency=args.shards, guilds=args.shards * 2, identify_window_s=0.5
    ) as emu:
        for r in range(args.rounds):
            order = [_ray_side, _plain_side] if r % 2 == 0 else [_plain_side, _ray_side]
            for side in order:
                runs.extend(await side(emu, token, args))
    stalled = [b for b in runs if b.get("stalled")]
    warmups = [b for b in runs if b.get("warmup") and not b.get("stalled")]
    runs = [b for b in runs if not b.get("stalled") and not b.get("warmup")]
    host = [b["events_per_s"] for b in runs if b["side"] == "ray_shards"]
    plain = [b["events_per_s"] for b in runs if b["side"] == "plain_hikari"]
    host_cpu = [b["cpu_us_per_event_minus_idle"] for b in runs if b["side"] == "ray_shards"]
    plain_cpu = [b["cpu_us_per_event_minus_idle"] for b in runs if b["side"] == "plain_hikari"]
    host_idle = [b["idle_cpu_percent"] for b in runs if b["side"] == "ray_shards"]
    plain_idle = [b["idle_cpu_percent"] for b in runs if b["side"] == "plain_hikari"]
    if not host or not plain:
        return {"load": await sampler.stop(), "stalled": stalled, "bursts": runs, "targets": {"ratio_ge_1.0": False}}
    ratio = statistics.median(host) / statistics.median(plain)
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "guilds": args.shards * 2, "rate": args.rate,
                     "burst_seconds": args.burst_seconds, "bursts_per_side_per_round": args.bursts,
                     "rounds": args.rounds,
                     "host_timeout_s": args.host_timeout if args.host_timeout is not None else "default",
                     "host_switch_interval_s": args.switch_interval,
                     "host_main_thread_timer_slack_ns": args.timer_slack_ns,
                     "host_gc_threshold": args.gc_threshold,
                     "measured_host_gc_threshold": sorted(
                         {b.get("host_gc_threshold") for b in runs if b["side"] == "ray_shards"}, key=str),
                     "measured_host_main_thread_timer_slack_ns": sorted(
                         {b.get("host_main_thread_timer_slack_ns") for b in runs if b["side"] == "ray_shards"},
                         key=str)},
        "ray_shards_events_per_s": _common.summary(host, digits=0),
        "plain_hikari_events_per_s": _common.summary(plain, digits=0),
        "ratio": round(ratio, 3),
        "ray_shards_cpu_us_per_event": _common.summary(host_cpu, digits=1),
        "plain_hikari_cpu_us_per_event": _common.summary(plain_cpu, digits=1),
        "cpu_capacity_ratio": round(statistics.median(plain_cpu) / statistics.median(host_cpu), 3),
        "ray_shards_idle_cpu_percent": _common.summary(host_idle, digits=2),
        "plain_hikari_idle_cpu_percent": _common.summary(plain_idle, digits=2),
        **{
            f"{side}_{key}": _common.summary([b[key] for b in runs if b["side"] == side], digits=digits)
            for key, digits in _DIAGNOSTICS
            for side in ("ray_shards", "plain_hikari")
        },
        "consumer_bound": all(b["events_per_s"] < 0.9 * b["emulator_generation_per_s"] for b in runs),
        "ray_shards_longest_sync_gap_s": max(b.get("longest_sync_gap_s", 0.0) for b in runs),
        "stalled": stalled,
        "warmup_bursts": warmups,
        "bursts": runs,
        "targets": {"ratio_ge_1.0": ratio >= 1.0},
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20000.0, help="stream rate during a burst (default 20000/s)")
    parser.add_argument("--burst-seconds", type=float, default=1.5)
    parser.add_argument("--bursts", type=int, default=2, help="bursts per side per round (default 2)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured bursts each consumer runs first (default 1; see the JSON's warmup_bursts)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating which side goes first")
    parser.add_argument("--host-timeout", type=lambda v: None if v == "default" else float(v), default=60.0,
                        help="Timings.host_timeout of the ShardHost side (default 60 s; 'default' = ray_shards' 6 s). "
                             "A burst is a backlog of several seconds during which hikari's receive loop never yields, "
                             "so the host cannot sync; with 6 s the Orchestrator fences it (see BENCHMARKS.md).")
    parser.add_argument("--drain-timeout", type=float, default=90.0)
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="diagnostic: sys.setswitchinterval in the ShardHost (Python's default is 0.005 s)")
    parser.add_argument("--timer-slack-ns", type=_default_off_or_count("--timer-slack-ns", "ns"), default="default",
                        help="Timings.host_main_thread_timer_slack_ns of the ShardHost side: 'default' (ray_shards' "
                             "default, 1 ns), 'off' (None: Linux's 50 us) or a number of ns")
    parser.add_argument("--gc-threshold", type=_default_off_or_count("--gc-threshold", "allocations"),
                        default="default",
                        help="Timings.host_gc_threshold of the ShardHost side: 'default' (ray_shards' default, 7000), "
                             "'off' (None: Python's 700) or a number; the plain side keeps Python's")
    parser.add_argument("--watermark", action="store_true",
                        help="measure the watermark's cost instead (see above): plain hikari vs GatedEventManager "
                             "at this checkout vs at --baseline, in-process dispatch path, no Ray")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="with --watermark: do not pin the consumer and the emulator to separate CPUs (pinned by "
                             "default when the machine has at least 2)")
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="with --watermark: the commit to compare with (default: the parent of the commit that "
                             "added ray_shards/watermark.py)")
    _common.run("throughput", parser, main)


if __name__ == "__main__":
    cli()
