"""The Orchestrator's shell parts: the checkpoint writer, the checkpoint head, the mailboxes, and the actor class
run in-process over an injected key-value store that refuses writes (the GCS refusing a checkpoint)."""

from __future__ import annotations

import asyncio
import json
import typing

import pytest

from ray_shards import checkpoint, checkpoint_state
from ray_shards.auth import TokenHash, bot_id_from_token
from ray_shards.checkpoint_writer import CheckpointWriter
from ray_shards.errors import CheckpointWriteError, CommandFailedError, ShardUnavailableError
from ray_shards.host_mailboxes import Mailboxes
from ray_shards.models import BotConfig, CommandKind
from ray_shards.presence import ActivityState, PresenceState
from ray_shards.protocol import ReshardProgress, ReshardState, RollingRestartProgress
from ray_shards.table import CHECKPOINT_CHUNK, CheckpointSchemaError, ShardTable
from ray_shards.timings import Timings

BOT = 7


class _KV:
    """Ray's internal KV as a dict that refuses every put while ``refuse`` is set (the GCS unreachable)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.refuse = False
        self.heads: list[int] = []

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if self.refuse:
            raise ConnectionError("GCS unreachable")
        self.data[key] = value
        if b"/chunk/" not in key:
            self.heads.append(json.loads(value)["seq"])

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: bytes) -> list[bytes]:
        return [k for k in self.data if k.startswith(prefix)]

    def head_key(self) -> bytes:
        return next(k for k in self.data if b"/chunk/" not in k)

    def head(self) -> dict[str, typing.Any]:
        return typing.cast(dict[str, typing.Any], json.loads(self.data[self.head_key()]))


def _writer(kv: _KV, tables: list[ShardTable], *, wanted: typing.Callable[[], bool] = lambda: True) -> CheckpointWriter:
    """A writer of whatever table is last in ``tables`` (a reshard's commit appends one)."""

    def head(seq: int) -> dict[str, typing.Any]:
        return {"schema": checkpoint.CHECKPOINT_SCHEMA, "seq": seq, "table": tables[-1].to_json(rows=False)}

    return CheckpointWriter(BOT, Timings(), head, lambda: tables[-1], wanted, kv=kv)


# -- the checkpoint writer ----------------------------------------------------------------------------


async def test_concurrent_writes_land_in_order_each_with_a_higher_seq() -> None:
    kv = _KV()
    writer = _writer(kv, [ShardTable(3 * CHECKPOINT_CHUNK)])
    await asyncio.gather(*(writer.write(batched=i % 2 == 0) for i in range(8)))
    assert kv.heads == sorted(kv.heads) and len(set(kv.heads)) == 8


async def test_a_refused_strict_write_raises_and_the_next_write_is_whole() -> None:
    kv, table = _KV(), ShardTable(3 * CHECKPOINT_CHUNK)
    writer = _writer(kv, [table])
    await writer.write()
    first = dict(kv.data)
    kv.refuse = True
    writer.dirty = True
    with pytest.raises(CheckpointWriteError, match=r"could not be written.*GCS unreachable"):
        await writer.write(strict=True)
    assert writer.dirty, "a refused write leaves the state to write again"
    assert kv.data == first, "nothing of the refused write is stored"
    kv.refuse = False
    await writer.write()
    # Which chunks a half-done write left is unknown, so the next write rewrites every chunk under its own seq.
    assert kv.head()["table"]["chunks"] == [kv.heads[-1]] * 3
    loaded = checkpoint.load_checkpoint(BOT, kv=kv)
    assert loaded is not None and len(loaded["table"]["shards"]) == 3 * CHECKPOINT_CHUNK


async def test_a_refused_lenient_write_is_retried_not_raised() -> None:
    kv = _KV()
    writer = _writer(kv, [ShardTable(4)])
    kv.refuse = True
    await writer.write()
    assert writer.dirty and not kv.data


async def test_a_write_waiting_for_its_turn_writes_the_table_of_that_moment() -> None:
    """A reshard's commit swaps the bot's table while a write waits for the lock: head and chunks stay one table."""
    kv = _KV()
    tables = [ShardTable(4)]
    writer = _writer(kv, tables)
    first = asyncio.ensure_future(writer.write())
    second = asyncio.ensure_future(writer.write())
    await asyncio.sleep(0)  # the first holds the lock (its save runs in a thread); the second waits
    tables.append(ShardTable(CHECKPOINT_CHUNK + 1))
    await asyncio.gather(first, second)
    loaded = checkpoint.load_checkpoint(BOT, kv=kv)
    assert loaded is not None and loaded["table"]["shard_count"] == CHECKPOINT_CHUNK + 1
    assert len(loaded["table"]["shards"]) == CHECKPOINT_CHUNK + 1


async def test_nothing_is_written_once_the_bot_stops() -> None:
    kv, stopping = _KV(), [False]
    writer = _writer(kv, [ShardTable(4)], wanted=lambda: not stopping[0])
    stopping[0] = True
    await writer.write(strict=True)
    assert not kv.data


async def test_a_staged_change_is_on_record_only_by_its_own_write() -> None:
    """A roll or reshard begins in its recording write's turn: a write queued before it cannot record it, and
    when its own write fails it is undone, so a client told "not started" never finds it on record later."""
    kv, operation = _KV(), {"running": None}
    table = ShardTable(4)

    def head(seq: int) -> dict[str, typing.Any]:
        return {"schema": checkpoint.CHECKPOINT_SCHEMA, "seq": seq, "table": table.to_json(rows=False),
                "operation": operation["running"]}

    writer = CheckpointWriter(BOT, Timings(), head, lambda: table, lambda: True, kv=kv)
    heads_put = kv.put

    def put_then_refuse(key: bytes, value: bytes) -> None:
        heads_put(key, value)
        if b"/chunk/" not in key:
            kv.refuse = True  # the GCS goes away right after the periodic write landed

    kv.put = put_then_refuse  # type: ignore[method-assign]
    periodic = asyncio.ensure_future(writer.write())
    await asyncio.sleep(0)  # the periodic write holds the writer's turn; the recording write queues behind it

    def begin() -> None:
        operation["running"] = "roll"

    def undo() -> None:
        operation["running"] = None

    with pytest.raises(CheckpointWriteError):
        await writer.write(strict=True, stage=(begin, undo))
    assert await periodic is True
    assert kv.head()["operation"] is None, "the periodic write could not record the operation"
    assert operation["running"] is None, "the operation whose write failed was undone"


def test_a_restored_table_that_cannot_be_written_is_reported() -> None:
    kv = _KV()
    writer = _writer(kv, [ShardTable(4)])
    kv.refuse = True
    assert not writer.write_restored()
    assert not writer.incarnation_written and writer.dirty


# -- the checkpoint head ------------------------------------------------------------------------------


def _head(**changes: typing.Any) -> dict[str, typing.Any]:
    table = ShardTable(4)
    config = BotConfig(bot_id=BOT, shard_count=4, intents=1, max_concurrency=1, gateway_url="wss://g",
                       rest_url="http://r", large_threshold=250)
    head = checkpoint_state.head(
        seq=5, config=config, token_hash=TokenHash.of("t"), table=table,
        presence=PresenceState(status="idle", activity=ActivityState(name="x")), presence_version=3,
        remaining=900, fleet={"prefix": "h", "desired": 2}, rolling=None,
        reshard=ReshardProgress(source=4, target=8, state=ReshardState.FAILED, error="e", started_at=1.0,
                                finished_at=2.0),
        old_fleet=None,
    )
    head["table"]["shards"] = [r for r in table.to_json()["shards"]]
    return {**json.loads(json.dumps(head)), **changes}


def test_the_head_reads_back_as_it_was_written() -> None:
    state = checkpoint_state.restored(_head(), now=10.0)
    assert (state.seq, state.remaining, state.presence_version) == (5, 900, 3)
    assert state.presence == PresenceState(status="idle", activity=ActivityState(name="x"))
    assert state.config.shard_count == 4 and state.table.shard_count == 4 and state.token_hash.matches("t")
    assert state.fleet["desired"] == 2 and state.old_fleet is None and state.rolling is None
    assert state.reshard is not None and state.reshard.state is ReshardState.FAILED
    rolling = RollingRestartProgress(total=2, pending_slots=[1], done=1)
    restored = checkpoint_state.restored(_head(rolling=rolling.to_json()), now=10.0).rolling
    assert restored is not None and restored.pending_slots == [1]


@pytest.mark.parametrize(
    "changes",
    [{"presence": {"status": "idle", "bogus": 1}}, {"presence_version": "many"}, {"config": {"bot_id": 1}},
     {"reshard": {"state": "sideways"}}],
    ids=["unknown presence field", "bad number", "config missing fields", "unknown reshard state"],
)
def test_a_malformed_head_is_a_schema_error_not_a_crash(changes: dict[str, typing.Any]) -> None:
    with pytest.raises(CheckpointSchemaError, match="cannot be read"):
        checkpoint_state.restored(_head(**changes), now=10.0)


# -- the mailboxes --------------------------------------------------------------------------------


async def test_a_command_runs_when_its_host_takes_it_and_reports_back() -> None:
    mail = Mailboxes()
    mail.open("a")
    parked = asyncio.ensure_future(mail.wait("a", 5.0))
    await asyncio.sleep(0)
    run = asyncio.ensure_future(mail.run("a", CommandKind.PRESENCE, 0, {"x": 1}, timeout=5.0))
    await asyncio.wait_for(parked, 1.0)  # the parked sync is woken by the command, not by its timeout
    assert mail.has_work("a")
    commands, stop = mail.take("a")
    assert [c.kind for c in commands] == [CommandKind.PRESENCE] and not stop
    assert mail.take("a") == ([], False), "taken once"
    mail.finish(commands[0].command_id, None)
    await asyncio.wait_for(run, 1.0)
    failing = asyncio.ensure_future(mail.run("a", CommandKind.PRESENCE, 0, {}, timeout=5.0))
    await asyncio.sleep(0)
    mail.finish(mail.take("a")[0][0].command_id, "shard 0 is not running")
    with pytest.raises(CommandFailedError, match="not running"):
        await failing


async def test_a_command_times_out_or_fails_when_its_host_goes() -> None:
    mail = Mailboxes()
    with pytest.raises(ShardUnavailableError, match="did not run"):
        await mail.run("a", CommandKind.PRESENCE, 0, {}, timeout=0.05)
    lost = asyncio.ensure_future(mail.run("b", CommandKind.PRESENCE, 0, {}, timeout=5.0))
    await asyncio.sleep(0)
    mail.close("b", "died")
    with pytest.raises(CommandFailedError, match="host b died before running the command"):
        await lost
    mail.open("c")
    mail.stop_all()
    assert mail.has_work("c") and mail.take("c") == ([], True)


# -- the bot's sets ----------------------------------------------------------------------------------


def test_a_reshard_commit_makes_the_new_set_the_bot_and_keeps_the_old_one_to_retire() -> None:
    from ray_shards.bot_sets import BotSets
    from ray_shards.fleet import HostFleet

    def fleet(prefix: str) -> HostFleet:
        return HostFleet(BOT, rest_url="http://r", intents=1, timings=Timings(), prefix=prefix)

    old_table, old_fleet, new_table, new_fleet = ShardTable(2), fleet("h"), ShardTable(4), fleet("s4-h")
    sets = BotSets(table=old_table, fleet=old_fleet)
    sets.start_new_set(new_table, new_fleet)
    new_fleet.shadow = True
    new_table.register_host("s4-h0x1", node_id=None, want=4, has_handle=True, now=0.0)
    sets.host_tables["s4-h0x1"] = new_table
    assert sets.table_of("s4-h0x1") is new_table and sets.table_of("h0x1") is old_table
    assert sets.tables() == [old_table, new_table] and sets.fleets() == [old_fleet, new_fleet]
    sets.commit()
    assert sets.table is new_table and sets.fleet is new_fleet and not new_fleet.shadow
    assert sets.old_set == (old_table, old_fleet) and sets.every_fleet() == [new_fleet, old_fleet]
    assert sets.table_of("s4-h0x1") is new_table, "a new-set host works on the bot's table now"
    assert sets.next_table is None and sets.abandon_new_set() is None


# -- the actor class in-process, over a store that refuses writes -------------------------------------


async def test_a_presence_the_store_refused_applies_is_reported_and_is_written_later(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    """``update_presence`` while the GCS refuses writes: it applies, says it is not remembered, and the next
    checkpoint (once the GCS takes writes) puts it on record, so a restarted Orchestrator still has it."""
    from ray_shards.orchestrator import Orchestrator, OrchestratorOptions

    emu = emulator_factory(token, shards=2)
    bot_id = bot_id_from_token(token)
    kv = _KV()
    timings = Timings(checkpoint_interval=0.2)
    orchestrator = Orchestrator(bot_id, OrchestratorOptions(rest_url=emu.rest_url, shard_count=2, timings=timings),
                                kv=kv)
    try:
        capability = await orchestrator.initialise(token)
        written = len(kv.heads)
        kv.refuse = True
        with pytest.raises(CheckpointWriteError, match="applies now but the checkpoint could not be written"):
            await orchestrator.update_presence(capability, status="dnd")
        status = await orchestrator.status(capability)
        assert status.presence.status == "dnd" and status.presence_version == 1
        assert len(kv.heads) == written
        kv.refuse = False
        for _ in range(50):
            if kv.heads[-1:] != kv.heads[written - 1:written] and kv.head()["presence"]["status"] == "dnd":
                break
            await asyncio.sleep(0.1)
        assert kv.head()["presence"]["status"] == "dnd", "the reconcile pass wrote the presence once it could"
        kv.refuse = True
        with pytest.raises(CheckpointWriteError, match="no host was started; try again"):
            await orchestrator.deploy(capability, 2, None, wait=False)
        deployment = await orchestrator.deploy_status(capability)
        assert deployment.hosts == [] and deployment.error is None
        fleet = (await orchestrator.status(capability)).fleet
        assert fleet is not None and fleet.desired == 0 and fleet.hosts == [], "nothing of the deployment started"
        kv.refuse = False
        restarted = Orchestrator(bot_id, OrchestratorOptions(rest_url=emu.rest_url, timings=timings), kv=kv)
        again = await restarted.authenticate(token)
        assert (await restarted.status(again)).presence.status == "dnd"
        kv.data[kv.head_key()] = json.dumps({**kv.head(), "presence": {"colour": 1}}).encode()
        broken = Orchestrator(bot_id, OrchestratorOptions(rest_url=emu.rest_url, timings=timings), kv=kv)
        error = broken.ping().error
        assert error is not None and "cannot be read" in error
    finally:
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()


class _Recorded:
    """A Ray gauge or counter that records what it was told."""

    def __init__(self, calls: list[tuple[str, float, dict[str, str]]], name: str) -> None:
        self._calls, self._name = calls, name

    def set(self, value: float, tags: dict[str, str]) -> None:
        self._calls.append((self._name, value, tags))

    inc = set


def test_the_metrics_sample_costs_no_pass_over_an_unchanged_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A steady bot moves seqs and latencies on every sync, never the table's version: the shards are counted
    again only when the version moves, yet every gauge is set on every sample (a Ray worker exports a gauge once
    per set, and the agent drops a series not refreshed within two export intervals)."""
    from ray_shards.identify import IdentifyScheduler
    from ray_shards.metric_names import EXPORTED
    from ray_shards.orchestrator_metrics import OrchestratorMetrics

    calls: list[tuple[str, float, dict[str, str]]] = []
    metrics = OrchestratorMetrics(BOT, every=0.0)
    metrics._metrics = {name: _Recorded(calls, name) for name in EXPORTED if EXPORTED[name].source == "orchestrator"}
    counted = []
    count_shards = metrics._count_shards
    monkeypatch.setattr(metrics, "_count_shards", lambda table: (counted.append(table.version), count_shards(table)))
    table = ShardTable(4)
    table.register_host("h1", node_id=None, want=4, has_handle=True, now=100.0)
    scheduler = IdentifyScheduler(1, remaining=1000)

    def observe(now: float) -> dict[str, list[tuple[float, dict[str, str]]]]:
        calls.clear()
        metrics.observe(now, table, scheduler, fenced=(), sync_interval=2.0)
        by_name: dict[str, list[tuple[float, dict[str, str]]]] = {}
        for name, value, tags in calls:
            by_name.setdefault(name, []).append((value, tags))
        return by_name

    def unassigned(sample: dict[str, list[tuple[float, dict[str, str]]]]) -> list[float]:
        return [v for v, t in sample["ray_shards_shards"] if t["state"] == "unassigned"]

    first = observe(100.0)
    assert unassigned(first) == [4.0] and len(counted) == 1
    assert first["ray_shards_sync_lateness_seconds"] == [(0.0, {"bot": str(BOT), "host": "h1"})]
    second = observe(100.5)  # nothing changed: set again from the last count, not counted again
    assert unassigned(second) == [4.0] and len(counted) == 1
    assert second["ray_shards_sync_lateness_seconds"] == [(0.0, {"bot": str(BOT), "host": "h1"})]
    table.place()  # owners move: the version moves
    third = observe(101.0)
    assert unassigned(third) == [0.0] and len(counted) == 2
    late = observe(110.0)  # silent 10 s at a 2 s interval: 6 s late
    assert late["ray_shards_sync_lateness_seconds"] == [(6.0, {"bot": str(BOT), "host": "h1"})]


async def test_a_host_start_waits_while_the_boot_advances_and_is_given_up_once_it_stalls() -> None:
    """A host's start returns once its shards are READY, which for a big bot takes minutes in Discord's identify
    queue: the start timeout counts from the last progress, not from the call (2,048 shards at max_concurrency 16
    failed to deploy: every host was killed after 120 s while the boot advanced)."""
    from ray_shards.fleet import HostFleet

    ready = [0]
    fleet = HostFleet(BOT, rest_url="http://127.0.0.1:1", intents=0, timings=Timings(host_start_timeout=0.3),
                      progress=lambda host_id: (True, ready[0]))

    async def start(seconds: float, *, advancing: bool) -> str:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.1)
            ready[0] += advancing
        return "started"

    # Four timeouts long, with the boot advancing all along: the host is waited for.
    assert await fleet._await_start("h0", start(1.2, advancing=True)) == "started"
    # The same start with nothing advancing is given up after about one timeout.
    began = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await fleet._await_start("h1", start(1.2, advancing=False))
    assert asyncio.get_running_loop().time() - began < 1.0

    # A count that only flaps (a shard reconnecting) is no progress: the start is given up.
    flapping = HostFleet(BOT, rest_url="http://127.0.0.1:1", intents=0, timings=Timings(host_start_timeout=0.3),
                         progress=lambda host_id: (True, 100 + ready[0] % 2))
    with pytest.raises(TimeoutError):
        await flapping._await_start("h3", start(1.2, advancing=True))
    # A host that never registers (no room in the cluster) is given up however the bot advances.
    unregistered = HostFleet(BOT, rest_url="http://127.0.0.1:1", intents=0,
                             timings=Timings(host_start_timeout=0.3), progress=lambda host_id: (False, ready[0]))
    with pytest.raises(TimeoutError):
        await unregistered._await_start("h4", start(1.2, advancing=True))
    # Without a progress source (the old behaviour) the timeout counts from the call.
    plain = HostFleet(BOT, rest_url="http://127.0.0.1:1", intents=0, timings=Timings(host_start_timeout=0.3))
    with pytest.raises(TimeoutError):
        await plain._await_start("h2", start(1.2, advancing=True))


async def test_each_sync_answer_says_how_long_the_hosts_next_steady_sync_parks(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    """The answer carries `Timings.steady_park` for the bot's live hosts: the configured interval while they
    are few, longer (jittered down by at most a tenth) once they would sync more often than the rate allows."""
    from ray_shards.orchestrator import Orchestrator, OrchestratorOptions

    emu = emulator_factory(token, shards=2)
    timings = Timings(steady_sync_interval=0.1, steady_sync_rate=10.0)
    orchestrator = Orchestrator(bot_id_from_token(token),
                                OrchestratorOptions(rest_url=emu.rest_url, shard_count=2, timings=timings), kv=_KV())
    try:
        capability = await orchestrator.initialise(token)
        await orchestrator.register_host(capability, "host-a", node_id=None, want=1)
        alone = await orchestrator.sync(capability, "host-a", [], timeout=0.0)
        assert alone.steady_interval == 0.1
        for name in ("host-b", "host-c"):
            await orchestrator.register_host(capability, name, node_id=None, want=1)
        answers = [await orchestrator.sync(capability, "host-a", [], timeout=0.0) for _ in range(20)]
        parks = [a.steady_interval for a in answers]
        assert all(p is not None and 0.27 <= p <= 0.3 for p in parks), parks
        assert len(set(parks)) > 1, "jittered"
    finally:
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()


async def test_status_says_how_long_ago_each_host_last_synced(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    """`HostSummary.since_sync` grows while a host is silent and falls back to ~0 when it syncs again."""
    from ray_shards.orchestrator import Orchestrator, OrchestratorOptions

    emu = emulator_factory(token, shards=2)
    orchestrator = Orchestrator(bot_id_from_token(token),
                                OrchestratorOptions(rest_url=emu.rest_url, shard_count=2), kv=_KV())
    try:
        capability = await orchestrator.initialise(token)
        await orchestrator.register_host(capability, "host-a", node_id=None, want=1)
        await orchestrator.register_host(capability, "host-b", node_id=None, want=1)
        await orchestrator.sync(capability, "host-a", [], timeout=0.0)
        await orchestrator.sync(capability, "host-b", [], timeout=0.0)
        await asyncio.sleep(0.4)
        await orchestrator.sync(capability, "host-a", [], timeout=0.0)
        hosts = (await orchestrator.status(capability)).hosts
        a, b = hosts["host-a"].since_sync, hosts["host-b"].since_sync
        assert a is not None and b is not None
        assert a < 0.2 and 0.35 <= b < 5.0, (a, b)
        assert (await orchestrator.status(capability)).to_dict()["hosts"]["host-b"]["since_sync"] >= b
    finally:
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
