"""Per-shard metrics through ``ray.util.metrics``, exported by Ray's metrics agent (Prometheus format).

Names (all tagged with ``bot``, ``shard`` and ``host``):

* ``ray_shards_shard_state`` gauge: 0 unassigned, 1 starting, 2 ready, 3 reconnecting, 4 failed, 5 stopped
* ``ray_shards_heartbeat_latency_seconds`` gauge
* ``ray_shards_events_total`` counter: dispatch events received (by sequence number)
* ``ray_shards_identifies_total``, ``ray_shards_resumes_total``, ``ray_shards_reconnects_total`` counters
"""

from __future__ import annotations

import logging
import math
import typing

from ray_shards.models import ShardStatus

__all__ = ["ShardMetrics"]

_LOGGER = logging.getLogger("ray_shards.metrics")

_STATE_VALUE = {
    ShardStatus.UNASSIGNED: 0,
    ShardStatus.STARTING: 1,
    ShardStatus.READY: 2,
    ShardStatus.RECONNECTING: 3,
    ShardStatus.FAILED: 4,
    ShardStatus.STOPPED: 5,
}
_TAGS = ("bot", "shard", "host")


class ShardMetrics:
    """The metrics of one host's shards; a no-op where Ray metrics are unavailable."""

    __slots__ = ("_bot_id", "_counters", "_gauges", "_host_id", "_last_seq")

    def __init__(self, bot_id: int, host_id: str) -> None:
        self._bot_id = str(bot_id)
        self._host_id = host_id
        self._last_seq: dict[int, int] = {}
        self._gauges: dict[str, typing.Any] = {}
        self._counters: dict[str, typing.Any] = {}
        try:
            from ray.util import metrics

            self._gauges = {
                "state": metrics.Gauge("ray_shards_shard_state", "shard state (see ray_shards.metrics)", _TAGS),
                "latency": metrics.Gauge("ray_shards_heartbeat_latency_seconds", "gateway heartbeat latency", _TAGS),
            }
            self._counters = {
                name: metrics.Counter(f"ray_shards_{name}_total", f"{name} of the shard", _TAGS)
                for name in ("events", "identifies", "resumes", "reconnects")
            }
        except Exception:  # metrics need a Ray worker with a metrics agent; never fail a bot for them
            _LOGGER.debug("ray metrics unavailable", exc_info=True)

    def _tags(self, shard_id: int) -> dict[str, str]:
        return {"bot": self._bot_id, "shard": str(shard_id), "host": self._host_id}

    def observe(self, shard_id: int, status: ShardStatus, latency: float, seq: int | None) -> None:
        """Record a shard's state, latency and the events received since the last observation."""
        if not self._gauges:
            return
        tags = self._tags(shard_id)
        self._gauges["state"].set(_STATE_VALUE[status], tags=tags)
        if not math.isnan(latency):
            self._gauges["latency"].set(latency, tags=tags)
        if seq is not None:
            previous = self._last_seq.get(shard_id)
            if previous is not None and seq > previous:
                self._counters["events"].inc(seq - previous, tags=tags)
            self._last_seq[shard_id] = seq

    def count(self, name: str, shard_id: int) -> None:
        """Add one to ``identifies``, ``resumes`` or ``reconnects`` of a shard."""
        counter = self._counters.get(name)
        if counter is not None:
            counter.inc(1, tags=self._tags(shard_id))

    def forget(self, shard_id: int) -> None:
        """The shard left this host."""
        self._last_seq.pop(shard_id, None)
