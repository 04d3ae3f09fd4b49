"""Plain-text rendering of the shard table, for the CLI, logs and notebooks."""

from __future__ import annotations

import math
import typing

from ray_shards.models import ShardInfo

__all__ = ["render_progress", "render_table"]

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


def render_progress(status: typing.Mapping[str, typing.Any]) -> str:
    """One line of boot progress: shards READY out of total and the identify schedule's time left."""
    ready, total = status["ready"], status["total"]
    eta = float(status.get("identify_eta", 0.0))
    hosts = len(status.get("hosts", {}))
    tail = f", about {eta:.0f} s left by the identify schedule" if ready < total and eta > 0 else ""
    return f"{ready}/{total} shards READY on {hosts} host(s){tail}"
