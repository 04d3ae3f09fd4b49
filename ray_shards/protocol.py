"""Typed messages between the Orchestrator, its shard hosts and clients.

Every value here crosses a process boundary as a Ray method argument or return
value, so each is a small frozen (or plain) dataclass with enum states, never a
bare tuple or a ``dict[str, Any]``. The older messages (`Lease`, `ShardReport`,
`HostDirectives`, ...) live in `ray_shards.models` and are re-exported here so
that this module is the one place to read the protocol. Callers reach the
Orchestrator through `ray_shards.link.OrchestratorLink`'s typed methods (one per
Orchestrator method), which return these types. Where a dict form is still shown
(checkpoints, ``ray-shards status --format json``), ``to_json``/``to_dict`` keep
it exactly as it was.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import pickle
import typing

from ray_shards.cutover import Seen
from ray_shards.models import (
    BotConfig,
    Command,
    CommandKind,
    HostDirectives,
    Lease,
    ReportBatch,
    SessionState,
    ShardColumns,
    ShardInfo,
    ShardReport,
    ShardStatus,
)
from ray_shards.presence import PresenceState

__all__ = [
    "BotConfig",
    "BotStatus",
    "Command",
    "CommandKind",
    "DeployStatus",
    "FleetHostSummary",
    "FleetSummary",
    "GuildTails",
    "HostDirectives",
    "HostHealth",
    "HostSummary",
    "IdentifyAnswer",
    "Lease",
    "OperationState",
    "PingInfo",
    "Registration",
    "ReportBatch",
    "ReshardProgress",
    "ReshardState",
    "RollingRestartProgress",
    "Seen",
    "SessionState",
    "ShardColumns",
    "ShardInfo",
    "ShardReport",
    "ShardStatus",
    "TableDelta",
]


@dataclasses.dataclass(frozen=True, slots=True)
class PingInfo:
    """`Orchestrator.ping`: the only answer given without a capability (nothing secret in it)."""

    bot_id: int
    initialised: bool
    stopping: bool
    stopped: bool = False
    """The shutdown has finished (hosts killed, checkpoint deleted)."""
    error: str | None = None
    """Why the Orchestrator cannot run (for example a checkpoint it cannot read), with what to do."""


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """`Orchestrator.register_host`: what a joining (or re-joining) host needs."""

    config: BotConfig
    leases: list[Lease]
    """New leases for the host (it may already be told about them again in a sync: adopts are idempotent)."""
    stale: list[int]
    """Shards the host said it runs whose lease is no longer its own: it must stop them."""
    presence: PresenceState
    presence_version: int
    record: bool = False
    """The host joins the old set of a reshard that records: record before adopting (`GuildTails.since`)."""
    shadow: bool = False
    """The host joins a reshard's new set before its switch: a host started in shadow mode keeps holding its
    events. False for a host started in shadow mode means its set went live while it was starting (it replaces
    a host that died during the switch): it delivers live from the start."""
    settled: bool = False
    """The host joins the bot's set and no reshard switch is in flight for it (none at all, or one rolling
    back): it stops recording and delivers live if it was muted. A RECORD or SWITCH_OUT of an earlier
    Orchestrator life may have left it so, and the restarted Orchestrator's rollback told only the hosts
    registered when it ran to go live again."""


@dataclasses.dataclass(frozen=True, slots=True)
class GuildTails:
    """A reshard's switch: per guild, the last events a host of the old set delivered (`ray_shards.cutover`).

    An old-set host hands its tails in (`Orchestrator.deliver_tails`), with ``since`` for each old shard it
    adopted during the reshard (a failover); each new-set host gets back only the tails of the guilds its
    shards cover, and the ``since`` of the old shards those guilds can come from (`for_shards`).
    """

    host_id: str
    tails: dict[int, tuple[Seen, ...]]
    """Guild id (0: events without a guild) to its tail, oldest first."""
    since: dict[int, float] = dataclasses.field(default_factory=dict)
    """Old shard id to the wall time its current owner started recording it (adopted during the reshard)."""
    old_count: int = 0
    """The old set's shard count (guild -> old shard is ``(guild >> 22) % old_count``); 0: not known."""

    @staticmethod
    def merge(parts: typing.Iterable[GuildTails], host_id: str = "", old_count: int = 0) -> GuildTails:
        """One tail per guild; where two hosts delivered a guild (its shard moved), the later tail wins.

        Where two hosts adopted one old shard, the latest ``since`` wins (the last owner's).
        """
        tails: dict[int, tuple[Seen, ...]] = {}
        since: dict[int, float] = {}
        for part in parts:
            for key, tail in part.tails.items():
                if tail and (key not in tails or tail[-1].received > tails[key][-1].received):
                    tails[key] = tail
            for shard_id, when in part.since.items():
                if shard_id not in since or when > since[shard_id]:
                    since[shard_id] = when
        return GuildTails(host_id, tails, since, old_count)

    def for_shards(self, shard_ids: typing.Collection[int], shard_count: int) -> GuildTails:
        """The tails of the guilds that ``shard_ids`` of ``shard_count`` receive (guild 0, DMs: shard 0).

        And the ``since`` of every old shard that shares a guild with them: a guild ``g`` is on new shard
        ``g % shard_count`` and old shard ``g % old_count``, and some ``g`` has both ``n`` and ``o`` exactly
        when ``n`` and ``o`` agree modulo ``gcd(shard_count, old_count)``.
        """
        since: dict[int, float] = {}
        if self.old_count > 0:
            step = math.gcd(shard_count, self.old_count)
            residues = {n % step for n in shard_ids}
            since = {o: t for o, t in self.since.items() if o % step in residues}
        return GuildTails(
            self.host_id, {k: t for k, t in self.tails.items() if (k >> 22) % shard_count in shard_ids},
            since, self.old_count,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class IdentifyAnswer:
    """`Orchestrator.request_identify`: a grant to IDENTIFY, or how long to wait before asking again."""

    granted: bool
    wait: float
    """Without a grant, seconds before asking again. With one, seconds to sleep from this answer's arrival
    before sending the IDENTIFY: 0, unless the ask was ``early`` and the grant came ahead of its bucket's
    opening (its not-before time)."""
    presence: PresenceState | None
    """The bot's presence to identify with (with a grant)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HostHealth:
    """`ShardHost.health`, answered on the host's own health event loop."""

    host_id: str
    loop_lag: float
    """Seconds since the host's shard event loop last ticked (large only when it is stuck)."""
    closed: bool


class OperationState(enum.StrEnum):
    """Where a long operation (rolling restart, reshard) is."""

    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    FINISHED = "finished"
    ABORTED = "aborted"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"

    @property
    def active(self) -> bool:
        """Whether the operation still has work to do."""
        return self in (OperationState.RUNNING, OperationState.PAUSED, OperationState.ABORTING)


@dataclasses.dataclass(slots=True)
class RollingRestartProgress:
    """A rolling restart as target state: the slots still to replace and the hosts it started.

    It is checkpointed before every step, so an Orchestrator that restarts in the middle
    carries on from here (and kills no host twice, leaks none).
    """

    total: int
    pending_slots: list[int]
    done: int = 0
    state: OperationState = OperationState.RUNNING
    current: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    error: str | None = None
    replaced: list[str] = dataclasses.field(default_factory=list)
    old_hosts: list[str] = dataclasses.field(default_factory=list)
    """The hosts that ran when the restart began: exactly these are replaced."""

    def snapshot(self) -> RollingRestartProgress:
        """A copy to hand out: the Orchestrator keeps mutating its own (lists included)."""
        return dataclasses.replace(
            self, pending_slots=list(self.pending_slots), replaced=list(self.replaced), old_hosts=list(self.old_hosts)
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-safe form for the checkpoint and `BotStatus.to_dict`."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RollingRestartProgress:
        """Read `to_json`'s form back."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["state"] = OperationState(str(data.get("state", "running")))
        return cls(**values)  # type: ignore[arg-type]


class ReshardState(enum.StrEnum):
    """Where a live reshard is (the values are what the checkpoint and the CLI have always shown)."""

    STARTING = "starting"
    IDENTIFYING = "identifying"
    SWITCHING = "switching"
    CLOSING = "closing old sessions"
    FINISHED = "finished"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"

    @property
    def active(self) -> bool:
        """Whether the reshard still has work to do."""
        return self not in (ReshardState.FINISHED, ReshardState.FAILED, ReshardState.ROLLED_BACK)


@dataclasses.dataclass(slots=True)
class ReshardProgress:
    """A live reshard's progress (see `Orchestrator.start_reshard`)."""

    source: int
    target: int
    state: ReshardState = ReshardState.STARTING
    ready: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    error: str | None = None

    def snapshot(self) -> ReshardProgress:
        """A copy to hand out: the Orchestrator keeps mutating its own."""
        return dataclasses.replace(self)

    def to_json(self) -> dict[str, object]:
        """The form the checkpoint, `status` and the CLI have always shown (``from``/``to`` keys)."""
        return {
            "state": self.state.value,
            "from": self.source,
            "to": self.target,
            "ready": self.ready,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: typing.Mapping[str, typing.Any], *, now: float) -> ReshardProgress:
        """Read `to_json`'s form back (``now`` stands in for a missing start time)."""
        return cls(
            source=int(data["from"]),
            target=int(data["to"]),
            state=ReshardState(str(data["state"])),
            ready=int(data.get("ready", 0)),
            started_at=float(data.get("started_at", now)),
            finished_at=data.get("finished_at"),
            error=data.get("error"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class DeployStatus:
    """`Orchestrator.deploy_status`: how a deployment's boot goes."""

    ready: int
    total: int
    hosts: list[str]
    error: str | None = None
    """Why the deployment failed to start (the hosts were stopped), or None."""
    error_type: str | None = None
    """The class name of that failure (``HostCallbackError`` when the bot's callback raised)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HostSummary:
    """One live host in `BotStatus`."""

    node_id: str | None
    want: int
    shards: list[int]
    since_sync: float | None = None
    """Seconds since the host's last sync reached the Orchestrator (None: none since it started).

    A steady host syncs about every `Timings.longest_sync_interval_at` seconds; a value near
    `Timings.host_timeout` means the host is about to be fenced.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class FleetHostSummary:
    """One host actor of the Orchestrator's fleet in `FleetSummary`."""

    host_id: str
    slot: int
    want: int
    retiring: bool


@dataclasses.dataclass(frozen=True, slots=True)
class FleetSummary:
    """The host actors the Orchestrator runs for a deployed bot (never the callback)."""

    prefix: str
    shard_count: int | None
    desired: int
    wants: list[int]
    counter: int
    hosts: list[FleetHostSummary]

    @classmethod
    def from_json(cls, data: typing.Mapping[str, typing.Any]) -> FleetSummary:
        """Read `HostFleet.to_json`'s form (its callback is left out)."""
        return cls(
            prefix=str(data["prefix"]),
            shard_count=data["shard_count"],
            desired=int(data["desired"]),
            wants=list(data["wants"]),
            counter=int(data["counter"]),
            hosts=[FleetHostSummary(h["host_id"], h["slot"], h["want"], h["retiring"]) for h in data["hosts"]],
        )

    def to_dict(self) -> dict[str, object]:
        """The form `status` has always shown (`HostFleet.to_json` with ``callback`` None)."""
        return {
            "prefix": self.prefix,
            "shard_count": self.shard_count,
            "desired": self.desired,
            "wants": list(self.wants),
            "counter": self.counter,
            "callback": None,
            "hosts": [dataclasses.asdict(h) for h in self.hosts],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class BotStatus:
    """`Orchestrator.status`: bot-wide state (config, hosts, boot progress, presence, long operations)."""

    bot_id: int
    config: BotConfig
    ready: int
    """Shards READY."""
    total: int
    """The shard count."""
    identify_eta: float
    """Seconds the identify schedule needs for the shards still to start."""
    identifies_remaining: int
    """Discord's daily identify budget left."""
    hosts: dict[str, HostSummary]
    """Live hosts by host id."""
    presence: PresenceState
    presence_version: int
    stopping: bool
    uptime: float
    """Seconds since this Orchestrator (incarnation) started."""
    rolling_restart: RollingRestartProgress | None = None
    """The last rolling restart (None when there was none)."""
    reshard: ReshardProgress | None = None
    """The last reshard (None when there was none)."""
    fleet: FleetSummary | None = None
    """The Orchestrator's host actors (None for a bot it does not deploy)."""

    def to_dict(self) -> dict[str, typing.Any]:
        """The JSON-safe form ``status`` had as a dict (``{}`` for no rolling restart or reshard)."""
        return {
            "bot_id": self.bot_id,
            "config": dataclasses.asdict(self.config),
            "ready": self.ready,
            "total": self.total,
            "identify_eta": self.identify_eta,
            "identifies_remaining": self.identifies_remaining,
            "hosts": {host_id: dataclasses.asdict(host) for host_id, host in self.hosts.items()},
            "presence": dataclasses.asdict(self.presence),
            "presence_version": self.presence_version,
            "stopping": self.stopping,
            "uptime": self.uptime,
            "rolling_restart": self.rolling_restart.to_json() if self.rolling_restart is not None else {},
            "reshard": self.reshard.to_json() if self.reshard is not None else {},
            "fleet": self.fleet.to_dict() if self.fleet is not None else None,
        }

@dataclasses.dataclass(frozen=True, slots=True)
class TableDelta:
    """`Orchestrator.table_since`: the shard table rows that changed since a version the caller holds.

    Versions count changes of a row's owner, epoch, status, error, guilds and node, within one
    table object ``table_id`` (an Orchestrator restart or a reshard starts a new table). With
    ``full`` the rows are the whole table and replace what the caller holds; otherwise they
    replace just those rows. Seq, latency and event counts are current only in the rows sent:
    read the full table now and then for those.
    """

    table_id: int
    version: int
    full: bool
    rows: list[ShardInfo]
    columns: ShardColumns | None = None
    """More rows, as plain lists (the Orchestrator sends a full read this way: it is far cheaper to pickle)."""
    packed: bytes | None = None
    """More rows: a pickled `ShardColumns`. The Orchestrator pickles a full table once a second (per table
    version) and every full read in that second sends the same bytes, so a full read costs it a copy."""

    def infos(self) -> list[ShardInfo]:
        """Every row the answer carries."""
        rows = self.rows if self.columns is None else self.rows + self.columns.infos()
        if self.packed is not None:
            # Written by the Orchestrator this caller authenticated to (never by a client).
            columns: ShardColumns = pickle.loads(self.packed)
            rows = rows + columns.infos()
        return rows
