"""Live resharding: a second set of sessions beside the first, a switch with each event handled once."""

from __future__ import annotations

import asyncio
import collections
import time
import typing

import pytest
import ray

from ray_shards.protocol import ReshardState
from ray_shards.timings import Timings
from tests.helpers import StreamingBot, wait_for

pytestmark = pytest.mark.timeout(300)


async def test_reshard_8_to_16_under_a_stream_handles_each_event_once(streaming: typing.Any) -> None:
    bot: StreamingBot = await streaming(shards=8, hosts=2)
    emu = bot.emu
    emu.control.start_stream(50)
    await asyncio.sleep(1.5)
    seen: list[str] = []
    started = time.monotonic()
    state = await bot.client.reshard(16, progress=lambda s: seen.append(f"{s.state} {s.ready}"))
    took = time.monotonic() - started
    print(f"reshard 8 -> 16 took {took:.1f} s; progress {seen}")
    assert state.state is ReshardState.FINISHED, state
    await asyncio.sleep(1.5)
    await wait_for(lambda: len(bot.shards()) == 16 and bot.all_ready(), 30, "16 READY shards")
    assert all(info.shard_count == 16 for info in bot.shards().values())

    emu.control.stop_stream()
    sent = {int(e["id"]) for e in emu.control.stream_sent()}
    await wait_for(lambda: sent <= set(ray.get(bot.recorder.counts.remote())), 30, "every event delivered")
    counts = ray.get(bot.recorder.counts.remote())
    twice = {m: c for m, c in counts.items() if m in sent and c > 1}
    assert not twice, f"{len(twice)} events handled more than once across the switch"

    stats = emu.control.stats()
    assert stats["rate_limit_violations"] == 0
    assert not stats["split_brain"]
    old = [s for s in emu.control.sessions() if s["shard_count"] == 8 and s["connected"]]
    assert not old, "old sessions still connected"
    ended = [c for c in stats["closes"] if c["by"] == "client" and c["code"] in (1000, 1001)]
    assert len(ended) >= 8, "the old sessions were not closed (ended) at the end"
    identifies = [e for e in emu.control.identify_log() if e["shard_count"] == 16]
    assert sorted(e["shard_id"] for e in identifies) == list(range(16))


def _expected_labels(sent: list[dict[str, typing.Any]]) -> collections.Counter[str]:
    """What the listeners must have recorded for the emulator's scripted events (each exactly once)."""
    labels: collections.Counter[str] = collections.Counter()
    for e in sent:
        if e["action"] == "edit":
            labels[f"edit {e['content']}"] += 1
        elif e["action"] in ("join", "leave"):
            labels[f"{e['action']} {e['guild_id']}"] += 1
        else:
            labels[e["action"]] += 1
    return labels


async def _script(emu: typing.Any, running: typing.Callable[[], bool], interval: float) -> None:
    """Edits of one message (distinct contents), reaction add/remove/add (identical payloads), a join and a leave.

    Identical reaction payloads repeat every 4 * ``interval`` s: over 2 * reshard_max_skew (ray_shards.cutover).
    """
    gid = emu.control.guild_ids()[0]
    joined: int | None = None
    step = 0
    while running() or step < 14:
        if step == 2:
            joined = (await asyncio.to_thread(emu.control.script, "join"))["guild_id"]
        elif step == 12 and joined is not None:
            await asyncio.to_thread(emu.control.script, "leave", joined)
        else:
            action = ("edit", "react_add", "edit", "react_remove")[step % 4]
            await asyncio.to_thread(emu.control.script, action, gid, content=f"edit {step}")
        step += 1
        await asyncio.sleep(interval)


async def test_reshard_handles_edits_reactions_joins_and_leaves_once(streaming: typing.Any) -> None:
    timings = Timings(identify_window=1.0, reshard_max_skew=0.25)
    bot: StreamingBot = await streaming(shards=4, hosts=2, guild_events=True, timings=timings)
    emu = bot.emu
    emu.control.start_stream(20)
    await asyncio.sleep(1.0)
    finished = asyncio.Event()
    script = asyncio.create_task(_script(emu, lambda: not finished.is_set(), 0.3))
    try:
        state = await bot.client.reshard(8)
    finally:
        finished.set()
    await asyncio.wait_for(script, 60)
    assert state.state is ReshardState.FINISHED, state
    await wait_for(lambda: len(bot.shards()) == 8 and bot.all_ready(), 30, "8 READY shards")
    emu.control.stop_stream()
    sent = emu.control.script_sent()
    assert {e["action"] for e in sent} == {"edit", "react_add", "react_remove", "join", "leave"}
    assert all(e["sessions"] >= 1 for e in sent)
    expected = _expected_labels(sent)

    def labels() -> dict[str, int]:
        return typing.cast(dict[str, int], ray.get(bot.recorder.labels.remote()))

    try:
        await wait_for(lambda: labels() == dict(expected), 30, "each scripted event handled exactly once")
    except AssertionError:
        got = collections.Counter(labels())
        raise AssertionError(f"missing {dict(expected - got)}, extra {dict(got - expected)}; sent {sent}") from None
    hosts = ray.get(bot.recorder.label_hosts.remote())
    assert any(h.startswith("s8-") for h in hosts) and any(not h.startswith("s8-") for h in hosts), (
        f"the scripted events did not straddle the switch: {hosts}"
    )
    stream = {int(e["id"]) for e in emu.control.stream_sent()}
    await wait_for(lambda: stream <= set(ray.get(bot.recorder.counts.remote())), 30, "every streamed event")
    counts = ray.get(bot.recorder.counts.remote())
    assert not {m: c for m, c in counts.items() if m in stream and c > 1}, "stream events handled twice"
    stats = emu.control.stats()
    assert not stats["split_brain"] and stats["rate_limit_violations"] == 0


async def test_reshard_4_to_8_with_slow_listeners_loses_nothing_and_handles_each_event_once(
    streaming: typing.Any,
) -> None:
    bot: StreamingBot = await streaming(shards=4, hosts=2, listener_delay=2.0)
    emu = bot.emu
    emu.control.start_stream(20)
    # At 20 events/s and 2 s per listener about 40 listeners are running when the switch comes.
    await asyncio.sleep(3.0)
    state = await bot.client.reshard(8)
    assert state.state is ReshardState.FINISHED, state
    await wait_for(lambda: len(bot.shards()) == 8 and bot.all_ready(), 30, "8 READY shards")
    await asyncio.sleep(3.0)
    await bot.assert_nothing_lost()
    counts = ray.get(bot.recorder.counts.remote())
    sent = {int(e["id"]) for e in emu.control.stream_sent()}
    twice = {m: c for m, c in counts.items() if m in sent and c > 1}
    assert not twice, f"{len(twice)} events handled more than once across the switch"
    assert not emu.control.stats()["split_brain"]


async def test_a_reshard_whose_new_set_overflows_fails_and_the_old_set_loses_nothing(streaming: typing.Any) -> None:
    # A cap of 30 held events per new host at 40 events/s: the new set overflows before the switch.
    timings = Timings(identify_window=1.0, reshard_buffer_cap=30)
    bot: StreamingBot = await streaming(shards=2, hosts=1, timings=timings)
    emu = bot.emu
    emu.control.start_stream(40)
    await asyncio.sleep(1.0)
    state = await bot.client.reshard(4)
    assert state.state is ReshardState.FAILED, state
    assert state.error is not None and "reshard_buffer_cap" in state.error and "30 events" in state.error, state
    await asyncio.sleep(1.0)
    await wait_for(lambda: len(bot.shards()) == 2 and bot.all_ready(), 30, "the 2 old shards still READY")
    assert all(info.shard_count == 2 for info in bot.shards().values())
    await bot.assert_nothing_lost()
    counts = ray.get(bot.recorder.counts.remote())
    sent = {int(e["id"]) for e in emu.control.stream_sent()}
    assert not {m: c for m, c in counts.items() if m in sent and c > 1}, "the failed reshard duplicated events"
    new_sessions = [s for s in emu.control.sessions() if s["shard_count"] == 4 and s["connected"]]
    await wait_for(
        lambda: not [s for s in emu.control.sessions() if s["shard_count"] == 4 and s["connected"]], 30,
        f"the new set's sessions to go ({len(new_sessions)} connected)",
    )


async def test_reshard_refuses_when_the_daily_budget_is_too_small(streaming: typing.Any) -> None:
    bot: StreamingBot = await streaming(shards=2, hosts=1)
    status = await bot.client.status()
    remaining = status.identifies_remaining
    with pytest.raises(ValueError, match=f"needs {remaining + 1} identifies"):
        await bot.client.reshard(remaining + 1)
    with pytest.raises(ValueError, match="already runs 2 shards"):
        await bot.client.reshard(2)
    await wait_for(lambda: len(bot.shards()) == 2 and bot.all_ready(), 30, "the 2 shards still READY")
    assert (await bot.client.status()).reshard is None


async def test_auto_reshard_follows_discords_recommendation(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    from ray_shards import BotDeployment, Client
    from ray_shards.timings import Timings

    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    deployment = await BotDeployment.start(
        token,
        shard_count=2,
        subprocess_count=2,
        rest_url=emu.rest_url,
        auto_reshard=True,
        timings=Timings(identify_window=1.0, auto_reshard_interval=2.0),
    )
    try:
        async with Client(token, None, refresh_interval=0.2) as client:
            def resharded() -> bool:
                infos = [s.info for s in client.remote_shards.values()]
                return len(infos) == 4 and all(i is not None and i.shard_count == 4 and i.is_alive for i in infos)

            await wait_for(resharded, 90, "the policy to reshard 2 -> 4")
            deadline = time.monotonic() + 30
            while (reshard := (await client.status()).reshard) is None or reshard.state is not ReshardState.FINISHED:
                assert reshard is None or reshard.state is not ReshardState.FAILED, reshard
                assert time.monotonic() < deadline, reshard
                await asyncio.sleep(0.2)
    finally:
        await deployment.stop()


@pytest.mark.parametrize("quiet", [False, True], ids=["stream", "quiet-guilds"])
async def test_reshard_4_to_8_when_an_old_host_dies_handles_each_event_in_one_set(
    streaming: typing.Any, quiet: bool
) -> None:
    """An old-set host is killed (SIGKILL, by ray.kill) while the new set identifies, after the old set started
    recording: its tails die with it, its shards RESUME on the other old host (which notes `since` and records
    the replay). Nothing is lost and no event is handled by both an old-set host and a new-set host.

    ``quiet``: the stream pauses from just before the kill (once some new shards are READY and hold events)
    until the reshard is over, so the dead host's guilds get no event the adopter could record: no tail at
    the switch, and only the `since` rule keeps the new set from delivering what the dead host delivered."""
    bot: StreamingBot = await streaming(shards=4, hosts=2)
    emu = bot.emu
    emu.control.start_stream(20)
    await asyncio.sleep(1.5)
    assert bot.deployment is not None
    old_hosts = dict(bot.deployment.hosts)
    victim_id, victim = next(iter(old_hosts.items()))
    moved = [i for i, info in bot.shards().items() if info.host_id == victim_id]
    assert moved
    identifies_before = len(emu.control.identify_log())
    states: list[str] = []
    reshard = asyncio.create_task(bot.client.reshard(8, progress=lambda s: states.append(str(s.state))))
    await wait_for(lambda: any("identifying" in s.lower() for s in states), 60, "the new set to start identifying")
    if quiet:
        await wait_for(lambda: reshard.done() or _new_ready(bot) >= 1, 60, "a new shard READY")
        await asyncio.sleep(0.8)  # it holds events
        emu.control.stop_stream()
        await asyncio.sleep(0.4)  # the dead host's listeners finish and its watermark is reported
    killed_in = list(states)
    ray.kill(victim, no_restart=True)
    state = await asyncio.wait_for(reshard, 240)
    if quiet:
        emu.control.start_stream(20)
        await asyncio.sleep(1.5)
    print(f"reshard 4 -> 8 with old host {victim_id} killed (shards {moved}): {states[-3:]}")
    assert state.state is ReshardState.FINISHED, state
    assert not any("switching" in s for s in killed_in), f"the old host was killed after the switch began: {states}"
    await wait_for(lambda: len(bot.shards()) == 8 and bot.all_ready(), 30, "8 READY shards")
    await asyncio.sleep(2.0)
    await bot.assert_nothing_lost()

    sent = {int(e["id"]) for e in emu.control.stream_sent()}
    deliveries = ray.get(bot.recorder.deliveries.remote())
    both = bot.handled_by_both_sets(8)
    assert not both, f"{len(both)} events handled by an old-set and a new-set host: {dict(list(both.items())[:5])}"
    twice_new = {m: hosts for m, hosts in deliveries.items()
                 if m in sent and sum(h.startswith("s8-") for h in hosts) > 1}
    assert not twice_new, f"the new set handled {len(twice_new)} events twice"
    assert any(h.startswith("s8-") for hosts in deliveries.values() for h in hosts), "the new set delivered nothing"
    identifies = emu.control.identify_log()[identifies_before:]
    assert sorted(e["shard_id"] for e in identifies) == list(range(8)), "an IDENTIFY beyond the reshard's own"
    assert all(e["shard_count"] == 8 for e in identifies)
    stats = emu.control.stats()
    assert not stats["split_brain"] and stats["rate_limit_violations"] == 0


def _new_ready(bot: StreamingBot) -> int:
    """Connected sessions of the new set (8 shards), as the emulator sees them."""
    emu_sessions = bot.emu.control.sessions()
    return sum(1 for x in emu_sessions if x["shard_count"] == 8 and x["connected"])
