"""The Orchestrator's side of following the shard table: deltas, full reads and the parked long polls.

Hosts and Clients keep a copy of the table (`ray_shards.table_view.TableView`) by sending the
``(table id, version)`` they hold; the answer is the rows changed since, or the whole table when
they hold another table (the Orchestrator restarted, or a reshard switched tables) or a version
older than the table's change log. A follower with nothing to learn parks until the version moves.
asyncio only, no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
import typing

from ray_shards.protocol import TableDelta

if typing.TYPE_CHECKING:
    from ray_shards.table import ShardTable

__all__ = ["MAX_TABLE_WAIT", "TableFeed"]

MAX_TABLE_WAIT = 30.0
"""Longest a `table_since` long poll parks in the Orchestrator."""


class TableFeed:
    """Serves the table's changes to its followers; ``current()`` is the bot's table now (None before it has one)."""

    def __init__(self, current: typing.Callable[[], ShardTable | None]) -> None:
        self._current = current
        self._seen: tuple[int, int] | None = None
        self._bumped = asyncio.Event()
        self._columns: tuple[tuple[int, int, int], bytes] | None = None

    def moved(self) -> None:
        """Wake the parked followers if the current table's version moved (cheap when it did not)."""
        table = self._current()
        seen = (table.instance, table.version) if table is not None else None
        if seen != self._seen:
            self._seen = seen
            # A fresh Event per change: every parked follower wakes once, and none can clear it for the others.
            bumped, self._bumped = self._bumped, asyncio.Event()
            bumped.set()

    async def wait_for_change(self, table: ShardTable, version: int, wait: float,
                              stopping: typing.Callable[[], bool]) -> None:
        """Park until ``table`` moves past ``version``, stops being the bot's table, the bot stops, or ``wait``
        (at most `MAX_TABLE_WAIT`) passes."""
        deadline = time.monotonic() + min(wait, MAX_TABLE_WAIT)
        while self._current() is table and table.version == version and not stopping():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._bumped.wait()), remaining)

    def delta_for(self, position: tuple[int, int] | None) -> TableDelta | None:
        """What a follower at ``position`` lacks of the current table (None: nothing, or nothing asked)."""
        table = self._current()
        if position is None or table is None:
            return None
        table_id, version = position
        if table.instance == table_id and table.version == version:
            return None
        return self.delta(table, table_id, version)

    def delta(self, table: ShardTable, table_id: int, version: int) -> TableDelta:
        """The rows of ``table`` changed since ``version`` of table ``table_id``, or all of it (another table,
        or a version older than the table's change log)."""
        changed = table.changed_since(version) if table.instance == table_id else None
        if changed is None:
            return TableDelta(table.instance, table.version, True, [], packed=self._full_columns(table))
        return TableDelta(table.instance, table.version, False, table.infos(only=changed))

    def _full_columns(self, table: ShardTable) -> bytes:
        """The whole table for a full read (pickled `ShardColumns`), built at most once a second per table
        version: every host reads it every 30 s, and seqs and latencies a second old are as fresh as a full
        read promises. Every read in that second sends the same bytes."""
        key = (table.instance, table.version, int(time.monotonic()))
        if self._columns is None or self._columns[0] != key:
            self._columns = (key, pickle.dumps(table.columns(), protocol=5))
        return self._columns[1]
