"""Plain data passed between the Orchestrator, shard hosts and clients.

Everything here is a small picklable value: these objects cross process and
node boundaries as Ray method arguments and return values. None of them ever
holds the bot token.
"""

from __future__ import annotations

import dataclasses
import enum
import typing

if typing.TYPE_CHECKING:
    from ray_shards.protocol import TableDelta

__all__ = [
    "BotConfig",
    "Command",
    "CommandKind",
    "HostDirectives",
    "Lease",
    "ReportBatch",
    "SessionState",
    "ShardColumns",
    "ShardInfo",
    "ShardReport",
    "ShardStatus",
]


class ShardStatus(enum.StrEnum):
    """Where a shard is in its life, as the Orchestrator's table records it."""

    UNASSIGNED = "unassigned"
    """No host holds a lease for it (waiting for one, or its host died)."""
    STARTING = "starting"
    """A host holds the lease and is identifying or resuming."""
    READY = "ready"
    """Connected and receiving events."""
    RECONNECTING = "reconnecting"
    """The connection dropped; hikari is reconnecting on the same host."""
    FAILED = "failed"
    """Stopped by a non-retryable error (bad token, invalid shard, disallowed intents)."""
    STOPPED = "stopped"
    """Closed on purpose."""


@dataclasses.dataclass(frozen=True, slots=True)
class SessionState:
    """A Discord gateway session that can be RESUMEd from any process."""

    session_id: str
    seq: int
    resume_gateway_url: str
    user_id: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """The right to run one shard, valid while its epoch is the Orchestrator's current one."""

    shard_id: int
    shard_count: int
    epoch: int
    session: SessionState | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ShardReport:
    """What a host tells the Orchestrator about one of its shards."""

    shard_id: int
    epoch: int
    status: ShardStatus
    session: SessionState | None = None
    latency: float = float("nan")
    guilds: int = 0
    events: int = 0
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReportBatch:
    """A host's full state in one compact message: what `Bot` sends with every sync.

    Column ``i`` of every list describes one shard. Unpickling a list of `ShardReport`
    costs ~8 µs per shard in the Orchestrator (a frozen dataclass, an enum and a nested
    `SessionState` each); these plain lists cost ~0.3 µs. A session's id, resume URL and
    user id go in ``sessions`` only when they changed since the host's last answered sync
    (or when the Orchestrator asks for them again, `HostDirectives.resend_sessions`); a
    shard without an entry there has the session the Orchestrator last got from this host,
    at seq ``seqs[i]`` (-1: no session).
    """

    shard_ids: list[int]
    epochs: list[int]
    statuses: list[str]
    """`ShardStatus` values."""
    seqs: list[int]
    latencies: list[float]
    guilds: list[int]
    events: list[int]
    sessions: dict[int, SessionState] = dataclasses.field(default_factory=dict)
    errors: dict[int, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.shard_ids)

    @classmethod
    def of(cls, reports: typing.Iterable[ShardReport], *, known: typing.Mapping[int, SessionState] | None = None
           ) -> ReportBatch:
        """The batch of ``reports``; sessions equal to ``known``'s (but for the seq) go as a seq only."""
        reports = list(reports)
        known = known or {}
        sessions: dict[int, SessionState] = {}
        seqs = []
        for report in reports:
            session = report.session
            if session is None:
                seqs.append(-1)
                continue
            seqs.append(session.seq)
            last = known.get(report.shard_id)
            if last is None or (last.session_id, last.resume_gateway_url, last.user_id) != (
                session.session_id, session.resume_gateway_url, session.user_id
            ):
                sessions[report.shard_id] = session
        return cls(
            shard_ids=[r.shard_id for r in reports],
            epochs=[r.epoch for r in reports],
            statuses=[r.status.value for r in reports],
            seqs=seqs,
            latencies=[r.latency for r in reports],
            guilds=[r.guilds for r in reports],
            events=[r.events for r in reports],
            sessions=sessions,
            errors={r.shard_id: r.error for r in reports if r.error is not None},
        )


class CommandKind(enum.StrEnum):
    """Operations a client can ask a host to run on its shards."""

    PRESENCE = "presence"
    VOICE_STATE = "voice_state"
    REQUEST_MEMBERS = "request_members"
    RECONNECT = "reconnect"
    REQUEST_CHANNEL_INFO = "request_channel_info"
    RECORD = "record"
    """Resharding: keep each guild's tail of delivered events from now on (the old set)."""
    SHADOW_CHECK = "shadow_check"
    """Resharding: fail if this new-set host's held events went over their cap."""
    SWITCH_OUT = "switch_out"
    """Resharding: stop delivering events and hand in each guild's tail (`ray_shards.protocol.GuildTails`)."""
    GO_LIVE = "go_live"
    """Resharding: deliver the held events the old set did not handle (argument ``tails``), then deliver live."""


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One operation for a host: on ``shard_id``, or on all of its shards when None."""

    command_id: int
    kind: CommandKind
    shard_id: int | None
    arguments: dict[str, typing.Any]


@dataclasses.dataclass(slots=True)
class HostDirectives:
    """The Orchestrator's answer to a host's sync: what to start, stop and run."""

    adopt: list[Lease] = dataclasses.field(default_factory=list)
    revoke: list[int] = dataclasses.field(default_factory=list)
    commands: list[Command] = dataclasses.field(default_factory=list)
    presence_version: int = 0
    stop: bool = False
    resend_sessions: bool = False
    """The Orchestrator lacks the session of a shard reported by seq only (it restarted, or the host
    registered again): the next `ReportBatch` must carry every session in full."""
    table: TableDelta | None = None
    """The table rows changed since the ``table_version`` the sync named (None: none changed, or not asked).
    Saves every host a `table_since` call per sync; a table change does not wake a parked sync."""
    steady_interval: float | None = None
    """How long this host's next sync parks once it is steady (`Timings.steady_park`: longer than
    `Timings.steady_sync_interval` for a bot with many hosts); None: `Timings.steady_sync_interval`."""

    def __bool__(self) -> bool:
        return bool(self.adopt or self.revoke or self.commands or self.stop)


@dataclasses.dataclass(frozen=True, slots=True)
class BotConfig:
    """Bot-wide settings every host needs, fixed when the Orchestrator starts."""

    bot_id: int
    shard_count: int
    intents: int
    max_concurrency: int
    gateway_url: str
    rest_url: str
    large_threshold: int = 250


@dataclasses.dataclass(frozen=True, slots=True)
class ShardInfo:
    """One row of the Orchestrator's shard table, as clients see it."""

    shard_id: int
    shard_count: int
    status: ShardStatus
    host_id: str | None
    node_id: str | None
    epoch: int
    latency: float
    seq: int | None
    guilds: int
    events: int
    last_seen: float
    identifies: int
    resumes: int
    error: str | None = None

    @property
    def is_alive(self) -> bool:
        """Whether a host currently runs this shard."""
        return self.host_id is not None and self.status in (
            ShardStatus.STARTING,
            ShardStatus.READY,
            ShardStatus.RECONNECTING,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ShardColumns:
    """Rows of the shard table as plain lists: entry ``i`` of every list is one row.

    What a full `Orchestrator.table_since` read sends: pickling and unpickling one `ShardInfo`
    dataclass per shard cost the Orchestrator ~20 µs a row (0.3 s per full read at 16k
    shards); plain lists cost ~1 µs. `infos` builds the `ShardInfo` rows on the reader's side.
    """

    shard_count: int
    shard_ids: list[int]
    statuses: list[str]
    """`ShardStatus` values."""
    host_ids: list[str | None]
    node_ids: list[str | None]
    epochs: list[int]
    latencies: list[float]
    seqs: list[int | None]
    guilds: list[int]
    events: list[int]
    last_seen: list[float]
    identifies: list[int]
    resumes: list[int]
    errors: dict[int, str] = dataclasses.field(default_factory=dict)

    def infos(self) -> list[ShardInfo]:
        """The rows as `ShardInfo`."""
        errors = self.errors
        count = self.shard_count
        return [
            ShardInfo(
                shard_id=shard_id, shard_count=count, status=ShardStatus(status), host_id=host_id, node_id=node_id,
                epoch=epoch, latency=latency, seq=seq, guilds=guilds, events=events, last_seen=last_seen,
                identifies=identifies, resumes=resumes, error=errors.get(shard_id),
            )
            for shard_id, status, host_id, node_id, epoch, latency, seq, guilds, events, last_seen, identifies, resumes
            in zip(
                self.shard_ids, self.statuses, self.host_ids, self.node_ids, self.epochs, self.latencies, self.seqs,
                self.guilds, self.events, self.last_seen, self.identifies, self.resumes, strict=True,
            )
        ]
