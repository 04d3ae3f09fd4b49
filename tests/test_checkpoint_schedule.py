"""`ray_shards.checkpoint_schedule`: when the Orchestrator writes its checkpoint (pure, monotonic clock)."""

from __future__ import annotations

import math

import hypothesis
import hypothesis.strategies as st
import pytest

from ray_shards.checkpoint_schedule import CheckpointSchedule, Write

pytestmark = pytest.mark.timeout(60)


def schedule() -> CheckpointSchedule:
    return CheckpointSchedule(interval=1.0, batch_interval=10.0, last_batch=100.0)


def test_the_first_change_is_written_at_once_and_nothing_without_a_change() -> None:
    s = schedule()
    assert s.due(100.0, dirty=False, rows_now=False, rows_later=False, new_table=False) is None
    assert s.due(100.0, dirty=True, rows_now=False, rows_later=False, new_table=False) is Write.CHANGES
    assert s.due(100.0, dirty=False, rows_now=False, rows_later=False, new_table=True) is Write.CHANGES


def test_changes_that_must_not_wait_are_written_within_the_interval_not_more_often() -> None:
    s = schedule()
    s.written(100.0, batched=False)
    assert s.due(100.5, dirty=False, rows_now=True, rows_later=False, new_table=False) is None
    assert s.due(101.0, dirty=False, rows_now=True, rows_later=False, new_table=False) is Write.CHANGES


def test_seq_advances_wait_for_the_batch_and_a_batch_carries_the_changes_too() -> None:
    s = schedule()
    s.written(100.0, batched=False)
    assert s.due(105.0, dirty=False, rows_now=False, rows_later=True, new_table=False) is None
    assert s.due(110.0, dirty=True, rows_now=True, rows_later=True, new_table=False) is Write.BATCH
    s.written(110.0, batched=True)
    # A write of changes only does not count as the batch.
    s.written(115.0, batched=False)
    assert s.due(119.0, dirty=False, rows_now=False, rows_later=True, new_table=False) is None
    assert s.due(120.0, dirty=False, rows_now=False, rows_later=True, new_table=False) is Write.BATCH


def test_a_schedule_without_batches_never_asks_for_one() -> None:
    s = CheckpointSchedule(interval=0.0, batch_interval=math.inf)
    assert s.due(1e9, dirty=False, rows_now=False, rows_later=True, new_table=False) is None


@hypothesis.given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 3.0), st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=200
    )
)
def test_no_change_waits_longer_than_its_interval_and_writes_are_spaced(
    steps: list[tuple[float, bool, bool, bool]],
) -> None:
    """Asked every step (a reconcile pass), the schedule writes a pending change within interval + the step,
    a pending seq within batch_interval + the step, and never two writes of changes closer than interval."""
    s = CheckpointSchedule(interval=1.0, batch_interval=10.0, last_batch=0.0)
    now, last_write = 0.0, -math.inf
    change_since: float | None = None
    seq_since: float | None = None
    for gap, dirty, rows_now, rows_later in steps:
        now += gap
        if dirty or rows_now:
            change_since = now if change_since is None else change_since
        if rows_later:
            seq_since = now if seq_since is None else seq_since
        write = s.due(
            now, dirty=change_since is not None, rows_now=False, rows_later=seq_since is not None, new_table=False
        )
        if write is Write.CHANGES:
            assert now - last_write >= 1.0
        if write is not None:
            last_write = now
            s.written(now, batched=write is Write.BATCH)
            change_since = None
            if write is Write.BATCH:
                seq_since = None
        if change_since is not None:
            assert now - change_since <= 1.0 + 3.0
        if seq_since is not None:
            assert now - seq_since <= 10.0 + 3.0
