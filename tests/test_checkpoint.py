"""Chunked checkpoints (ray_shards.checkpoint): only changed chunks are rewritten, and a crash between two
writes still loads one consistent, safe table. Pure: an in-memory key-value store stands in for Ray's GCS."""

from __future__ import annotations

import json

import pytest

from ray_shards import checkpoint
from ray_shards.checkpoint import CHECKPOINT_SCHEMA, TableChunks
from ray_shards.models import ReportBatch, SessionState, ShardReport, ShardStatus
from ray_shards.protocol import ReshardProgress, ReshardState
from ray_shards.table import CHECKPOINT_CHUNK, CheckpointSchemaError, ShardTable, chunk_rows

BOT = 42
SHARDS = 2 * CHECKPOINT_CHUNK + 100  # three chunks, the last one short


class _KV:
    """Ray's internal KV as a dict; ``fail_after`` puts raise once that many puts succeeded (a crash)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.puts: list[bytes] = []
        self.fail_after: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if self.fail_after is not None and len(self.puts) >= self.fail_after:
            raise ConnectionError("GCS gone")
        self.puts.append(key)
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: bytes) -> list[bytes]:
        return [k for k in self.data if k.startswith(prefix)]


class _Writer:
    """What the Orchestrator does around a table: plan, save (head after chunks), then written/failed."""

    def __init__(self, kv: _KV) -> None:
        self.kv = kv
        self.chunks = TableChunks()
        self.seq = 0

    def write(self, table: ShardTable, *, batched: bool = False) -> list[int]:
        self.seq += 1
        chunks, generations, whole = self.chunks.plan(table, self.seq, batched=batched)
        head = {"schema": CHECKPOINT_SCHEMA, "seq": self.seq, "table": table.to_json(rows=False)}
        head["table"]["chunks"] = generations
        try:
            checkpoint.save_checkpoint(BOT, head, chunks, kv=self.kv)
            if whole:
                checkpoint.prune_chunks(BOT, self.chunks.pending_generations, kv=self.kv)
        except ConnectionError:
            self.chunks.failed(table)
            raise
        self.chunks.written()
        return [c.chunk for c in chunks]


def _table() -> ShardTable:
    table = ShardTable(SHARDS)
    for host in ("a", "b", "c"):
        table.register_host(host, node_id=f"n-{host}", want=SHARDS // 3 + 1, has_handle=True, now=0.0)
    placed = table.place()
    for host, leases in placed.items():
        reports = [
            ShardReport(lease.shard_id, lease.epoch, ShardStatus.READY,
                        SessionState(f"s{lease.shard_id}", 10, f"wss://r{lease.shard_id}", 7), 0.04, 3, 10)
            for lease in leases
        ]
        table.apply_reports(host, reports, now=1.0, report_seq=1)
    return table


def _load(kv: _KV) -> ShardTable:
    data = checkpoint.load_checkpoint(BOT, kv=kv)
    assert data is not None
    return ShardTable.from_json(data["table"], now=5.0)


def _rows(table: ShardTable) -> list[dict[str, object]]:
    return table.to_json()["shards"]  # type: ignore[no-any-return]


def test_round_trip_assembles_the_same_table() -> None:
    kv = _KV()
    table = _table()
    assert _Writer(kv).write(table) == [0, 1, 2]  # a new table is written whole
    restored = _load(kv)
    assert _rows(restored) == _rows(table)
    assert restored.to_json()["hosts"] == table.to_json()["hosts"]
    assert restored.incarnation == table.incarnation + 1
    assert {k for k in kv.data if b"/chunk/" in k} == {f"checkpoint/{BOT}/chunk/{i}/1".encode() for i in range(3)}


def test_only_dirty_chunks_are_rewritten_and_seqs_wait_for_the_batch() -> None:
    kv = _KV()
    table = _table()
    writer = _Writer(kv)
    writer.write(table)
    assert writer.write(table) == []  # nothing changed: the head only
    owner = table.shards[CHECKPOINT_CHUNK + 5].host_id
    assert owner is not None
    table.host_lost(owner)  # every shard of that host: owner changes in all three chunks
    assert writer.write(table) == [0, 1, 2]
    # A seq advance (same session) waits for the batch; a new session is written soon.
    record = table.shards[3]
    host = record.host_id
    assert host is not None
    table.apply_reports(host, [ShardReport(3, record.epoch, ShardStatus.READY,
                                           SessionState("s3", 99, "wss://r3", 7), 0.04, 3, 99)], now=2.0)
    assert table.checkpoint_due() == (False, True)
    assert writer.write(table) == []
    assert _load(kv).shards[3].session == SessionState("s3", 10, "wss://r3", 7)  # lags: RESUMEs further back
    assert writer.write(table, batched=True) == [0]
    assert _load(kv).shards[3].session == SessionState("s3", 99, "wss://r3", 7)
    last = SHARDS - 1
    lease = table.shards[last]
    if lease.host_id is not None:
        table.apply_reports(lease.host_id, [ShardReport(last, lease.epoch, ShardStatus.READY,
                                                        SessionState("new", 1, "wss://new", 7), 0.04, 3, 1)], now=3.0)
        assert table.checkpoint_due() == (True, False)
        assert writer.write(table) == [2]
    assert _rows(_load(kv)) == _rows(table)
    # Superseded generations are deleted once the head that replaces them is stored.
    assert len([k for k in kv.data if b"/chunk/" in k]) == 3


@pytest.mark.parametrize("crash_after_puts", [0, 1, 2])
def test_a_crash_between_chunk_writes_loads_the_previous_consistent_table(crash_after_puts: int) -> None:
    kv = _KV()
    table = _table()
    writer = _Writer(kv)
    writer.write(table)
    before = _rows(table)
    stored_head = kv.data[f"checkpoint/{BOT}".encode()]
    owner = table.shards[0].host_id
    assert owner is not None
    table.host_lost(owner)  # rewrites all three chunks
    kv.fail_after = len(kv.puts) + crash_after_puts  # some chunks written, then the process dies
    with pytest.raises(ConnectionError):
        writer.write(table)
    assert kv.data[f"checkpoint/{BOT}".encode()] == stored_head
    restored = _load(kv)
    # The old head names the old generations, all still stored: the table exactly as it was checkpointed.
    assert _rows(restored) == before
    # It is a safe restore: a new incarnation, so nothing it grants can repeat an epoch of the lost writes.
    assert restored.incarnation == table.incarnation + 1
    # After the failure the next write is whole, and the leftovers of the crashed write are pruned.
    kv.fail_after = None
    assert writer.write(table) == [0, 1, 2]
    assert _rows(_load(kv)) == _rows(table)
    assert len([k for k in kv.data if b"/chunk/" in k]) == 3


def test_a_crash_after_the_head_leaves_stale_chunks_that_a_restore_prunes() -> None:
    kv = _KV()
    table = _table()
    writer = _Writer(kv)
    writer.write(table)
    leftover = f"checkpoint/{BOT}/chunk/1/77".encode()
    kv.data[leftover] = b"[]"  # written by a write whose head never landed
    data = checkpoint.load_checkpoint(BOT, kv=kv)
    assert data is not None
    assert checkpoint.prune_chunks(BOT, checkpoint.chunk_generations(data), kv=kv) == 1
    assert leftover not in kv.data
    assert _rows(_load(kv)) == _rows(table)


def test_a_restored_table_rewrites_only_the_head_until_rows_change() -> None:
    kv = _KV()
    table = _table()
    _Writer(kv).write(table)
    data = checkpoint.load_checkpoint(BOT, kv=kv)
    assert data is not None
    restored = ShardTable.from_json(data["table"], now=5.0)
    writer = _Writer(kv)
    writer.seq = 10
    writer.chunks.adopt(restored, checkpoint.chunk_generations(data))
    assert writer.write(restored) == []
    assert _load(kv).incarnation == restored.incarnation + 1


def test_unknown_layouts_and_missing_chunks_raise_the_clear_error() -> None:
    kv = _KV()
    kv.data[f"checkpoint/{BOT}".encode()] = json.dumps({"schema": 99}).encode()
    with pytest.raises(CheckpointSchemaError, match="layout version 99"):
        checkpoint.load_checkpoint(BOT, kv=kv)
    kv = _KV()
    _Writer(kv).write(_table())
    del kv.data[f"checkpoint/{BOT}/chunk/1/1".encode()]
    with pytest.raises(CheckpointSchemaError, match="chunk 1"):
        checkpoint.load_checkpoint(BOT, kv=kv)


def test_an_inline_checkpoint_of_layout_2_still_loads() -> None:
    kv = _KV()
    table = _table()
    kv.data[f"checkpoint/{BOT}".encode()] = json.dumps({"schema": 2, "seq": 3, "table": table.to_json()}).encode()
    assert _rows(_load(kv)) == _rows(table)


def test_delete_removes_the_chunks_too() -> None:
    kv = _KV()
    _Writer(kv).write(_table())
    checkpoint.delete_checkpoint(BOT, kv=kv)
    assert kv.data == {}


# -- compact reports ---------------------------------------------------------------------------------


def _one_host_table() -> tuple[ShardTable, list[int]]:
    table = ShardTable(4)
    table.register_host("a", node_id=None, want=4, has_handle=True, now=0.0)
    leases = table.place()["a"]
    return table, [lease.epoch for lease in leases]


def test_a_batch_sends_sessions_only_when_they_change() -> None:
    table, epochs = _one_host_table()
    sessions = {i: SessionState(f"s{i}", 5, "wss://r", 1) for i in range(4)}
    reports = [ShardReport(i, epochs[i], ShardStatus.READY, sessions[i], 0.1, 2, 5) for i in range(4)]
    first = ReportBatch.of(reports)
    assert first.sessions == sessions
    table.apply_reports("a", first, now=1.0, report_seq=1)
    moved = [ShardReport(i, epochs[i], ShardStatus.READY, SessionState(f"s{i}", 9, "wss://r", 1), 0.1, 2, 9)
             for i in range(4)]
    moved[2] = ShardReport(2, epochs[2], ShardStatus.READY, SessionState("new", 1, "wss://n", 1), 0.1, 2, 1)
    second = ReportBatch.of(moved, known=first.sessions)
    assert set(second.sessions) == {2}
    table.apply_reports("a", second, now=2.0, report_seq=2)
    assert [table.shards[i].session for i in range(4)] == [r.session for r in moved]
    assert not table.hosts["a"].resend_sessions


def test_a_seq_for_a_session_the_table_does_not_hold_asks_for_every_session() -> None:
    table, epochs = _one_host_table()
    full = [ShardReport(i, epochs[i], ShardStatus.READY, SessionState(f"s{i}", 5, "wss://r", 1)) for i in range(4)]
    restored = ShardTable.from_json(table.to_json(), now=0.0)  # holds no host's sessions
    compact = ReportBatch.of(full, known={r.shard_id: r.session for r in full if r.session is not None})
    assert compact.sessions == {}
    restored.register_host("a", node_id=None, want=4, has_handle=True, now=0.0)
    restored.apply_reports("a", compact, now=1.0, report_seq=1)
    assert restored.hosts["a"].resend_sessions
    assert all(restored.shards[i].session is None for i in range(4))  # no seq pinned on an unknown session
    restored.apply_reports("a", ReportBatch.of(full), now=2.0, report_seq=2)
    assert [restored.shards[i].session for i in range(4)] == [r.session for r in full]


def test_the_ask_for_sessions_is_sent_once_and_asked_again_if_that_answer_was_lost() -> None:
    table, epochs = _one_host_table()
    full = [ShardReport(i, epochs[i], ShardStatus.READY, SessionState(f"s{i}", 5, "wss://r", 1)) for i in range(4)]
    restored = ShardTable.from_json(table.to_json(), now=0.0)
    known = {r.shard_id: r.session for r in full if r.session is not None}
    restored.register_host("a", node_id=None, want=4, has_handle=True, now=0.0)
    restored.apply_reports("a", ReportBatch.of(full, known=known), now=1.0, report_seq=1)
    assert restored.answered("a", now=1.5)
    assert not restored.answered("a", now=1.6)  # sent: not asked twice
    assert restored.hosts["a"].last_sync == 1.6
    # That answer was lost: the host's next compact report asks again.
    restored.apply_reports("a", ReportBatch.of(full, known=known), now=2.0, report_seq=2)
    assert restored.answered("a", now=2.5)
    assert not restored.answered("nobody", now=3.0)


def test_a_seq_never_goes_back_within_a_session() -> None:
    table, epochs = _one_host_table()
    session = SessionState("s0", 50, "wss://r", 1)
    table.apply_reports("a", [ShardReport(0, epochs[0], ShardStatus.READY, session)], now=1.0)
    older = ReportBatch.of([ShardReport(0, epochs[0], ShardStatus.READY, SessionState("s0", 40, "wss://r", 1))],
                           known={0: session})
    table.apply_reports("a", older, now=2.0)
    assert table.shards[0].session == session


def test_full_reads_as_columns_give_the_same_rows() -> None:
    table = _table()
    table.mark_failed(7, "4014: disallowed intents")
    assert table.columns().infos() == table.infos()


# -- the old fleet of a committed reshard (issue #11) -------------------------------------------------------------


def _head_with(reshard_state: str | None, old_fleet: dict[str, object] | None) -> dict[str, object]:
    head: dict[str, object] = {"schema": CHECKPOINT_SCHEMA, "seq": 1, "table": ShardTable(4).to_json()}
    if reshard_state is not None:
        head["reshard"] = ReshardProgress(source=2, target=4, state=ReshardState(reshard_state)).to_json()
    if old_fleet is not None:
        head["old_fleet"] = old_fleet
    return head


def test_a_committed_reshard_keeps_its_old_fleet_across_a_restart() -> None:
    kv = _KV()
    old = {"prefix": "h", "desired": 0, "hosts": [{"host_id": "h0", "slot": 0, "want": 1, "retiring": False}]}
    kv.data[f"checkpoint/{BOT}".encode()] = json.dumps(_head_with("closing old sessions", old)).encode()
    data = checkpoint.load_checkpoint(BOT, kv=kv)
    assert data is not None
    assert checkpoint.committed_old_fleet(data) == (old, 2)


@pytest.mark.parametrize(
    ("state", "old_fleet"),
    [
        ("closing old sessions", None),  # a head written before old_fleet existed: its hosts are strays, as before
        ("switching", {"prefix": "h", "hosts": []}),  # before the commit point the old set is the bot's own fleet
        ("finished", {"prefix": "h", "hosts": []}),
        (None, {"prefix": "h", "hosts": []}),
    ],
)
def test_no_old_fleet_but_at_the_commit_point(state: str | None, old_fleet: dict[str, object] | None) -> None:
    kv = _KV()
    kv.data[f"checkpoint/{BOT}".encode()] = json.dumps(_head_with(state, old_fleet)).encode()
    data = checkpoint.load_checkpoint(BOT, kv=kv)
    assert data is not None and checkpoint.committed_old_fleet(data) is None


def test_the_old_hosts_are_answered_by_a_stand_in_table_that_keeps_their_leases_until_they_close() -> None:
    """Restored at the commit point, the old hosts sync to a stand-in table: no revoke (no hand-over), no placement."""
    from ray_shards.orchestrator import Orchestrator

    table = Orchestrator._old_table_stand_in(2, [("h0", 1), ("h1", 1)], now=0.0)
    epoch = 1 << 32 | 3  # a lease of the old table, granted before the restart
    session = SessionState("s0", 50, "wss://r", 1)
    stale = table.apply_reports("h0", [ShardReport(0, epoch, ShardStatus.READY, session)], now=1.0, report_seq=1)
    assert stale == [] and table.holds("h0", 0, epoch)
    assert table.place() == {}  # never placed: shard 1 stays with nobody until h1 reports it
    assert table.release("h0", 0, epoch, None, stopped=True)  # the retired host's close ends it here


# -- chunk layout 4: rows by position (issue #13: a batched checkpoint at 16k shards rewrites every chunk) --------


def test_rows_by_position_read_back_as_the_rows_of_the_table_gaps_included() -> None:
    table = _table()
    table.mark_failed(7, "4014: disallowed intents")
    loose = ShardTable(CHECKPOINT_CHUNK + 3)  # unassigned: no session, no latency (NaN), no host
    for source in (table, loose):
        rows = [row for i in range(source.chunk_count) for row in chunk_rows(source.chunk_json(i))]
        assert rows == _rows(source)
    assert chunk_rows(loose.chunk_json(1))[0]["latency"] is None
    assert chunk_rows(table.chunk_json(0))[7]["error"] == "4014: disallowed intents"


def test_a_layout_3_checkpoint_with_rows_as_objects_still_restores() -> None:
    """What the ray_shards before layout 4 wrote: the same head, each chunk a list of row objects."""
    kv = _KV()
    table = _table()
    rows = _rows(table)
    head = {"schema": 3, "seq": 1, "table": table.to_json(rows=False)}
    head["table"]["chunks"] = [1] * table.chunk_count
    for i in range(table.chunk_count):
        part = rows[i * CHECKPOINT_CHUNK:(i + 1) * CHECKPOINT_CHUNK]
        kv.data[f"checkpoint/{BOT}/chunk/{i}/1".encode()] = json.dumps(part).encode()
    kv.data[f"checkpoint/{BOT}".encode()] = json.dumps(head).encode()
    assert _rows(_load(kv)) == rows


def test_a_chunk_of_neither_layout_is_a_schema_error_that_says_what_to_do() -> None:
    chunk = ShardTable(4).chunk_json(0)
    for broken in ({**chunk, "rows": [[1, 2]]}, {"rows": []}, 7):
        with pytest.raises(CheckpointSchemaError, match="delete the checkpoint"):
            chunk_rows(broken)
