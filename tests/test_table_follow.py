"""Following the shard table by delta long polls (issue #13, item 1) on a real cluster."""

from __future__ import annotations

import asyncio
import time
import typing

import pytest
import ray

from ray_shards import BotDeployment, Client, ShardStatus
from ray_shards.protocol import TableDelta
from ray_shards.timings import Timings

pytestmark = pytest.mark.timeout(240)

FAST = Timings(identify_window=1.0)


async def test_a_follower_parks_until_a_row_changes_and_gets_only_that_row(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    deployment = await BotDeployment.start(token, subprocess_count=2, rest_url=emu.rest_url, timings=FAST)
    try:
        async with Client(token, None) as client:
            deadline = time.monotonic() + 60
            while not all(r.status is ShardStatus.READY for r in (await client.refresh())):
                assert time.monotonic() < deadline, "shards never READY"
                await asyncio.sleep(0.2)
            full: TableDelta = await client._link.call("table_since", 0, -1, 0.0)
            assert full.full and len(full.infos()) == 4  # a full read carries its rows as columns

            # Nothing changes: the call parks for the wait asked, and carries no row.
            started = time.monotonic()
            quiet: TableDelta = await client._link.call("table_since", full.table_id, full.version, 1.5)
            assert time.monotonic() - started >= 1.2, "a follower with nothing to learn must park"
            assert not quiet.full and quiet.rows == [] and quiet.version == full.version

            # A host dies: a parked follower wakes with the rows of its shards, not the whole table.
            victim_id, victim = next(iter(deployment.hosts.items()))
            moved = {r.shard_id for r in full.infos() if r.host_id == victim_id}
            poll = asyncio.ensure_future(client._link.call("table_since", full.table_id, full.version, 20.0))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            ray.kill(victim, no_restart=True)
            delta: TableDelta = await asyncio.wait_for(poll, 25)
            assert time.monotonic() - started < 10, "the parked follower did not wake on the change"
            assert not delta.full and delta.version > full.version
            assert {r.shard_id for r in delta.rows} <= moved | set(range(4)) and delta.rows
            assert {r.shard_id for r in delta.rows} & moved, delta.rows

            # The client's own background follower converges on the move too.
            deadline = time.monotonic() + 60
            while not all(
                (row := client.shard_info(s)) is not None and row.host_id != victim_id
                and row.status is ShardStatus.READY for s in moved
            ):
                assert time.monotonic() < deadline, "the client's view never showed the move"
                await asyncio.sleep(0.2)
    finally:
        await deployment.stop()
