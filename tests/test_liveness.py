"""Liveness decisions on silent hosts (`ray_shards.liveness`), without Ray or a clock."""

from __future__ import annotations

import pytest

from ray_shards import liveness
from ray_shards.liveness import CheckHealth, FindHandle, HostSilence, Quarantine

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
