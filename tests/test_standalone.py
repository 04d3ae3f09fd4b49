"""The reference API's other shapes: run_server with standalone Bots, and Client.recommended_shard."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import typing

import hikari
import pytest
import ray

from ray_shards import Bot, Client, ShardStatus, run_server
from ray_shards.connection import NAMESPACE, orchestrator_name
from ray_shards.launch import start_orchestrator
from ray_shards.timings import Timings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(180)

FAST = Timings(identify_window=1.0)


async def test_run_server_with_standalone_bots(ray_cluster: typing.Any, emulator_factory: typing.Any,
                                               token: str) -> None:
    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    server = threading.Thread(
        target=run_server, args=(token, None), kwargs={"rest_url": emu.rest_url, "timings": FAST}, daemon=True
    )
    server.start()
    bots = [Bot(None, token, rest_url=emu.rest_url, local_shard_count=2, timings=FAST) for _ in range(2)]
    received: list[int] = []

    @bots[1].listen(hikari.GuildAvailableEvent)
    async def on_guild(event: hikari.GuildAvailableEvent) -> None:
        received.append(int(event.guild_id))

    try:
        await wait_for(lambda: _exists(token), 30, "run_server's orchestrator")
        await asyncio.gather(*(bot.start() for bot in bots))
        assert sorted(sid for bot in bots for sid in bot.local_shards) == [0, 1, 2, 3]
        assert received, "a listener on a standalone Bot got no GUILD_CREATE"
        await wait_for(lambda: len(bots[0].shards) == 4, 10, "remote shards in Bot.shards")
        remote = [s for i, s in bots[0].shards.items() if i not in bots[0].local_shards]
        assert len(remote) == 2 and all(type(s).__name__ == "RemoteShard" for s in remote)
        # A guild on the other bot's shard is reached through the Orchestrator.
        other = next(iter(bots[1].local_shards))
        guild = next(g for g in emu.control.guild_ids() if (g >> 22) % 4 == other)
        await bots[0].update_voice_state(guild, None)
        await wait_for(lambda: bool(emu.control.received(other, op=4)), 10, "the voice update on the owner")
        # So is a channel-info request (op 43), from a RemoteShard as from the bot.
        await bots[0].request_channel_info(guild, fields=[hikari.api.shard.ChannelInfoField.STATUS])
        await bots[0].shards[other].request_channel_info(guild, fields=[hikari.api.shard.ChannelInfoField.STATUS])
        await wait_for(lambda: len(emu.control.received(other, op=43)) == 2, 10, "two channel-info requests")
        # Closing one bot hands its shards over to the other by RESUME.
        await bots[1].close()
        await wait_for(lambda: len(bots[0].local_shards) == 4, 30, "the other bot to take over")
        assert len(emu.control.identify_log()) == 4
        assert not emu.control.stats()["split_brain"]
    finally:
        async with Client(token, None) as client:
            await client.shutdown()
        await asyncio.to_thread(server.join, 30)
        for bot in bots:
            if bot.is_alive:
                await bot.close()
    assert not server.is_alive(), "run_server did not return after the bot was shut down"
    assert not _exists(token), "run_server left its orchestrator behind"


def _exists(token: str) -> bool:
    from ray_shards.auth import bot_id_from_token

    try:
        ray.get_actor(orchestrator_name(bot_id_from_token(token)), namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def _plain_shard(token: str, rest_url: str, shard_id: int, shard_count: int, intents: hikari.Intents | None,
                 url: str) -> hikari.impl.GatewayShardImpl:
    """A plain hikari shard, as a user's ``make_shard`` builds one (intents None: the app's own)."""
    app = hikari.GatewayBot(token, rest_url=rest_url, banner=None)
    return hikari.impl.GatewayShardImpl(
        event_manager=app.event_manager,
        event_factory=app.event_factory,
        http_settings=app.http_settings,
        proxy_settings=app.proxy_settings,
        intents=app.intents if intents is None else intents,
        shard_id=shard_id,
        shard_count=shard_count,
        token=token,
        url=url,
    )


async def test_recommended_shard_runs_a_shard_here(ray_cluster: typing.Any, emulator_factory: typing.Any,
                                                   token: str) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST)
    try:
        async with Client(token, None) as client:
            def make_shard(shard_id: int) -> hikari.impl.GatewayShardImpl:
                # hikari-orchestrator's signature: make_shard only looks at the int it is given.
                return _plain_shard(token, emu.rest_url, shard_id, 2, None, emu.gateway_url)

            first = await client.recommended_shard(make_shard)
            second = await client.recommended_shard(make_shard)
            assert sorted([first.id, second.id]) == [0, 1]
            assert first.is_alive and second.is_alive
            with pytest.raises(LookupError, match="already running"):
                await client.recommended_shard(make_shard)
            await client.refresh()
            await wait_for(
                lambda: all(s.is_alive for s in client.remote_shards.values()), 10, "both shards in the table"
            )
        emu.control.wait_until(lambda c: all(v == 0 for v in c.stats()["connected"].values()), timeout=15)
    finally:
        await link.shutdown()
        ray.kill(link.handle)


async def test_client_held_shards_are_first_class(ray_cluster: typing.Any, emulator_factory: typing.Any,
                                                 token: str) -> None:
    """A Client's shards report, run commands, are not handed others' shards, and stop with the bot."""
    from ray_shards import RecommendedShard

    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST)
    seen: list[RecommendedShard] = []
    try:
        async with Client(token, None, refresh_interval=0.2) as client:
            def make_shard(state: RecommendedShard) -> hikari.impl.GatewayShardImpl:
                seen.append(state)
                return _plain_shard(token, emu.rest_url, state.shard_id, state.shard_count, state.intents,
                                    state.gateway_url)

            shard = await client.recommended_shard(make_shard)
            assert seen[0] == shard.id and seen[0].shard_count == 2 and seen[0].gateway_url == emu.gateway_url
            assert seen[0].session_id is None
            # It reports: the table shows it READY on this client.
            await wait_for(
                lambda: (info := client.shard_info(shard.id)) is not None and info.status is ShardStatus.READY,
                15, "the client's shard READY in the table",
            )
            # Bot-wide presence and a member request reach it promptly (they stalled 15 s before).
            started = time.monotonic()
            await client.update_presence(status=hikari.Status.IDLE)
            assert time.monotonic() - started < 5.0, "update_presence waited for the client's shard"
            await wait_for(lambda: bool(emu.control.received(shard.id, op=3)), 10, "op 3 on the client's shard")
            guild = next(g for g in emu.control.guild_ids() if (g >> 22) % 2 == shard.id)
            await client.request_guild_members(guild, query="a", limit=1)
            await wait_for(lambda: bool(emu.control.received(shard.id, op=8)), 10, "op 8 on the client's shard")
            # The other shard is unassigned: placement never hands it to the client.
            await asyncio.sleep(1.0)
            other = client.shard_info(1 - shard.id)
            assert other is not None and other.host_id is None, other
            # Stopping the bot ends the client's session too.
            await client.shutdown()
            await wait_for(lambda: not shard.is_alive, 15, "the client's shard to close on bot stop")
            emu.control.wait_until(lambda c: all(v == 0 for v in c.stats()["connected"].values()), timeout=15)
            assert not [s for s in emu.control.sessions() if s.get("shard_id") == shard.id], "session not ended"
    finally:
        with contextlib.suppress(Exception):
            await link.shutdown()
        ray.kill(link.handle)
