"""Plain-text rendering of the shard table, for the CLI, logs and notebooks."""

from __future__ import annotations

import math
import typing

from ray_shards.metrics import quantile
from ray_shards.models import ShardInfo

if typing.TYPE_CHECKING:
    from ray_shards.protocol import BotStatus

__all__ = ["render_bar", "render_progress", "render_summary", "render_table"]

_COLUMNS = ("shard", "status", "host", "node", "latency", "seq", "guilds", "identifies", "resumes", "error")


def _latency(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f} ms"


def render_table(rows: typing.Iterable[ShardInfo]) -> str:
    """Return the shard table as aligned text, one shard a line."""
    lines = [
        (
            str(r.shard_id),
            r.status.value,
            r.host_id or "-",
            (r.node_id or "-")[:8],
            _latency(r.latency),
            "-" if r.seq is None else str(r.seq),
            str(r.guilds),
            str(r.identifies),
            str(r.resumes),
            (r.error or "")[:60],
        )
        for r in sorted(rows, key=lambda r: r.shard_id)
    ]
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c) for i, c in enumerate(_COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
    out.extend("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)
    return "\n".join(out)


def render_progress(status: BotStatus) -> str:
    """One line of boot progress: shards READY out of total and the identify schedule's time left."""
    ready, total = status.ready, status.total
    eta = status.identify_eta
    hosts = len(status.hosts)
    tail = f", about {eta:.0f} s left by the identify schedule" if ready < total and eta > 0 else ""
    return f"{ready}/{total} shards READY on {hosts} host(s){tail}"


_STATES = ("ready", "starting", "reconnecting", "unassigned", "failed", "stopped")


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted here), as the hosts' latency gauges take it; NaN for none."""
    return quantile(sorted(values), q) if values else float("nan")


def render_summary(rows: typing.Iterable[ShardInfo]) -> str:
    """Return one line per host: its shards counted by state and its heartbeat latency p50/p99.

    Readable at thousands of shards, where `render_table`'s one line per shard is not.
    Shards no host holds are counted on the host line ``-``.
    """
    by_host: dict[str, list[ShardInfo]] = {}
    for row in rows:
        by_host.setdefault(row.host_id or "-", []).append(row)
    columns = ("host", "node", "shards", *_STATES, "p50", "p99")
    lines: list[tuple[str, ...]] = []
    totals = dict.fromkeys(_STATES, 0)
    for host in sorted(by_host):
        shards = by_host[host]
        counts = {state: sum(1 for r in shards if r.status.value == state) for state in _STATES}
        for state, count in counts.items():
            totals[state] += count
        latencies = [r.latency for r in shards if not math.isnan(r.latency)]
        nodes = {(r.node_id or "-")[:8] for r in shards}
        lines.append((host, ",".join(sorted(nodes)), str(len(shards)), *(str(counts[s]) for s in _STATES),
                      _latency(_percentile(latencies, 0.5)), _latency(_percentile(latencies, 0.99))))
    lines.append(("total", "", str(sum(totals.values())), *(str(totals[s]) for s in _STATES), "", ""))
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out.extend("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)
    return "\n".join(out)


def render_bar(ready: int, total: int, eta: float, width: int = 30) -> str:
    """A one-line progress bar for a boot: ``[#####.....] 40/128 READY, ETA 2m20s``."""
    filled = 0 if total <= 0 else min(width, round(width * ready / total))
    tail = f", ETA {int(eta) // 60}m{int(eta) % 60:02d}s" if ready < total and eta > 0 else ""
    return f"[{'#' * filled}{'.' * (width - filled)}] {ready}/{total} READY{tail}"
