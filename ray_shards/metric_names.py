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
    source: str = "orchestrator"
    """Who exports it: ``host`` (every host, always), ``shard`` (every host, per shard, only with
    ``Bot(shard_metrics=True)``) or ``orchestrator`` (once per bot)."""


def registered_name(exported: str) -> str:
    """The name to give ``ray.util.metrics`` so that Prometheus shows ``exported``."""
    if not exported.startswith(RAY_PREFIX):
        msg = f"exported metric names start with {RAY_PREFIX!r}: {exported!r}"
        raise ValueError(msg)
    return exported[len(RAY_PREFIX) :]


_SHARD = ("bot", "shard", "host")
_HOST = ("bot", "host")

EXPORTED: dict[str, MetricSpec] = {
    # Per host, always: a few series per host whatever its shard count (Prometheus cardinality and the
    # host's memory stay flat as a bot grows to thousands of shards).
    "ray_shards_host_shards": MetricSpec(
        "gauge", ("bot", "host", "state"),
        "this host's shards by state (starting, ready, reconnecting, failed, stopped)", "host",
    ),
    "ray_shards_host_heartbeat_latency_seconds": MetricSpec(
        "gauge", ("bot", "host", "quantile"),
        "gateway heartbeat round trip over this host's ready shards: quantile 0.5, 0.99 and 1 (the slowest)",
        "host",
    ),
    "ray_shards_events_total": MetricSpec(
        "counter", _HOST, "dispatch events this host's shards received (from the sequence numbers)", "host"),
    "ray_shards_identifies_total": MetricSpec(
        "counter", _HOST, "IDENTIFYs this host's shards sent (each spends one of the budget)", "host"),
    "ray_shards_resumes_total": MetricSpec("counter", _HOST, "RESUMEs (hand-overs, reconnects) on this host", "host"),
    "ray_shards_reconnects_total": MetricSpec(
        "counter", _HOST, "dropped connections hikari reconnected on this host", "host"),
    # Per shard, only from hosts whose Bot has shard_metrics=True: each costs the host memory per shard
    # (Ray keeps every tag set) and Prometheus one series per shard.
    "ray_shards_shard_state": MetricSpec(
        "gauge", _SHARD,
        "shard state on this host: -1 left this host, 0 unassigned, 1 starting, 2 ready, 3 reconnecting, "
        "4 failed, 5 stopped", "shard",
    ),
    "ray_shards_heartbeat_latency_seconds": MetricSpec("gauge", _SHARD, "gateway heartbeat round trip", "shard"),
    "ray_shards_shard_events_total": MetricSpec(
        "counter", _SHARD, "dispatch events received by the shard on this host", "shard"),
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
