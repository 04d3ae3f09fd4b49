"""The Orchestrator's shard table: ownership, lease epochs and placement, as pure logic.

The table decides which host runs which shard. A host owns a shard only while
it holds that shard's lease at the current epoch. A shard is given to another
host only after its owner released it or is known to be gone, and every new
lease gets a higher epoch, so stale hosts are recognised and told to stop.
Nothing here calls Ray; the clock is an argument.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from ray_shards.models import Lease, SessionState, ShardInfo, ShardReport, ShardStatus

__all__ = ["HostRecord", "ShardRecord", "ShardTable"]


@dataclasses.dataclass(slots=True)
class ShardRecord:
    """The table's row for one shard."""

    shard_id: int
    host_id: str | None = None
    epoch: int = 0
    status: ShardStatus = ShardStatus.UNASSIGNED
    session: SessionState | None = None
    latency: float = float("nan")
    guilds: int = 0
    events: int = 0
    last_seen: float = 0.0
    identifies: int = 0
    resumes: int = 0
    error: str | None = None
    ever_assigned: bool = False
    stopped: bool = False


@dataclasses.dataclass(slots=True)
class HostRecord:
    """A shard host (a ShardHost actor or a standalone `Bot`) known to the table."""

    host_id: str
    node_id: str | None
    want: int
    has_handle: bool
    last_sync: float
    alive: bool = True
    pending_adopt: list[Lease] = dataclasses.field(default_factory=list)
    pending_revoke: list[int] = dataclasses.field(default_factory=list)


class ShardTable:
    """Shard ownership for one bot.

    Parameters
    ----------
    shard_count
        Number of shards of the bot.
    """

    __slots__ = ("hosts", "shard_count", "shards")

    def __init__(self, shard_count: int) -> None:
        if shard_count < 1:
            msg = f"shard_count must be at least 1, not {shard_count}"
            raise ValueError(msg)
        self.shard_count = shard_count
        self.shards: dict[int, ShardRecord] = {i: ShardRecord(i) for i in range(shard_count)}
        self.hosts: dict[str, HostRecord] = {}

    # -- hosts -----------------------------------------------------------------------------------

    def register_host(
        self, host_id: str, *, node_id: str | None, want: int, has_handle: bool, now: float
    ) -> HostRecord:
        """Add a host, or refresh one that registers again (after an Orchestrator restart)."""
        if want < 0:
            msg = f"a host cannot want {want} shards"
            raise ValueError(msg)
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            host = HostRecord(host_id=host_id, node_id=node_id, want=want, has_handle=has_handle, last_sync=now)
            self.hosts[host_id] = host
        else:
            host.node_id = node_id
            host.want = want
            host.has_handle = has_handle
            host.last_sync = now
        return host

    def owned_by(self, host_id: str) -> list[int]:
        """Shard ids whose current lease belongs to ``host_id``."""
        return [r.shard_id for r in self.shards.values() if r.host_id == host_id]

    def live_hosts(self) -> list[HostRecord]:
        """Hosts not known to be gone."""
        return [h for h in self.hosts.values() if h.alive]

    def host_lost(self, host_id: str) -> list[int]:
        """Mark ``host_id`` gone: its shards become unassigned, keeping their sessions for RESUME."""
        host = self.hosts.get(host_id)
        if host is not None:
            host.alive = False
            host.pending_adopt.clear()
            host.pending_revoke.clear()
        orphans = self.owned_by(host_id)
        for shard_id in orphans:
            record = self.shards[shard_id]
            record.host_id = None
            if record.status is not ShardStatus.FAILED:
                record.status = ShardStatus.STOPPED if record.stopped else ShardStatus.UNASSIGNED
        return orphans

    def forget_host(self, host_id: str) -> None:
        """Drop a gone host from the table once nothing refers to it."""
        host = self.hosts.get(host_id)
        if host is not None and not host.alive and not self.owned_by(host_id):
            del self.hosts[host_id]

    # -- leases ----------------------------------------------------------------------------------

    def _grant(self, record: ShardRecord, host: HostRecord) -> Lease:
        record.epoch += 1
        record.host_id = host.host_id
        record.status = ShardStatus.STARTING
        record.error = None
        record.ever_assigned = True
        return Lease(shard_id=record.shard_id, shard_count=self.shard_count, epoch=record.epoch, session=record.session)

    def _assignable(self) -> list[ShardRecord]:
        return [
            r
            for r in self.shards.values()
            if r.host_id is None and r.status is not ShardStatus.FAILED and not r.stopped
        ]

    def claim(self, host_id: str, count: int) -> list[Lease]:
        """Give ``host_id`` up to ``count`` unassigned shards, lowest ids first, and raise its want by as many."""
        host = self.hosts[host_id]
        leases = [self._grant(record, host) for record in self._assignable()[:count]]
        host.want = max(host.want, len(self.owned_by(host_id)))
        return leases

    def place(self) -> dict[str, list[Lease]]:
        """Assign unassigned shards to live hosts.

        Hosts below their wanted share come first. A shard that has run before (its
        host died) also goes to the least loaded live host when nobody wants more, so
        a failover never waits for a replacement host.
        """
        placed: dict[str, list[Lease]] = {}
        hosts = self.live_hosts()
        if not hosts:
            return placed
        load = {h.host_id: len(self.owned_by(h.host_id)) for h in hosts}
        for record in self._assignable():
            deficit = [h for h in hosts if load[h.host_id] < h.want]
            if deficit:
                host = min(deficit, key=lambda h: (load[h.host_id] - h.want, h.host_id))
            elif record.ever_assigned:
                host = min(hosts, key=lambda h: (load[h.host_id], h.host_id))
            else:
                continue
            lease = self._grant(record, host)
            load[host.host_id] += 1
            placed.setdefault(host.host_id, []).append(lease)
        return placed

    def rebalance_move(self) -> tuple[int, str] | None:
        """Pick one shard to hand over from a host above its share to one below it, if any."""
        hosts = self.live_hosts()
        load = {h.host_id: len(self.owned_by(h.host_id)) for h in hosts}
        under = [h for h in hosts if load[h.host_id] < h.want]
        over = [h for h in hosts if load[h.host_id] > h.want]
        if not under or not over:
            return None
        donor = max(over, key=lambda h: load[h.host_id] - h.want)
        for shard_id in sorted(self.owned_by(donor.host_id), reverse=True):
            record = self.shards[shard_id]
            if record.status is ShardStatus.READY and shard_id not in donor.pending_revoke:
                return shard_id, donor.host_id
        return None

    def holds(self, host_id: str, shard_id: int, epoch: int) -> bool:
        """Whether ``host_id`` holds the current lease of ``shard_id`` at ``epoch``."""
        record = self.shards.get(shard_id)
        return record is not None and record.host_id == host_id and record.epoch == epoch

    def release(
        self, host_id: str, shard_id: int, epoch: int, session: SessionState | None, *, stopped: bool = False
    ) -> bool:
        """The owner gave ``shard_id`` back (hand-over, or its Bot closed). Returns whether it was the owner."""
        if not self.holds(host_id, shard_id, epoch):
            return False
        record = self.shards[shard_id]
        record.host_id = None
        if session is not None:
            record.session = session
        if stopped:
            record.stopped = True
            record.session = None
            record.status = ShardStatus.STOPPED
        elif record.status is not ShardStatus.FAILED:
            record.status = ShardStatus.UNASSIGNED
        host = self.hosts.get(host_id)
        if host is not None and shard_id in host.pending_revoke:
            host.pending_revoke.remove(shard_id)
        return True

    def apply_reports(self, host_id: str, reports: typing.Iterable[ShardReport], now: float) -> list[int]:
        """Record what ``host_id`` says of its shards; return the shards it runs without a current lease."""
        stale: list[int] = []
        host = self.hosts.get(host_id)
        if host is not None:
            host.last_sync = now
        for report in reports:
            record = self.shards.get(report.shard_id)
            if record is None or record.host_id != host_id or record.epoch != report.epoch:
                stale.append(report.shard_id)
                continue
            record.status = report.status
            if report.session is not None:
                record.session = report.session
            record.latency = report.latency
            record.guilds = report.guilds
            record.events = report.events
            record.error = report.error
            record.last_seen = now
        return stale

    def infos(self, node_of: typing.Callable[[str], str | None] | None = None) -> list[ShardInfo]:
        """The table as clients see it."""
        rows = []
        for r in self.shards.values():
            node = None
            if r.host_id is not None:
                host = self.hosts.get(r.host_id)
                node = host.node_id if host else None
            rows.append(
                ShardInfo(
                    shard_id=r.shard_id,
                    shard_count=self.shard_count,
                    status=r.status,
                    host_id=r.host_id,
                    node_id=node,
                    epoch=r.epoch,
                    latency=r.latency,
                    seq=r.session.seq if r.session else None,
                    guilds=r.guilds,
                    events=r.events,
                    last_seen=r.last_seen,
                    identifies=r.identifies,
                    resumes=r.resumes,
                    error=r.error,
                )
            )
        return rows

    # -- checkpoint ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, typing.Any]:
        """Serialise the table (no secrets in it) for a checkpoint."""
        return {
            "shard_count": self.shard_count,
            "shards": [
                {
                    **{k: v for k, v in dataclasses.asdict(r).items() if k not in ("session", "status", "latency")},
                    "status": r.status.value,
                    "latency": None if math.isnan(r.latency) else r.latency,
                    "session": dataclasses.asdict(r.session) if r.session else None,
                }
                for r in self.shards.values()
            ],
            "hosts": [
                {"host_id": h.host_id, "node_id": h.node_id, "want": h.want, "has_handle": h.has_handle}
                for h in self.hosts.values()
                if h.alive
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, typing.Any], now: float) -> ShardTable:
        """Load a checkpoint; hosts get ``now`` as their last sync, so they have a grace period to come back."""
        table = cls(int(data["shard_count"]))
        for raw in data["shards"]:
            session = SessionState(**raw["session"]) if raw.get("session") else None
            latency = raw.get("latency")
            fields = {k: v for k, v in raw.items() if k not in ("session", "status", "latency")}
            table.shards[int(raw["shard_id"])] = ShardRecord(
                **fields,
                session=session,
                status=ShardStatus(raw["status"]),
                latency=float("nan") if latency is None else float(latency),
            )
        for raw in data["hosts"]:
            table.hosts[raw["host_id"]] = HostRecord(
                host_id=raw["host_id"],
                node_id=raw.get("node_id"),
                want=int(raw["want"]),
                has_handle=bool(raw.get("has_handle", False)),
                last_sync=now,
            )
        return table
