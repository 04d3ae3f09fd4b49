"""The Orchestrator killed at the worst moments, on a real cluster with real shards and the emulator.

Each scenario asserts the README's promises at its end: every shard READY exactly once, no event
lost, no second session for a shard (split brain), no IDENTIFY beyond those the scenario needs, no
rate-limit violation and no leaked host actor. The Orchestrator is killed with ``ray.kill(...,
no_restart=False)``: a forced kill (no clean-up runs in it) after which Ray restarts the actor,
which then restores itself from its checkpoint. The same interleavings are explored exhaustively
(thousands of seeded schedules) by the deterministic simulator; these tests keep one real run of
each scenario.
"""

from __future__ import annotations

import asyncio
import typing

import hikari
import pytest
import ray

from ray_shards import BotDeployment, Client, ShardStatus
from ray_shards.auth import bot_id_from_token
from ray_shards.connection import NAMESPACE, host_actor_name, orchestrator_name
from ray_shards.protocol import OperationState, ReshardState
from ray_shards.testing import recording_callback
from tests.helpers import FAST, wait_for

pytestmark = pytest.mark.timeout(300)


def _kill_orchestrator(bot_id: int) -> None:
    ray.kill(ray.get_actor(orchestrator_name(bot_id), namespace=NAMESPACE), no_restart=False)


def _host_actors(bot_id: int) -> list[str]:
    prefix = host_actor_name(bot_id, "")
    return sorted(
        str(a["name"])[len(prefix):]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and str(a.get("name", "")).startswith(prefix)
    )


async def _no_leak(bot_id: int, expected: int) -> None:
    """Exactly ``expected`` host actors remain (killed actors leave the name list within a moment)."""
    await wait_for(lambda: len(_host_actors(bot_id)) == expected, 30, f"{expected} host actors")
    await asyncio.sleep(1.0)
    assert len(_host_actors(bot_id)) == expected, _host_actors(bot_id)


def _assert_clean(emu: typing.Any) -> None:
    stats = emu.control.stats()
    assert not stats["split_brain"], stats["max_concurrent"]
    assert stats["rate_limit_violations"] == 0, stats


async def test_orchestrator_killed_after_the_second_identify_of_a_boot(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    """max_concurrency 1: one IDENTIFY per window for the whole bot; the crash must not break that."""
    emu = emulator_factory(token, shards=6, max_concurrency=1, guilds=12, identify_window_s=1.0)
    bot_id = bot_id_from_token(token)
    starting = asyncio.create_task(
        BotDeployment.start(token, subprocess_count=2, rest_url=emu.rest_url, timings=FAST)
    )
    deployment: BotDeployment | None = None
    try:
        await wait_for(lambda: len(emu.control.identify_log()) >= 2 or starting.done(), 60, "the 2nd IDENTIFY")
        assert not starting.done(), "the boot finished before the crash could land"
        _kill_orchestrator(bot_id)
        deployment = await asyncio.wait_for(starting, 120)
        async with Client(token, None) as client:
            await wait_for(
                lambda: all(s.info is not None and s.info.status is ShardStatus.READY
                            for s in client.remote_shards.values()) and len(client.remote_shards) == 6,
                60,
                "6 READY shards",
            )
        assert len(emu.control.identify_log()) == 6, "the restart spent extra IDENTIFYs"
        _assert_clean(emu)
        await _no_leak(bot_id, 2)
    finally:
        if deployment is None and not starting.done():
            starting.cancel()
        if deployment is not None:
            await deployment.stop()
    await _no_leak(bot_id, 0)


async def test_orchestrator_killed_in_the_middle_of_a_rolling_restart(streaming: typing.Any) -> None:
    bot = await streaming(shards=4, hosts=2)
    emu = bot.emu
    bot_id = bot.client.bot_id
    emu.control.start_stream(40)
    identifies = len(emu.control.identify_log())
    before = set(_host_actors(bot_id))
    await bot.client.rolling_restart(wait=False)
    # The worst moment: the first new host exists and the first old one still runs.
    await wait_for(lambda: set(_host_actors(bot_id)) - before, 60, "the rolling restart's first new host")
    _kill_orchestrator(bot_id)

    for _ in range(600):
        rolling = (await bot.client.status()).rolling_restart
        if rolling is not None and not rolling.state.active:
            break
        await asyncio.sleep(0.2)
    status = (await bot.client.status()).rolling_restart
    assert status is not None
    assert status.state is OperationState.FINISHED, (status.state, status.error, status)
    await wait_for(bot.all_ready, 60, "every shard READY after the roll")
    assert not set(_host_actors(bot_id)) & before, "an old host survived the roll"
    await _no_leak(bot_id, 2)
    assert len(emu.control.identify_log()) == identifies, "the roll spent IDENTIFYs"
    await bot.assert_nothing_lost()
    _assert_clean(emu)


async def test_orchestrator_killed_right_after_the_first_resume_of_a_hand_over(streaming: typing.Any) -> None:
    bot = await streaming(shards=4, hosts=2)
    emu = bot.emu
    bot_id = bot.client.bot_id
    emu.control.start_stream(40)
    await asyncio.sleep(1.0)
    identifies = len(emu.control.identify_log())
    resumes = len(emu.control.resume_log())
    victim_id, victim = next(iter(bot.deployment.hosts.items()))
    ray.kill(victim, no_restart=True)
    await wait_for(lambda: len(emu.control.resume_log()) > resumes, 30, "the first RESUME of the hand-over")
    _kill_orchestrator(bot_id)  # within a few ms of that RESUME
    await wait_for(lambda: bot.all_ready(exclude_hosts={victim_id}), 90, "every shard READY again")
    await asyncio.sleep(1.0)
    assert len(emu.control.identify_log()) == identifies, "failover spent IDENTIFYs"
    await bot.assert_nothing_lost()
    _assert_clean(emu)
    await _no_leak(bot_id, 2)


class _FailWhenResharded:
    """A host callback that records deliveries, but raises in the hosts of the resharded (new) set."""

    def __init__(self, recorder: str, fail_at: int) -> None:
        self._record = recording_callback(recorder)
        self._fail_at = fail_at

    def __call__(self, bot: typing.Any) -> None:
        if bot.host_id.startswith(f"s{self._fail_at}-"):  # the new set's hosts are s<count>-h<slot>
            msg = "the new code does not start"
            raise RuntimeError(msg)
        self._record(bot)


async def test_a_reshard_whose_new_hosts_fail_leaves_the_live_bot_alone(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    from tests.helpers import StreamingBot

    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    bot = StreamingBot(emu, token)
    try:
        bot.deployment = await BotDeployment.start(
            token, subprocess_count=2, rest_url=emu.rest_url, callback=_FailWhenResharded(bot.recorder_name, 8),
            intents=hikari.Intents.ALL, timings=FAST,
        )
        bot.client = Client(token, None, refresh_interval=0.1)
        await bot.client.start()
        bot_id = bot.client.bot_id
        hosts = set(_host_actors(bot_id))
        emu.control.start_stream(40)
        await asyncio.sleep(1.0)
        status = await asyncio.wait_for(bot.client.reshard(8), 120)
        assert status.state is ReshardState.FAILED, status
        assert "does not start" in str(status.error), status
        assert set(_host_actors(bot_id)) == hosts, "the failed reshard touched the live hosts"
        assert bot.all_ready()
        await asyncio.sleep(1.0)
        await bot.assert_nothing_lost()
        _assert_clean(emu)
    finally:
        await bot.stop()


async def test_orchestrator_killed_in_the_middle_of_a_reshard(streaming: typing.Any) -> None:
    bot = await streaming(shards=2, hosts=2)
    emu = bot.emu
    bot_id = bot.client.bot_id
    hosts = set(_host_actors(bot_id))
    emu.control.start_stream(40)
    await asyncio.sleep(1.0)
    identifies = len(emu.control.identify_log())
    reshard = asyncio.create_task(bot.client.reshard(4))
    await wait_for(lambda: len(emu.control.identify_log()) >= identifies + 2 or reshard.done(), 60,
                   "the reshard's new sessions to identify")
    _kill_orchestrator(bot_id)
    status = await asyncio.wait_for(reshard, 120)
    assert status.state is ReshardState.ROLLED_BACK, status
    await wait_for(lambda: set(_host_actors(bot_id)) == hosts, 30, "only the old hosts")
    await wait_for(bot.all_ready, 60, "the old shards READY")
    assert all(info.shard_count == 2 for info in bot.shards().values())
    await asyncio.sleep(1.5)
    await bot.assert_nothing_lost()
    _assert_clean(emu)


async def test_host_killed_while_a_reshard_identifies(streaming: typing.Any) -> None:
    bot = await streaming(shards=2, hosts=2)
    emu = bot.emu
    emu.control.start_stream(40)
    await asyncio.sleep(1.0)
    identifies = len(emu.control.identify_log())
    reshard = asyncio.create_task(bot.client.reshard(4))
    await wait_for(lambda: len(emu.control.identify_log()) >= identifies + 1 or reshard.done(), 60,
                   "the reshard's first IDENTIFY")
    victim = next(iter(bot.deployment.hosts.values()))
    ray.kill(victim, no_restart=True)
    status = await asyncio.wait_for(reshard, 180)
    assert status.state is ReshardState.FINISHED, (status.state, status.error, status)
    await wait_for(bot.all_ready, 60, "the new shards READY")
    assert all(info.shard_count == 4 for info in bot.shards().values())
    await asyncio.sleep(1.5)
    await bot.assert_nothing_lost()
    _assert_clean(emu)
    await _no_leak(bot.client.bot_id, 2)



@pytest.mark.parametrize("which", ["new", "old"])
async def test_host_killed_while_a_reshard_switches(streaming: typing.Any, which: str) -> None:
    """A host of the new set, or of the old one, is SIGKILLed once the reshard is switching (settling on the
    skew bound or sending the switch's commands). Whichever way the reshard ends (finished, or rolled back by
    the command the dead host never answered), one complete set runs, nothing is lost, no event is handled
    by both sets, no extra session exists and no host actor leaks."""
    bot = await streaming(shards=2, hosts=2)
    emu = bot.emu
    bot_id = bot.client.bot_id
    old = set(_host_actors(bot_id))
    emu.control.start_stream(40)
    await asyncio.sleep(1.0)
    killed: list[str] = []

    def kill_when_switching(progress: typing.Any) -> None:
        # Status is polled every 0.25 s and the switch first settles for reshard_max_skew (1 s): this lands in it.
        if killed or progress.state is not ReshardState.SWITCHING:
            return
        names = sorted(set(_host_actors(bot_id)) - old) if which == "new" else sorted(old)
        if names:
            killed.append(names[0])
            ray.kill(ray.get_actor(host_actor_name(bot_id, names[0]), namespace=NAMESPACE), no_restart=True)

    status = await asyncio.wait_for(bot.client.reshard(4, progress=kill_when_switching), 240)
    print(f"reshard 2 -> 4 with {which}-set host {killed} killed while switching: {status.state} {status.error}")
    assert killed, f"the reshard never showed the switching state: {status}"
    assert status.state in (ReshardState.FINISHED, ReshardState.FAILED), status
    count = 4 if status.state is ReshardState.FINISHED else 2
    await wait_for(lambda: len(bot.shards()) == count and bot.all_ready(), 90, f"{count} READY shards")
    assert all(info.shard_count == count for info in bot.shards().values())
    await asyncio.sleep(2.0)
    await bot.assert_nothing_lost()
    both = bot.handled_by_both_sets(4)
    assert not both, f"{len(both)} events handled by an old-set and a new-set host: {dict(list(both.items())[:5])}"
    _assert_clean(emu)
    await _no_leak(bot_id, 2)


class _SlowToCloseInTheOldSet:
    """Records deliveries; in the old set's hosts a StoppingEvent listener holds their close for ``hold`` s.

    The reshard retires the old hosts one at a time, so this keeps its close (state ``closing old sessions``,
    past the commit point) going long enough to kill the Orchestrator in the middle of it.
    """

    def __init__(self, recorder: str, new_count: int, hold: float) -> None:
        self._record = recording_callback(recorder)
        self._new_count = new_count
        self._hold = hold

    def __call__(self, bot: typing.Any) -> None:
        self._record(bot)
        if bot.host_id.startswith(f"s{self._new_count}-"):  # the new set's hosts are s<count>-h<slot>
            return
        hold = self._hold

        @bot.listen(hikari.StoppingEvent)
        async def on_stopping(event: hikari.StoppingEvent) -> None:
            await asyncio.sleep(hold)


async def test_orchestrator_killed_after_the_commit_point_of_a_reshard_retires_the_old_hosts(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    """Issue #11: the restarted Orchestrator closes the old sessions (a normal close), it does not SIGKILL the hosts."""
    from tests.helpers import StreamingBot

    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)
    bot = StreamingBot(emu, token)
    try:
        bot.deployment = await BotDeployment.start(
            token, subprocess_count=2, rest_url=emu.rest_url, intents=hikari.Intents.ALL, timings=FAST,
            callback=_SlowToCloseInTheOldSet(bot.recorder_name, 4, hold=4.0),
        )
        bot.client = Client(token, None, refresh_interval=0.1)
        await bot.client.start()
        bot_id = bot.client.bot_id
        emu.control.start_stream(40)
        await asyncio.sleep(1.0)
        reshard = asyncio.create_task(bot.client.reshard(4))
        progress = None
        for _ in range(2400):
            progress = (await bot.client.status()).reshard
            if reshard.done() or (progress is not None and progress.state is ReshardState.CLOSING):
                break
            await asyncio.sleep(0.05)
        assert progress is not None and progress.state is ReshardState.CLOSING and not reshard.done(), progress
        # Past the commit point, with the old sessions still open (each old host's close is held).
        assert [s for s in emu.control.sessions() if s["shard_count"] == 2 and s["connected"]]
        _kill_orchestrator(bot_id)
        status = await asyncio.wait_for(reshard, 120)
        assert status.state is ReshardState.FINISHED, (status.state, status.error, status)
        # Ended by a normal close: a SIGKILLed host would leave its sessions resumable at Discord.
        try:
            await wait_for(lambda: not [s for s in emu.control.sessions() if s["shard_count"] == 2], 60,
                           "every old session ended")
        except AssertionError:
            print("SESSIONS", emu.control.sessions())
            print("CLOSES", emu.control.stats()["closes"])
            raise
        await wait_for(bot.all_ready, 60, "the new shards READY")
        assert all(info.shard_count == 4 for info in bot.shards().values())
        await _no_leak(bot_id, 2)
        assert all(h.startswith("s4-") for h in _host_actors(bot_id)), _host_actors(bot_id)
        _assert_clean(emu)
    finally:
        await bot.stop()
