"""What the long operations' cores read: the fleet and the shard tables, reduced to views (pure, no Ray, no I/O).

The rolling restart (`ray_shards.rolling`) and the reshard (`ray_shards.resharding`) decide on a
`RollView` or a `ReshardView` built here from the table and the fleet's intent. The Orchestrator actor
and the simulator (`ray_shards.sim`) keep their fleets differently (actor handles and start tasks against
simulated processes) but build their views with these same functions, so what the simulator proves is
about the views the actor builds.
"""

from __future__ import annotations

import dataclasses
import typing

from ray_shards import resharding as rs
from ray_shards import rolling as roll
from ray_shards.models import ShardStatus

if typing.TYPE_CHECKING:
    from ray_shards.table import ShardTable

__all__ = ["FleetHost", "reshard_view", "roll_view"]


@dataclasses.dataclass(frozen=True, slots=True)
class FleetHost:
    """One host of the fleet's intent: its slot, its share of the shards and whether it is being replaced."""

    host_id: str
    slot: int
    want: int
    retiring: bool = False


def roll_view(
    table: ShardTable,
    fleet: typing.Iterable[FleetHost],
    *,
    starting: typing.Iterable[int] = (),
    retiring: typing.Iterable[str] = (),
) -> roll.RollView:
    """The rolling restart's view of ``fleet`` (its hosts' intent) against ``table`` (who is live, who owns what).

    ``starting``: slots with a host start in flight; ``retiring``: hosts whose retirement (close, then kill)
    is in flight.
    """
    hosts = []
    for host in fleet:
        record = table.hosts.get(host.host_id)
        live = record is not None and record.alive
        hosts.append(roll.HostView(
            host_id=host.host_id, slot=host.slot, want=host.want, retiring=host.retiring, live=live,
            draining=live and record is not None and record.draining, owns=len(table.owned_by(host.host_id)),
        ))
    return roll.RollView(
        hosts=tuple(hosts),
        starting=frozenset(starting),
        retiring=frozenset(retiring),
        all_ready=all(r.status is ShardStatus.READY for r in table.shards.values() if r.host_id is not None),
    )


def reshard_view(
    table: ShardTable,
    new_table: ShardTable | None,
    *,
    old_desired: int,
    new_starting: int,
    fenced: typing.Collection[str] = (),
) -> rs.ReshardView:
    """The reshard's view of the bot's ``table`` (the old set) and the ``new_table`` being started.

    Fenced hosts (being killed for silence) count as gone in both sets.
    """
    new_shards: dict[str, tuple[int, ...]] = {}
    new_ready = 0
    if new_table is not None:
        new_shards = {h.host_id: tuple(new_table.owned_by(h.host_id)) for h in new_table.live_hosts()
                      if h.host_id not in fenced}
        new_ready = sum(1 for r in new_table.shards.values() if r.status is ShardStatus.READY)
    return rs.ReshardView(
        old_hosts=tuple(h.host_id for h in table.live_hosts() if h.host_id not in fenced),
        new_shards=new_shards, new_ready=new_ready, old_desired=old_desired, new_starting=new_starting,
    )
