"""A Ray actor class that imports nothing at module level: what a bare Ray worker process costs in memory."""

from __future__ import annotations

import os


def _uss() -> dict[str, int]:
    result = {"rss": 0, "uss": 0}
    with open(f"/proc/{os.getpid()}/smaps_rollup") as smaps:
        for line in smaps:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                if key == "Rss":
                    result["rss"] = int(fields[0]) * 1024
                elif key in ("Private_Clean", "Private_Dirty"):
                    result["uss"] += int(fields[0]) * 1024
    return result


class Probe:
    """USS of this worker process now, and after importing hikari and ray_shards."""

    def memory(self) -> dict[str, int]:
        return _uss()

    def import_stack(self) -> dict[str, int]:
        import hikari  # noqa: F401

        import ray_shards  # noqa: F401

        return _uss()


class AttributionProbe:
    """Memory of ray_shards' per-shard Ray metrics series, rebuilt in a bare Ray worker and measured by USS."""

    def metrics(self, shards: int, per_shard: bool = True) -> dict[str, int]:
        """USS growth from a host's Ray metrics for ``shards`` shards: with ``per_shard``, the opt-in
        per-shard series (state, latency, events tagged bot/shard/host), else the per-host ones only."""
        from ray_shards.metrics import ShardMetrics
        from ray_shards.models import ShardStatus

        metrics = ShardMetrics(1, "probe", per_shard=per_shard)
        metrics.observe(0, ShardStatus.READY, 0.05, 1)  # create the metric objects first
        metrics.flush()
        before = _uss()["uss"]
        for seq in (100, 200):
            for shard_id in range(1, shards + 1):
                metrics.observe(shard_id, ShardStatus.READY, 0.05, seq)
            metrics.flush()
        for name in ("identifies", "resumes", "reconnects"):
            for _ in range(shards):
                metrics.count(name)
        import time

        time.sleep(12.0)  # past one of Ray's metrics exports (every 10 s), which fills the SDK's per-series storage
        return {"uss_growth": _uss()["uss"] - before, "shards": shards}


def shard_metrics_on() -> dict[str, bool]:
    """A ``settings_factory`` switching the hosts' per-shard metrics series on."""
    return {"shard_metrics": True}
