"""Simulated cold boot: N shards at max_concurrency c in the deterministic simulator, against Discord's floor.

    python -m bench.sim_boot --shards 20480 --concurrency 16 --hosts 160
    python -m bench.sim_boot --shards 1024,4096          # a growth view (hosts: one per 128 shards)

The real `ShardTable` and `IdentifyScheduler` run behind the simulator's Orchestrator shell and host
models (`ray_shards.sim.boot`), from a cold start until every shard is READY, with every invariant
checked (a violation is reported, not raised). No Ray, no emulator: virtual time, so the boot time is
exact and the wall time is the simulator's. The floor is ``bench.cold_boot``'s:
``(ceil(N/c) - 1) * 5 s``; the boot time is first IDENTIFY -> last READY (as ``identify_to_ready_s``
there), and ``per_round_overhead_ms`` is (boot - floor) / (rounds - 1).

Each size runs once per ``--lead`` (`Timings.identify_lead`; default ``0,0.5``): 0 is the rule without grants
ahead of a bucket's opening, so the gain of not-before grants shows side by side in one run. Likewise once per
``--window-from`` (`Timings.identify_window_from`; default ``ready``) and ``--margin`` (`Timings.identify_margin`;
default ``0.1``):

    python -m bench.sim_boot --shards 20480 --hosts 160 --lead 0.5 --window-from ready,sent --margin 0.1,0.05

(``ready`` runs with the first margin only: its window is counted from READY's arrival, a sound bound without one.)
``--identify-delay D`` models Discord receiving each IDENTIFY up to D s after it left; its window is then
checked at receipt, so ``sent`` windows show what happens when the margin's assumption holds or not.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import subprocess
import typing

from bench import _common
from ray_shards.sim.boot import run_boot


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "ray_shards", "bench")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


async def _main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    runs = []
    margins = [float(m) for m in str(args.margin).split(",")]
    modes = [(w, m) for w in args.window_from for m in (margins if w == "sent" else margins[:1])]
    sizes = [(int(s), float(lead), w, m) for s in str(args.shards).split(",") for lead in str(args.lead).split(",")
             for w, m in modes]
    for shards, lead, window_from, margin in sizes:
        hosts = args.hosts or max(1, -(-shards // 128))
        _common.LOGGER.info(
            "simulated boot: %s shards, max_concurrency %s, %s hosts, lead %s s, windows from %s, margin %s s",
            shards, args.concurrency, hosts, lead, window_from, margin,
        )
        result = await asyncio.to_thread(
            run_boot, shards, args.concurrency, hosts, seed=args.seed, lead=lead, window_from=window_from,
            margin=margin, identify_delay=args.identify_delay,
        )
        row = dataclasses.asdict(result)
        rounds = math.ceil(shards / args.concurrency)
        row["rounds"] = rounds
        row["per_round_overhead_ms"] = (
            round((result.boot_s - result.floor_s) / (rounds - 1) * 1000, 1) if rounds > 1 else None
        )
        row["target_ratio"] = 1.02
        row["met"] = result.violations == 0 and result.ratio <= 1.02
        for key in ("boot_s", "identify_span_s", "floor_s", "first_identify", "last_identify", "last_ready",
                    "sim_time_s", "wall_s"):
            row[key] = round(row[key], 3)
        row["ratio"] = round(row["ratio"], 4)
        _common.LOGGER.info("%s", row)
        runs.append(row)
    return {"commit": _commit(), "runs": runs, "load": await sampler.stop()}


def main() -> None:
    """Parse the options and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="20480", help="shard count, or a comma-separated list (default 20480)")
    parser.add_argument("--concurrency", type=int, default=16, help="max_concurrency (default 16)")
    parser.add_argument("--hosts", type=int, default=0, help="hosts (default: one per 128 shards)")
    parser.add_argument("--seed", type=int, default=0, help="the simulator's seed (RPC and READY delays)")
    parser.add_argument(
        "--lead", default="0,0.5",
        help="Timings.identify_lead values to run each size with, comma-separated (default 0,0.5)",
    )
    parser.add_argument(
        "--window-from", default=["ready"], type=_common.window_froms,
        help="Timings.identify_window_from values, comma-separated: ready, sent (default ready)",
    )
    parser.add_argument(
        "--margin", default="0.1", help="Timings.identify_margin values for --window-from sent (default 0.1)"
    )
    parser.add_argument(
        "--identify-delay", type=float, default=0.0,
        help="Discord receives each IDENTIFY up to this many s after it left, uniform per frame (default 0: as it "
             "leaves); the window is checked at receipt. 'sent' windows need it below the margin",
    )
    _common.run("sim_boot", parser, _main)


if __name__ == "__main__":
    main()
