"""The Orchestrator's shard table: ownership, lease epochs and placement, as pure logic.

The table decides which host runs which shard. A host owns a shard only while
it holds that shard's lease at the current epoch. A shard is given to another
host only after its owner released it or is known to be gone, and every new
lease gets a higher epoch, so stale hosts are recognised and told to stop.
Nothing here calls Ray, and nothing here reads a clock: every ``now`` is the caller's, and the table only
stores it (``HostRecord.last_sync``, ``ShardRecord.last_seen``) to be shown. The Orchestrator passes wall time,
because operators read these as times (`ShardInfo.last_seen`, the sync-lateness metric); it decides on its
own monotonic times (`ray_shards.host_watch.HostWatch`'s sync times, the scheduler's windows), so a wall-clock step
changes what is shown, never what is decided. The simulator passes its own monotonic clock (and its model
of the actor reads its hosts' silence from ``last_sync``).

Epochs carry the table's *incarnation*: ``epoch = incarnation << 32 | n``.
`from_json` increments the incarnation, so a restarted Orchestrator grants
epochs above any granted before it, even when it restarts from an older
checkpoint, provided the restored table is checkpointed before it grants a
lease (write intent first). The lease state machine and the invariants are in
``docs/control-plane.md``.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import math
import operator
import secrets
import typing

from ray_shards.models import Lease, ReportBatch, SessionState, ShardColumns, ShardInfo, ShardReport, ShardStatus

__all__ = ["SCHEMA", "CheckpointSchemaError", "HostRecord", "ShardRecord", "ShardTable"]

SCHEMA = 1
"""Version of the checkpoint format `ShardTable.to_json` writes."""

_EPOCH_BITS = 32

CHECKPOINT_CHUNK = 512
"""Rows per checkpoint chunk (`ShardTable.chunk_json`): a change rewrites its chunk, not the table."""

_STATUS = {s.value: s for s in ShardStatus}


class CheckpointSchemaError(ValueError):
    """A checkpoint was written in a format this version of ray_shards cannot read."""


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
    """A shard host (a ShardHost actor or a standalone `Bot`) known to the table.

    ``pending_adopt`` holds leases granted to the host and not yet reported by it at
    their epoch; they are sent again on every sync until reported (adopting is
    idempotent on the host by ``(shard_id, epoch)``). ``pending_revoke`` holds shards the
    host must stop; an entry goes once the host no longer reports that shard.
    ``report_seq`` is the highest report sequence number seen from the host.

    A shard can be in both lists: the host runs it at an old epoch and must run it at
    the adopt's. A host applies revokes before adopts, and a revoke of a shard the same
    directives adopt stops only runs below the adopt's epoch.
    """

    host_id: str
    node_id: str | None
    want: int
    has_handle: bool
    last_sync: float
    alive: bool = True
    pending_adopt: list[Lease] = dataclasses.field(default_factory=list)
    pending_revoke: list[int] = dataclasses.field(default_factory=list)
    report_seq: int | None = None
    revoke_epochs: dict[int, int] = dataclasses.field(default_factory=dict)
    """For a pending revoke, the highest epoch it stops (an entry added without one stops any epoch)."""
    draining: bool = False
    """Being retired: gets no new shard, and hands over the ones it has (see `ShardTable.drain`)."""
    sessions: dict[int, SessionState] = dataclasses.field(default_factory=dict)
    """The last session reported in full by this host per shard (a `ReportBatch` then sends only its seq).
    Not checkpointed: after a restart the host is asked to send them again."""
    resend_sessions: bool = False
    """A seq-only report came for a shard whose session this record does not hold: ask for every session."""


_PLAIN_FIELDS = tuple(f.name for f in dataclasses.fields(ShardRecord) if f.name not in ("session", "status", "latency"))
_PLAIN_GETTER = operator.attrgetter(*_PLAIN_FIELDS)
CHUNK_FIELDS = [*_PLAIN_FIELDS, "status", "latency", "session"]
"""The order of a row's values in a checkpoint chunk (`ShardTable.chunk_json`)."""
CHUNK_SESSION_FIELDS = ["session_id", "seq", "resume_gateway_url", "user_id"]
"""The order of a session's values in a checkpoint chunk's row."""


def chunk_rows(chunk: typing.Any) -> list[dict[str, typing.Any]]:
    """The rows of a stored checkpoint chunk as `ShardTable.to_json` writes them: a chunk by position
    (`ShardTable.chunk_json`, checkpoint layout 4) or a list of such rows already (layout 3).

    Raises
    ------
    CheckpointSchemaError
        When ``chunk`` is neither.
    """
    if isinstance(chunk, list):
        return chunk
    try:
        fields, session_fields = list(chunk["fields"]), list(chunk["session_fields"])
        rows = []
        for values in chunk["rows"]:
            row = dict(zip(fields, values, strict=True))
            session = row.get("session")
            if session is not None:
                row["session"] = dict(zip(session_fields, session, strict=True))
            rows.append(row)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"a checkpoint chunk cannot be read ({type(exc).__name__}: {exc}): delete the checkpoint to start afresh"
        raise CheckpointSchemaError(msg) from exc
    return rows


def _session_json(session: SessionState | None) -> dict[str, typing.Any] | None:
    # Explicit rather than dataclasses.asdict, which deep-copies: checkpoints are written often.
    if session is None:
        return None
    return {
        "session_id": session.session_id,
        "seq": session.seq,
        "resume_gateway_url": session.resume_gateway_url,
        "user_id": session.user_id,
    }


class ShardTable:
    """Shard ownership for one bot.

    Parameters
    ----------
    shard_count
        Number of shards of the bot.
    incarnation
        The incarnation new epochs are drawn from (a fresh bot starts at 0;
        `from_json` sets the checkpoint's plus one).
    """

    __slots__ = (
        "_changes",
        "_ckpt_later",
        "_ckpt_now",
        "_owned",
        "_unassigned",
        "hosts",
        "hosts_version",
        "incarnation",
        "instance",
        "shard_count",
        "shards",
        "version",
    )

    def __init__(self, shard_count: int, *, incarnation: int = 0) -> None:
        if shard_count < 1:
            msg = f"shard_count must be at least 1, not {shard_count}"
            raise ValueError(msg)
        if incarnation < 0:
            msg = f"incarnation must not be negative, not {incarnation}"
            raise ValueError(msg)
        self.shard_count = shard_count
        self.incarnation = incarnation
        self.shards: dict[int, ShardRecord] = {i: ShardRecord(i) for i in range(shard_count)}
        self.hosts: dict[str, HostRecord] = {}
        # Index of ShardRecord.host_id, kept by _set_owner (the table is the only writer of its records), so
        # that a host's shards cost what it owns, not the whole table, on every sync.
        self._owned: dict[str, set[int]] = {}
        # Row versions for delta reads (`changed_since`): every change of a row's slow fields (owner, epoch,
        # status, error, guilds, node) bumps `version` and is logged. Seq, latency and event counts change on
        # every sync and are not versioned: readers refresh those with a full read now and then.
        self.version = 0
        # Which table object a version counts in: a reshard's new table or a restored one starts at 0 again.
        # Not part of any decision (only readers compare it), so it need not be injected.
        self.instance = secrets.randbits(53)
        self._changes: collections.deque[tuple[int, int]] = collections.deque(maxlen=max(1024, 4 * shard_count))
        # Shards without an owner (kept by _set_owner): placement costs what is unassigned, not the table.
        self._unassigned: set[int] = set(self.shards)
        # Counts changes of the hosts' records that placement and rebalancing read (want, liveness, draining,
        # pending revokes): with `version`, a reconcile pass can tell that nothing it decides on has changed.
        self.hosts_version = 0
        # Checkpoint chunks (CHECKPOINT_CHUNK rows each) to rewrite: soon (an owner, epoch, status, error or
        # session changed) or batched (only seq, latency, counters moved: a restart then RESUMEs from an older
        # seq, and Discord replays the events after it).
        self._ckpt_now: set[int] = set(range(self.chunk_count))
        self._ckpt_later: set[int] = set()

    # -- hosts -----------------------------------------------------------------------------------

    def register_host(
        self,
        host_id: str,
        *,
        node_id: str | None,
        want: int,
        has_handle: bool,
        now: float,
        placeable: bool = True,
    ) -> HostRecord:
        """Add a host, or refresh one that registers again (after an Orchestrator restart).

        A host that is not ``placeable`` (a Client holding shards it claimed itself) gets only
        what it claims: `place` and rebalancing never hand it a shard, like a draining host.
        """
        if want < 0:
            msg = f"a host cannot want {want} shards"
            raise ValueError(msg)
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            host = HostRecord(host_id=host_id, node_id=node_id, want=want, has_handle=has_handle, last_sync=now)
            self.hosts[host_id] = host
        else:
            if host.node_id != node_id:
                for shard_id in self._owned.get(host_id, ()):
                    self._touch(shard_id)
            host.node_id = node_id
            host.want = want
            host.has_handle = has_handle
            host.last_sync = now
        if not placeable:
            host.draining = True
        self.hosts_version += 1
        return host

    def owned_by(self, host_id: str) -> list[int]:
        """Shard ids whose current lease belongs to ``host_id``."""
        return sorted(self._owned.get(host_id, ()))

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
            host.revoke_epochs.clear()
            host.sessions.clear()
        self.hosts_version += 1
        orphans = self.owned_by(host_id)
        for shard_id in orphans:
            self._unassign(self.shards[shard_id])
        return orphans

    def drain(self, host_id: str) -> list[int]:
        """Retire ``host_id``: no new shard goes to it, and every shard it holds is revoked (handed over).

        Returns the shards it still holds; once that is empty the host can be stopped. Without
        this, `place` would hand a failover shard straight back to the host being retired.
        """
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return []
        host.draining = True
        host.want = 0
        self.hosts_version += 1
        owned = self.owned_by(host_id)
        for shard_id in owned:
            self.revoke(host_id, shard_id)
        return owned

    def undrain(self, host_id: str, want: int) -> None:
        """Undo `drain` (a rolling restart that failed keeps the old host): it takes ``want`` shards again.

        Revokes already sent stay: those shards move on and `place` may hand them back.
        """
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return
        host.draining = False
        host.want = want

    def forget_host(self, host_id: str) -> None:
        """Drop a gone host from the table once nothing refers to it."""
        host = self.hosts.get(host_id)
        if host is not None and not host.alive and not self.owned_by(host_id):
            del self.hosts[host_id]
            self.hosts_version += 1

    # -- leases ----------------------------------------------------------------------------------

    def _next_epoch(self, record: ShardRecord) -> int:
        # Above anything this table has seen for the shard, and in this incarnation's range, so above
        # anything granted by an earlier incarnation (whose range ends below ours).
        return max(record.epoch + 1, (self.incarnation << _EPOCH_BITS) | 1)

    def _grant(self, record: ShardRecord, host: HostRecord) -> Lease:
        record.epoch = self._next_epoch(record)
        self._set_owner(record, host.host_id)
        record.status = ShardStatus.STARTING
        record.error = None
        record.ever_assigned = True
        lease = Lease(
            shard_id=record.shard_id, shard_count=self.shard_count, epoch=record.epoch, session=record.session
        )
        # Every grant waits in pending_adopt until the host reports it: a lost reply loses nothing, and a shard
        # its owner neither reports nor has pending is known not to run (see apply_reports).
        host.pending_adopt.append(lease)
        return lease

    def _touch(self, shard_id: int) -> None:
        self.version += 1
        self._changes.append((self.version, shard_id))
        self._ckpt_now.add(shard_id // CHECKPOINT_CHUNK)

    def note_counters(self, shard_id: int) -> None:
        """A row's counters (identifies, resumes) changed: its checkpoint chunk is rewritten with the next batch."""
        self._ckpt_later.add(shard_id // CHECKPOINT_CHUNK)

    def changed_since(self, version: int) -> list[int] | None:
        """Shard ids whose row changed after ``version``; None when that is too old to tell (read everything).

        Costs what changed since ``version`` (the change log is walked from its newest end).
        """
        if version == self.version:
            return []
        if version > self.version or not self._changes or self._changes[0][0] > version + 1:
            return None
        changed: set[int] = set()
        for logged, shard_id in reversed(self._changes):
            if logged <= version:
                break
            changed.add(shard_id)
        return sorted(changed)

    def mark_failed(self, shard_id: int, error: str) -> None:
        """``shard_id`` stopped for good (a close code Discord says not to retry): never placed again."""
        record = self.shards[shard_id]
        record.status = ShardStatus.FAILED
        record.error = error
        self._touch(shard_id)

    def _set_owner(self, record: ShardRecord, host_id: str | None) -> None:
        self._touch(record.shard_id)
        if record.host_id is not None:
            owned = self._owned.get(record.host_id)
            if owned is not None:
                owned.discard(record.shard_id)
                if not owned:
                    del self._owned[record.host_id]
        record.host_id = host_id
        if host_id is not None:
            self._owned.setdefault(host_id, set()).add(record.shard_id)
            self._unassigned.discard(record.shard_id)
        else:
            self._unassigned.add(record.shard_id)

    def _unassign(self, record: ShardRecord) -> None:
        self._set_owner(record, None)
        if record.status is not ShardStatus.FAILED:
            record.status = ShardStatus.STOPPED if record.stopped else ShardStatus.UNASSIGNED

    def _assignable(self) -> list[ShardRecord]:
        # Costs what is unassigned (the index), in shard id order as before.
        records = (self.shards[i] for i in sorted(self._unassigned))
        return [r for r in records if r.host_id is None and r.status is not ShardStatus.FAILED and not r.stopped]

    def _loads(self) -> dict[str, int]:
        """Shards owned per live host."""
        return {h.host_id: len(self._owned.get(h.host_id, ())) for h in self.hosts.values() if h.alive}

    def claim(self, host_id: str, count: int) -> list[Lease]:
        """Give ``host_id`` up to ``count`` unassigned shards, lowest ids first, and raise its want by as many.

        The leases are also kept as pending adopts of the host (see `directives_for`).
        """
        host = self.hosts[host_id]
        leases = [self._grant(record, host) for record in self._assignable()[: max(0, count)]]
        host.want = max(host.want, len(self.owned_by(host_id)))
        self.hosts_version += 1
        return leases

    def place(self) -> dict[str, list[Lease]]:
        """Assign unassigned shards to live hosts.

        Hosts below their wanted share come first. A shard that has run before (its
        host died) also goes to the least loaded live host when nobody wants more, so
        a failover never waits for a replacement host. The new leases are returned and
        also kept as the hosts' pending adopts (see `directives_for`). Costs
        O(shards + hosts log hosts).
        """
        placed: dict[str, list[Lease]] = {}
        hosts = {h.host_id: h for h in self.live_hosts() if not h.draining}
        if not hosts:
            return placed
        load = self._loads()
        # Two heaps with lazy deletion: hosts below their want by (load - want), and all hosts by load.
        deficit = [(load[h] - host.want, h) for h, host in hosts.items() if load[h] < host.want]
        least = [(load[h], h) for h in hosts]
        heapq.heapify(deficit)
        heapq.heapify(least)
        for record in self._assignable():
            if deficit:
                _, host_id = heapq.heappop(deficit)
            elif record.ever_assigned:
                while least[0][0] != load[least[0][1]]:
                    heapq.heappop(least)
                host_id = least[0][1]
            else:
                continue
            host = hosts[host_id]
            lease = self._grant(record, host)
            load[host_id] += 1
            heapq.heappush(least, (load[host_id], host_id))
            if load[host_id] < host.want:
                heapq.heappush(deficit, (load[host_id] - host.want, host_id))
            placed.setdefault(host_id, []).append(lease)
        return placed

    def rebalance_move(self) -> tuple[int, str] | None:
        """Pick one shard to hand over from a host above its share to one below it, if any.

        Costs O(hosts + the donor's shards).
        """
        hosts = self.live_hosts()
        load = self._loads()
        # A revoked shard stays owned by its donor until the donor releases it, which waits for the
        # listeners to drain (seconds). Count it as gone already: otherwise every pass in the meantime
        # sees the donor still over its share and revokes one more, emptying it into the new host.
        for h in hosts:
            load[h.host_id] -= len(h.pending_revoke)
        under = [h for h in hosts if load[h.host_id] < h.want and not h.draining]
        over = [h for h in hosts if load[h.host_id] > h.want]
        if not under or not over:
            return None
        donor = max(over, key=lambda h: (load[h.host_id] - h.want, h.host_id))
        revoking = set(donor.pending_revoke)
        for shard_id in reversed(self.owned_by(donor.host_id)):
            record = self.shards[shard_id]
            if record.status is ShardStatus.READY and shard_id not in revoking:
                return shard_id, donor.host_id
        return None

    def holds(self, host_id: str, shard_id: int, epoch: int) -> bool:
        """Whether ``host_id`` holds the current lease of ``shard_id`` at ``epoch``."""
        record = self.shards.get(shard_id)
        return record is not None and record.host_id == host_id and record.epoch == epoch

    def release(
        self, host_id: str, shard_id: int, epoch: int, session: SessionState | None, *, stopped: bool = False
    ) -> bool:
        """The owner gave ``shard_id`` back (hand-over, or its Bot closed). Returns whether it was the owner.

        A release from a host that no longer holds the lease changes no ownership. Its
        session is still kept when nobody owns the shard and the release's epoch is at
        least the table's (the table gave the shard up first, e.g. after a full report
        without it, or it was restored from an older checkpoint): it is the freshest
        session there is, and the next owner RESUMEs from it.
        """
        record = self.shards.get(shard_id)
        if record is None:
            return False
        if not self.holds(host_id, shard_id, epoch):
            if record.host_id is None and epoch >= record.epoch and not record.stopped:
                self._take_session(record, session)
            return False
        self.hosts_version += 1
        self._set_owner(record, None)
        self._take_session(record, session)
        if stopped:
            record.stopped = True
            record.session = None
            record.status = ShardStatus.STOPPED
        elif record.status is not ShardStatus.FAILED:
            record.status = ShardStatus.UNASSIGNED
        host = self.hosts.get(host_id)
        if host is not None and shard_id in host.pending_revoke:
            host.pending_revoke.remove(shard_id)
            host.revoke_epochs.pop(shard_id, None)
        return True

    def revoke(self, host_id: str, shard_id: int) -> bool:
        """Ask ``host_id`` to hand ``shard_id`` over (it releases it with its session). Returns whether it held it.

        Use this rather than appending to ``pending_revoke``: the revoke remembers the
        epoch it stops, so it cannot stop a later lease of the same shard on that host.
        """
        record = self.shards.get(shard_id)
        host = self.hosts.get(host_id)
        if record is None or host is None or not host.alive or record.host_id != host_id:
            return False
        if shard_id not in host.pending_revoke:
            host.pending_revoke.append(shard_id)
            self.hosts_version += 1
        host.revoke_epochs[shard_id] = max(host.revoke_epochs.get(shard_id, 0), record.epoch)
        return True

    def _take_session(self, record: ShardRecord, session: SessionState | None) -> None:
        # Within one session the seq only goes forward: a report lagging behind what the table already has
        # (a host's short history, a late message) must not make the next owner RESUME from further back.
        if session is None:
            return
        old = record.session
        if old is not None and old.session_id == session.session_id and session.seq < old.seq:
            return
        if old is None or (old.session_id, old.resume_gateway_url, old.user_id) != (
            session.session_id, session.resume_gateway_url, session.user_id
        ):
            # A new session (or where to resume it) must reach the checkpoint soon; a seq advance can wait.
            self._ckpt_now.add(record.shard_id // CHECKPOINT_CHUNK)
        elif old.seq != session.seq:
            self._ckpt_later.add(record.shard_id // CHECKPOINT_CHUNK)
        record.session = session

    def _take_seq(self, record: ShardRecord, known: SessionState | None, seq: int) -> bool:
        """A seq-only report: ``seq`` of ``known``, the session the host last reported in full. False: unknown."""
        if known is None:
            return False
        old = record.session
        if old is not None and old.session_id == known.session_id:
            if seq > old.seq:
                record.session = SessionState(old.session_id, seq, old.resume_gateway_url, old.user_id)
                self._ckpt_later.add(record.shard_id // CHECKPOINT_CHUNK)
            return True
        self._take_session(record, dataclasses.replace(known, seq=seq))
        return True

    def directives_for(self, host_id: str) -> tuple[list[Lease], list[int]]:
        """What ``host_id`` must adopt and revoke, as copies; reading consumes nothing.

        Adopts stay pending until the host reports the shard at the lease's epoch (see
        `apply_reports`), so a sync reply that is lost and retried loses no adoption.
        Adopts whose lease is no longer current are dropped here.
        """
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return [], []
        self._prune_adopts(host)
        return list(host.pending_adopt), list(host.pending_revoke)

    def answered(self, host_id: str, now: float) -> bool:
        """A sync answer goes to ``host_id`` at ``now``: whether it must ask for every session again.

        The ask is cleared here, once it is sent. Were that answer lost, nothing is lost with it: the host's
        next seq-only report of a session the table does not hold asks again (`apply_reports`).
        """
        host = self.hosts.get(host_id)
        if host is None:
            return False
        host.last_sync = now
        resend, host.resend_sessions = host.resend_sessions, False
        return resend

    def _prune_adopts(self, host: HostRecord) -> None:
        latest: dict[int, Lease] = {}
        for lease in host.pending_adopt:
            if self.holds(host.host_id, lease.shard_id, lease.epoch):
                latest[lease.shard_id] = lease
        host.pending_adopt[:] = list(latest.values())

    def apply_reports(
        self,
        host_id: str,
        reports: typing.Iterable[ShardReport] | ReportBatch,
        now: float,
        *,
        report_seq: int | None = None,
    ) -> list[int]:
        """Record what ``host_id`` says of its shards; return the shards it runs without a current lease.

        With ``report_seq`` (increasing per host), ``reports`` is the host's *full* actual
        state, and the table converges on it:

        - a report whose ``report_seq`` is not above the last one seen from the host is
          ignored (a late or duplicated sync), and ``[]`` is returned;
        - a shard the table gives the host that the host neither reports nor has pending
          as an adopt runs nowhere: it is unassigned, keeping its session, so `place`
          hands it on.

        In every case: a pending adopt goes once the host reports it at its epoch; a
        pending revoke goes once the host no longer reports that shard; shards reported
        without a current lease are added to the host's pending revokes and returned. A
        report at an epoch *above* the table's for an unstopped shard means the table
        was restored from a checkpoint older than that lease: the lease was granted
        after every lease the table knows of, so the table takes it as current.

        ``reports`` may be a `ReportBatch` (what hosts send): a shard it reports by seq only gets
        that seq on the session the host last reported in full; when the table does not hold
        that session (restored, or the host registered again), the seq is skipped and the host
        is asked to send every session again (``HostRecord.resend_sessions``). Costs what the
        host reports.
        """
        host = self.hosts.get(host_id)
        if isinstance(reports, ReportBatch):
            batch = reports
            rows = zip(
                batch.shard_ids, batch.epochs, batch.statuses, batch.seqs, batch.latencies, batch.guilds,
                batch.events, strict=True,
            )
            sessions, errors = batch.sessions, batch.errors
        else:
            listed = list(reports)
            rows = zip(
                [r.shard_id for r in listed], [r.epoch for r in listed], [r.status.value for r in listed],
                [-2] * len(listed), [r.latency for r in listed], [r.guilds for r in listed],
                [r.events for r in listed], strict=True,
            )
            sessions = {r.shard_id: r.session for r in listed if r.session is not None}
            errors = {r.shard_id: r.error for r in listed if r.error is not None}
        if host is None or not host.alive:
            return [row[0] for row in rows]
        if report_seq is not None:
            if host.report_seq is not None and report_seq <= host.report_seq:
                return []
            host.report_seq = report_seq
        host.last_sync = now
        stale: list[int] = []
        reported: dict[int, int] = {}
        revokes_before = len(host.pending_revoke)
        chunk = CHECKPOINT_CHUNK
        later = self._ckpt_later
        for shard_id, epoch, status_value, seq, latency, guilds, events in rows:
            record = self.shards.get(shard_id)
            if record is None:
                stale.append(shard_id)
                continue
            reported[shard_id] = epoch
            session = sessions.get(shard_id)
            if session is not None:
                # Whatever the row's state: the host now counts this session as sent (the two must agree).
                host.sessions[shard_id] = session
            if record.epoch < epoch and not record.stopped:
                # Restored from an older checkpoint: this lease is newer than anything the table knows.
                self._set_owner(record, host_id)
                record.epoch = epoch
                record.ever_assigned = True
            if record.host_id != host_id or record.epoch != epoch:
                stale.append(shard_id)
                continue
            status = _STATUS[status_value]
            error = errors.get(shard_id)
            if record.status is not status or record.error != error or record.guilds != guilds:
                self._touch(shard_id)
            record.status = status
            if session is not None:
                self._take_session(record, session)
            elif seq >= 0 and not self._take_seq(record, host.sessions.get(shard_id), seq):
                host.resend_sessions = True
            record.latency = latency
            record.guilds = guilds
            record.events = events
            record.error = error
            record.last_seen = now
            later.add(shard_id // chunk)
        self._prune_adopts(host)
        stale_set = set(stale)
        host.pending_adopt[:] = [
            lease for lease in host.pending_adopt if lease.shard_id not in reported or lease.shard_id in stale_set
        ]
        # A revoke is done once the host no longer reports the shard at an epoch it stops (not reporting
        # it at all, or only at a later lease); left behind, it would make the host's sync loop spin.
        keep = [
            s
            for s in host.pending_revoke
            if s in reported and reported[s] <= host.revoke_epochs.get(s, reported[s])
        ]
        kept = set(keep)
        host.revoke_epochs = {s: e for s, e in host.revoke_epochs.items() if s in kept}
        host.pending_revoke[:] = keep
        if len(keep) != revokes_before:
            self.hosts_version += 1
        for shard_id in stale:
            if shard_id not in kept:
                kept.add(shard_id)
                host.pending_revoke.append(shard_id)
                self.hosts_version += 1
            if shard_id in reported:
                host.revoke_epochs[shard_id] = max(host.revoke_epochs.get(shard_id, 0), reported[shard_id])
        if report_seq is not None:
            pending = {lease.shard_id for lease in host.pending_adopt}
            for shard_id in self.owned_by(host_id):
                if shard_id not in reported and shard_id not in pending:
                    # Nobody runs it (its adopt was reported once, and the host has dropped it since).
                    self._unassign(self.shards[shard_id])
        return stale

    def infos(
        self, node_of: typing.Callable[[str], str | None] | None = None, *, only: typing.Iterable[int] | None = None
    ) -> list[ShardInfo]:
        """The table as clients see it (only the rows of ``only``, when given)."""
        rows = []
        records = self.shards.values() if only is None else (self.shards[i] for i in only)
        for r in records:
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

    def columns(self) -> ShardColumns:
        """The whole table as clients see it (`infos`), as plain lists: cheap to send."""
        records = list(self.shards.values())
        hosts = self.hosts
        nodes = {h: (hosts[h].node_id if h in hosts else None) for h in self._owned}
        return ShardColumns(
            shard_count=self.shard_count,
            shard_ids=[r.shard_id for r in records],
            statuses=[r.status.value for r in records],
            host_ids=[r.host_id for r in records],
            node_ids=[None if r.host_id is None else nodes.get(r.host_id) for r in records],
            epochs=[r.epoch for r in records],
            latencies=[r.latency for r in records],
            seqs=[r.session.seq if r.session else None for r in records],
            guilds=[r.guilds for r in records],
            events=[r.events for r in records],
            last_seen=[r.last_seen for r in records],
            identifies=[r.identifies for r in records],
            resumes=[r.resumes for r in records],
            errors={r.shard_id: r.error for r in records if r.error is not None},
        )

    # -- checkpoint ------------------------------------------------------------------------------

    @property
    def chunk_count(self) -> int:
        """Number of checkpoint chunks (`CHECKPOINT_CHUNK` rows each, by shard id)."""
        return -(-self.shard_count // CHECKPOINT_CHUNK)

    def checkpoint_due(self) -> tuple[bool, bool]:
        """Whether some chunk must be rewritten soon (owner, epoch, status, session...), and whether one waits
        for the next batch (only seq, latency or counters moved)."""
        return bool(self._ckpt_now), bool(self._ckpt_later)

    def take_dirty_chunks(self, *, batched: bool) -> list[int]:
        """The chunks to rewrite now (with ``batched``, also those with batched changes only); they count as clean.

        Give them back with `mark_chunks_dirty` if writing them fails.
        """
        chunks = set(self._ckpt_now)
        self._ckpt_now.clear()
        if batched:
            chunks |= self._ckpt_later
            self._ckpt_later.clear()
        else:
            self._ckpt_later -= chunks
        return sorted(chunks)

    def mark_chunks_dirty(self, chunks: typing.Iterable[int] | None = None) -> None:
        """Rewrite ``chunks`` (all of them when None) with the next checkpoint."""
        self._ckpt_now.update(range(self.chunk_count) if chunks is None else chunks)

    def mark_checkpointed(self) -> None:
        """Every chunk is in the checkpoint as the table is now (just restored from it)."""
        self._ckpt_now.clear()
        self._ckpt_later.clear()

    @staticmethod
    def _row_json(r: ShardRecord) -> dict[str, typing.Any]:
        return {
            **{name: getattr(r, name) for name in _PLAIN_FIELDS},
            "status": r.status.value,
            "latency": None if math.isnan(r.latency) else r.latency,
            "session": _session_json(r.session),
        }

    def chunk_json(self, index: int) -> dict[str, typing.Any]:
        """Checkpoint chunk ``index`` (shards ``index * CHECKPOINT_CHUNK`` up to the next chunk), rows by position.

        Each row is a list in the order of ``fields`` (a session a list in the order of ``session_fields``, or
        None); `chunk_rows` reads it back as rows of `to_json`. A chunk of dicts cost a batched checkpoint at 16k
        shards (every seq moved: every chunk rewritten every `Timings.checkpoint_batch_interval`) about 4 times the
        CPU and twice the bytes.
        """
        first = index * CHECKPOINT_CHUNK
        shards = self.shards
        plain = _PLAIN_GETTER
        rows = []
        for i in range(first, min(first + CHECKPOINT_CHUNK, self.shard_count)):
            r = shards[i]
            s, latency = r.session, r.latency
            rows.append([
                *plain(r), r.status.value, None if latency != latency else latency,  # NaN != NaN: no latency
                None if s is None else [s.session_id, s.seq, s.resume_gateway_url, s.user_id],
            ])
        return {"fields": CHUNK_FIELDS, "session_fields": CHUNK_SESSION_FIELDS, "rows": rows}

    def to_json(self, *, rows: bool = True) -> dict[str, typing.Any]:
        """Serialise the table (no secrets in it) for a checkpoint, with its schema version.

        Without ``rows`` the ``shards`` list is left out: a chunked checkpoint stores the rows
        apart (`chunk_json`) and puts them back under ``shards`` before `from_json`.
        """
        data: dict[str, typing.Any] = {
            "schema": SCHEMA,
            "incarnation": self.incarnation,
            "shard_count": self.shard_count,
        }
        if rows:
            data["shards"] = [self._row_json(r) for r in self.shards.values()]
        data["hosts"] = [
                {
                    "host_id": h.host_id,
                    "node_id": h.node_id,
                    "want": h.want,
                    "has_handle": h.has_handle,
                    "draining": h.draining,
                    "pending_adopt": [
                        {
                            "shard_id": lease.shard_id,
                            "epoch": lease.epoch,
                            "session": _session_json(lease.session),
                        }
                        for lease in h.pending_adopt
                    ],
                }
                for h in self.hosts.values()
                if h.alive
            ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, typing.Any], now: float) -> ShardTable:
        """Load a checkpoint in a new incarnation.

        Hosts get ``now`` as their last sync, so they have a grace period to come back.
        Checkpoint the returned table before it grants any lease, so that its
        incarnation is never used twice.

        Raises
        ------
        CheckpointSchemaError
            When the checkpoint's schema is not one this version reads, or it is malformed.
        """
        schema = data.get("schema", 0) if isinstance(data, dict) else None
        if schema not in (0, SCHEMA):
            msg = (
                f"the checkpoint has schema {schema!r}, and this version of ray_shards reads schema {SCHEMA} "
                "(or checkpoints from before schemas). Run the ray_shards version that wrote it, or delete the "
                "bot's checkpoint key to start the bot fresh (its shards then IDENTIFY again)."
            )
            raise CheckpointSchemaError(msg)
        try:
            return cls._from_json(data, now)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = (
                f"the checkpoint (schema {schema}) cannot be read: {type(exc).__name__}: {exc}. Run the ray_shards "
                "version that wrote it, or delete the bot's checkpoint key to start the bot fresh."
            )
            raise CheckpointSchemaError(msg) from exc

    @classmethod
    def _from_json(cls, data: dict[str, typing.Any], now: float) -> ShardTable:
        table = cls(int(data["shard_count"]), incarnation=int(data.get("incarnation", 0)) + 1)
        for raw in data["shards"]:
            session = SessionState(**raw["session"]) if raw.get("session") else None
            latency = raw.get("latency")
            fields = {k: v for k, v in raw.items() if k not in ("session", "status", "latency")}
            record = ShardRecord(
                **fields,
                session=session,
                status=ShardStatus(raw["status"]),
                latency=float("nan") if latency is None else float(latency),
            )
            if not 0 <= record.shard_id < table.shard_count:
                msg = f"shard {record.shard_id} is outside 0..{table.shard_count - 1}"
                raise ValueError(msg)
            table.shards[record.shard_id] = record
            if record.host_id is not None:
                table._owned.setdefault(record.host_id, set()).add(record.shard_id)
                table._unassigned.discard(record.shard_id)
        for raw in data["hosts"]:
            table.hosts[raw["host_id"]] = HostRecord(
                host_id=raw["host_id"],
                node_id=raw.get("node_id"),
                want=int(raw["want"]),
                has_handle=bool(raw.get("has_handle", False)),
                last_sync=now,
                draining=bool(raw.get("draining", False)),
                pending_adopt=[
                    Lease(
                        shard_id=int(lease["shard_id"]),
                        shard_count=table.shard_count,
                        epoch=int(lease["epoch"]),
                        session=SessionState(**lease["session"]) if lease.get("session") else None,
                    )
                    for lease in raw.get("pending_adopt", [])
                ],
            )
        return table
