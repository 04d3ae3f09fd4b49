"""A cold boot of a large bot in the simulator, against Discord's floor (``python -m bench.sim_boot``).

The real `ShardTable` and `IdentifyScheduler` run behind the simulator's `Shell`, with `Host` models
for the shard hosts and the strict `Gateway`, from a cold start until every shard is READY, with no
faults and every invariant checked (no two IDENTIFYs per bucket within 5 s, the daily budget, one
session per shard). Discord's floor is defined as in ``bench/cold_boot.py``: ``(ceil(N/c) - 1) * 5 s``,
and the boot time is the first IDENTIFY Discord saw -> the last READY a host saw.

What differs from the fault seeds, for speed at 20k shards (all stated in `boot_params`): hosts sync every
``sync_interval`` (30 s here, with ``lease_ttl`` and ``host_timeout`` raised to match; syncs carry no
identify traffic), no events flow on the sessions, and the Orchestrator checkpoints every 30 s.
"""

from __future__ import annotations

import dataclasses
import math
import time

from ray_shards.identify import MAX_WAIT, WindowFrom
from ray_shards.sim.world import WINDOW, Params, World

__all__ = ["BootResult", "boot_params", "floor", "run_boot"]


def floor(shards: int, max_concurrency: int, window: float = WINDOW) -> float:
    """Discord's floor: ``(ceil(N/c) - 1) * window`` from the first IDENTIFY to the last."""
    return (math.ceil(shards / max_concurrency) - 1) * window


def boot_params(
    shards: int, max_concurrency: int, hosts: int, *, lead: float = 0.5, window_from: WindowFrom = "ready",
    margin: float = 0.1, identify_delay: float = 0.0,
) -> Params:
    """A bot of ``shards`` on ``hosts`` hosts, a budget that covers the boot, no faults, ordinary RPC delays.

    ``lead`` is `Timings.identify_lead` (0: no grant ahead of a bucket's opening, the rule before it);
    ``window_from`` is `Timings.identify_window_from` and ``margin`` `Timings.identify_margin`;
    ``identify_delay`` is Discord's (`Params.identify_delay`).
    """
    return Params(
        shards=shards,
        hosts=hosts,
        max_concurrency=max_concurrency,
        budget=shards + 1000,
        day=86_400.0,
        replay_buffer=200,
        fault_time=0.0,
        p_loss=0.0,
        p_dup=0.0,
        p_delay=0.0,
        sync_interval=30.0,
        lease_ttl=90.0,
        host_timeout=120.0,
        recovery_grace=100.0,
        identify_poll=MAX_WAIT,  # the real host sleeps the wait it is told, at most identify.MAX_WAIT
        events=False,
        identify_lead=lead,
        identify_window_from=window_from,
        identify_margin=margin,
        identify_delay=identify_delay,
    )


@dataclasses.dataclass(slots=True)
class BootResult:
    """One simulated cold boot."""

    shards: int
    hosts: int
    max_concurrency: int
    lead: float
    window_from: WindowFrom
    margin: float
    identify_delay: float
    identifies: int
    first_identify: float
    last_identify: float
    last_ready: float
    boot_s: float
    """First IDENTIFY -> last READY."""
    identify_span_s: float
    """First IDENTIFY -> last IDENTIFY."""
    floor_s: float
    ratio: float
    """``boot_s / floor_s`` (nan when the floor is 0)."""
    violations: int
    violation: str | None
    steps: int
    sim_time_s: float
    wall_s: float


def run_boot(
    shards: int, max_concurrency: int, hosts: int, *, seed: int = 0, lead: float = 0.5,
    window_from: WindowFrom = "ready", margin: float = 0.1, identify_delay: float = 0.0,
) -> BootResult:
    """Boot ``shards`` shards on ``hosts`` hosts at ``max_concurrency`` in the simulator (options: `boot_params`)."""
    from ray_shards.sim.world import Violation

    params = boot_params(shards, max_concurrency, hosts, lead=lead, window_from=window_from, margin=margin,
                         identify_delay=identify_delay)
    world = World(seed, params=params)
    world.checkpoint_every = 30.0
    started = time.perf_counter()
    violation: str | None = None
    try:
        world.run_boot()
    except Violation as exc:
        violation = str(exc)
    wall = time.perf_counter() - started
    gw = world.gateway
    first = gw.first_identify_at if gw.first_identify_at is not None else math.nan
    last = gw.last_identify_at if gw.last_identify_at is not None else math.nan
    last_ready = max(world.ready_at.values(), default=math.nan)
    boot = last_ready - first
    fl = floor(shards, max_concurrency)
    return BootResult(
        shards=shards,
        hosts=hosts,
        max_concurrency=max_concurrency,
        lead=lead,
        window_from=window_from,
        margin=margin,
        identify_delay=identify_delay,
        identifies=gw.identifies,
        first_identify=first,
        last_identify=last,
        last_ready=last_ready,
        boot_s=boot,
        identify_span_s=last - first,
        floor_s=fl,
        ratio=boot / fl if fl > 0 else math.nan,
        violations=0 if violation is None else 1,
        violation=violation,
        steps=world.step,
        sim_time_s=world.t,
        wall_s=wall,
    )
