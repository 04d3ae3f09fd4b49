"""Cold boot: N shards x max_concurrency c on the emulator, against Discord's floor (ceil(N/c)-1) * window.

For each combination a fresh bot (own token, own emulator enforcing the identify rate limit)
is started with `BotDeployment.start` on one private local Ray cluster. Reported per combination:

* ``identify_to_ready_s``: first IDENTIFY the emulator accepted -> last ShardReadyEvent seen by a
  listener in a host (wall clock, same machine), and its ratio to the floor;
* ``whole_start_s``: `BotDeployment.start` call -> return (Orchestrator actor, GET /gateway/bot,
  host actor start-up with hikari import, every shard READY);
* ``rate_limit_violations`` from the emulator (must be 0);
* ``per_round_overhead_ms``: (identify span - floor) / (rounds - 1), what each window costs beyond Discord's.

Combinations whose floor at ``--window`` exceeds ``--max-floor`` run with Discord's window scaled down to the
largest of ``--scaled-windows`` that fits (emulator window and ray_shards' identify window and margin scaled
alike); their ratio is against the scaled floor and they are marked ``scaled``. Defaults: 64x1 runs at 1 s,
256x1 at 0.25 s, everything else at Discord's 5 s; the default run takes about 7 minutes.

``--lead 0,0.5`` runs every combination once per `Timings.identify_lead` (not scaled with the window: it covers
an ask's round trip, not Discord's window), to compare grants ahead of a bucket's opening with none.
``--window-from ready,sent`` likewise runs every combination once per `Timings.identify_window_from`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import typing
import uuid

from bench import _common
from bench._callbacks import ready_recorder
from ray_shards import BotDeployment
from ray_shards.identify import WindowFrom
from ray_shards.timings import Timings

DEFAULT_COMBOS = "16x1,16x16,16x64,64x1,64x16,64x64,256x16,256x64,256x1"
DISCORD_MARGIN = 0.1  # ray_shards' default identify_margin at Discord's 5 s window


def _parse_combos(text: str) -> list[tuple[int, int]]:
    combos = []
    for item in text.split(","):
        n, _, c = item.strip().partition("x")
        combos.append((int(n), int(c)))
    return combos


async def _one(
    n: int, c: int, window: float, hosts: int, scaled: bool, lead: float, window_from: WindowFrom
) -> dict[str, typing.Any]:
    rounds = math.ceil(n / c)
    floor = (rounds - 1) * window
    token = _common.new_token()
    notes_name = f"notes-{uuid.uuid4().hex[:8]}"
    notes = _common.start_notes(notes_name)
    timings = Timings(
        identify_window=window, identify_margin=DISCORD_MARGIN * window / 5.0, identify_lead=lead,
        identify_window_from=window_from,
    )
    _common.LOGGER.info(
        "boot %s shards, max_concurrency %s, window %.2f s, lead %.2f s, windows from %s: floor %.1f s",
        n, c, window, lead, window_from, floor,
    )
    with _common.emulator(token, shards=n, max_concurrency=c, guilds=n, identify_window_s=window,
                          heartbeat_interval_ms=41_250) as emu:
        started_wall = time.time()
        started = time.monotonic()
        deployment = await BotDeployment.start(
            token, shard_count=n, subprocess_count=min(hosts, n), rest_url=emu.rest_url, timings=timings,
            callback=ready_recorder(notes_name),
        )
        whole = time.monotonic() - started
        try:
            await _common.wait_for(lambda: len(_ready(notes)) >= n, 30, "every READY to be recorded")
            ready = _ready(notes)
            identify_log = emu.control.identify_log()
            identifies = sorted(e["time"] for e in identify_log)
            stats = emu.control.stats()
        finally:
            await deployment.stop()
            import ray

            ray.kill(notes)
    last_ready = max(t for _, t, _ in ready)
    first_identify = identifies[0]
    span = last_ready - first_identify
    identify_span = identifies[-1] - first_identify
    target = 1.05 * floor + 2.0
    return {
        "shards": n,
        "max_concurrency": c,
        "hosts": min(hosts, n),
        "window_s": window,
        "lead_s": lead,
        "window_from": window_from,
        "scaled": scaled,
        "floor_s": round(floor, 2),
        "identify_to_ready_s": round(span, 2),
        "ratio_to_floor": round(span / floor, 3) if floor else None,
        "target_s": round(target, 2),
        "met": span <= target and stats["rate_limit_violations"] == 0,
        "identify_span_s": round(identify_span, 2),
        "per_round_overhead_ms": round((identify_span - floor) / (rounds - 1) * 1000, 1) if rounds > 1 else None,
        "whole_start_s": round(whole, 2),
        "ray_and_actor_startup_s": round(first_identify - started_wall, 2),
        "identifies": len(identifies),
        "rate_limit_violations": stats["rate_limit_violations"],
        "identify_attempts": stats["identify_attempts"],
        "split_brain": stats["split_brain"],
        "round_anatomy_ms": _round_anatomy(identify_log, ready, c, window + timings.identify_margin),
    }


def _round_anatomy(
    identify_log: list[dict[str, typing.Any]], ready: list[tuple[int, float, str]], c: int, opens_after: float
) -> dict[str, typing.Any] | None:
    """Where each bucket's time between two IDENTIFYs went beyond ``window + margin`` (ms, over all such pairs).

    ``ready_at_host``: the first IDENTIFY's READY at the host's listener (emulator IDENTIFY -> ShardReadyEvent);
    ``rest``: the remainder (the READY report reaching the Orchestrator, the next shard's ask and its grant's
    way back, the host's sleep); ``bucket_first_identify_after_first``: how late each bucket started. Both clocks
    are this machine's wall clock.
    """
    ready_at = {shard: t for shard, t, _ in ready}
    by_bucket: dict[int, list[tuple[float, int]]] = {}
    for entry in identify_log:
        by_bucket.setdefault(entry["shard_id"] % c, []).append((entry["time"], entry["shard_id"]))
    beyond, at_host, rest = [], [], []
    for times in by_bucket.values():
        times.sort()
        for (t0, shard0), (t1, _) in itertools.pairwise(times):
            extra = t1 - t0 - opens_after
            beyond.append(extra * 1000)
            if shard0 in ready_at:
                lag = ready_at[shard0] - t0
                at_host.append(lag * 1000)
                rest.append((extra - lag) * 1000)
    if not beyond:
        return None
    # How late each bucket's first IDENTIFY came after the first of all: the floor assumes every bucket starts at once.
    first = min(times[0][0] for times in by_bucket.values())
    late_start = [(times[0][0] - first) * 1000 for times in by_bucket.values()]
    return {"pairs": len(beyond), "bucket_first_identify_after_first": _common.summary(late_start),
            "beyond_window": _common.summary(beyond),
            "ready_at_host": _common.summary(at_host), "rest": _common.summary(rest)}


def _ready(notes: typing.Any) -> list[tuple[int, float, str]]:
    import ray

    return [tuple(x) for x in ray.get(notes.get.remote("ready"))]  # type: ignore[misc]


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    results = []
    with _common.local_ray():
        for n, c in _parse_combos(args.combos):
            rounds = math.ceil(n / c)
            window = args.window
            for candidate in (args.window, *sorted((w for w in args.scaled_windows if w < args.window), reverse=True)):
                window = candidate
                if (rounds - 1) * candidate <= args.max_floor:
                    break
            scaled = window != args.window
            for lead, window_from in itertools.product(args.lead, args.window_from):
                result = await _one(n, c, window, args.hosts, scaled, lead, window_from)
                _common.LOGGER.info("%s", result)
                results.append(result)
    load = await sampler.stop()
    return {
        "load": load,
        "settings": {
            "window_s": args.window, "max_floor_s": args.max_floor, "scaled_windows_s": args.scaled_windows,
            "hosts": args.hosts, "guilds_per_shard": 1, "leads_s": args.lead,
            "window_from": args.window_from,
            "target": "identify_to_ready <= 1.05 * floor + 2 s, 0 violations",
        },
        "results": results,
        "all_met": all(r["met"] for r in results),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_boot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--combos", default=DEFAULT_COMBOS, help="NxC list, e.g. 16x1,64x16 (default: %(default)s)")
    parser.add_argument("--window", type=float, default=5.0, help="Discord's identify window in s (default 5)")
    parser.add_argument("--max-floor", type=float, default=80.0,
                        help="a combination whose floor at --window exceeds this many seconds runs with the largest "
                             "of --scaled-windows that fits (default 80)")
    parser.add_argument("--scaled-windows", type=lambda s: [float(x) for x in s.split(",")],
                        default=[2.5, 1.0, 0.5, 0.25],
                        help="candidate scaled windows in s (default 2.5,1,0.5,0.25)")
    parser.add_argument("--hosts", type=int, default=4, help="ShardHost actors (default 4)")
    parser.add_argument("--lead", type=lambda s: [float(x) for x in s.split(",")], default=[Timings().identify_lead],
                        help="Timings.identify_lead values to run each combination with (default: Timings' own)")
    parser.add_argument("--window-from", type=_common.window_froms, default=[Timings().identify_window_from],
                        help="Timings.identify_window_from values, comma-separated: ready, sent (default: Timings')")
    _common.run("cold_boot", parser, main)


if __name__ == "__main__":
    cli()
