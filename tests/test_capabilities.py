"""Capabilities: bounded, idle-expiring and revocable, on an injected clock (`ray_shards.capabilities`)."""

from __future__ import annotations

import itertools

import pytest

from ray_shards.capabilities import Capabilities

pytestmark = pytest.mark.timeout(30)


def _capabilities(limit: int = 3, idle_ttl: float = 10.0) -> Capabilities:
    counter = itertools.count()
    return Capabilities(limit=limit, idle_ttl=idle_ttl, factory=lambda: f"cap-{next(counter)}")


def test_issued_capabilities_are_known_and_others_are_not() -> None:
    caps = _capabilities()
    cap = caps.issue(0.0)
    assert caps.use(cap, 1.0)
    assert not caps.use("forged", 1.0)
    assert not caps.use(None, 1.0)
    assert not caps.use(["cap-0"], 1.0)


def test_the_set_is_bounded_least_recently_used_out_first() -> None:
    caps = _capabilities(limit=3)
    first, second, third = (caps.issue(float(t)) for t in range(3))
    assert caps.use(first, 3.0)  # now the most recently used
    fourth = caps.issue(4.0)
    assert len(caps) == 3
    assert not caps.use(second, 5.0)
    assert all(caps.use(c, 5.0) for c in (first, third, fourth))


def test_idle_capabilities_expire_and_use_keeps_one_alive() -> None:
    caps = _capabilities(idle_ttl=10.0)
    idle, busy = caps.issue(0.0), caps.issue(0.0)
    for t in (5.0, 10.0, 15.0):
        assert caps.use(busy, t)
    caps.expire(15.0)
    assert len(caps) == 1
    assert not caps.use(idle, 15.0)
    assert caps.use(busy, 24.0)
    # Idle past the TTL is refused even before a sweep has removed it.
    assert not caps.use(busy, 40.0)


def test_revoked_capabilities_are_refused() -> None:
    caps = _capabilities()
    cap = caps.issue(0.0)
    assert caps.revoke(cap)
    assert not caps.revoke(cap)
    assert not caps.use(cap, 0.0)
