"""Every metric ray_shards exports, by the name Prometheus shows, with its kind and tags.

Ray's metrics agent prefixes each ``ray.util.metrics`` name with ``ray_`` (its Prometheus
namespace): a metric registered as ``shards_events_total`` is served as ``ray_shards_events_total``.
`registered_name` makes that one rule, so the README, the Grafana dashboard and the code agree.
"""

from __future__ import annotations

import typing

__all__ = ["EXPORTED", "RAY_PREFIX", "MetricSpec", "registered_name"]

RAY_PREFIX = "ray_"


class MetricSpec(typing.NamedTuple):
    """One exported metric."""

    kind: str
    """``gauge``, ``counter`` or ``histogram``."""
    tags: tuple[str, ...]
    description: str


def registered_name(exported: str) -> str:
    """The name to give ``ray.util.metrics`` so that Prometheus shows ``exported``."""
    if not exported.startswith(RAY_PREFIX):
        msg = f"exported metric names start with {RAY_PREFIX!r}: {exported!r}"
        raise ValueError(msg)
    return exported[len(RAY_PREFIX) :]


_SHARD = ("bot", "shard", "host")

EXPORTED: dict[str, MetricSpec] = {
    # Per shard, from the host that runs it.
    "ray_shards_shard_state": MetricSpec(
        "gauge", _SHARD,
        "shard state on this host: -1 left this host, 0 unassigned, 1 starting, 2 ready, 3 reconnecting, "
        "4 failed, 5 stopped",
    ),
    "ray_shards_heartbeat_latency_seconds": MetricSpec("gauge", _SHARD, "gateway heartbeat round trip"),
    "ray_shards_events_total": MetricSpec("counter", _SHARD, "dispatch events received (from the sequence number)"),
    "ray_shards_identifies_total": MetricSpec("counter", _SHARD, "IDENTIFYs sent (each spends one of the budget)"),
    "ray_shards_resumes_total": MetricSpec("counter", _SHARD, "RESUMEs (hand-overs, reconnects)"),
    "ray_shards_reconnects_total": MetricSpec("counter", _SHARD, "dropped connections hikari reconnected"),
    # Bot-wide, from the Orchestrator (one series per bot: each shard counted once, wherever it runs).
    "ray_shards_shards": MetricSpec("gauge", ("bot", "state"), "shards by state in the Orchestrator's table"),
    "ray_shards_hosts": MetricSpec("gauge", ("bot", "state"), "hosts by state: live, late, fenced, dead"),
    "ray_shards_identify_budget_remaining": MetricSpec(
        "gauge", ("bot",), "IDENTIFYs left in Discord's daily session_start_limit"),
    "ray_shards_identify_queue_length": MetricSpec("gauge", ("bot",), "shards waiting for an identify grant"),
    "ray_shards_identify_queue_eta_seconds": MetricSpec(
        "gauge", ("bot",), "time the identify schedule needs for the shards not yet READY"),
    "ray_shards_identify_wait_seconds": MetricSpec(
        "histogram", ("bot",), "time a shard waited in the identify queue for its grant"),
    "ray_shards_leases_moved_total": MetricSpec(
        "counter", ("bot",), "shards that moved from one host to another (failover, rebalance, restart)"),
    "ray_shards_checkpoint_age_seconds": MetricSpec("gauge", ("bot",), "time since the last checkpoint"),
    "ray_shards_checkpoint_bytes": MetricSpec("gauge", ("bot",), "size of the last checkpoint in the GCS"),
    "ray_shards_sync_lateness_seconds": MetricSpec(
        "gauge", ("bot", "host"), "how much later than expected the host's last sync is (0: on time)"),
}
"""Name as Prometheus shows it -> spec. Histograms add ``_bucket``, ``_sum`` and ``_count``."""
