"""The Orchestrator's checkpoint writer: one write at a time, in order, to an injected key-value store.

What goes in the head is `ray_shards.checkpoint_state`'s; the chunk plan and the storage format are
`ray_shards.checkpoint`'s; when a write is due is `ray_shards.checkpoint_schedule`'s. This holds the
order of writes (a lock and a sequence number), whether the state changed since the last write
(``dirty``), and what a failed write means: retried later, or, with ``strict``, a
`CheckpointWriteError` for a caller that must not act on an intent that is not on record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from ray_shards import checkpoint
from ray_shards.checkpoint_schedule import CheckpointSchedule
from ray_shards.checkpoint_schedule import Write as CheckpointWrite
from ray_shards.effects import describe_error
from ray_shards.errors import CheckpointWriteError

if typing.TYPE_CHECKING:
    from ray_shards.table import ShardTable
    from ray_shards.timings import Timings

__all__ = ["CheckpointWriter"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


class CheckpointWriter:
    """Writes one bot's checkpoint: ``head(seq)`` builds the head of write number ``seq``, ``table()`` is the
    bot's table now (both asked once it is a write's turn: a reshard's commit may swap the table meanwhile),
    and ``wanted()`` whether to write at all (False before the bot is known, or once it is stopping and its
    checkpoint deleted).

    ``kv`` is the store (None: Ray's GCS internal KV); ``saved(size)`` is told the bytes of each write
    that landed (metrics).
    """

    def __init__(
        self,
        bot_id: int,
        timings: Timings,
        head: typing.Callable[[int], dict[str, typing.Any]],
        table: typing.Callable[[], ShardTable],
        wanted: typing.Callable[[], bool],
        *,
        kv: checkpoint.KeyValue | None = None,
        saved: typing.Callable[[int], None] = lambda size: None,
    ) -> None:
        self._bot_id = bot_id
        self._head = head
        self._table = table
        self._wanted = wanted
        self._kv = kv
        self._saved = saved
        # One writer at a time, each with a higher sequence number: two writes in flight (from two awaiting
        # callers) could otherwise land out of order and leave the older state in the store.
        self._lock = asyncio.Lock()
        self._seq = 0
        # The table chunks the stored checkpoint holds: which table object, and each chunk's generation.
        self._chunks = checkpoint.TableChunks()
        self._schedule = CheckpointSchedule(
            interval=timings.checkpoint_interval, batch_interval=timings.checkpoint_batch_interval,
            last_batch=time.monotonic(),
        )
        self.dirty = False
        """The head's state changed since the last write (rows say so themselves: `ShardTable.checkpoint_due`)."""
        self.incarnation_written = True
        """False from a restore until the restored table (its new incarnation) is on record."""

    def restored(self, table: ShardTable, generations: typing.Mapping[int, int], seq: int) -> None:
        """The bot was just restored from a checkpoint (write ``seq``, whose head named ``generations``)."""
        self._chunks.adopt(table, generations)
        self._seq = seq

    def write_restored(self) -> bool:
        """Write the restored table's new incarnation now, in the actor's constructor; False when it failed.

        Until it lands nothing is placed (a lease of the new incarnation would carry an epoch a second
        restart from the same older checkpoint grants again): the reconcile pass tries again.
        """
        table = self._table()
        head, chunks, _ = self._plan(table, batched=True)
        try:
            # Pruning drops the chunks a crash left behind (written, but never named by a head that got stored).
            self._save(head, chunks, dict(self._chunks.pending_generations))
            self._chunks.written()
        except Exception:
            self.dirty = True
            self._chunks.failed(table)
            self.incarnation_written = False
            _LOGGER.exception("could not write the restored checkpoint; placing nothing until it is written")
            return False
        return True

    def due(self) -> CheckpointWrite | None:
        """Which write the schedule wants now (None: none yet)."""
        table = self._table()
        soon, later = table.checkpoint_due()
        return self._schedule.due(
            time.monotonic(), dirty=self.dirty, rows_now=soon, rows_later=later,
            new_table=self._chunks.table_instance != table.instance,
        )

    def _plan(
        self, table: ShardTable, *, batched: bool, rows: bool = True
    ) -> tuple[dict[str, typing.Any], list[checkpoint.ChunkWrite], bool]:
        """The head and the table chunks to write next, and whether the table is written whole.

        The chunks count as clean from here on: report the outcome with ``self._chunks.written()``
        or ``self._chunks.failed(table)`` (the next write is then whole).

        Only chunks whose rows changed are rewritten; with ``batched`` also those where only seqs and
        counters moved. A table the stored checkpoint does not hold (new, restored from an inline
        checkpoint, a reshard's) is written whole.
        """
        self._seq += 1
        chunks, generations, whole = self._chunks.plan(table, self._seq, batched=batched, rows=rows)
        head = self._head(self._seq)
        head["table"]["chunks"] = generations
        return head, chunks, whole

    def _save(
        self, head: dict[str, typing.Any], chunks: list[checkpoint.ChunkWrite], keep: dict[int, int] | None
    ) -> int:
        size = checkpoint.save_checkpoint(self._bot_id, head, chunks, kv=self._kv)
        if keep is not None:
            # A new table (first write, a reshard's, a restore from an inline checkpoint): drop any other chunks.
            checkpoint.prune_chunks(self._bot_id, keep, kv=self._kv)
        return size

    async def write(
        self,
        *,
        batched: bool = False,
        strict: bool = False,
        stage: tuple[typing.Callable[[], None], typing.Callable[[], None]] | None = None,
    ) -> bool:
        """Write the checkpoint (the table's changed chunks, then the head), after the writes queued before it.

        Returns whether a write landed. Nothing is written when ``wanted()`` says no, before or once it is this
        write's turn.

        ``stage`` is ``(apply, undo)``: a change made in this write's turn, just before its head is built,
        so no write queued before it can put the change on record (a change that must be on record before
        it is acted on, and must not be on record if this write fails). ``apply`` may raise (the change is
        refused; nothing is written); when the write fails, ``undo`` runs before the next write's turn.
        Use it with ``strict``.

        With ``strict`` a write that fails raises
        `CheckpointWriteError` instead of being retried later: a long operation's core checkpoints
        its intent before the effects that act on it, and must not act on an intent that is not on record.
        """
        if not self._wanted():
            return False
        async with self._lock:
            if not self._wanted():
                return False
            if stage is not None:
                stage[0]()
            table = self._table()
            head, chunks, whole = self._plan(table, batched=batched, rows=False)
            # Rows a chunk at a time, letting syncs run in between (a batch rewrites every chunk: 16k rows took
            # ~0.1 s in one go). Each chunk is one moment of its rows; a row changing meanwhile is dirty again.
            for i, chunk in enumerate(chunks):
                chunks[i] = chunk._replace(rows=table.chunk_json(chunk.chunk))
                if i + 1 < len(chunks):
                    await asyncio.sleep(0)
            self.dirty = False
            self._schedule.written(time.monotonic(), batched=batched)
            try:
                keep = dict(self._chunks.pending_generations) if whole else None
                size = await asyncio.to_thread(self._save, head, chunks, keep)
            except Exception as exc:
                self.dirty = True
                self._chunks.failed(table)
                if stage is not None:
                    stage[1]()
                if strict:
                    msg = f"the checkpoint could not be written ({describe_error(exc)})"
                    raise CheckpointWriteError(msg) from exc
                _LOGGER.exception("checkpoint failed; will retry")
                return False
            self._chunks.written()
            self.incarnation_written = True
            self._saved(size)
            return True
