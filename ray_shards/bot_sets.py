"""The bot's shard sets: the live table and fleet, a reshard's new set beside them, and a committed reshard's old set.

Most of the time a bot has one set: a `ShardTable` (who owns which shard, under which lease) and the
`HostFleet` of host actors running it. A live reshard starts a second set with the new shard count
beside it (``next_*``); at its commit point the new set becomes the bot and the old one is kept
(``old_set``) until its hosts are retired. Every host works on one table (`BotSets.table_of`). No Ray here:
the fleets start and kill actors, the sets only say which is which.
"""

from __future__ import annotations

import dataclasses
import typing

if typing.TYPE_CHECKING:
    from ray_shards.fleet import HostFleet
    from ray_shards.table import ShardTable

__all__ = ["BotSets"]


@dataclasses.dataclass(slots=True)
class BotSets:
    """The bot's sets; ``table`` and ``fleet`` are None until the bot is initialised (or restored)."""

    table: ShardTable | None = None
    """The bot's table: the set that delivers events."""
    fleet: HostFleet | None = None
    next_table: ShardTable | None = None
    """A reshard's new set, from its start until it is committed or abandoned."""
    next_fleet: HostFleet | None = None
    old_set: tuple[ShardTable, HostFleet] | None = None
    """A committed reshard's old set, until its hosts are retired."""
    host_tables: dict[str, ShardTable] = dataclasses.field(default_factory=dict)
    """The table of each host not on the bot's (a new-set or an old-set host)."""

    def table_of(self, host_id: str) -> ShardTable:
        """The shard table a host works on (the resharding target's, for the new set of hosts)."""
        table = self.host_tables.get(host_id, self.table)
        assert table is not None
        return table

    def tables(self) -> list[ShardTable]:
        """The tables placement works on: the bot's and a reshard's new one (an old set's never places)."""
        return [t for t in (self.table, self.next_table) if t is not None]

    def fleets(self) -> list[HostFleet]:
        """The fleets kept at their size: the bot's and a reshard's new one (an old set's is retired)."""
        return [f for f in (self.fleet, self.next_fleet) if f is not None]

    def every_fleet(self) -> list[HostFleet]:
        """Every fleet with hosts to kill at shutdown, the old set's included."""
        return self.fleets() + ([self.old_set[1]] if self.old_set is not None else [])

    def start_new_set(self, table: ShardTable, fleet: HostFleet) -> None:
        """A reshard's new set begins (its hosts register on ``table``: `ray_shards.control.set_to_join`)."""
        self.next_table, self.next_fleet = table, fleet

    def abandon_new_set(self) -> HostFleet | None:
        """Forget the new set (a reshard rolled back); returns its fleet, whose hosts the caller kills."""
        fleet, self.next_table, self.next_fleet = self.next_fleet, None, None
        return fleet

    def commit(self) -> None:
        """The new set becomes the bot's; the bot's becomes the old set, to retire."""
        assert self.table is not None and self.fleet is not None
        assert self.next_table is not None and self.next_fleet is not None
        new_table, new_fleet = self.next_table, self.next_fleet
        self.old_set = (self.table, self.fleet)
        self.table, self.fleet = new_table, new_fleet
        self.next_table = self.next_fleet = None
        new_fleet.shadow = False
        for host in new_table.live_hosts():
            self.host_tables.pop(host.host_id, None)
