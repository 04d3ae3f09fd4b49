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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import typing
import uuid

import ray

from bench import _common
from bench._callbacks import message_counter
from ray_shards import BotDeployment, Client
from ray_shards.timings import Timings


async def _bursts(emu: typing.Any, stats: typing.Callable[[], dict[str, typing.Any]], args: argparse.Namespace,
                  side: str, sync_gap: typing.Callable[[], float] | None = None) -> list[dict[str, typing.Any]]:
    results: list[dict[str, typing.Any]] = []
    total = emu.control.stop_stream()
    for _ in range(args.bursts):
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
        if sync_gap is not None:
            result["longest_sync_gap_s"] = round(longest_gap, 2)
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
    try:
        await _common.wait_for(lambda: bool(ray.get(notes.get.remote("stats"))), 30, "host stats")

        def stats() -> dict[str, typing.Any]:
            latest: dict[str, typing.Any] = ray.get(notes.get.remote("stats"))[-1]
            return latest

        def sync_gap() -> float:
            """How long ago the host last reported its shards to the Orchestrator (its sync)."""
            seen = [s.info.last_seen for s in client.remote_shards.values() if s.info is not None]
            return time.time() - min(seen) if seen else 0.0

        await asyncio.sleep(1.0)
        return await _bursts(emu, stats, args, "ray_shards", sync_gap)
    finally:
        await client.close()
        await deployment.stop()
        ray.kill(notes)


def _timings(args: argparse.Namespace) -> Timings:
    if args.host_timeout is None:
        return Timings(identify_window=0.5)
    return Timings(identify_window=0.5, host_timeout=args.host_timeout)


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


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
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
    runs = [b for b in runs if not b.get("stalled")]
    host = [b["events_per_s"] for b in runs if b["side"] == "ray_shards"]
    plain = [b["events_per_s"] for b in runs if b["side"] == "plain_hikari"]
    host_cpu = [b["cpu_us_per_event_minus_idle"] for b in runs if b["side"] == "ray_shards"]
    plain_cpu = [b["cpu_us_per_event_minus_idle"] for b in runs if b["side"] == "plain_hikari"]
    host_idle = [b["idle_cpu_percent"] for b in runs if b["side"] == "ray_shards"]
    plain_idle = [b["idle_cpu_percent"] for b in runs if b["side"] == "plain_hikari"]
    if not host or not plain:
        return {"load": await sampler.stop(), "stalled": stalled, "bursts": runs, "targets": {"ratio_ge_0.95": False}}
    ratio = statistics.median(host) / statistics.median(plain)
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "guilds": args.shards * 2, "rate": args.rate,
                     "burst_seconds": args.burst_seconds, "bursts_per_side_per_round": args.bursts,
                     "rounds": args.rounds,
                     "host_timeout_s": args.host_timeout if args.host_timeout is not None else "default",
                     "host_switch_interval_s": args.switch_interval},
        "ray_shards_events_per_s": _common.summary(host, digits=0),
        "plain_hikari_events_per_s": _common.summary(plain, digits=0),
        "ratio": round(ratio, 3),
        "ray_shards_cpu_us_per_event": _common.summary(host_cpu, digits=1),
        "plain_hikari_cpu_us_per_event": _common.summary(plain_cpu, digits=1),
        "cpu_capacity_ratio": round(statistics.median(plain_cpu) / statistics.median(host_cpu), 3),
        "ray_shards_idle_cpu_percent": _common.summary(host_idle, digits=2),
        "plain_hikari_idle_cpu_percent": _common.summary(plain_idle, digits=2),
        "consumer_bound": all(b["events_per_s"] < 0.9 * b["emulator_generation_per_s"] for b in runs),
        "ray_shards_longest_sync_gap_s": max(b.get("longest_sync_gap_s", 0.0) for b in runs),
        "stalled": stalled,
        "bursts": runs,
        "targets": {"ratio_ge_0.95": ratio >= 0.95},
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20000.0, help="stream rate during a burst (default 20000/s)")
    parser.add_argument("--burst-seconds", type=float, default=1.5)
    parser.add_argument("--bursts", type=int, default=2, help="bursts per side per round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating which side goes first")
    parser.add_argument("--host-timeout", type=lambda v: None if v == "default" else float(v), default=60.0,
                        help="Timings.host_timeout of the ShardHost side (default 60 s; 'default' = ray_shards' 6 s). "
                             "A burst is a backlog of several seconds during which hikari's receive loop never yields, "
                             "so the host cannot sync; with 6 s the Orchestrator fences it (see BENCHMARKS.md).")
    parser.add_argument("--drain-timeout", type=float, default=90.0)
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="diagnostic: sys.setswitchinterval in the ShardHost (Python's default is 0.005 s)")
    _common.run("throughput", parser, main)


if __name__ == "__main__":
    cli()
