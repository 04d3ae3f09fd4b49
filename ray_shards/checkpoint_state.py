"""The checkpoint's head: the bot's state as the Orchestrator writes it and reads it back (pure, no Ray, no I/O).

`head` builds what `ray_shards.checkpoint.save_checkpoint` stores beside the table's chunks; `restored`
reads a loaded checkpoint back into typed state. Storage (the GCS KV, chunking, ordering) is
`ray_shards.checkpoint`'s; what the actor then does with the state (re-watching hosts, killing strays,
writing the new incarnation) is the actor's.
"""

from __future__ import annotations

import dataclasses
import typing

from ray_shards import checkpoint
from ray_shards.auth import TokenHash
from ray_shards.checkpoint import CHECKPOINT_SCHEMA
from ray_shards.models import BotConfig
from ray_shards.presence import ActivityState, PresenceState
from ray_shards.protocol import ReshardProgress, RollingRestartProgress
from ray_shards.table import CheckpointSchemaError, ShardTable

__all__ = ["RestoredBot", "head", "restored"]


@dataclasses.dataclass(slots=True)
class RestoredBot:
    """What a checkpoint holds, read back."""

    config: BotConfig
    token_hash: TokenHash
    table: ShardTable
    """With a new incarnation (`ShardTable.from_json`): it must be written before any lease of it is granted."""
    chunk_generations: dict[int, int]
    """The stored chunk of each index the table's rows were read from."""
    presence: PresenceState
    presence_version: int
    seq: int
    """The last written sequence number: the next write takes a higher one."""
    remaining: int
    """The daily identify budget left when it was written (when it resets was not kept)."""
    fleet: dict[str, typing.Any]
    """The fleet's intent (`HostFleet.to_json`; empty before the bot was deployed)."""
    old_fleet: tuple[dict[str, typing.Any], int] | None
    """A committed reshard's old fleet and shard count, until its hosts are retired (`committed_old_fleet`)."""
    rolling: RollingRestartProgress | None
    reshard: ReshardProgress | None


def restored(data: dict[str, typing.Any], now: float) -> RestoredBot:
    """Read a loaded checkpoint (``now``: the wall time, for the table's and the reshard's display times).

    Raises
    ------
    CheckpointSchemaError
        When a field is missing or malformed: the Orchestrator then stays up, refuses work and says why,
        instead of crashing into a restart loop on the same checkpoint.
    """
    try:
        presence = dict(data.get("presence") or {})
        activity = presence.pop("activity", None)
        rolling, reshard = data.get("rolling"), data.get("reshard")
        return RestoredBot(
            config=BotConfig(**data["config"]),
            token_hash=TokenHash.from_json(data["token_hash"]),
            table=ShardTable.from_json(data["table"], now),
            chunk_generations=checkpoint.chunk_generations(data),
            presence=PresenceState(**presence, activity=ActivityState(**activity) if activity else None),
            presence_version=int(data.get("presence_version", 0)),
            seq=int(data.get("seq", 0)),
            remaining=int(data.get("remaining", 1000)),
            fleet=dict(data.get("fleet") or {}),
            old_fleet=checkpoint.committed_old_fleet(data),
            rolling=RollingRestartProgress.from_json(rolling) if rolling else None,
            reshard=ReshardProgress.from_json(reshard, now=now) if reshard else None,
        )
    except CheckpointSchemaError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        msg = (f"the checkpoint cannot be read: {type(exc).__name__}: {exc}. Run the ray_shards version that wrote "
               "it, or delete the bot's checkpoint key to start the bot fresh.")
        raise CheckpointSchemaError(msg) from exc


def head(
    *,
    seq: int,
    config: BotConfig,
    token_hash: TokenHash,
    table: ShardTable,
    presence: PresenceState,
    presence_version: int,
    remaining: int,
    fleet: dict[str, typing.Any] | None,
    rolling: RollingRestartProgress | None,
    reshard: ReshardProgress | None,
    old_fleet: dict[str, typing.Any] | None,
) -> dict[str, typing.Any]:
    """The head to write (the table without its rows: they go in chunks, whose generations the caller adds)."""
    return {
        "schema": CHECKPOINT_SCHEMA,
        "seq": seq,
        "config": dataclasses.asdict(config),
        "token_hash": token_hash.to_json(),
        "table": table.to_json(rows=False),
        "presence": dataclasses.asdict(presence),
        "presence_version": presence_version,
        "remaining": remaining,
        "fleet": fleet,
        "rolling": rolling.to_json() if rolling is not None else None,
        "reshard": reshard.to_json() if reshard is not None else None,
        # From the reshard's commit point until its old hosts are retired: a restart retires them (closing their
        # sessions) rather than killing them as strays.
        "old_fleet": old_fleet,
    }
