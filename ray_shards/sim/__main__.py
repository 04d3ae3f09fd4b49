"""``python -m ray_shards.sim --seeds 2000`` (or ``--seed N [--steps K] [--verbose]``)."""

from __future__ import annotations

import argparse
import collections
import sys
import time

from ray_shards.identify import WINDOW_FROM_MODES
from ray_shards.sim import Violation, replay_command, run_seed


def main(argv: list[str] | None = None) -> int:
    """Run seeds; print the replay command of the first failing one and return 1."""
    parser = argparse.ArgumentParser(prog="python -m ray_shards.sim", description=__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=200, help="run seeds 0..N-1 (default 200)")
    which.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--first", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--steps", type=int, default=None, help="stop injecting faults after this many steps")
    parser.add_argument("--verbose", action="store_true", help="print the state after every step")
    parser.add_argument("--window-from", choices=WINDOW_FROM_MODES, default=WINDOW_FROM_MODES[0],
                        help="Timings.identify_window_from of every seed's bot (default ready)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    trace = print if args.verbose else None
    started = time.perf_counter()
    steps = 0
    reshards: collections.Counter[str] = collections.Counter()
    for seed in seeds:
        try:
            result = run_seed(seed, fault_steps=args.steps, trace=trace, window_from=args.window_from)
        except Violation as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            print(f"replay: {replay_command(seed, steps=args.steps, window_from=args.window_from)}", file=sys.stderr)
            return 1
        steps += result.steps
        reshards["started"] += result.reshards
        reshards["restarts mid-reshard"] += result.reshard_restarts
        reshards["carried on at closing"] += result.reshard_carried_on
        if result.reshard is not None:
            reshards[result.reshard] += 1
            if result.reshard_error and "did not start" in result.reshard_error:
                reshards["failed: a new host did not start"] += 1
        if args.seed is not None:
            print(result)
    elapsed = time.perf_counter() - started
    print(f"{len(seeds)} seeds, {steps} steps, all invariants held ({elapsed:.1f} s)")
    print("reshards: " + ", ".join(f"{n} {what}" for what, n in sorted(reshards.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
