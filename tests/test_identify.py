"""The identify queue obeys Discord's rule: one IDENTIFY per bucket per window, budget respected."""

from __future__ import annotations

import math

import pytest

from ray_shards.identify import IdentifyBudgetExhaustedError, IdentifyGrant, IdentifyScheduler


def _boot(n: int, concurrency: int, window: float = 5.0, margin: float = 0.1) -> list[tuple[float, int]]:
    """Simulate hosts asking for every shard at once, each READY 10 ms after its grant."""
    scheduler = IdentifyScheduler(concurrency, remaining=10_000, window=window, margin=margin)
    now = 0.0
    pending = set(range(n))
    granted: list[tuple[float, int]] = []
    outstanding: dict[int, float] = {}
    while pending or outstanding:
        for shard_id, ready_at in list(outstanding.items()):
            if ready_at <= now:
                scheduler.release(shard_id, now, identified_at=ready_at - 0.01)
                del outstanding[shard_id]
        for shard_id in sorted(pending):
            outcome = scheduler.request(shard_id, now)
            if isinstance(outcome, IdentifyGrant):
                granted.append((now, shard_id))
                pending.discard(shard_id)
                outstanding[shard_id] = now + 0.01
        now = round(now + 0.01, 6)
        assert now < 10_000
    return granted


@pytest.mark.parametrize(("n", "concurrency"), [(16, 4), (16, 1), (64, 16), (7, 3)])
def test_no_bucket_identifies_twice_within_a_window(n: int, concurrency: int) -> None:
    granted = _boot(n, concurrency)
    assert sorted(s for _, s in granted) == list(range(n))
    last: dict[int, float] = {}
    for at, shard_id in granted:
        bucket = shard_id % concurrency
        if bucket in last:
            assert at - last[bucket] >= 5.0
        last[bucket] = at


@pytest.mark.parametrize(("n", "concurrency"), [(16, 4), (64, 16), (256, 64)])
def test_boot_is_close_to_discords_floor(n: int, concurrency: int) -> None:
    granted = _boot(n, concurrency)
    floor = (math.ceil(n / concurrency) - 1) * 5.0
    assert granted[-1][0] <= floor * 1.05 + 0.5


def test_buckets_start_in_shard_order() -> None:
    granted = _boot(12, 4)
    first_window = sorted(s for at, s in granted if at == 0.0)
    assert first_window == [0, 1, 2, 3]


def test_budget_is_counted_and_enforced() -> None:
    scheduler = IdentifyScheduler(2, remaining=1)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    assert scheduler.remaining == 0
    with pytest.raises(IdentifyBudgetExhaustedError, match="daily identify budget"):
        scheduler.request(1, 0.0)


def test_unreleased_grant_expires() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, grant_timeout=30.0)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    assert not isinstance(scheduler.request(1, 1.0), IdentifyGrant)
    # After the timeout the bucket counts as spent at expiry and opens a window later.
    assert not isinstance(scheduler.request(1, 31.0), IdentifyGrant)
    assert isinstance(scheduler.request(1, 36.2), IdentifyGrant)


def test_same_shard_asking_again_frees_its_failed_attempt() -> None:
    scheduler = IdentifyScheduler(1, remaining=10)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    wait = scheduler.request(0, 1.0)
    assert isinstance(wait, float) and wait > 0
    assert isinstance(scheduler.request(0, 6.2), IdentifyGrant)


def test_eta_matches_the_floor() -> None:
    scheduler = IdentifyScheduler(4, remaining=100, window=5.0, margin=0.0)
    assert scheduler.eta(16) == 15.0
    assert scheduler.eta(0) == 0.0
    with pytest.raises(ValueError, match="max_concurrency"):
        IdentifyScheduler(0, remaining=1)
