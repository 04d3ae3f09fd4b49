"""Zero-downtime rolling restart: every host replaced under a steady event stream, nothing lost."""

from __future__ import annotations

import asyncio
import time
import typing

import pytest
import ray

from ray_shards import Client
from ray_shards.connection import NAMESPACE, host_actor_name
from ray_shards.protocol import OperationState
from tests.helpers import StreamingBot, wait_for

pytestmark = pytest.mark.timeout(300)


async def test_rolling_restart_of_16_shards_on_4_hosts(streaming: typing.Any) -> None:
    bot: StreamingBot = await streaming(shards=16, hosts=4)
    emu = bot.emu
    before = set(bot.deployment.hosts)
    assert len(before) == 4
    emu.control.start_stream(60)
    await asyncio.sleep(1.5)
    identifies = len(emu.control.identify_log())
    seen: list[str] = []
    started = time.monotonic()
    state = await bot.client.rolling_restart(progress=lambda s: seen.append(f"{s.state} {s.done}/{s.total}"))
    took = time.monotonic() - started
    print(f"rolling restart of 4 hosts / 16 shards took {took:.1f} s; progress {seen}")
    assert state.state is OperationState.FINISHED, state
    assert state.done == 4 and sorted(state.replaced) == sorted(before)
    after = set(bot.deployment.hosts)
    assert len(after) == 4 and not (after & before), (before, after)
    await wait_for(lambda: bot.all_ready(exclude_hosts=before), 30, "every shard READY on the new hosts")
    assert len(emu.control.identify_log()) == identifies, "the rolling restart spent IDENTIFYs"
    await bot.assert_nothing_lost()
    stats = emu.control.stats()
    assert not stats["split_brain"], stats["max_concurrent"]
    assert stats["rate_limit_violations"] == 0
    left = [a for a in ray.util.list_named_actors(all_namespaces=True) if any(h in a["name"] for h in before)]
    assert not [a for a in left if a["name"].endswith(tuple(f"-{h}" for h in before))], left


async def test_rolling_restart_can_be_paused_and_aborted(streaming: typing.Any) -> None:
    bot: StreamingBot = await streaming(shards=6, hosts=3)
    client: Client = bot.client
    first = await client.rolling_restart(wait=False)
    assert first.state is OperationState.RUNNING
    paused = await client.control_rolling_restart("pause")
    assert paused.state is OperationState.PAUSED
    await asyncio.sleep(2.0)
    status = (await client.status()).rolling_restart
    assert status is not None and status.state is OperationState.PAUSED and status.done <= 1
    with pytest.raises(RuntimeError, match="already in progress"):
        await client.rolling_restart(wait=False)
    await client.control_rolling_restart("abort")

    deadline = time.monotonic() + 60
    while True:
        status = (await client.status()).rolling_restart
        assert status is not None
        if status.state in (OperationState.ABORTED, OperationState.FINISHED):
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)
    assert status.state is OperationState.ABORTED and status.done < 3
    await wait_for(lambda: bot.all_ready(), 30, "every shard READY after the abort")
    assert len(bot.deployment.hosts) == 3
    assert not bot.emu.control.stats()["split_brain"]


async def test_a_rolling_restart_whose_new_host_cannot_start_fails_and_keeps_the_old_hosts(
    streaming: typing.Any,
) -> None:
    bot: StreamingBot = await streaming(shards=4, hosts=2)
    emu = bot.emu
    emu.control.start_stream(30)
    await asyncio.sleep(1.0)
    before = set(bot.deployment.hosts)
    identifies = len(emu.control.identify_log())

    def broken(_: typing.Any) -> None:  # a local function: cloudpickle sends it by value
        raise RuntimeError("the new bot code is broken")

    state = await asyncio.wait_for(bot.client.rolling_restart(broken), 120)
    assert state.state is OperationState.FAILED, state
    assert state.error is not None and "broken" in state.error, state.error
    assert state.done == 0 and not state.replaced and state.current is None
    # The slot was put back: its old host keeps running, takes shards again, and nothing leaked.
    await wait_for(lambda: bot.all_ready() and {i.host_id for i in bot.shards().values()} == before, 30,
                   "every shard READY on the old hosts")
    status = await bot.client.status()
    assert set(status.hosts) == before and all(h.want > 0 for h in status.hosts.values()), status.hosts
    assert status.fleet is not None and not any(h.retiring for h in status.fleet.hosts), status.fleet
    assert len(emu.control.identify_log()) == identifies, "the failed restart spent IDENTIFYs"
    prefix = host_actor_name(bot.client.bot_id, "")

    def host_actors() -> set[str]:
        return {str(a["name"])[len(prefix):] for a in ray.util.list_named_actors(all_namespaces=True)
                if a.get("namespace") == NAMESPACE and str(a.get("name", "")).startswith(prefix)}

    await wait_for(lambda: host_actors() == before, 30, "the failed replacement's actor to be gone")
    await bot.assert_nothing_lost()
    assert not emu.control.stats()["split_brain"]
