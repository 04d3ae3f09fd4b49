"""A simulated cold boot (`ray_shards.sim.boot`): 512 shards at max_concurrency 16, in about a second."""

from __future__ import annotations

import functools

import pytest

from ray_shards.identify import IdentifyScheduler
from ray_shards.sim import world
from ray_shards.sim.boot import floor, run_boot


def test_floor_is_cold_boots() -> None:
    assert floor(20480, 16) == 1279 * 5.0
    assert floor(16, 16) == 0.0
    assert floor(17, 16) == 5.0


def test_a_512_shard_boot_keeps_every_invariant() -> None:
    result = run_boot(512, 16, 4)
    assert result.violations == 0, result.violation
    assert result.identifies == 512  # one session per shard, no IDENTIFY spent twice
    assert result.floor_s == 155.0
    # Measured 1.097 (486 ms per round: READY latency, the 0.1 s margin, the grant round trip); see below.
    assert 1.0 < result.ratio <= 1.12


def test_windows_counted_from_the_frames_departure_boot_near_the_floor() -> None:
    ready = run_boot(512, 16, 4)
    sent = run_boot(512, 16, 4, window_from="sent")
    assert sent.violations == 0, sent.violation
    assert sent.identifies == 512
    # Measured 1.032 (the 0.1 s margin and ~30 ms of transit a round, plus the last READY) against 1.097: READY's
    # latency leaves each round.
    assert sent.ratio < ready.ratio - 0.04, (sent.ratio, ready.ratio)


def test_the_boot_scenario_catches_a_window_too_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # Above 256 shards the table is checked incrementally; the gateway's checks do not depend on it.
    monkeypatch.setattr(world, "IdentifyScheduler", functools.partial(IdentifyScheduler, window=4.5, margin=0.0))
    result = run_boot(512, 16, 4)
    assert result.violations == 1
    assert result.violation is not None and "two IDENTIFYs in bucket" in result.violation
