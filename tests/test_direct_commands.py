"""Per-shard commands go straight to the owning host, fenced by the lease epoch (issue #13, item 4).

Real Ray cluster, real hikari shards, the emulator over real sockets. Each test asserts where the
command went (direct or through the Orchestrator) and that Discord saw it exactly once on the
right shard's connection.
"""

from __future__ import annotations

import asyncio
import typing

import hikari
import pytest
import ray

from ray_shards import BotDeployment, Client
from ray_shards.auth import command_key
from ray_shards.errors import StaleLeaseError
from ray_shards.models import CommandKind, ShardStatus
from ray_shards.timings import Timings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)

FAST = Timings(identify_window=1.0)


def _member_requests(emu: typing.Any, shard_id: int, nonce: str) -> int:
    return sum(1 for p in emu.control.received(shard_id, op=8) if p["d"].get("nonce") == nonce)


async def test_commands_go_direct_and_a_stale_epoch_is_refused_then_retried(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    deployment = await BotDeployment.start(
        token, subprocess_count=2, rest_url=emu.rest_url, intents=hikari.Intents.ALL, timings=FAST
    )
    try:
        # A long refresh interval: the client's table goes stale on purpose below.
        async with Client(token, None, refresh_interval=3600.0) as client:
            guild = emu.control.guild_ids()[0]
            owner = (guild >> 22) % 4
            await client.request_guild_members(guild, query="a", limit=1, nonce="direct-1")
            assert _member_requests(emu, owner, "direct-1") == 1
            assert (client._direct.sent, client._direct.fallbacks) == (1, 0), "the command did not go direct"

            # The host itself refuses a wrong epoch and a wrong key.
            info = client.shard_info(owner)
            assert info is not None and info.host_id is not None
            handle = deployment.hosts[info.host_id]
            arguments = {"guild_id": str(guild), "query": "a", "limit": 1, "nonce": "stale"}
            with pytest.raises(StaleLeaseError, match="does not run shard"):
                await handle.command.remote(command_key(token), CommandKind.REQUEST_MEMBERS, owner, info.epoch + 1,
                                            arguments)
            with pytest.raises(PermissionError, match="token"):
                await handle.command.remote("0" * 64, CommandKind.REQUEST_MEMBERS, owner, info.epoch, arguments)
            assert _member_requests(emu, owner, "stale") == 0

            # Move the owner's shard: kill its host. The client's row is now stale
            # (host gone, old epoch); the first direct try fails, the client refreshes and the retry lands.
            old_epoch = info.epoch
            ray.kill(handle, no_restart=True)
            await wait_for(
                lambda: _fresh_owner(client, owner, old_epoch), 60, f"shard {owner} to move (table fetched fresh)"
            )
            await client.request_guild_members(guild, query="a", limit=1, nonce="after-move")
            await wait_for(lambda: _member_requests(emu, owner, "after-move") == 1, 10, "the request after the move")
            await asyncio.sleep(0.5)
            assert _member_requests(emu, owner, "after-move") == 1, "the command ran twice"
            assert client._direct.sent == 2
    finally:
        await deployment.stop()


def _fresh_owner(client: Client, shard_id: int, old_epoch: int) -> bool:
    """Whether the shard runs again under a new epoch (checked on a fresh table; the client's own stays stale)."""
    rows = client._link.call_sync("table")
    row = next(r for r in rows if r.shard_id == shard_id)
    return bool(row.epoch > old_epoch and row.status is ShardStatus.READY)
