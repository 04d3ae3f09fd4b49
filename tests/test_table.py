"""Shard table: leases, epochs, failover placement and checkpoints, without Ray."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_shards.models import Lease, SessionState, ShardReport, ShardStatus
from ray_shards.table import SCHEMA, CheckpointSchemaError, ShardRecord, ShardTable

pytestmark = pytest.mark.timeout(60)


def _table_with_hosts(shards: int, wants: dict[str, int]) -> ShardTable:
    table = ShardTable(shards)
    for host_id, want in wants.items():
        table.register_host(host_id, node_id=f"node-{host_id}", want=want, has_handle=True, now=0.0)
    table.place()
    return table


def test_uneven_split_is_placed_by_want() -> None:
    table = _table_with_hosts(10, {"a": 3, "b": 3, "c": 2, "d": 2})
    assert sorted(len(table.owned_by(h)) for h in "abcd") == [2, 2, 3, 3]
    assert all(r.host_id is not None and r.epoch == 1 for r in table.shards.values())


def test_dead_hosts_shards_go_to_survivors_with_session_and_new_epoch() -> None:
    table = _table_with_hosts(4, {"a": 2, "b": 2})
    session = SessionState("s1", 42, "ws://x")
    shard = table.owned_by("a")[0]
    table.apply_reports("a", [ShardReport(shard, 1, ShardStatus.READY, session)], now=1.0)
    orphans = table.host_lost("a")
    assert shard in orphans
    placed = table.place()
    assert list(placed) == ["b"]
    lease = next(lease for lease in placed["b"] if lease.shard_id == shard)
    assert lease.session == session
    assert lease.epoch == 2
    # The dead host's stale report is refused.
    assert table.apply_reports("a", [ShardReport(shard, 1, ShardStatus.READY, session)], now=2.0) == [shard]
    assert not table.holds("a", shard, 1)
    assert table.holds("b", shard, 2)


def test_fresh_shards_wait_for_a_host_that_wants_them() -> None:
    table = ShardTable(4)
    table.register_host("a", node_id=None, want=2, has_handle=True, now=0.0)
    placed = table.place()
    assert len(placed["a"]) == 2
    assert len([r for r in table.shards.values() if r.host_id is None]) == 2


def test_release_and_rebalance() -> None:
    table = _table_with_hosts(4, {"a": 2, "b": 2})
    for host in "ab":
        table.apply_reports(host, [ShardReport(s, 1, ShardStatus.READY) for s in table.owned_by(host)], now=1.0)
    table.host_lost("b")
    table.place()
    assert len(table.owned_by("a")) == 4
    table.register_host("c", node_id=None, want=2, has_handle=True, now=2.0)
    for s in table.owned_by("a"):
        table.shards[s].status = ShardStatus.READY
    move = table.rebalance_move()
    assert move is not None and move[1] == "a"
    shard_id = move[0]
    epoch = table.shards[shard_id].epoch
    assert table.release("a", shard_id, epoch, SessionState("x", 5, "ws://y"))
    placed = table.place()
    assert [lease.shard_id for lease in placed["c"]] == [shard_id]


def test_rebalance_counts_revokes_that_are_still_draining() -> None:
    """While a donor drains its listeners (seconds), each reconcile pass asks for a move again.

    Seen in CI: 4 shards, the survivor of a host kill held all 4 and its replacement wanted 2;
    the pending revoke was not counted, so four passes revoked all four shards, one of which
    then lost its session. Exactly two moves are due.
    """
    table = _table_with_hosts(4, {"a": 2, "b": 2})
    for host in "ab":
        table.apply_reports(host, [ShardReport(s, 1, ShardStatus.READY) for s in table.owned_by(host)], now=1.0)
    table.host_lost("b")
    table.place()
    for s in table.owned_by("a"):
        table.shards[s].status = ShardStatus.READY
    table.register_host("c", node_id=None, want=2, has_handle=True, now=2.0)
    moves = []
    for _ in range(10):  # ten passes while nothing is released yet
        move = table.rebalance_move()
        if move is not None:
            assert table.revoke(move[1], move[0])
            moves.append(move)
    assert len(moves) == 2, moves
    for shard_id, donor in moves:
        assert table.release(donor, shard_id, table.shards[shard_id].epoch, None)
    table.place()
    assert len(table.owned_by("a")) == 2 and len(table.owned_by("c")) == 2
    assert table.rebalance_move() is None


def test_checkpoint_round_trip_keeps_leases_and_sessions() -> None:
    table = _table_with_hosts(3, {"a": 3})
    table.apply_reports("a", [ShardReport(0, 1, ShardStatus.READY, SessionState("s", 7, "ws://r", 9))], now=1.0)
    restored = ShardTable.from_json(table.to_json(), now=5.0)
    assert restored.holds("a", 0, 1)
    assert restored.shards[0].session == SessionState("s", 7, "ws://r", 9)
    assert restored.shards[0].status is ShardStatus.READY
    assert restored.hosts["a"].last_sync == 5.0


def test_stopped_shards_are_not_placed_again() -> None:
    table = _table_with_hosts(2, {"a": 2})
    for s in table.owned_by("a"):
        assert table.release("a", s, 1, None, stopped=True)
    assert table.place() == {}
    assert all(r.status is ShardStatus.STOPPED for r in table.shards.values())


def _ready(table: ShardTable, host_id: str, *, seq: int | None = None) -> list[ShardReport]:
    """Reports of every shard ``host_id`` holds, READY at its current epoch."""
    return [
        ShardReport(s, table.shards[s].epoch, ShardStatus.READY, table.shards[s].session)
        for s in table.owned_by(host_id)
    ]


# -- incarnation epochs ---------------------------------------------------------------------------


def test_restore_increments_the_incarnation_and_epochs_stay_above_all_earlier_ones() -> None:
    table = _table_with_hosts(2, {"a": 2})
    assert table.incarnation == 0
    older = table.to_json()
    # After the checkpoint the shard changes hands twice; those epochs are not in it.
    for _ in range(2):
        epoch = table.shards[0].epoch
        assert table.release(table.shards[0].host_id or "", 0, epoch, None)
        table.place()
    newest = table.shards[0].epoch
    restored = ShardTable.from_json(older, now=0.0)
    assert restored.incarnation == 1
    assert restored.to_json()["incarnation"] == 1
    restored.host_lost("a")
    restored.register_host("b", node_id=None, want=2, has_handle=True, now=0.0)
    restored.place()
    assert restored.shards[0].epoch > newest
    again = ShardTable.from_json(restored.to_json(), now=0.0)
    assert again.incarnation == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["grant", "checkpoint", "restore"]), st.integers(0, 3)), max_size=40))
def test_epochs_never_repeat_across_restarts_from_the_last_checkpoint(ops: list[tuple[str, int]]) -> None:
    # The last checkpoint written is older than the table whenever a grant came after it.
    table = _table_with_hosts(4, {"a": 4})
    checkpoints = [table.to_json()]
    granted: set[tuple[int, int]] = {(s, r.epoch) for s, r in table.shards.items()}
    for op, arg in ops:
        if op == "grant":
            record = table.shards[arg]
            if record.host_id is not None:
                table.release(record.host_id, arg, record.epoch, None)
            table.register_host("a", node_id=None, want=4, has_handle=True, now=0.0)
            for leases in table.place().values():
                for lease in leases:
                    assert (lease.shard_id, lease.epoch) not in granted
                    granted.add((lease.shard_id, lease.epoch))
        elif op == "checkpoint":
            checkpoints.append(table.to_json())
        else:
            # Restart from the last checkpoint; the restored table is checkpointed at once (intent first).
            table = ShardTable.from_json(checkpoints[-1], now=0.0)
            checkpoints.append(table.to_json())
        assert table.owned_by("a") == [s for s, r in table.shards.items() if r.host_id == "a"]


# -- idempotent adopts ----------------------------------------------------------------------------


def test_adopts_survive_reads_until_reported_at_their_epoch() -> None:
    table = ShardTable(2)
    table.register_host("a", node_id=None, want=2, has_handle=True, now=0.0)
    placed = table.place()
    first = table.directives_for("a")
    # A sync reply is lost: the retry gets the same adopts.
    assert table.directives_for("a") == first
    assert sorted(lease.shard_id for lease in first[0]) == [0, 1] == sorted(lease.shard_id for lease in placed["a"])
    table.apply_reports("a", [ShardReport(0, first[0][0].epoch, ShardStatus.STARTING)], now=1.0, report_seq=1)
    adopt, revoke = table.directives_for("a")
    assert [lease.shard_id for lease in adopt] == [1]
    assert revoke == []
    # A copy: changing it changes nothing in the table.
    adopt.clear()
    assert len(table.directives_for("a")[0]) == 1


def test_adopts_whose_lease_moved_on_are_dropped() -> None:
    table = ShardTable(1)
    table.register_host("a", node_id=None, want=1, has_handle=True, now=0.0)
    table.place()
    table.host_lost("a")
    table.register_host("a", node_id=None, want=1, has_handle=True, now=1.0)
    table.register_host("b", node_id=None, want=1, has_handle=True, now=1.0)
    table.hosts["a"].pending_adopt.append(Lease(0, 1, 1))  # left over from an older delivery
    table.place()
    owner = table.shards[0].host_id
    other = "a" if owner == "b" else "b"
    assert table.directives_for(other) == ([], [])
    assert [lease.epoch for lease in table.directives_for(owner or "")[0]] == [table.shards[0].epoch]


# -- full-state reports ---------------------------------------------------------------------------


def test_a_report_not_newer_than_the_last_is_ignored() -> None:
    table = _table_with_hosts(2, {"a": 2})
    assert table.apply_reports("a", _ready(table, "a"), now=1.0, report_seq=5) == []
    assert table.apply_reports("a", [ShardReport(0, 99, ShardStatus.READY)], now=2.0, report_seq=5) == []
    assert table.apply_reports("a", [], now=2.0, report_seq=4) == []
    assert table.hosts["a"].last_sync == 1.0
    assert sorted(table.owned_by("a")) == [0, 1]


def test_stuck_lease_a_shard_the_owner_does_not_run_is_handed_on_with_its_session() -> None:
    table = _table_with_hosts(2, {"a": 1, "b": 1})
    session = SessionState("s", 10, "ws://r")
    shard = table.owned_by("a")[0]
    epoch = table.shards[shard].epoch
    table.apply_reports("a", [ShardReport(shard, epoch, ShardStatus.READY, session)], now=1.0, report_seq=1)
    # Host a no longer runs it (say it was handed over after the checkpoint the table came from).
    table.apply_reports("a", [], now=2.0, report_seq=2)
    assert table.shards[shard].host_id is None
    assert table.shards[shard].status is ShardStatus.UNASSIGNED
    placed = table.place()
    lease = next(lease for leases in placed.values() for lease in leases)
    assert lease.shard_id == shard and lease.session == session and lease.epoch > epoch


def test_without_report_seq_an_unreported_shard_keeps_its_owner() -> None:
    table = _table_with_hosts(2, {"a": 2})
    table.apply_reports("a", _ready(table, "a"), now=1.0)
    table.apply_reports("a", [], now=2.0)
    assert sorted(table.owned_by("a")) == [0, 1]


def test_an_unreported_shard_with_a_pending_adopt_keeps_its_owner() -> None:
    table = _table_with_hosts(2, {"a": 2})
    table.apply_reports("a", [], now=1.0, report_seq=1)
    assert sorted(table.owned_by("a")) == [0, 1]


def test_stale_revoke_is_cleared_once_the_host_no_longer_reports_the_shard() -> None:
    table = _table_with_hosts(2, {"a": 1, "b": 1})
    mine, theirs = table.owned_by("a")[0], table.owned_by("b")[0]
    stale = table.apply_reports(
        "a", [*_ready(table, "a"), ShardReport(theirs, 1, ShardStatus.READY)], now=1.0, report_seq=1
    )
    assert stale == [theirs]
    assert table.directives_for("a")[1] == [theirs]
    table.apply_reports("a", [ShardReport(mine, table.shards[mine].epoch, ShardStatus.READY)], now=2.0, report_seq=2)
    assert table.directives_for("a") == ([], [])


def test_stale_revoke_does_not_stop_the_new_lease_of_the_same_shard() -> None:
    table = _table_with_hosts(1, {"a": 1})
    old = table.shards[0].epoch
    table.apply_reports("a", _ready(table, "a"), now=1.0, report_seq=1)
    table.host_lost("a")
    table.register_host("a", node_id=None, want=1, has_handle=True, now=2.0)
    table.place()
    new = table.shards[0].epoch
    # Still running the old lease: revoke it, adopt the new one.
    assert table.apply_reports("a", [ShardReport(0, old, ShardStatus.READY)], now=3.0, report_seq=2) == [0]
    adopt, revoke = table.directives_for("a")
    assert [lease.epoch for lease in adopt] == [new] and revoke == [0]
    table.apply_reports("a", [ShardReport(0, new, ShardStatus.READY)], now=4.0, report_seq=3)
    assert table.directives_for("a") == ([], [])
    assert table.holds("a", 0, new)


def test_a_hand_over_revoke_stays_until_the_shard_is_released() -> None:
    table = _table_with_hosts(2, {"a": 2})
    assert table.revoke("a", 1)
    table.apply_reports("a", _ready(table, "a"), now=1.0, report_seq=1)
    assert table.directives_for("a")[1] == [1]
    assert table.release("a", 1, table.shards[1].epoch, SessionState("x", 3, "ws://y"))
    assert table.directives_for("a")[1] == []
    assert not table.revoke("a", 1)


def test_a_newer_lease_reported_by_a_host_is_taken_as_current() -> None:
    table = _table_with_hosts(1, {"a": 1})
    table.register_host("b", node_id=None, want=1, has_handle=True, now=0.0)
    older = table.to_json()
    table.release("a", 0, table.shards[0].epoch, None)
    table.hosts["a"].want = 0
    table.place()
    epoch = table.shards[0].epoch
    assert table.shards[0].host_id == "b"
    restored = ShardTable.from_json(older, now=0.0)
    session = SessionState("s", 50, "ws://r")
    assert restored.apply_reports("b", [ShardReport(0, epoch, ShardStatus.READY, session)], 1.0, report_seq=1) == []
    assert restored.holds("b", 0, epoch)
    assert restored.shards[0].session == session
    # Host a's view is the stale one now.
    assert restored.apply_reports("a", [ShardReport(0, 1, ShardStatus.READY)], 1.0, report_seq=1) == [0]


def test_reported_seq_never_goes_back_within_a_session() -> None:
    table = _table_with_hosts(1, {"a": 1})
    epoch = table.shards[0].epoch
    table.apply_reports("a", [ShardReport(0, epoch, ShardStatus.READY, SessionState("s", 90, "ws://r"))], 1.0)
    table.apply_reports("a", [ShardReport(0, epoch, ShardStatus.READY, SessionState("s", 40, "ws://r"))], 2.0)
    assert table.shards[0].session == SessionState("s", 90, "ws://r")
    table.apply_reports("a", [ShardReport(0, epoch, ShardStatus.READY, SessionState("t", 1, "ws://r"))], 3.0)
    assert table.shards[0].session == SessionState("t", 1, "ws://r")


def test_a_late_release_keeps_its_session_when_nobody_owns_the_shard() -> None:
    table = _table_with_hosts(1, {"a": 1})
    epoch = table.shards[0].epoch
    table.apply_reports("a", _ready(table, "a"), now=1.0, report_seq=1)
    table.apply_reports("a", [], now=2.0, report_seq=2)  # handed over; the release is still on its way
    assert not table.release("a", 0, epoch, SessionState("s", 70, "ws://r"))
    assert table.shards[0].session == SessionState("s", 70, "ws://r")
    table.place()
    assert not table.release("a", 0, epoch, SessionState("s", 80, "ws://r"))
    assert table.shards[0].session == SessionState("s", 70, "ws://r")


# -- checkpoint schema ----------------------------------------------------------------------------


def test_checkpoint_has_a_schema_and_an_unknown_one_is_refused_clearly() -> None:
    table = _table_with_hosts(2, {"a": 2})
    data = table.to_json()
    assert data["schema"] == SCHEMA == 1
    future = {**copy.deepcopy(data), "schema": 99}
    with pytest.raises(CheckpointSchemaError, match="schema 99") as info:
        ShardTable.from_json(future, now=0.0)
    assert "delete the bot's checkpoint key" in str(info.value)
    assert isinstance(info.value, ValueError)
    broken = copy.deepcopy(data)
    del broken["shards"][0]["shard_id"]
    broken["shards"][0]["unknown_field"] = 1
    with pytest.raises(CheckpointSchemaError, match="cannot be read"):
        ShardTable.from_json(broken, now=0.0)


def test_a_checkpoint_from_before_schemas_is_read() -> None:
    table = _table_with_hosts(2, {"a": 2})
    legacy = table.to_json()
    del legacy["schema"], legacy["incarnation"]
    for host in legacy["hosts"]:
        del host["pending_adopt"]
    restored = ShardTable.from_json(legacy, now=0.0)
    assert restored.incarnation == 1
    assert restored.holds("a", 0, 1)


def test_pending_adopts_are_checkpointed() -> None:
    table = ShardTable(2)
    table.register_host("a", node_id=None, want=2, has_handle=True, now=0.0)
    table.place()
    restored = ShardTable.from_json(table.to_json(), now=0.0)
    assert restored.directives_for("a") == table.directives_for("a")


# -- cost -----------------------------------------------------------------------------------------


def test_place_and_rebalance_count_ownership_once(monkeypatch: pytest.MonkeyPatch) -> None:
    table = ShardTable(400)
    for i in range(40):
        table.register_host(f"h{i:02}", node_id=None, want=10, has_handle=True, now=0.0)
    calls = 0
    real = ShardTable.owned_by

    def counting(self: ShardTable, host_id: str) -> list[int]:
        nonlocal calls
        calls += 1
        return real(self, host_id)

    monkeypatch.setattr(ShardTable, "owned_by", counting)
    placed = table.place()
    assert sum(len(v) for v in placed.values()) == 400
    assert all(len(v) == 10 for v in placed.values())
    assert calls == 0
    for r in table.shards.values():
        r.status = ShardStatus.READY
    table.hosts["h00"].want = 9
    table.register_host("new", node_id=None, want=1, has_handle=True, now=0.0)
    assert table.rebalance_move() == (max(table.owned_by("h00")), "h00")
    assert calls <= 2


def test_checkpoint_sessions_carry_every_field() -> None:
    session = SessionState("s", 7, "ws://r", 9)
    table = _table_with_hosts(1, {"a": 1})
    table.apply_reports("a", [ShardReport(0, 1, ShardStatus.READY, session)], now=1.0)
    assert table.to_json()["shards"][0]["session"] == dataclasses.asdict(session)
    assert set(table.to_json()["shards"][0]) == {f.name for f in dataclasses.fields(ShardRecord)}


def test_a_draining_host_gets_no_shard_and_hands_its_own_over() -> None:
    table = _table_with_hosts(2, {"a": 1, "b": 1})
    for host in "ab":
        table.apply_reports(host, _ready(table, host), now=1.0, report_seq=1)
    mine = table.owned_by("b")
    assert table.drain("b") == mine
    assert table.directives_for("b")[1] == mine
    # b's shard fails over while b drains: it goes to a, never back to b.
    table.host_lost("a")
    table.register_host("c", node_id=None, want=1, has_handle=True, now=2.0)
    placed = table.place()
    assert "b" not in placed
    assert table.release("b", mine[0], table.shards[mine[0]].epoch, SessionState("s", 4, "ws://r"))
    placed = table.place()
    assert "b" not in placed and table.owned_by("b") == []
    assert ShardTable.from_json(table.to_json(), now=3.0).hosts["b"].draining


def test_an_undrained_host_takes_shards_again() -> None:
    # A rolling restart that failed puts its old host back: it takes its share again.
    table = _table_with_hosts(2, {"a": 1, "b": 1})
    mine = table.owned_by("b")
    table.drain("b")
    assert table.release("b", mine[0], table.shards[mine[0]].epoch, None)
    assert "b" not in table.place() and table.hosts["b"].want == 0
    table.undrain("b", 1)
    assert not table.hosts["b"].draining and table.hosts["b"].want == 1
    # a runs both now; when it fails, b (draining, it would get nothing) takes them.
    table.host_lost("a")
    assert sorted(lease.shard_id for lease in table.place()["b"]) == [0, 1]
    table.host_lost("b")
    table.undrain("b", 1)  # a gone host stays gone
    assert not table.hosts["b"].alive


def test_table_versions_say_which_rows_changed() -> None:
    """Delta reads: only rows whose owner, epoch, status, error or guilds changed; seq and latency do not count."""
    table = _table_with_hosts(4, {"a": 2, "b": 2})
    start = table.version
    assert table.changed_since(start) == []
    shard = table.owned_by("a")[0]
    # A report that only moves seq/latency/events is not a change of the row.
    table.apply_reports("a", [ShardReport(s, 1, table.shards[s].status) for s in table.owned_by("a")], now=1.0)
    assert table.changed_since(start) == []
    table.apply_reports("a", [ShardReport(shard, 1, ShardStatus.READY, SessionState("s", 3, "ws://r"))], now=2.0)
    assert table.changed_since(start) == [shard]
    mid = table.version
    table.host_lost("b")
    lost = sorted(set(range(4)) - set(table.owned_by("a")))
    assert table.changed_since(mid) == lost
    assert table.changed_since(start) == sorted({shard, *lost})
    table.mark_failed(lost[0], "4004")
    assert lost[0] in (table.changed_since(mid) or [])
    # Too old (or from the future): the caller must read everything.
    assert table.changed_since(-1) is None
    assert table.changed_since(table.version + 1) is None


def test_table_change_log_is_bounded_and_says_when_it_forgot() -> None:
    table = ShardTable(2)
    table.register_host("a", node_id=None, want=2, has_handle=True, now=0.0)
    start = table.version
    for i in range(3000):  # far more changes than the log keeps (max(1024, 4 * shards))
        table.mark_failed(i % 2, f"e{i}")
    assert len(table._changes) <= 1024
    assert table.changed_since(start) is None, "a version older than the log must get the full table"
    assert table.changed_since(table.version - 1) == [1]


def test_table_view_applies_full_and_delta_reads() -> None:
    from ray_shards.protocol import TableDelta
    from ray_shards.table_view import TableView

    table = _table_with_hosts(4, {"a": 4})
    view = TableView()
    view.apply(TableDelta(table.instance, table.version, True, table.infos()))
    assert sorted(view.rows) == [0, 1, 2, 3] and view.version == table.version
    held = view.version
    table.mark_failed(2, "gone")
    changed = table.changed_since(held)
    assert changed == [2]
    view.apply(TableDelta(table.instance, table.version, False, table.infos(only=changed)))
    row = view.rows[2]
    assert row.status is ShardStatus.FAILED and row.error == "gone"
    assert sorted(view.rows) == [0, 1, 2, 3] and view.version == table.version
    # A new table object (a reshard, a restart) starts its versions again: its id differs.
    assert ShardTable(4).instance != table.instance


def test_full_reads_thin_out_as_hosts_grow_so_all_of_them_stay_bounded() -> None:
    from ray_shards.protocol import TableDelta
    from ray_shards.table_view import FULL_READS_PER_SECOND, TableView, full_read_interval

    assert full_read_interval(30.0, 1) == full_read_interval(30.0, 60) == 30.0
    for hosts in (61, 128, 256, 4096):
        # All hosts together: at most FULL_READS_PER_SECOND full reads a second, at every size.
        assert hosts / full_read_interval(30.0, hosts) <= FULL_READS_PER_SECOND
    table = _table_with_hosts(256, {f"h{i}": 1 for i in range(128)})
    view = TableView(full_every=30.0)
    assert view.full_due() and view.full_interval == 30.0
    view.apply(TableDelta(table.instance, table.version, True, table.infos()))
    # The full read showed 128 hosts: this follower's next one is 64 s away, not 30 s.
    assert view.full_interval == 64.0 and not view.full_due()
