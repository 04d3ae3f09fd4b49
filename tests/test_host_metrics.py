"""A host's metrics (`ray_shards.metrics`): per-host series always, per-shard series only when asked for.

The Ray metric objects are replaced by recorders, so these tests check what a host tells Ray; the
real export to Prometheus is checked by `tests/test_ops_cluster.py` on a real node.
"""

from __future__ import annotations

import math
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_shards import Bot
from ray_shards.metric_names import EXPORTED
from ray_shards.metrics import (
    HOST_QUANTILES,
    LEFT_HOST,
    SHARD_METRICS_VAR,
    ShardMetrics,
    quantile,
    shard_metrics_wanted,
)
from ray_shards.models import ShardStatus

pytestmark = pytest.mark.timeout(60)

Call = tuple[str, str, float, dict[str, str]]


class _Recorder:
    """A Ray gauge or counter that records what it was told."""

    def __init__(self, calls: list[Call], name: str) -> None:
        self._calls, self._name = calls, name

    def set(self, value: float, tags: dict[str, str]) -> None:
        self._calls.append((self._name, "set", value, tags))

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self._calls.append((self._name, "inc", value, tags))


def _recorded(*, per_shard: bool) -> tuple[ShardMetrics, list[Call]]:
    calls: list[Call] = []
    metrics = ShardMetrics(7, "h1", per_shard=per_shard)
    sources = ("host", "shard") if per_shard else ("host",)
    metrics._metrics = {name: _Recorder(calls, name) for name, spec in EXPORTED.items() if spec.source in sources}
    return metrics, calls


def _named(calls: list[Call], name: str) -> list[tuple[str, float, dict[str, str]]]:
    return [(op, value, tags) for n, op, value, tags in calls if n == name]


HOST = {"bot": "7", "host": "h1"}


def test_a_host_exports_counts_quantiles_and_counters_per_host_not_per_shard() -> None:
    metrics, calls = _recorded(per_shard=False)
    for shard_id, latency in ((0, 0.04), (1, 0.02), (2, 0.09)):
        metrics.observe(shard_id, ShardStatus.READY, latency, 10)
    metrics.observe(3, ShardStatus.STARTING, float("nan"), None)
    metrics.observe(4, ShardStatus.RECONNECTING, 5.0, 3)  # not READY: its latency is not the host's
    metrics.flush()
    by_state = {tags["state"]: value for _, value, tags in _named(calls, "ray_shards_host_shards")}
    assert by_state == {"starting": 1, "ready": 3, "reconnecting": 1, "failed": 0, "stopped": 0}
    latency = {tags["quantile"]: value for _, value, tags in _named(calls, "ray_shards_host_heartbeat_latency_seconds")}
    assert latency == {"0.5": 0.04, "0.99": 0.09, "1": 0.09}
    assert all(tags.keys() == {"bot", "host", "state"} or tags.keys() == {"bot", "host", "quantile"}
               for name, _, _, tags in calls if name.startswith("ray_shards_host_"))
    assert not [c for c in calls if "shard" in c[3]], "no series tagged by shard unless asked for"

    # The next sync: events are counted from the seq moves, per host; shard 2 left, none is READY.
    calls.clear()
    metrics.forget(2)
    metrics.observe(0, ShardStatus.READY, 0.05, 15)
    metrics.observe(1, ShardStatus.READY, float("nan"), 12)
    metrics.observe(4, ShardStatus.FAILED, float("nan"), 3)
    metrics.flush()
    assert _named(calls, "ray_shards_events_total") == [("inc", 5, HOST), ("inc", 2, HOST)]
    by_state = {tags["state"]: value for _, value, tags in _named(calls, "ray_shards_host_shards")}
    assert by_state == {"starting": 0, "ready": 2, "reconnecting": 0, "failed": 1, "stopped": 0}
    assert _named(calls, "ray_shards_host_heartbeat_latency_seconds") == [
        ("set", 0.05, HOST | {"quantile": f"{q:g}"}) for q in HOST_QUANTILES
    ]

    calls.clear()
    metrics.observe(4, ShardStatus.FAILED, float("nan"), 3)
    metrics.flush()
    assert not _named(calls, "ray_shards_host_heartbeat_latency_seconds"), "no ready shard: no made-up latency"
    assert not _named(calls, "ray_shards_events_total")

    calls.clear()
    for name in ("identifies", "resumes", "reconnects"):
        metrics.count(name)
    assert [(n, v, t) for n, _, v, t in calls] == [
        (f"ray_shards_{name}_total", 1, HOST) for name in ("identifies", "resumes", "reconnects")
    ]


def test_per_shard_series_when_asked_for_and_minus_one_on_the_host_a_shard_left() -> None:
    metrics, calls = _recorded(per_shard=True)
    assert metrics.per_shard
    metrics.observe(5, ShardStatus.READY, 0.03, 100)
    metrics.observe(5, ShardStatus.READY, 0.03, 140)
    metrics.flush()
    shard = {"bot": "7", "shard": "5", "host": "h1"}
    assert _named(calls, "ray_shards_shard_state") == [("set", 2, shard), ("set", 2, shard)]
    assert _named(calls, "ray_shards_heartbeat_latency_seconds") == [("set", 0.03, shard), ("set", 0.03, shard)]
    assert _named(calls, "ray_shards_shard_events_total") == [("inc", 40, shard)]
    assert _named(calls, "ray_shards_events_total") == [("inc", 40, HOST)]  # the host's series as well
    calls.clear()
    metrics.forget(5)
    assert _named(calls, "ray_shards_shard_state") == [("set", LEFT_HOST, shard)]


def test_without_ray_metrics_a_host_records_nothing_and_does_not_fail() -> None:
    metrics = ShardMetrics(7, "h1", per_shard=True)
    metrics._metrics = {}
    metrics.observe(0, ShardStatus.READY, 0.1, 1)
    metrics.flush()
    metrics.count("identifies")
    metrics.forget(0)


def test_every_metric_has_a_known_source() -> None:
    assert {spec.source for spec in EXPORTED.values()} == {"host", "shard", "orchestrator"}
    for name, spec in EXPORTED.items():
        assert ("shard" in spec.tags) == (spec.source == "shard"), name
        assert ("host" in spec.tags) or spec.source == "orchestrator", name


@pytest.mark.parametrize(
    ("explicit", "environ", "wanted"),
    [
        (None, {}, False),
        (None, {SHARD_METRICS_VAR: "1"}, True),
        (None, {SHARD_METRICS_VAR: " Yes "}, True),
        (None, {SHARD_METRICS_VAR: "off"}, False),
        (None, {SHARD_METRICS_VAR: ""}, False),
        (True, {SHARD_METRICS_VAR: "0"}, True),
        (False, {SHARD_METRICS_VAR: "1"}, False),
    ],
)
def test_shard_metrics_from_the_argument_then_the_environment(
    explicit: bool | None, environ: dict[str, str], wanted: bool
) -> None:
    assert shard_metrics_wanted(explicit, environ) is wanted


def test_bad_shard_metrics_settings_are_refused_with_what_to_use(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=f"{SHARD_METRICS_VAR}='maybe': use 1/true/yes/on"):
        shard_metrics_wanted(None, {SHARD_METRICS_VAR: "maybe"})
    with pytest.raises(TypeError, match="shard_metrics must be True, False or None"):
        Bot(None, token, shard_metrics=typing.cast(bool, "yes"))
    monkeypatch.setenv(SHARD_METRICS_VAR, "perhaps")
    with pytest.raises(ValueError, match=SHARD_METRICS_VAR):
        Bot(None, token)
    monkeypatch.setenv(SHARD_METRICS_VAR, "1")
    assert Bot(None, token)._metrics.per_shard
    assert not Bot(None, token, shard_metrics=False)._metrics.per_shard


@given(st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from(HOST_QUANTILES))
def test_quantile_is_a_value_with_enough_values_at_or_below_it(values: list[float], q: float) -> None:
    ordered = sorted(values)
    value = quantile(ordered, q)
    assert value in ordered
    assert sum(v <= value for v in ordered) >= math.ceil(q * len(ordered))
    assert sum(v < value for v in ordered) < max(1, math.ceil(q * len(ordered)))
    if q == 1.0:
        assert value == ordered[-1]
