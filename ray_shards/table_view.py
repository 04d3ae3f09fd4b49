"""A caller's copy of the Orchestrator's shard table, kept current by delta reads (`Orchestrator.table_since`).

Clients and hosts used to fetch the whole table on every poll: O(shards) per poll per
follower at the Orchestrator. A `TableView` sends the table version it holds and gets only
the rows whose owner, epoch, status, error, guilds or node changed; a follower with nothing
else to do parks in the Orchestrator until something changes. Seq, latency and event
counts are only as fresh as the last read of their row, so a full read is still made now
and then (``full_every``), and less often the more hosts share the table
(`full_read_interval`): a full read costs the Orchestrator O(shards), and every host makes
them, so at a fixed interval their cost grew with shards times hosts (45 % of a core modelled at
32,768 shards on 256 hosts; BENCHMARKS F2).
"""

from __future__ import annotations

import random
import time
import typing

from ray_shards.protocol import ShardInfo, TableDelta

if typing.TYPE_CHECKING:
    from ray_shards.link import OrchestratorLink

__all__ = ["FULL_READS_PER_SECOND", "TableView", "full_read_interval"]

_WHOLE_TABLE = -1
"""A version below every real one: `table_since` answers it with the full table."""

FULL_READS_PER_SECOND = 2.0
"""Most full reads a second the bot's hosts make together, once there are enough hosts for it to bind."""


def full_read_interval(full_every: float, hosts: int) -> float:
    """Seconds between one follower's full reads when ``hosts`` followers each make them.

    ``full_every`` for a small bot; past ``full_every * FULL_READS_PER_SECOND`` hosts (60 at 30 s) it grows
    with the hosts so that all of them together make at most `FULL_READS_PER_SECOND`. Only seq, latency and
    event counts wait longer for it (everything a command or a hand-over needs comes by delta).
    """
    return max(full_every, hosts / FULL_READS_PER_SECOND)


class TableView:
    """Rows by shard id, the table object they come from and the version they are at.

    Parameters
    ----------
    full_every
        Seconds between two full reads (for the fields deltas do not carry).
    rng
        Randomness for the long poll's jitter (injected for tests).
    """

    __slots__ = ("_full_at", "_full_every", "_interval", "_rng", "_table_id", "_version", "rows")

    def __init__(self, *, full_every: float = 15.0, rng: random.Random | None = None) -> None:
        self.rows: dict[int, ShardInfo] = {}
        self._table_id = 0
        self._version = _WHOLE_TABLE
        self._full_at = -float("inf")
        self._full_every = full_every
        # full_read_interval for the hosts the last full read showed.
        self._interval = full_every
        self._rng = rng or random.Random()

    @property
    def position(self) -> tuple[int, int] | None:
        """``(table id, version)`` held, for a delta carried by a sync answer; None before the first read."""
        return None if self._version == _WHOLE_TABLE else (self._table_id, self._version)

    def full_due(self) -> bool:
        """Whether the next `read` would read the whole table (`full_interval` passed)."""
        return time.monotonic() - self._full_at > self._interval

    @property
    def full_interval(self) -> float:
        """Seconds between full reads: ``full_every``, or longer for many hosts (`full_read_interval`)."""
        return self._interval

    @property
    def version(self) -> int:
        """The table version held (-1 before the first read)."""
        return self._version

    def apply(self, delta: TableDelta) -> list[ShardInfo]:
        """Take in one answer of `table_since`; return the rows it carried."""
        rows = delta.infos()
        if delta.full:
            self.rows = {row.shard_id: row for row in rows}
            self._full_at = time.monotonic()
            hosts = len({row.host_id for row in rows if row.host_id is not None})
            self._interval = full_read_interval(self._full_every, hosts)
        else:
            self.rows.update((row.shard_id, row) for row in rows)
        self._table_id, self._version = delta.table_id, delta.version
        return rows

    async def read(self, link: OrchestratorLink, *, full: bool = False, wait: float = 0.0) -> list[ShardInfo]:
        """Read what changed (everything with ``full``, or when a full read is due), parking up to ``wait`` s.

        Returns the rows received. ``wait`` gets up to 20 % of jitter, so followers that
        park together do not all come back at once.
        """
        full = full or self.full_due()
        version = _WHOLE_TABLE if full else self._version
        park = 0.0 if full or wait <= 0 else wait * (1.0 + 0.2 * self._rng.random())
        delta = await link.table_since(self._table_id, version, park, retry_for=10.0 + park)
        return self.apply(delta)
