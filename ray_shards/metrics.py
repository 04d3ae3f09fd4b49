"""Per-shard metrics through ``ray.util.metrics``, exported by Ray's metrics agent (Prometheus format).

Names, kinds and tags are in `ray_shards.metric_names` (all per-shard ones are tagged ``bot``,
``shard`` and ``host``). A shard that leaves a host (hand-over, rebalance, revoke) has that host's
``ray_shards_shard_state`` series set to -1: Ray cannot delete a series, and a host still reporting
a shard it no longer runs as ``ready`` would count it twice.
"""

from __future__ import annotations

import logging
import math
import typing

from ray_shards.metric_names import EXPORTED, registered_name
from ray_shards.models import ShardStatus

__all__ = ["LEFT_HOST", "STATE_VALUE", "ShardMetrics"]

_LOGGER = logging.getLogger("ray_shards.metrics")

STATE_VALUE = {
    ShardStatus.UNASSIGNED: 0,
    ShardStatus.STARTING: 1,
    ShardStatus.READY: 2,
    ShardStatus.RECONNECTING: 3,
    ShardStatus.FAILED: 4,
    ShardStatus.STOPPED: 5,
}
LEFT_HOST = -1
"""``ray_shards_shard_state`` of a shard on a host it has left."""
_TAGS = ("bot", "shard", "host")


def _metric(kind: str, exported: str) -> typing.Any:
    from ray.util import metrics

    spec = EXPORTED[exported]
    cls = {"gauge": metrics.Gauge, "counter": metrics.Counter}[kind]
    return cls(registered_name(exported), spec.description, spec.tags)


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
            self._gauges = {
                "state": _metric("gauge", "ray_shards_shard_state"),
                "latency": _metric("gauge", "ray_shards_heartbeat_latency_seconds"),
            }
            self._counters = {
                name: _metric("counter", f"ray_shards_{name}_total")
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
        self._gauges["state"].set(STATE_VALUE[status], tags=tags)
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
        """The shard left this host: its state series here says so (-1), so it is not counted twice."""
        self._last_seq.pop(shard_id, None)
        if self._gauges:
            self._gauges["state"].set(LEFT_HOST, tags=self._tags(shard_id))
