"""What the listener-completion watermark costs, in CPU instructions per event: independent of machine load.

``bench.throughput --watermark`` measures events/s and CPU time side by side, and on this 2-core
machine the same code measured anywhere from 126 to 209 us/event from one burst to the next while
other work ran. Instruction counts do not move with load. This runs ``bench/_dispatch_loop.py``
(inflate, parse, consume, one listener; in-process, hikari's cache on) under valgrind's cachegrind for N1 and N2
events and takes ``(I(N2) - I(N1)) / (N2 - N1)``: instructions per event with start-up (imports,
Ray's included) cancelled out. Three sides, as in ``bench.throughput --watermark``:

* plain: hikari's ``EventManagerImpl``;
* current: ``ray_shards.delivery.GatedEventManager`` of this checkout;
* baseline: the same class at ``--baseline REV`` (default: the commit before the watermark),
  from a temporary ``git worktree``.

Objects that exist before the first event (imports, the bot) are frozen out of the garbage
collector (``gc.freeze()``): without that, the side whose checkout imports more code pays more per
full collection (4 % of this path between ``4ec4858`` and now), which is not what is measured here.

The socket read and aiohttp's websocket frame parsing are left out, so
``cost_percent_of_in_process_path`` is an upper bound on the watermark's share of the whole path.

Needs ``valgrind``; each side takes 1-3 minutes (the two runs of a side run in parallel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import typing

from bench import _common
from bench.throughput import _ROOT, _baseline_tree, _default_baseline, _git

_LOOP = os.path.join(_ROOT, "bench", "_dispatch_loop.py")


async def _instructions(root: str, side: str, count: int) -> int:
    process = await asyncio.create_subprocess_exec(
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-O", _LOOP, side, str(count),
        # A fixed hash seed: dict and set layouts (so the instruction count) are the same from run to run.
        env={**os.environ, "PYTHONPATH": root, "PYTHONHASHSEED": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _, err = await process.communicate()
    found = re.search(r"I\s+refs:\s+([\d,]+)", err.decode())
    if process.returncode != 0 or found is None:
        msg = f"valgrind run of {side} ({count} events, {root}) failed: {err.decode()[-2000:]}"
        raise RuntimeError(msg)
    return int(found.group(1).replace(",", ""))


async def _per_event(root: str, side: str, low: int, high: int) -> dict[str, typing.Any]:
    at_low, at_high = await asyncio.gather(_instructions(root, side, low), _instructions(root, side, high))
    per_event = (at_high - at_low) / (high - low)
    _common.LOGGER.info("%s (%s): %.0f instructions/event", side, root, per_event)
    return {"instructions_per_event": round(per_event), f"instructions_at_{low}": at_low,
            f"instructions_at_{high}": at_high}


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    baseline = _git("rev-parse", args.baseline or _default_baseline())
    sides: dict[str, dict[str, typing.Any]] = {}
    with _baseline_tree(baseline) as tree:
        for name, root, manager in (("plain", _ROOT, "plain"), ("current", _ROOT, "gated"),
                                    ("baseline", tree, "gated")):
            sides[name] = await _per_event(root, manager, args.low, args.high)
    plain, current, base = (sides[s]["instructions_per_event"] for s in ("plain", "current", "baseline"))
    cost = (current - base) / base * 100
    return {
        "load": await sampler.stop(),
        "measured": "valgrind cachegrind instructions per event of bench/_dispatch_loop.py (inflate a zlib-stream "
                    "frame, parse it, consume_raw_event of a MESSAGE_CREATE into one listener; in-process, hikari "
                    "cache on; no socket or websocket framing), (I(high)-I(low))/(high-low)",
        "commits": {"current": _git("rev-parse", "HEAD"),
                    "current_ray_shards_uncommitted_changes": bool(_git("status", "--porcelain", "--", "ray_shards")),
                    "baseline": baseline, "baseline_subject": _git("log", "-1", "--format=%h %s", baseline)},
        "events": {"low": args.low, "high": args.high},
        "sides": sides,
        "ratios": {"current_over_baseline": round(current / base, 4), "current_over_plain": round(current / plain, 4),
                   "baseline_over_plain": round(base / plain, 4)},
        "cost_percent_of_in_process_path": round(cost, 2),
        "targets": {"watermark_cost_lt_3_percent_of_in_process_path": cost < 3.0},
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--low", type=int, default=500, help="events in the short run (default 500)")
    parser.add_argument("--high", type=int, default=2500, help="events in the long run (default 2500)")
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="the commit to compare with (default: the parent of the commit that added "
                             "ray_shards/watermark.py)")
    _common.run("dispatch_instructions", parser, main)


if __name__ == "__main__":
    cli()
