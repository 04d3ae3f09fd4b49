"""Failover without loss: host kills, node loss, Orchestrator restarts, chaos, Discord-side faults."""

from __future__ import annotations

import asyncio
import random
import time
import typing

import hikari
import pytest
import ray

from ray_shards import BotDeployment, Client, ShardStatus
from ray_shards.connection import NAMESPACE, orchestrator_name
from ray_shards.gateway_info import TokenRejectedError
from ray_shards.timings import Timings
from tests.helpers import wait_for as _wait

pytestmark = pytest.mark.timeout(300)

FAST = Timings(identify_window=1.0)


async def test_killed_host_shards_resume_elsewhere_without_loss(streaming: typing.Any) -> None:
    bot = await streaming(shards=6, hosts=3)
    emu = bot.emu
    emu.control.start_stream(60)
    await asyncio.sleep(2.0)
    victim_id, victim = next(iter(bot.deployment.hosts.items()))
    moved = [i for i, info in bot.shards().items() if info.host_id == victim_id]
    assert len(moved) >= 2
    identifies_before = len(emu.control.identify_log())
    ray.kill(victim, no_restart=True)
    took = await _wait(lambda: bot.all_ready(exclude_hosts={victim_id}), 15, "the victim's shards to resume")
    print(f"shards {moved} resumed on other hosts {took:.2f} s after the kill")
    assert took < 5.0
    await asyncio.sleep(1.5)
    assert len(emu.control.identify_log()) == identifies_before, "failover spent IDENTIFYs"
    resumed = {e["shard_id"] for e in emu.control.resume_log()}
    assert set(moved) <= resumed
    await bot.assert_nothing_lost()
    stats = emu.control.stats()
    assert not stats["split_brain"], stats["max_concurrent"]
    assert stats["rate_limit_violations"] == 0


async def test_node_loss_moves_shards_to_surviving_nodes(streaming: typing.Any, ray_cluster: typing.Any) -> None:
    doomed = ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
    try:
        bot = await streaming(shards=8, hosts=4)
        emu = bot.emu
        doomed_id = doomed.node_id
        on_doomed = [i for i, info in bot.shards().items() if info.node_id == doomed_id]
        assert on_doomed, "no host was placed on the extra node"
        emu.control.start_stream(60)
        await asyncio.sleep(1.5)
        identifies_before = len(emu.control.identify_log())
        ray_cluster.remove_node(doomed)
        doomed = None
        took = await _wait(
            lambda: bot.all_ready() and all(info.node_id != doomed_id for info in bot.shards().values()),
            30,
            "shards to leave the removed node",
        )
        print(f"node removed: shards {on_doomed} resumed on surviving nodes after {took:.2f} s")
        await asyncio.sleep(1.0)
        assert len(emu.control.identify_log()) == identifies_before
        await bot.assert_nothing_lost()
        assert not emu.control.stats()["split_brain"]
    finally:
        if doomed is not None:
            ray_cluster.remove_node(doomed)


async def test_orchestrator_restart_keeps_shards_and_presence(streaming: typing.Any) -> None:
    bot = await streaming(shards=4, hosts=2)
    emu = bot.emu
    await bot.client.update_presence(status=hikari.Status.DO_NOT_DISTURB, activity=hikari.Activity(name="kept"))
    emu.control.start_stream(40)
    await asyncio.sleep(1.0)
    connections = emu.control.stats()["connections"]
    orchestrator = ray.get_actor(orchestrator_name(bot.client.bot_id), namespace=NAMESPACE)
    ray.kill(orchestrator, no_restart=False)
    await asyncio.sleep(1.0)
    # Shards were not disturbed: same connections, nothing re-identified or resumed.
    assert emu.control.stats()["connections"] == connections
    await _wait(lambda: bot.all_ready(), 30, "the restarted orchestrator to see every shard READY")
    status = await bot.client.status()
    assert status.presence.status == "dnd"
    await bot.assert_nothing_lost()
    assert not emu.control.stats()["split_brain"]
    # A shard that must identify again (its session invalidated) gets the presence the restored orchestrator kept.
    emu.control.reset_logs()
    emu.control.invalidate(2, resumable=False)
    emu.control.wait_until(lambda c: any(e["shard_id"] == 2 for e in c.identify_log()), timeout=30)
    presence = next(e for e in emu.control.identify_log() if e["shard_id"] == 2)["presence"]
    assert presence["status"] == "dnd"


@pytest.mark.slow
async def test_chaos_host_kills_and_an_orchestrator_kill(streaming: typing.Any) -> None:
    rng = random.Random(7)
    bot = await streaming(shards=8, hosts=4)
    emu = bot.emu
    emu.control.start_stream(40)
    started = time.monotonic()
    kills = 0
    killed_orchestrator = False
    while time.monotonic() - started < 60:
        await asyncio.sleep(rng.uniform(4.0, 8.0))
        await _wait(lambda: bot.all_ready(), 30, "every shard READY between kills")
        if not killed_orchestrator and time.monotonic() - started > 25:
            ray.kill(ray.get_actor(orchestrator_name(bot.client.bot_id), namespace=NAMESPACE), no_restart=False)
            killed_orchestrator = True
            continue
        hosts = list(bot.deployment.hosts.items())
        if hosts:
            _host_id, handle = rng.choice(hosts)
            ray.kill(handle, no_restart=True)
            kills += 1
    await _wait(lambda: bot.all_ready(), 60, "every shard READY after the chaos")
    print(f"chaos: {kills} host kills and an orchestrator kill in {time.monotonic() - started:.0f} s")
    assert kills >= 4 and killed_orchestrator
    await bot.assert_nothing_lost()
    stats = emu.control.stats()
    assert not stats["split_brain"], stats["max_concurrent"]
    assert stats["rate_limit_violations"] == 0


async def test_bad_token_fails_fast_without_identify_loop(emulator_factory: typing.Any, token: str,
                                                          ray_cluster: typing.Any) -> None:
    from tests.conftest import new_token

    emu = emulator_factory(token, shards=2, max_concurrency=2)
    wrong = new_token()
    started = time.monotonic()
    with pytest.raises(TokenRejectedError, match="rejected the bot token"):
        await BotDeployment.start(wrong, subprocess_count=2, rest_url=emu.rest_url, timings=FAST)
    assert time.monotonic() - started < 20
    assert len(emu.control.identify_log()) == 0
    assert wrong not in str(emu.control.rest_log())


async def test_non_retryable_close_stops_the_shard_with_a_clear_error(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, identify_window_s=1.0)
    deployment = await BotDeployment.start(token, subprocess_count=1, rest_url=emu.rest_url, timings=FAST)
    try:
        async with Client(token, None, refresh_interval=0.1) as client:
            emu.control.close(1, 4014)
            await _wait(lambda: client.remote_shards[1].info.status is ShardStatus.FAILED, 15, "shard 1 FAILED")
            info = client.remote_shards[1].info
            assert "4014" in (info.error or "")
            await asyncio.sleep(2.0)
            attempts = [e for e in emu.control.identify_log() if e["shard_id"] == 1]
            assert len(attempts) == 1, "the shard retried after a non-retryable close"
            assert client.remote_shards[0].info.status is ShardStatus.READY
    finally:
        await deployment.stop()


async def test_discord_reconnect_requests_and_invalid_sessions(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    emu = emulator_factory(token, shards=3, max_concurrency=3, identify_window_s=1.0, heartbeat_interval_ms=1000)
    deployment = await BotDeployment.start(token, subprocess_count=1, rest_url=emu.rest_url, timings=FAST)
    try:
        async with Client(token, None, refresh_interval=0.1) as client:
            emu.control.reconnect(0)  # op 7: resume
            emu.control.invalidate(1, resumable=True)  # op 9 true: resume
            emu.control.zombie(2, True)  # no heartbeat ACK: hikari reconnects and resumes
            emu.control.wait_until(lambda c: {0, 1, 2} <= {e["shard_id"] for e in c.resume_log()}, timeout=30)
            emu.control.zombie(2, False)
            await _wait(lambda: all(s.is_connected for s in client.remote_shards.values()), 20, "all connected")
            assert len(emu.control.identify_log()) == 3, "a resumable fault spent an IDENTIFY"
            emu.control.invalidate(0, resumable=False)  # op 9 false: identify again, through the queue
            emu.control.wait_until(lambda c: len(c.identify_log()) == 4, timeout=30)
            assert emu.control.stats()["rate_limit_violations"] == 0
    finally:
        await deployment.stop()


async def test_graceful_stop_closes_everything_within_seconds(
    emulator_factory: typing.Any, token: str, ray_cluster: typing.Any
) -> None:
    emu = emulator_factory(token, shards=4, max_concurrency=4, identify_window_s=1.0)
    deployment = await BotDeployment.start(token, subprocess_count=2, rest_url=emu.rest_url, timings=FAST)
    started = time.monotonic()
    await deployment.stop()
    took = time.monotonic() - started
    assert took < 10, f"stop took {took:.1f} s"
    closes = [c for c in emu.control.stats()["closes"] if c["by"] == "client"]
    assert sorted(c["shard_id"] for c in closes) == [0, 1, 2, 3]
    assert all(c["code"] == 1001 for c in closes)
    emu.control.wait_until(lambda c: all(v == 0 for v in c.stats()["connected"].values()), timeout=10)
    await asyncio.sleep(0.5)
    left = [
        a for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and str(deployment.link.bot_id) in a["name"]
    ]
    assert not left, left
