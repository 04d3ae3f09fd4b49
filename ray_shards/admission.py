"""Whether a long operation may begin, and which reshard the auto-reshard policy asks for.

Pure: no Ray, no I/O, no clock. The Orchestrator (and the simulator's shell, `ray_shards.sim.world`) describe
what they hold as a `BotShape` and act on the answer, so the rules that refuse a rolling restart or a reshard
are the same code in both, and are tested without a cluster (``tests/test_admission.py``).

The rules, and why:

* Only a bot ray_shards launched (a host fleet with desired hosts) can be rolled or resharded: for a bot whose
  processes someone else runs there is no fleet to start new hosts from.
* One long operation at a time. A rolling restart and a reshard both start hosts and move shards; run together,
  the roll would replace hosts of a set the reshard is about to retire, and the reshard's switch would have to
  wait on hand-overs it does not know about.
* A reshard must be affordable: it IDENTIFYs every shard of the new count, so the daily budget Discord has
  left must cover that count, or the new set would stop half started and the reshard roll back after spending
  the budget the live set needs to recover from a crash.
* The auto-reshard policy never retries a reshard that ended ``failed``: that state means retrying the same
  thing will fail again (a callback that raises, a budget too small), and retrying every interval would spend
  the identify budget. An operator clears it by starting a reshard by hand.
"""

from __future__ import annotations

__all__: typing.Sequence[str] = (
    "AutoReshard",
    "BotShape",
    "auto_reshard_may_look",
    "auto_reshard_target",
    "check_reshard",
    "check_roll",
)

import dataclasses
import typing


@dataclasses.dataclass(frozen=True, slots=True)
class BotShape:
    """What the checks read of the bot, as the Orchestrator holds it now."""

    shard_count: int
    """Shards the live set runs."""
    identifies_left: int
    """IDENTIFYs left in Discord's daily budget."""
    launched: bool
    """Launched by ray_shards: there is a host fleet to start new hosts from."""
    rolling: bool = False
    """A rolling restart is in flight (paused counts)."""
    resharding: bool = False
    """A reshard is in flight, or the new set of one is still there."""
    last_reshard_failed: bool = False
    """The last reshard ended ``failed`` (not ``rolled back``)."""
    stopping: bool = False
    """The bot is shutting down."""


@dataclasses.dataclass(frozen=True, slots=True)
class AutoReshard:
    """A reshard the auto-reshard policy asks for, and why (logged, and shown if it is refused)."""

    target: int
    reason: str


def check_roll(shape: BotShape) -> None:
    """Raise if a rolling restart may not begin now.

    Raises
    ------
    RuntimeError
        For a bot ray_shards did not launch, or while a rolling restart or a reshard is in flight.
    """
    if not shape.launched:
        msg = "only a bot launched by ray_shards (run_subprocesses / BotDeployment) can be rolled"
        raise RuntimeError(msg)
    if shape.rolling:
        msg = "a rolling restart is already in progress; pause, resume or abort it"
        raise RuntimeError(msg)
    if shape.resharding:
        msg = "a reshard is in progress; roll the hosts once it is done"
        raise RuntimeError(msg)


def check_reshard(shape: BotShape, shard_count: object) -> int:
    """Raise if a reshard to ``shard_count`` shards may not begin now; returns the count.

    Raises
    ------
    ValueError
        For a count that is not a whole number of at least 1, the current count, or more IDENTIFYs than the
        daily budget has left.
    RuntimeError
        For a bot ray_shards did not launch, or while a rolling restart or a reshard is in flight.
    """
    # bool is an int to Python, and True shards is a typo, not a request for one shard.
    if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
        msg = f"shard_count must be a whole number of at least 1, not {shard_count!r}"
        raise ValueError(msg)
    if shard_count == shape.shard_count:
        msg = f"the bot already runs {shard_count} shards"
        raise ValueError(msg)
    if shape.identifies_left < shard_count:
        msg = (
            f"resharding to {shard_count} shards needs {shard_count} identifies but Discord's daily budget has "
            f"only {shape.identifies_left} left; wait for the reset or reshard to fewer shards"
        )
        raise ValueError(msg)
    if not shape.launched:
        msg = "only a bot launched by ray_shards (run_subprocesses / BotDeployment) can be resharded"
        raise RuntimeError(msg)
    if shape.resharding or shape.rolling:
        msg = "a reshard or rolling restart is already in progress"
        raise RuntimeError(msg)
    return shard_count


def auto_reshard_may_look(shape: BotShape) -> bool:
    """Whether the auto-reshard policy looks at all now (before it asks Discord for its recommendation)."""
    return shape.launched and not (shape.stopping or shape.rolling or shape.resharding or shape.last_reshard_failed)


def auto_reshard_target(
    shape: BotShape, *, busiest_guilds: int, guild_threshold: int, recommended: int | None
) -> AutoReshard | None:
    """The reshard the policy asks for, or None to keep the count.

    It only grows the bot: a shard over ``guild_threshold`` guilds doubles the count (every shard then holds
    about half its guilds), and Discord's recommendation (``recommended``, from ``GET /gateway/bot``; None when
    that call failed) is a floor. Shrinking is an operator's decision: a recommendation that dips for an hour
    must not cost two full reshards.
    """
    target = shape.shard_count
    crowded = busiest_guilds > guild_threshold
    if crowded:
        target = shape.shard_count * 2
    if recommended is not None:
        target = max(target, recommended)
    if target <= shape.shard_count:
        return None
    reason = f"busiest shard has {busiest_guilds} guilds" if crowded else "Discord recommends more shards"
    return AutoReshard(target=target, reason=reason)
