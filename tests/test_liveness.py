"""Liveness decisions on silent hosts (`ray_shards.liveness`), without Ray or a clock."""

from __future__ import annotations

import pytest

from ray_shards import liveness
from ray_shards.liveness import CheckHealth, FindHandle, HostSilence, Quarantine
from ray_shards.timings import Timings

pytestmark = pytest.mark.timeout(30)

_LIMITS = {"host_timeout": 30.0, "sync_interval": 2.0, "standalone_lease_ttl": 20.0}


def _actions(*hosts: HostSilence) -> list[liveness.LivenessAction]:
    return liveness.silent_host_actions(hosts, **_LIMITS)


def test_a_watched_host_is_health_checked_once_past_the_timeout_never_killed_outright() -> None:
    assert _actions(HostSilence("a", 29.0, watched=True, has_handle=True)) == []
    assert _actions(HostSilence("a", 31.0, watched=True, has_handle=True)) == [CheckHealth("a", 31.0)]
    # One check at a time, and none for a host already being fenced.
    assert _actions(HostSilence("a", 31.0, watched=True, has_handle=True, checking=True)) == []
    assert _actions(HostSilence("a", 99.0, watched=True, has_handle=True, fenced=True)) == []


def test_an_actor_without_a_handle_is_looked_up_after_two_missed_syncs() -> None:
    assert _actions(HostSilence("a", 3.9, watched=False, has_handle=True)) == []
    assert _actions(HostSilence("a", 4.1, watched=False, has_handle=True)) == [FindHandle("a")]


def test_a_standalone_bot_is_given_up_only_after_its_whole_lease_ttl() -> None:
    """It stops its own shards at half the TTL; moving them earlier would make two sessions."""
    assert _actions(HostSilence("s", 19.0, watched=False, has_handle=False)) == []
    (action,) = _actions(HostSilence("s", 21.0, watched=False, has_handle=False))
    assert isinstance(action, Quarantine) and action.host_id == "s" and "21.0 s" in action.reason


def test_a_busy_host_that_answers_its_health_check_is_left_alone() -> None:
    assert liveness.fence_reason(answered=True, loop_lag=5.0, host_timeout=30.0) is None
    stuck = liveness.fence_reason(answered=True, loop_lag=45.0, host_timeout=30.0)
    assert stuck is not None and "stuck for 45.0 s" in stuck
    failed = liveness.fence_reason(answered=False, failure="GetTimeoutError", host_timeout=30.0)
    assert failed is not None and "GetTimeoutError" in failed


# -- how long a steady host parks: Timings.steady_park (the Orchestrator's sync budget) --------------------------


def test_a_small_bot_parks_exactly_the_steady_interval_whatever_the_jitter() -> None:
    timings = Timings()
    for hosts in (1, 16, 80):
        assert timings.steady_park(hosts, jitter=0.99) == timings.steady_sync_interval == 2.0
    assert timings.longest_sync_interval_at(80) == timings.longest_sync_interval


@pytest.mark.parametrize(("hosts", "park"), [(81, 2.025), (128, 3.2), (160, 4.0), (256, 6.4), (10_000, 7.5)])
def test_a_big_bots_steady_syncs_stay_within_the_rate_and_the_cap(hosts: int, park: float) -> None:
    """40 syncs/s across the bot at most, and a park never past host_timeout / 4 (the health check is far)."""
    timings = Timings()
    assert timings.steady_park(hosts) == pytest.approx(park)
    assert timings.longest_sync_interval_at(hosts) == pytest.approx(park)
    jittered = timings.steady_park(hosts, jitter=0.999)
    assert 0.9 * park <= jittered < park and jittered >= timings.steady_sync_interval
    assert hosts / park <= timings.steady_sync_rate or park == timings.host_timeout / 4


def test_a_standalone_host_parks_well_inside_its_lease() -> None:
    timings = Timings()
    park = timings.steady_park(10_000, standalone=True)
    assert park == timings.standalone_lease_ttl / 4 < timings.standalone_lease_ttl / 2


def test_no_rate_or_a_longer_interval_is_kept_as_set() -> None:
    assert Timings(steady_sync_rate=None).steady_park(100_000) == 2.0
    # A cap below the operator's own interval does not shorten it.
    assert Timings(steady_sync_interval=9.0).steady_park(100_000, standalone=True) == 9.0
    with pytest.raises(ValueError, match="steady_sync_rate must be positive"):
        Timings(steady_sync_rate=0.0)
