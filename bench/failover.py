"""Failover: a ShardHost actor is killed (``ray.kill``) while events stream; its shards must RESUME elsewhere.

One bot (default 16 shards on 4 hosts, production `Timings`) runs on a private local Ray cluster
against the emulator, whose event stream sends MESSAGE_CREATE events at ``--rate``/s to every guild.
Listeners in the hosts record every delivery in a `ray_shards.testing.DeliveryRecorder`. The
benchmark then kills ``--kills`` hosts one after another (the busiest host each time, after the
previous failover, the replacement host and the rebalancing have settled) and reports:

* ``failover_s``: ``ray.kill`` -> the emulator accepted the RESUME of the last of the victim's shards
  (emulator wall clock, same machine): median and worst over the kills;
* ``table_ready_s``: ``ray.kill`` -> a `Client` (refresh 0.1 s) sees all of them READY on other hosts;
* events lost (sent by the stream, never delivered) and events delivered twice (replayed), over the run;
* IDENTIFYs spent during the kill cycles (must be 0) and rate-limit violations / split brain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import typing
import uuid

import ray

from bench import _common
from ray_shards import BotDeployment, Client, ShardStatus
from ray_shards.launch import split_shards
from ray_shards.testing import recording_callback, start_recorder
from ray_shards.timings import Timings


def _settled(client: Client, wants: list[int]) -> bool:
    infos = [s.info for s in client.remote_shards.values()]
    if not infos or any(i is None or i.status is not ShardStatus.READY for i in infos):
        return False
    per_host: dict[str, int] = {}
    for info in infos:
        assert info is not None and info.host_id is not None
        per_host[info.host_id] = per_host.get(info.host_id, 0) + 1
    return sorted(per_host.values(), reverse=True) == wants


async def _kill_once(
    emu: typing.Any, client: Client, deployment: BotDeployment, wants: list[int]
) -> dict[str, typing.Any]:
    per_host: dict[str, list[int]] = {}
    for shard_id, shard in client.remote_shards.items():
        info = shard.info
        assert info is not None and info.host_id is not None
        per_host.setdefault(info.host_id, []).append(shard_id)
    victim_id = max(per_host, key=lambda h: (len(per_host[h]), h))
    moved = sorted(per_host[victim_id])
    victim = deployment.hosts[victim_id]
    identifies_before = len(emu.control.identify_log())
    killed_at = time.time()
    ray.kill(victim, no_restart=True)

    def elsewhere() -> bool:
        infos = [client.remote_shards[s].info for s in moved]
        return all(i is not None and i.status is ShardStatus.READY and i.host_id != victim_id for i in infos)

    def resumed() -> dict[int, float]:
        first: dict[int, float] = {}
        for entry in emu.control.resume_log():
            if entry["time"] >= killed_at and entry["shard_id"] in moved:
                first.setdefault(entry["shard_id"], entry["time"])
        return first

    table_ready = await _common.wait_for(elsewhere, 30, "the victim's shards to be READY elsewhere", interval=0.02)
    await _common.wait_for(lambda: len(resumed()) == len(moved), 30, "RESUMEs of every moved shard")
    times = resumed()
    # Let the replacement host start and take its share back (more hand-overs by RESUME).
    await _common.wait_for(lambda: _settled(client, wants), 60, "rebalancing after the kill")
    await asyncio.sleep(1.0)
    return {
        "victim": victim_id,
        "shards": moved,
        "failover_s": round(max(times.values()) - killed_at, 3),
        "first_resume_s": round(min(times.values()) - killed_at, 3),
        "table_ready_s": round(table_ready, 3),
        "identifies_spent": len(emu.control.identify_log()) - identifies_before,
    }


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    import hikari

    sampler = _common.LoadSampler()
    sampler.start()
    token = _common.new_token()
    kills: list[dict[str, typing.Any]] = []
    with _common.local_ray(), _common.emulator(
        token, shards=args.shards, max_concurrency=args.shards, guilds=args.shards * 2
    ) as emu:
        recorder_name = f"recorder-{uuid.uuid4().hex[:8]}"
        recorder = start_recorder(recorder_name)
        deployment = await BotDeployment.start(
            token, shard_count=args.shards, subprocess_count=args.hosts, rest_url=emu.rest_url,
            callback=recording_callback(recorder_name), intents=hikari.Intents.ALL, timings=Timings(),
        )
        client = Client(token, None, refresh_interval=0.1)
        await client.start()
        wants = split_shards(args.shards, args.hosts)
        try:
            emu.control.start_stream(args.rate)
            for k in range(args.kills):
                await _common.wait_for(lambda: _settled(client, wants), 60, "hosts and shards to settle")
                await asyncio.sleep(args.pause)
                kill = await _kill_once(emu, client, deployment, wants)
                _common.LOGGER.info("kill %s: %s", k + 1, kill)
                kills.append(kill)
            emu.control.stop_stream()
            sent = {int(e["id"]) for e in emu.control.stream_sent()}

            def missing() -> set[int]:
                return sent - set(ray.get(recorder.counts.remote()))

            with contextlib.suppress(TimeoutError):
                await _common.wait_for(lambda: not missing(), 20, "every streamed event to reach a listener", 0.5)
            counts = ray.get(recorder.counts.remote())
            lost = len(missing())
            duplicates = sum(c - 1 for m, c in counts.items() if m in sent and c > 1)
            stats = emu.control.stats()
        finally:
            await client.close()
            await deployment.stop()
            ray.kill(recorder)
    failovers = [k["failover_s"] for k in kills]
    median = statistics.median(failovers)
    spent = sum(k["identifies_spent"] for k in kills)
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "hosts": args.hosts, "kills": args.kills, "stream_rate": args.rate,
                     "timings": "ray_shards defaults (sync 0.5 s, death_quarantine 0.3 s)"},
        "failover_s": {"median": round(median, 3), "worst": round(max(failovers), 3), "best": round(min(failovers), 3)},
        "table_ready_s": _common.summary([k["table_ready_s"] for k in kills], digits=3),
        "events_sent": len(sent),
        "events_lost": lost,
        "events_delivered_twice": duplicates,
        "identifies_spent": spent,
        "rate_limit_violations": stats["rate_limit_violations"],
        "split_brain": stats["split_brain"],
        "kills": kills,
        "targets": {
            "failover_median_lt_3s": median < 3.0,
            "events_lost_0": lost == 0,
            "identifies_spent_0": spent == 0,
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="stream events per second (default 50)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of steady streaming before each kill")
    _common.run("failover", parser, main)


if __name__ == "__main__":
    cli()
