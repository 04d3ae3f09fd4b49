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

    def metrics(self, shards: int) -> dict[str, int]:
        """USS growth from ray_shards' per-shard Ray metrics series (6 metrics tagged bot/shard/host per shard)."""
        from ray_shards.metrics import ShardMetrics
        from ray_shards.models import ShardStatus

        metrics = ShardMetrics(1, "probe")
        metrics.observe(0, ShardStatus.READY, 0.05, 1)  # create the metric objects first
        before = _uss()["uss"]
        for shard_id in range(1, shards + 1):
            metrics.observe(shard_id, ShardStatus.READY, 0.05, 100)
            metrics.observe(shard_id, ShardStatus.READY, 0.05, 200)
            for name in ("identifies", "resumes", "reconnects"):
                metrics.count(name, shard_id)
        import time

        time.sleep(12.0)  # past one of Ray's metrics exports (every 10 s), which fills the SDK's per-series storage
        return {"uss_growth": _uss()["uss"] - before, "shards": shards}
