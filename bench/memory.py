"""Memory: unique memory (USS) of a ShardHost actor per host and per extra shard, against plain hikari.

For each shard count k in ``--shards`` (default 1, 64, 256) on its own emulator (one guild of 5
members per shard), measured ``--settle`` seconds (default 35) after every shard is READY:

* ray_shards: `BotDeployment.start` with one host running all k shards; after ``--settle`` seconds the
  host's USS (Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup) via ``ShardHost.memory()``;
* reference: `bench._plain_bot` (plain ``hikari.GatewayBot``, no listener) with the same k shards in a
  subprocess; its USS from /proc/<pid>/smaps_rollup, measured the same way.

Per extra shard = least-squares slope of USS over k. Per host = USS(host, k) / USS(plain, k).
For attribution, the USS of an idle Ray actor process importing nothing, and of one that has imported
hikari and ray_shards, is reported too (what being a Ray worker costs by itself), and a host's Ray
metrics (`ray_shards.metrics.ShardMetrics`) are rebuilt for 256 shards in a bare worker, per host (the
default) and with the opt-in per-shard series, and their USS growth measured after Ray's metrics export ran.
``--shard-metrics`` runs the hosts with ``Bot(shard_metrics=True)`` (per-shard series on).

Hosts return freed heap pages to the OS every ``Timings.host_memory_trim_interval`` (30 s, first right
after the boot); ``--trim-interval none`` measures hosts that never do (as before that setting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import typing

import ray

from bench import _common
from ray_shards import BotDeployment
from ray_shards.timings import Timings


def _slope(points: list[tuple[int, int]]) -> float:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else float("nan")


async def _host_uss(k: int, settle: float, trim_interval: float | None, shard_metrics: bool) -> dict[str, int]:
    token = _common.new_token()
    with _common.emulator(token, shards=k, max_concurrency=k, guilds=k, identify_window_s=0.5) as emu:
        timings = Timings(identify_window=0.5, host_memory_trim_interval=trim_interval)
        from bench._probe import shard_metrics_on

        deployment = await BotDeployment.start(
            token, shard_count=k, subprocess_count=1, rest_url=emu.rest_url, timings=timings,
            settings_factory=shard_metrics_on if shard_metrics else None,
        )
        try:
            await asyncio.sleep(settle)
            hosts = await asyncio.to_thread(lambda: dict(deployment.hosts))
            # The host running the k shards: a host replaced during the run (fenced under load) is listed too.
            running = []
            for handle in hosts.values():
                with contextlib.suppress(Exception):
                    if len((await asyncio.wait_for(handle.describe.remote(), 10.0))["shards"]) == k:
                        running.append(handle)
            if len(running) != 1:
                msg = f"expected one host running all {k} shards, found {len(running)} of {len(hosts)} hosts"
                raise RuntimeError(msg)
            memory: dict[str, int] = await running[0].memory.remote()
        finally:
            await deployment.stop()
    return memory


async def _plain_uss(k: int, settle: float) -> dict[str, int]:
    token = _common.new_token()
    with _common.emulator(token, shards=k, max_concurrency=k, guilds=k, identify_window_s=0.5) as emu:
        plain = await asyncio.to_thread(_common.PlainBot, token, emu.rest_url, k, listen=False)
        try:
            await plain.wait_ready()
            await asyncio.sleep(settle)
            return _common.uss_of(plain.pid)
        finally:
            await asyncio.to_thread(plain.stop)


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    rows = []
    with _common.local_ray():
        from bench._probe import Probe

        probe = ray.remote(Probe).options(num_cpus=0).remote()  # type: ignore[attr-defined]
        bare = await probe.memory.remote()
        stack = await probe.import_stack.remote()
        ray.kill(probe)
        from bench._probe import AttributionProbe

        attribution = ray.remote(AttributionProbe).options(num_cpus=0).remote()  # type: ignore[attr-defined]
        metrics_cost = await attribution.metrics.remote(256, True)
        host_metrics_cost = await attribution.metrics.remote(256, False)
        ray.kill(attribution)
        for k in args.shards:
            host = await _host_uss(k, args.settle, args.trim_interval, args.shard_metrics)
            plain = await _plain_uss(k, args.settle)
            row = {"shards": k, "host_uss_mib": round(host["uss"] / 2**20, 2),
                   "plain_uss_mib": round(plain["uss"] / 2**20, 2), "ratio": round(host["uss"] / plain["uss"], 3),
                   "host_rss_mib": round(host["rss"] / 2**20, 2), "plain_rss_mib": round(plain["rss"] / 2**20, 2)}
            _common.LOGGER.info("%s", row)
            rows.append(row)
    host_slope = _slope([(r["shards"], r["host_uss_mib"] * 2**20) for r in rows])
    plain_slope = _slope([(r["shards"], r["plain_uss_mib"] * 2**20) for r in rows])
    largest = rows[-1]
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "settle_s": args.settle, "guilds_per_shard": 1, "members_per_guild": 5,
                     "host_memory_trim_interval_s": args.trim_interval, "shard_metrics": args.shard_metrics},
        "rows": rows,
        "per_extra_shard_kib": {"ray_shards_host": round(host_slope / 1024, 1),
                                "plain_hikari": round(plain_slope / 1024, 1)},
        "per_host_ratio_at_largest": largest["ratio"],
        "per_host_ratio_at_1_shard": rows[0]["ratio"],
        "ray_worker_baseline_uss_mib": {"bare_actor": round(bare["uss"] / 2**20, 2),
                                        "after_importing_hikari_and_ray_shards": round(stack["uss"] / 2**20, 2)},
        "attribution_per_shard_kib": {
            "ray_metrics_per_shard_series": round(metrics_cost["uss_growth"] / metrics_cost["shards"] / 1024, 1),
            "ray_metrics_per_host_only": round(host_metrics_cost["uss_growth"] / host_metrics_cost["shards"] / 1024, 1),
        },
        "targets": {
            "per_extra_shard_le_1.2x_plain": host_slope <= 1.2 * plain_slope,
            "per_host_le_1.2x_plain": largest["ratio"] <= 1.2,
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64, 256])
    parser.add_argument("--settle", type=float, default=35.0,
                        help="seconds after READY before measuring (default 35: past one trim interval, and past "
                             "a few of Ray's 10 s metrics exports)")
    parser.add_argument("--trim-interval", type=lambda s: None if s == "none" else float(s),
                        default=Timings().host_memory_trim_interval,
                        help="Timings.host_memory_trim_interval of the hosts, in seconds, or 'none' (never trim)")
    parser.add_argument("--shard-metrics", action="store_true",
                        help="hosts also export per-shard metrics series (Bot(shard_metrics=True))")
    _common.run("memory", parser, main)


if __name__ == "__main__":
    cli()
