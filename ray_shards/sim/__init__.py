"""Deterministic simulation of the control plane under faults (``python -m ray_shards.sim``).

One seed drives the real `ray_shards.table.ShardTable` and
`ray_shards.identify.IdentifyScheduler` through a model of the Orchestrator's shell,
shard hosts, Ray faults and a strict Discord gateway, and checks the invariants of
``docs/control-plane.md`` after every step. See `ray_shards.sim.world`.
"""

from __future__ import annotations

from ray_shards.identify import WINDOW_FROM_MODES, WindowFrom
from ray_shards.sim.world import Params, SimResult, Violation, World, run_seed

__all__ = ["Params", "SimResult", "Violation", "World", "replay_command", "run_seed"]


def replay_command(seed: int, *, steps: int | None = None, window_from: WindowFrom = "ready") -> str:
    """The command that replays ``seed`` step by step."""
    steps_arg = f" --steps {steps}" if steps is not None else ""
    window_arg = f" --window-from {window_from}" if window_from != WINDOW_FROM_MODES[0] else ""
    return f"python -m ray_shards.sim --seed {seed}{steps_arg}{window_arg} --verbose"
