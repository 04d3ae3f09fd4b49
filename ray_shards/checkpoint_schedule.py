"""When the Orchestrator writes its checkpoint: a pure schedule on the monotonic clock.

No Ray, no I/O: the Orchestrator asks `CheckpointSchedule.due` every reconcile pass and reports each write
with `CheckpointSchedule.written`; the simulator's shell asks the same schedule. Two kinds of change wait for
two deadlines (``Timings.checkpoint_interval`` and ``Timings.checkpoint_batch_interval``):

* a change a restarted Orchestrator must not lose (an owner, an epoch, a status, a session id or resume URL,
  a host joining, a long operation's step) is written within ``interval``: a restore from before it could
  hand a shard to a second host, or RESUME a session that no longer exists;
* only seqs and counters moved: written with the next batch, within ``batch_interval``. A lagging seq costs a
  replay of the events since (the gateway's RESUME sends them again), never a seq Discord has not sent, so
  writing every advance would cost a checkpoint per sync for nothing.

Intent written before acting (`Orchestrator._checkpoint_now`) does not wait for this schedule; it reports
its write here like any other, so the next timed write counts from it.

The clock is monotonic: a wall-clock step must neither hold a checkpoint back nor force a burst of them.
"""

from __future__ import annotations

__all__: typing.Sequence[str] = ("CheckpointSchedule", "Write")

import dataclasses
import enum
import math
import typing


class Write(enum.Enum):
    """Which checkpoint `CheckpointSchedule.due` asks for."""

    CHANGES = "changes"
    """The head and the table chunks with changes that must not wait."""
    BATCH = "batch"
    """Those and every chunk where only seqs or counters moved."""


@dataclasses.dataclass(slots=True)
class CheckpointSchedule:
    """When the next checkpoint is due; every time is the caller's monotonic clock."""

    interval: float
    """Most time between a change that must not wait and the write that holds it."""
    batch_interval: float
    """Most time between a seq or counter advance and the write that holds it."""
    last_write: float = -math.inf
    """When the last write began (-inf: none yet, so the first change is written at once)."""
    last_batch: float = 0.0
    """When the last batched write began; the caller sets it to its start time (nothing to batch before)."""

    def due(self, now: float, *, dirty: bool, rows_now: bool, rows_later: bool, new_table: bool) -> Write | None:
        """The write due at ``now``, or None.

        Parameters
        ----------
        now
            The monotonic clock.
        dirty
            The head changed (hosts, the fleet, presence, a long operation) or a write failed.
        rows_now, rows_later
            Some table chunk holds a change that must not wait / only seq or counter advances
            (`ShardTable.checkpoint_due`).
        new_table
            The stored checkpoint does not hold this table object (new, restored, a reshard's).
        """
        if rows_later and now - self.last_batch >= self.batch_interval:
            return Write.BATCH
        if (dirty or rows_now or new_table) and now - self.last_write >= self.interval:
            return Write.CHANGES
        return None

    def written(self, now: float, *, batched: bool) -> None:
        """A write began at ``now`` (whether or not it lands: a failed one marks its state dirty again)."""
        self.last_write = now
        if batched:
            self.last_batch = now
