"""Shard table: leases, epochs, failover placement and checkpoints, without Ray."""

from __future__ import annotations

from ray_shards.models import SessionState, ShardReport, ShardStatus
from ray_shards.table import ShardTable


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
