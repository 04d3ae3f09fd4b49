"""A caller's copy of the Orchestrator's shard table, kept current by delta reads (`Orchestrator.table_since`).

Clients and hosts used to fetch the whole table on every poll: O(shards) per poll per
follower at the Orchestrator. A `TableView` sends the table version it holds and gets only
the rows whose owner, epoch, status, error, guilds or node changed; a follower with nothing
else to do parks in the Orchestrator until something changes. Seq, latency and event
counts are only as fresh as the last read of their row, so a full read is still made now
and then (``full_every``).
"""

from __future__ import annotations

import random
import time
import typing

from ray_shards.protocol import ShardInfo, TableDelta

if typing.TYPE_CHECKING:
    from ray_shards.link import OrchestratorLink

__all__ = ["TableView"]

_WHOLE_TABLE = -1
"""A version below every real one: `table_since` answers it with the full table."""


class TableView:
    """Rows by shard id, the table object they come from and the version they are at.

    Parameters
    ----------
    full_every
        Seconds between two full reads (for the fields deltas do not carry).
    rng
        Randomness for the long poll's jitter (injected for tests).
    """

    __slots__ = ("_full_at", "_full_every", "_rng", "_table_id", "_version", "rows")

    def __init__(self, *, full_every: float = 15.0, rng: random.Random | None = None) -> None:
        self.rows: dict[int, ShardInfo] = {}
        self._table_id = 0
        self._version = _WHOLE_TABLE
        self._full_at = -float("inf")
        self._full_every = full_every
        self._rng = rng or random.Random()

    @property
    def position(self) -> tuple[int, int] | None:
        """``(table id, version)`` held, for a delta carried by a sync answer; None before the first read."""
        return None if self._version == _WHOLE_TABLE else (self._table_id, self._version)

    def full_due(self) -> bool:
        """Whether the next `read` would read the whole table (``full_every`` passed)."""
        return time.monotonic() - self._full_at > self._full_every

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
        else:
            self.rows.update((row.shard_id, row) for row in rows)
        self._table_id, self._version = delta.table_id, delta.version
        return rows

    async def read(self, link: OrchestratorLink, *, full: bool = False, wait: float = 0.0) -> list[ShardInfo]:
        """Read what changed (everything with ``full``, or when a full read is due), parking up to ``wait`` s.

        Returns the rows received. ``wait`` gets up to 20 % of jitter, so followers that
        park together do not all come back at once.
        """
        full = full or time.monotonic() - self._full_at > self._full_every
        version = _WHOLE_TABLE if full else self._version
        park = 0.0 if full or wait <= 0 else wait * (1.0 + 0.2 * self._rng.random())
        delta = await link.table_since(self._table_id, version, park, retry_for=10.0 + park)
        return self.apply(delta)
