"""Orchestrator checkpoints in Ray's GCS internal key-value store.

A checkpoint holds the bot's config, the shard table with leases and sessions,
the presence and the salted token hash: never the token. It lets a restarted
Orchestrator carry on where the old one stopped.

Layout (version 4): a small *head* under ``checkpoint/<bot id>`` (config, hosts, presence,
everything but the table's rows) and the rows in chunks of `ray_shards.table.CHECKPOINT_CHUNK`
shards under ``checkpoint/<bot id>/chunk/<index>/<generation>``, each row a list of values in the
order the chunk names (`ray_shards.table.ShardTable.chunk_json`; version 3 stored each row as an
object, which this version still reads). A changed row rewrites only
its chunk, under a new generation (the checkpoint's sequence number); the head, written
after its chunks, names the generation of every chunk. So a crash between two writes
leaves the previous head naming chunks that are all still there: a checkpoint is always
read as one consistent snapshot. Superseded chunks are deleted after the head that replaces
them is written (and, after a crash, by `prune_chunks` at the next restore).

Keys added to the head within a version are optional, and a reader of that version that predates
them ignores them: ``presence_version``, ``rolling``, ``reshard``, and ``old_fleet`` (the fleet a
reshard switched away from, from its commit point until its hosts are retired;
`committed_old_fleet`). A head without ``old_fleet`` restores as before it existed: the old hosts are
killed as strays.
"""

from __future__ import annotations

import json
import logging
import typing

if typing.TYPE_CHECKING:
    from ray_shards.table import ShardTable

__all__ = [
    "CHECKPOINT_SCHEMA",
    "ChunkWrite",
    "KeyValue",
    "TableChunks",
    "committed_old_fleet",
    "delete_checkpoint",
    "load_checkpoint",
    "prune_chunks",
    "save_checkpoint",
]

_LOGGER = logging.getLogger("ray_shards.checkpoint")
_KV_NAMESPACE = "ray_shards"
CHECKPOINT_SCHEMA = 4
"""Version of the checkpoint's top-level layout (1: before it was versioned; 2: the table inline; 3: chunks;
4: chunks with rows by position)."""
_READABLE = (2, 3, 4)


class KeyValue(typing.Protocol):
    """The store a checkpoint lives in (Ray's GCS internal KV; a dict in tests)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def keys(self, prefix: bytes) -> list[bytes]: ...


class _RayKV:
    """Ray's GCS internal key-value store, namespace ``ray_shards``."""

    def get(self, key: bytes) -> bytes | None:
        from ray.experimental import internal_kv

        return typing.cast(bytes | None, internal_kv._internal_kv_get(key, namespace=_KV_NAMESPACE))

    def put(self, key: bytes, value: bytes) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(key, value, overwrite=True, namespace=_KV_NAMESPACE)

    def delete(self, key: bytes) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(key, namespace=_KV_NAMESPACE)

    def keys(self, prefix: bytes) -> list[bytes]:
        from ray.experimental import internal_kv

        return list(internal_kv._internal_kv_list(prefix, namespace=_KV_NAMESPACE))


class ChunkWrite(typing.NamedTuple):
    """Rows of one table chunk to write under a generation, replacing the chunk's ``previous`` generation."""

    chunk: int
    generation: int
    rows: typing.Any
    """The chunk as stored (`ray_shards.table.ShardTable.chunk_json`; None until the caller fills it)."""
    previous: int | None


class TableChunks:
    """Which table chunks the stored checkpoint holds, and which to write next.

    ``plan`` takes the chunks whose rows changed from the table (all of them for a table the
    stored checkpoint does not hold: the first write, a reshard's table, one restored from an
    inline checkpoint) and names the generation of every chunk for the head; ``written`` or
    ``failed`` says how the write went. One write at a time (the Orchestrator's lock).
    """

    __slots__ = ("_pending", "generations", "table_instance")

    def __init__(self) -> None:
        self.table_instance: int | None = None
        self.generations: dict[int, int] = {}
        self._pending: tuple[int | None, dict[int, int]] = (None, {})

    def adopt(self, table: ShardTable, generations: typing.Mapping[int, int]) -> None:
        """The table was just restored from a checkpoint whose head named ``generations``."""
        if generations:
            self.table_instance, self.generations = table.instance, dict(generations)
            table.mark_checkpointed()

    def plan(
        self, table: ShardTable, generation: int, *, batched: bool, rows: bool = True
    ) -> tuple[list[ChunkWrite], list[int], bool]:
        """The chunks to write under ``generation``, every chunk's generation for the head, and whether the
        table is written whole (then other stored chunks are stale: `prune_chunks`).

        Without ``rows`` the chunks' rows are left None for the caller to fill (``table.chunk_json``), a
        chunk at a time. A row that changes meanwhile is marked dirty again, so it is written again next time.
        """
        whole = self.table_instance != table.instance
        if whole:
            table.take_dirty_chunks(batched=True)
            indexes = list(range(table.chunk_count))
            known: dict[int, int] = {}
        else:
            indexes = table.take_dirty_chunks(batched=batched)
            known = self.generations
        chunks = [ChunkWrite(i, generation, table.chunk_json(i) if rows else None, known.get(i)) for i in indexes]
        generations = {**known, **dict.fromkeys(indexes, generation)}
        self._pending = (table.instance, generations)
        return chunks, [generations[i] for i in range(table.chunk_count)], whole

    def written(self) -> None:
        """The last plan is stored (its head too)."""
        self.table_instance, self.generations = self._pending

    def failed(self, table: ShardTable) -> None:
        """The last plan's write failed part way: which chunks the stored head names is unknown, so the next
        write is whole."""
        self.table_instance = None
        self.generations = {}
        table.mark_chunks_dirty()

    @property
    def pending_generations(self) -> dict[int, int]:
        return self._pending[1]


def _key(bot_id: int) -> bytes:
    return f"checkpoint/{bot_id}".encode()


def _chunk_prefix(bot_id: int) -> bytes:
    return f"checkpoint/{bot_id}/chunk/".encode()


def _chunk_key(bot_id: int, index: int, generation: int) -> bytes:
    return f"checkpoint/{bot_id}/chunk/{index}/{generation}".encode()


def save_checkpoint(
    bot_id: int,
    data: dict[str, typing.Any],
    chunks: typing.Sequence[ChunkWrite] = (),
    *,
    kv: KeyValue | None = None,
) -> int:
    """Write ``chunks``, then the head ``data`` (which must name every chunk's generation), then drop the
    generations the chunks replace. Returns the bytes written.

    A crash part way leaves the previous head, whose chunks are all still stored.
    """
    kv = kv or _RayKV()
    size = 0
    for chunk in chunks:
        raw = json.dumps(chunk.rows).encode()
        kv.put(_chunk_key(bot_id, chunk.chunk, chunk.generation), raw)
        size += len(raw)
    raw = json.dumps(data).encode()
    kv.put(_key(bot_id), raw)
    size += len(raw)
    for chunk in chunks:
        if chunk.previous is not None and chunk.previous != chunk.generation:
            kv.delete(_chunk_key(bot_id, chunk.chunk, chunk.previous))
    return size


def load_checkpoint(bot_id: int, *, kv: KeyValue | None = None) -> dict[str, typing.Any] | None:
    """Read the checkpoint of bot ``bot_id``, or None when there is none (or it is unreadable).

    The table's rows are put back under ``data["table"]["shards"]`` from the chunks the head names,
    so `ray_shards.table.ShardTable.from_json` reads it as one table.

    Raises
    ------
    CheckpointSchemaError
        For a layout version this ray_shards cannot read, or a head naming a chunk that is not stored.
    """
    kv = kv or _RayKV()
    raw = kv.get(_key(bot_id))
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        _LOGGER.exception("checkpoint of bot %s is unreadable; starting afresh", bot_id)
        return None
    if not isinstance(data, dict):
        return None
    from ray_shards.table import CheckpointSchemaError, chunk_rows

    schema = data.get("schema", 1)
    if schema not in _READABLE:
        msg = (
            f"the checkpoint of bot {bot_id} has layout version {schema} but this ray_shards reads versions "
            f"{', '.join(map(str, _READABLE))}: run the ray_shards version that wrote it, or delete the checkpoint "
            f"to start the bot afresh (`ray-shards stop`, or internal_kv key checkpoint/{bot_id} and the keys "
            f"under checkpoint/{bot_id}/chunk/ in namespace ray_shards)"
        )
        raise CheckpointSchemaError(msg)
    table = data.get("table")
    if isinstance(table, dict) and "chunks" in table and "shards" not in table:
        rows: list[typing.Any] = []
        for index, generation in enumerate(table["chunks"]):
            chunk = kv.get(_chunk_key(bot_id, index, int(generation)))
            if not chunk:
                msg = (
                    f"the checkpoint of bot {bot_id} (sequence {data.get('seq')}) names table chunk {index} "
                    f"generation {generation}, which is not stored: delete the checkpoint to start the bot afresh"
                )
                raise CheckpointSchemaError(msg)
            rows.extend(chunk_rows(json.loads(chunk)))
        table["shards"] = rows
    return data


def chunk_generations(data: dict[str, typing.Any]) -> dict[int, int]:
    """The chunk generations a head read by `load_checkpoint` names (empty for an inline table)."""
    table = data.get("table") or {}
    return {index: int(generation) for index, generation in enumerate(table.get("chunks") or [])}


def committed_old_fleet(data: typing.Mapping[str, typing.Any]) -> tuple[dict[str, typing.Any], int] | None:
    """The old fleet (its ``HostFleet.to_json``) and shard count of a reshard past its commit point, or None.

    Only a reshard at ``closing`` (committed, its old set still to retire) has one; an ``old_fleet``
    beside any other reshard state (none is written so) is ignored, and its hosts are strays.
    """
    from ray_shards.protocol import ReshardState

    fleet, reshard = data.get("old_fleet"), data.get("reshard")
    if not isinstance(fleet, dict) or not isinstance(reshard, dict) or reshard.get("state") != ReshardState.CLOSING:
        return None
    return fleet, int(reshard["from"])


def prune_chunks(bot_id: int, keep: typing.Mapping[int, int], *, kv: KeyValue | None = None) -> int:
    """Delete stored chunks other than ``keep`` (index -> generation), left by a crash; return how many."""
    kv = kv or _RayKV()
    wanted = {_chunk_key(bot_id, index, generation) for index, generation in keep.items()}
    dropped = 0
    for key in kv.keys(_chunk_prefix(bot_id)):
        if key not in wanted:
            kv.delete(key)
            dropped += 1
    return dropped


def delete_checkpoint(bot_id: int, *, kv: KeyValue | None = None) -> None:
    """Remove the checkpoint of bot ``bot_id`` (the bot was shut down on purpose), chunks first."""
    kv = kv or _RayKV()
    for key in kv.keys(_chunk_prefix(bot_id)):
        kv.delete(key)
    kv.delete(_key(bot_id))
