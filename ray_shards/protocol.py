"""Typed messages between the Orchestrator, its shard hosts and clients.

Every value here crosses a process boundary as a Ray method argument or return
value, so each is a small frozen (or plain) dataclass with enum states, never a
bare tuple or a ``dict[str, Any]``. The older messages (`Lease`, `ShardReport`,
`HostDirectives`, ...) live in `ray_shards.models` and are re-exported here so
that this module is the one place to read the protocol.
"""

from __future__ import annotations

import dataclasses
import enum

from ray_shards.models import (
    BotConfig,
    Command,
    CommandKind,
    HostDirectives,
    Lease,
    SessionState,
    ShardInfo,
    ShardReport,
    ShardStatus,
)
from ray_shards.presence import PresenceState

__all__ = [
    "BotConfig",
    "Command",
    "CommandKind",
    "HostDirectives",
    "HostHealth",
    "IdentifyAnswer",
    "Lease",
    "OperationState",
    "PingInfo",
    "Registration",
    "ReshardProgress",
    "RollingRestartProgress",
    "SessionState",
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


@dataclasses.dataclass(frozen=True, slots=True)
class IdentifyAnswer:
    """`Orchestrator.request_identify`: a grant to IDENTIFY now, or how long to wait before asking again."""

    granted: bool
    wait: float
    """Seconds before asking again (0 with a grant)."""
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

    def to_json(self) -> dict[str, object]:
        """A JSON-safe form for the checkpoint and `status`."""
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


@dataclasses.dataclass(slots=True)
class ReshardProgress:
    """A live reshard's progress (see `Orchestrator.start_reshard`)."""

    source: int
    target: int
    state: str = "starting"
    """starting, identifying, switching, closing old sessions, finished, failed, rolled back."""
    ready: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        """The form `status` and the CLI have always shown (``from``/``to`` keys)."""
        return {
            "state": self.state,
            "from": self.source,
            "to": self.target,
            "ready": self.ready,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
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
