"""A host's metrics through ``ray.util.metrics``, exported by Ray's metrics agent (Prometheus format).

Names, kinds and tags are in `ray_shards.metric_names`. Every host exports a few series of its own
(shards by state, heartbeat latency quantiles, event/IDENTIFY/RESUME/reconnect counters), however
many shards it runs: Ray keeps every tag set a process ever used, in memory, and Prometheus stores
each as a series, so per-shard series cost 13-27 KiB of host memory per shard (BENCHMARKS F4) and
one series per shard per metric, which a 20,000-shard bot should not pay by default.

With ``per_shard`` (``Bot(shard_metrics=True)``) a host also exports each shard's state, latency and
events. A shard that leaves a host (hand-over, rebalance, revoke) has that host's
``ray_shards_shard_state`` series set to -1: Ray cannot delete a series, and a host still reporting
a shard it no longer runs as ``ready`` would count it twice. The per-host counts need no such care:
a shard that left is simply not counted at the next observation.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import typing

from ray_shards.metric_names import EXPORTED, registered_name
from ray_shards.models import ShardStatus

__all__ = [
    "HOST_QUANTILES", "LEFT_HOST", "SHARD_METRICS_VAR", "STATE_VALUE", "ShardMetrics", "quantile",
    "shard_metrics_wanted",
]

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
HOST_QUANTILES = (0.5, 0.99, 1.0)
"""Quantiles of ``ray_shards_host_heartbeat_latency_seconds`` (1.0: the slowest ready shard)."""
SHARD_METRICS_VAR = "RAY_SHARDS_SHARD_METRICS"
"""Environment variable that switches per-shard series on for hosts whose Bot leaves ``shard_metrics`` None."""
_ON, _OFF = frozenset({"1", "true", "yes", "on"}), frozenset({"", "0", "false", "no", "off"})
_HOST_STATES = tuple(status for status in ShardStatus if status is not ShardStatus.UNASSIGNED)


def quantile(ordered: typing.Sequence[float], q: float) -> float:
    """The ``q`` quantile of ascending ``ordered`` (nearest rank: always one of the values)."""
    if not ordered:
        msg = "no values"
        raise ValueError(msg)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def shard_metrics_wanted(explicit: bool | None, environ: typing.Mapping[str, str] = os.environ) -> bool:
    """Whether a host exports per-shard series: ``explicit`` if given, else `SHARD_METRICS_VAR`.

    Raises
    ------
    TypeError
        If ``explicit`` is neither a bool nor None.
    ValueError
        If the variable holds something other than 1/true/yes/on or 0/false/no/off (any case).
    """
    if explicit is not None:
        if not isinstance(explicit, bool):
            msg = f"shard_metrics must be True, False or None, not {explicit!r}"
            raise TypeError(msg)
        return explicit
    raw = environ.get(SHARD_METRICS_VAR, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    msg = f"{SHARD_METRICS_VAR}={raw[:20]!r}: use 1/true/yes/on to export per-shard metrics, 0/false/no/off not to"
    raise ValueError(msg)


def _metric(exported: str) -> typing.Any:
    from ray.util import metrics

    spec = EXPORTED[exported]
    cls = {"gauge": metrics.Gauge, "counter": metrics.Counter}[spec.kind]
    return cls(registered_name(exported), spec.description, spec.tags)


class ShardMetrics:
    """The metrics of one host's shards; a no-op where Ray metrics are unavailable.

    Call `observe` for each shard, then `flush` once, every sync: Ray drops a gauge's value after each
    export, so the host's gauges are set again every time.
    """

    __slots__ = ("_bot_id", "_host_id", "_host_tags", "_last_seq", "_latencies", "_metrics", "_per_shard", "_states")

    def __init__(self, bot_id: int, host_id: str, *, per_shard: bool = False) -> None:
        self._bot_id = str(bot_id)
        self._host_id = host_id
        self._host_tags = {"bot": self._bot_id, "host": host_id}
        self._per_shard = per_shard
        self._last_seq: dict[int, int] = {}
        self._states: collections.Counter[ShardStatus] = collections.Counter()
        self._latencies: list[float] = []
        self._metrics: dict[str, typing.Any] = {}
        sources = ("host", "shard") if per_shard else ("host",)
        try:
            self._metrics = {name: _metric(name) for name, spec in EXPORTED.items() if spec.source in sources}
        except Exception:  # metrics need a Ray worker with a metrics agent; never fail a bot for them
            _LOGGER.debug("ray metrics unavailable", exc_info=True)
            self._metrics = {}

    @property
    def per_shard(self) -> bool:
        """Whether per-shard series are exported too."""
        return self._per_shard

    def _shard_tags(self, shard_id: int) -> dict[str, str]:
        return {"bot": self._bot_id, "shard": str(shard_id), "host": self._host_id}

    def observe(self, shard_id: int, status: ShardStatus, latency: float, seq: int | None) -> None:
        """Record a shard's state, latency and the events received since the last observation."""
        if not self._metrics:
            return
        self._states[status] += 1
        if status is ShardStatus.READY and not math.isnan(latency):
            self._latencies.append(latency)
        events = 0
        if seq is not None:
            previous = self._last_seq.get(shard_id)
            if previous is not None and seq > previous:
                events = seq - previous
            self._last_seq[shard_id] = seq
        if events:
            self._metrics["ray_shards_events_total"].inc(events, tags=self._host_tags)
        if self._per_shard:
            tags = self._shard_tags(shard_id)
            self._metrics["ray_shards_shard_state"].set(STATE_VALUE[status], tags=tags)
            if not math.isnan(latency):
                self._metrics["ray_shards_heartbeat_latency_seconds"].set(latency, tags=tags)
            if events:
                self._metrics["ray_shards_shard_events_total"].inc(events, tags=tags)

    def flush(self) -> None:
        """Set the host's gauges from the shards observed since the last flush, and start over."""
        states, latencies = self._states, sorted(self._latencies)
        self._states, self._latencies = collections.Counter(), []
        if not self._metrics:
            return
        gauge = self._metrics["ray_shards_host_shards"]
        for status in _HOST_STATES:  # every state, so a count that fell to 0 reads 0
            gauge.set(states[status], tags=self._host_tags | {"state": status.value})
        if latencies:  # none ready: no value, rather than a made-up 0
            gauge = self._metrics["ray_shards_host_heartbeat_latency_seconds"]
            for q in HOST_QUANTILES:
                gauge.set(quantile(latencies, q), tags=self._host_tags | {"quantile": f"{q:g}"})

    def count(self, name: str) -> None:
        """Add one to the host's ``identifies``, ``resumes`` or ``reconnects``."""
        counter = self._metrics.get(f"ray_shards_{name}_total")
        if counter is not None:
            counter.inc(1, tags=self._host_tags)

    def forget(self, shard_id: int) -> None:
        """The shard left this host: its state series here says so (-1), so it is not counted twice."""
        self._last_seq.pop(shard_id, None)
        if self._per_shard and self._metrics:
            self._metrics["ray_shards_shard_state"].set(LEFT_HOST, tags=self._shard_tags(shard_id))
