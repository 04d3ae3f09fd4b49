"""The Orchestrator's own metrics: shards and hosts by state, identify budget and queue, moves, checkpoints.

These come from the one place that knows the whole bot, so each shard is counted once however many
hosts it passed through. The Orchestrator calls `OrchestratorMetrics.observe` from its reconcile loop;
it samples at most every ``every`` seconds (Ray exports every few seconds anyway), costing one pass
over the shard table when the table's version moved and one over the hosts.
"""

from __future__ import annotations

import logging
import time
import typing

from ray_shards.metric_names import EXPORTED, registered_name
from ray_shards.models import ShardStatus

if typing.TYPE_CHECKING:
    from ray_shards.identify import IdentifyScheduler
    from ray_shards.table import ShardTable

__all__ = ["HOST_STATES", "IDENTIFY_WAIT_BOUNDARIES", "OrchestratorMetrics"]

_LOGGER = logging.getLogger("ray_shards.orchestrator_metrics")

HOST_STATES = ("live", "late", "fenced", "dead")
IDENTIFY_WAIT_BOUNDARIES = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]


class OrchestratorMetrics:
    """Metrics of one bot's Orchestrator; a no-op where Ray metrics are unavailable.

    Parameters
    ----------
    bot_id
        The bot (tag ``bot``).
    every
        Least seconds between two samples of the table.
    """

    def __init__(self, bot_id: int, *, every: float = 2.0) -> None:
        self._bot = {"bot": str(bot_id)}
        self._every = every
        self._sampled_at = float("-inf")
        self._owners: dict[int, str] = {}
        self._late_hosts: set[str] = set()
        self._counted_at: tuple[int, int] | None = None
        self._by_state: dict[str, int] = {}
        self._pending = 0
        self._checkpoint_at: float | None = None
        self._metrics: dict[str, typing.Any] = {}
        try:
            from ray.util import metrics

            for name, spec in EXPORTED.items():
                if spec.source != "orchestrator":
                    continue
                if spec.kind == "gauge":
                    self._metrics[name] = metrics.Gauge(registered_name(name), spec.description, spec.tags)
                elif spec.kind == "counter":
                    self._metrics[name] = metrics.Counter(registered_name(name), spec.description, spec.tags)
                else:
                    self._metrics[name] = metrics.Histogram(
                        registered_name(name), spec.description, IDENTIFY_WAIT_BOUNDARIES, spec.tags
                    )
        except Exception:  # never fail the Orchestrator for its metrics
            _LOGGER.debug("ray metrics unavailable", exc_info=True)
            self._metrics = {}

    def _set(self, name: str, value: float, **tags: str) -> None:
        metric = self._metrics.get(name)
        if metric is not None:
            metric.set(value, tags=self._bot | tags)

    def identify_waited(self, seconds: float) -> None:
        """A shard got its identify grant after waiting ``seconds`` in the queue."""
        metric = self._metrics.get("ray_shards_identify_wait_seconds")
        if metric is not None:
            metric.observe(max(0.0, seconds), tags=self._bot)

    def checkpoint_saved(self, size: int, at: float) -> None:
        """A checkpoint of ``size`` bytes was written at ``at`` (epoch seconds)."""
        self._checkpoint_at = at
        self._set("ray_shards_checkpoint_bytes", float(size))
        self._set("ray_shards_checkpoint_age_seconds", 0.0)

    def observe(
        self,
        now: float,
        table: ShardTable,
        scheduler: IdentifyScheduler,
        *,
        fenced: typing.Collection[str],
        sync_interval: float,
    ) -> None:
        """Sample the table and the identify queue (at most once every ``every`` seconds)."""
        if not self._metrics or time.monotonic() - self._sampled_at < self._every:
            return
        self._sampled_at = time.monotonic()
        # Owners and statuses change only with the table's version: a steady bot (seqs and latencies moving, every
        # sync) costs no pass over its shards here.
        if (table.instance, table.version) != self._counted_at:
            self._counted_at = (table.instance, table.version)
            self._count_shards(table)
        # Every gauge is set again on every sample, changed or not: a Ray worker exports a gauge's value once per
        # set, and the metrics agent drops a series not refreshed within two export intervals.
        for state, count in self._by_state.items():
            self._set("ray_shards_shards", float(count), state=state)
        pending = self._pending

        hosts = dict.fromkeys(HOST_STATES, 0)
        late_now: set[str] = set()
        for host in table.hosts.values():
            lateness = max(0.0, now - host.last_sync - 2 * sync_interval)
            if not host.alive:
                hosts["dead"] += 1
            elif host.host_id in fenced:
                hosts["fenced"] += 1
            elif lateness > 0:
                hosts["late"] += 1
            else:
                hosts["live"] += 1
            if host.alive:
                late_now.add(host.host_id)
                self._set("ray_shards_sync_lateness_seconds", lateness, host=host.host_id)
        # A host that is gone stops being late: zero its series rather than leave its last value standing.
        for gone in self._late_hosts - late_now:
            self._set("ray_shards_sync_lateness_seconds", 0.0, host=gone)
        self._late_hosts = late_now
        for state, count in hosts.items():
            self._set("ray_shards_hosts", float(count), state=state)

        self._set("ray_shards_identify_budget_remaining", float(scheduler.remaining))
        self._set("ray_shards_identify_queue_length", float(scheduler.waiting()))
        self._set("ray_shards_identify_queue_eta_seconds", scheduler.eta(pending))
        if self._checkpoint_at is not None:
            self._set("ray_shards_checkpoint_age_seconds", max(0.0, now - self._checkpoint_at))

    def _count_shards(self, table: ShardTable) -> None:
        """Shards by state, the ones not yet READY, and the leases moved since the last count."""
        by_state = dict.fromkeys((s.value for s in ShardStatus), 0)
        pending = moved = 0
        for record in table.shards.values():
            by_state[record.status.value] += 1
            if record.status in (ShardStatus.UNASSIGNED, ShardStatus.STARTING):
                pending += 1
            if record.host_id is not None:
                previous = self._owners.get(record.shard_id)
                if previous is not None and previous != record.host_id:
                    moved += 1
                self._owners[record.shard_id] = record.host_id
        self._pending = pending
        self._by_state = by_state
        if moved and "ray_shards_leases_moved_total" in self._metrics:
            self._metrics["ray_shards_leases_moved_total"].inc(moved, tags=self._bot)
