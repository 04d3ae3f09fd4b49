"""Live resharding: a second set of sessions beside the first, a switch with each event handled once."""

from __future__ import annotations

import asyncio
import time
import typing

import pytest
import ray

from ray_shards.protocol import ReshardState
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
