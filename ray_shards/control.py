"""What the control plane decides when a host speaks or goes: pure functions over the table and the scheduler.

No Ray, no asyncio, no I/O, no clock read: every ``now`` is the caller's. Those given to the identify
scheduler are monotonic; those stored in the table the Orchestrator shows but does not decide on (see
`ray_shards.table`). The Orchestrator actor (`ray_shards.orchestrator`) calls these from its remote
methods and its reconcile pass, and carries out what they return (wake a parked sync, log, checkpoint);
the simulator's model of the actor (`ray_shards.sim.world.Shell`) calls the very same functions, so the
decisions its thousands of seeded fault schedules check are the actor's own, not a copy of them.

The `ShardTable` is the only writer of its records and the `IdentifyScheduler` of its windows;
these functions only sequence their calls the way the protocol needs (see ``docs/control-plane.md``):

- nothing is placed while the Orchestrator recovers from a restart (``place=False``): the restored
  table may be older than what the hosts run, and until every host reported, a shard it shows as
  unassigned may still run somewhere;
- a shard that leaves its host (released, revoked, lost) also leaves the identify queue, so a
  stale holder cannot keep or take its bucket;
- an IDENTIFY is granted only to the current lease holder, and a RESUME only after a positive
  lease check (`lease_checked`).
"""

from __future__ import annotations

import dataclasses
import enum
import typing

from ray_shards.identify import IdentifyBudgetExhaustedError, IdentifyGrant, IdentifyScheduler
from ray_shards.models import Lease, ReportBatch, SessionState, ShardReport
from ray_shards.table import ShardTable

__all__ = [
    "BUDGET_POLL",
    "JoinSet",
    "Joined",
    "Lost",
    "Placement",
    "Released",
    "Synced",
    "directives",
    "host_joined",
    "host_lost",
    "identify_requested",
    "lease_checked",
    "placement_pass",
    "reports_applied",
    "set_to_join",
    "shard_released",
]

BUDGET_POLL = 1.0
"""Seconds a shard waits before asking again when the daily budget is used up and its reset is not known yet."""


class JoinSet(enum.Enum):
    """Which set of shards a registering host joins (there are two during a reshard, and for a while after it)."""

    LIVE = "live"
    """The bot's set: the one that delivers events."""
    NEW = "new"
    """A reshard's new set, started in shadow mode (it holds its events until the switch)."""
    OLD = "old"
    """The old set of a reshard past its commit point: its host is being retired, and is placed nothing."""


def set_to_join(
    host_id: str,
    shard_count: int | None,
    *,
    live_count: int,
    new_count: int | None = None,
    old_hosts: typing.Container[str] = (),
) -> JoinSet:
    """Which set a host that registers asking for ``shard_count`` shards (None: whatever the bot runs) joins.

    An old host is known by name, not by count: after the commit point the new set may run the count the old
    one ran before an earlier reshard, and the old host's leases are the old table's (in the bot's table they
    would be stale: handed over, not ended). A host asking for the new set's count joins the new set; a host
    asking for any other count than the bot's is a host of an abandoned set, which must not start.

    Raises
    ------
    ValueError
        For a count that is neither the bot's nor the reshard's new one.
    """
    if host_id in old_hosts:
        return JoinSet.OLD
    if new_count is not None and shard_count == new_count:
        return JoinSet.NEW
    if shard_count is not None and shard_count != live_count:
        msg = f"this bot runs {live_count} shards, not {shard_count}"
        raise ValueError(msg)
    return JoinSet.LIVE


@dataclasses.dataclass(frozen=True, slots=True)
class Joined:
    """A host (re-)registered: its new leases, the held shards it must stop, and other hosts' new leases."""

    leases: list[Lease]
    stale: list[int]
    placed: dict[str, list[Lease]]


@dataclasses.dataclass(frozen=True, slots=True)
class Synced:
    """A host's report was applied: the shards it runs without a current lease (revoked), and whether the
    hosts' records (what the checkpoint head holds) changed."""

    stale: list[int]
    hosts_changed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Released:
    """A host gave a shard back: whether it was the owner, and the leases placement handed out after it."""

    released: bool
    placed: dict[str, list[Lease]]


@dataclasses.dataclass(frozen=True, slots=True)
class Lost:
    """A host is gone: the shards it held (now unassigned, sessions kept for RESUME) and where they went."""

    orphans: list[int]
    placed: dict[str, list[Lease]]


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """One placement pass: the new leases, and the one shard rebalancing moves (``(shard, donor)``), if any."""

    placed: dict[str, list[Lease]]
    move: tuple[int, str] | None


@dataclasses.dataclass(frozen=True, slots=True)
class IdentifyDecision:
    """The answer to a shard's request to IDENTIFY.

    ``granted``: send it after ``wait`` (0 unless the asker took a not-before grant; the wait is counted
    from the answer's arrival), within the grant-use limit after it. Otherwise ``lease_lost`` (the asker no longer
    holds the shard: stop) or wait ``wait`` seconds and ask again; ``refresh_budget`` says the daily
    budget is used up with no known reset, so the shell must ask Discord (GET /gateway/bot).
    """

    granted: bool = False
    wait: float = 0.0
    lease_lost: bool = False
    refresh_budget: bool = False


def host_joined(
    table: ShardTable,
    host_id: str,
    *,
    node_id: str | None,
    want: int,
    has_handle: bool,
    now: float,
    held: typing.Iterable[tuple[int, int]] = (),
    placeable: bool = True,
    place: bool = True,
) -> Joined:
    """Register ``host_id`` (or refresh it after an Orchestrator restart) and place what waits.

    ``held`` is the ``(shard, epoch)`` leases the host still runs. A held lease *newer* than the
    table's is not stale: the table was restored from a checkpoint older than that lease, and the
    host's first full report makes it current (`ShardTable.apply_reports`). Only older or unknown
    ones must stop.
    """
    table.register_host(host_id, node_id=node_id, want=want, has_handle=has_handle, now=now, placeable=placeable)
    stale = [
        shard_id
        for shard_id, epoch in held
        if shard_id not in table.shards
        or (not table.holds(host_id, shard_id, epoch) and epoch <= table.shards[shard_id].epoch)
    ]
    placed = table.place() if place else {}
    return Joined(leases=placed.pop(host_id, []), stale=stale, placed=placed)


def directives(table: ShardTable, host_id: str, *, recovering: bool) -> tuple[list[Lease], list[int]]:
    """What a sync answer tells ``host_id`` to adopt and to revoke.

    No adopt while recovering. Every adopt the table holds then was restored from the checkpoint, and the
    checkpoint may be older than a hand-over: the shard may already run, at a newer epoch, on a host that
    has not reported yet. Adopting it would pass the lease check (the restored table still calls that lease
    current) and RESUME a second session (the simulator found it: seed 32769). Once every host has
    reported (the recovery grace is longer than ``lease_ttl``) such an adopt is dropped as stale, and the
    others go out. Revokes go out at once: stopping a shard never makes a second session.
    """
    adopt, revoke = table.directives_for(host_id)
    return ([] if recovering else adopt), revoke


def reports_applied(
    table: ShardTable,
    host_id: str,
    reports: typing.Iterable[ShardReport] | ReportBatch,
    now: float,
    *,
    report_seq: int | None,
    recovering: bool,
) -> Synced:
    """Apply a host's sync report (its full actual state, numbered by ``report_seq``).

    While recovering, the report is applied without the full-state diff: a host that has not
    re-registered with this incarnation yet may not report everything it runs, and a shard the
    diff took for not running would be handed on while it still runs.
    """
    host = table.hosts.get(host_id)
    before = (table.hosts_version, len(host.pending_adopt) if host is not None else 0)
    stale = table.apply_reports(host_id, reports, now, report_seq=None if recovering else report_seq)
    host = table.hosts.get(host_id)
    after = (table.hosts_version, len(host.pending_adopt) if host is not None else 0)
    return Synced(stale=stale, hosts_changed=after != before)


def shard_released(
    table: ShardTable,
    scheduler: IdentifyScheduler,
    host_id: str,
    shard_id: int,
    epoch: int,
    session: SessionState | None,
    *,
    stopped: bool = False,
    failed: str | None = None,
    place: bool = True,
) -> Released:
    """A host gave ``shard_id`` back with its session; hand it on at once (unless ``place`` is off).

    ``failed`` marks the shard failed for good (a non-resumable close Discord will refuse again,
    such as invalid intents): it is not placed again.
    """
    if not table.release(host_id, shard_id, epoch, session, stopped=stopped):
        return Released(released=False, placed={})
    scheduler.cancel(shard_id)
    if failed is not None:
        table.mark_failed(shard_id, failed)
        return Released(released=True, placed={})
    return Released(released=True, placed=table.place() if place else {})


def host_lost(table: ShardTable, scheduler: IdentifyScheduler, host_id: str, *, place: bool = True) -> Lost:
    """``host_id`` is gone (its actor died, or it was fenced after its quarantine): move its shards.

    Its shards keep their sessions, so the next owner RESUMEs them. Nothing is placed while the
    Orchestrator recovers (``place`` off): the reconcile pass places once every host has reported.
    Returns nothing to do when the host was already taken for gone.
    """
    host = table.hosts.get(host_id)
    if host is None or not host.alive:
        return Lost(orphans=[], placed={})
    orphans = table.host_lost(host_id)
    for shard_id in orphans:
        scheduler.cancel(shard_id)
    placed = table.place() if place else {}
    table.forget_host(host_id)
    return Lost(orphans=orphans, placed=placed)


def placement_pass(table: ShardTable, *, rebalance: bool = True) -> Placement:
    """Place every unassigned shard, then revoke at most one shard from a host above its share.

    One move per pass: the revoked shard stays its donor's until the donor releases it (after its
    listeners drain), and the next pass counts it as gone already (`ShardTable.rebalance_move`).
    """
    placed = table.place()
    move = table.rebalance_move() if rebalance else None
    if move is not None:
        table.revoke(move[1], move[0])
    return Placement(placed=placed, move=move)


def identify_requested(
    table: ShardTable,
    scheduler: IdentifyScheduler,
    host_id: str,
    shard_id: int,
    epoch: int,
    now: float,
    *,
    ask: int | None = None,
    dropped: int | None = None,
    early: bool = False,
) -> IdentifyDecision:
    """May ``host_id`` IDENTIFY ``shard_id`` (lease ``epoch``) now? Counts the grant in the shard's row.

    ``ask`` numbers this ask; ``dropped`` names an earlier ask whose grant came too late and went unused
    (`IdentifyScheduler.request`); ``early`` says the asker takes a not-before grant.
    """
    if not table.holds(host_id, shard_id, epoch):
        # Not the holder (any more): it must not keep a place in the queue either.
        scheduler.cancel(shard_id)
        return IdentifyDecision(lease_lost=True)
    try:
        outcome = scheduler.request(shard_id, now, holder=(host_id, epoch), ask=ask, dropped=dropped, early=early)
    except IdentifyBudgetExhaustedError:
        # Used up with no known reset (no budget answer from Discord yet): poll, and have the shell ask.
        return IdentifyDecision(wait=BUDGET_POLL, refresh_budget=True)
    if isinstance(outcome, IdentifyGrant):
        table.shards[shard_id].identifies += 1
        table.note_counters(shard_id)
        return IdentifyDecision(granted=True, wait=max(0.0, outcome.opens - now))
    return IdentifyDecision(wait=outcome)


def lease_checked(table: ShardTable, host_id: str, shard_id: int, epoch: int) -> bool:
    """Whether ``host_id`` may RESUME ``shard_id`` now: it holds the current lease. Counts the resume."""
    if not table.holds(host_id, shard_id, epoch):
        return False
    table.shards[shard_id].resumes += 1
    table.note_counters(shard_id)
    return True
