"""Unmodified hikari reaches READY against the emulator, with and without compression."""

from __future__ import annotations

import typing

import hikari
import hikari.impl.shard as hikari_shard

from ray_shards.emulator import Emulator

EmulatorFactory = typing.Callable[..., typing.Awaitable[Emulator]]


async def test_gateway_bot_two_shards_default_compression(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=6, shards=2, max_concurrency=2)
    expected = hikari_shard._DEFAULT_COMPRESS_TYPE
    assert expected in (
        hikari.api.GatewayCompression.TRANSPORT_ZLIB_STREAM,
        hikari.api.GatewayCompression.TRANSPORT_ZSTD_STREAM,
    )
    bot = hk.make_bot(emu)
    async with hk.running_bot(bot, shard_count=2):
        assert sorted(bot.shards) == [0, 1]
        await hk.wait_for(lambda: len(bot.cache.get_guilds_view()) == 6)
        for shard_id in (0, 1):
            for gid in emu.guilds_for_shard(shard_id, 2):
                guild = bot.cache.get_guild(gid)
                assert guild is not None and guild.shard_id == shard_id
                assert len(bot.cache.get_members_view_for_guild(gid)) == 6
                assert len(bot.cache.get_guild_channels_view_for_guild(gid)) == 2
        me = bot.get_me()
        assert me is not None and me.username == "ray-shards-emulator"
        stats = emu.stats()
        assert stats["identifies"] == 2 and stats["connected"] == {0: 1, 1: 1}
        assert stats["session_start_limit"]["remaining"] == 998
        log = emu.identify_log()
        wanted = "zlib-stream" if expected == hikari.api.GatewayCompression.TRANSPORT_ZLIB_STREAM else None
        assert {entry["compress"] for entry in log} == {wanted}
        assert {entry["intents"] for entry in log} == {int(hikari.Intents.ALL)}
    stats = emu.stats()
    assert stats["connected"] == {0: 0, 1: 0}
    assert {(c["code"], c["by"]) for c in stats["closes"]} == {(1001, "client")}
    assert stats["sessions"] == 0  # 1001 ends the sessions
    paths = [entry["path"] for entry in emu.rest_log()]
    assert "/api/v10/gateway/bot" in paths


async def test_bare_shard_without_compression(emu: Emulator, hk: typing.Any) -> None:
    shard, events = hk.make_shard(emu, shard_id=1, shard_count=2, compression=None)
    async with hk.running_shard(shard):
        await hk.wait_for(lambda: events.names().count("GUILD_CREATE") == len(emu.guilds_for_shard(1, 2)))
        assert events.names()[0] == "READY"
        ready = events.events[0][2]
        assert ready["shard"] == [1, 2]
        assert ready["resume_gateway_url"] == emu.gateway_url.replace("/gateway", "/gateway-resume")
        assert ready["resume_gateway_url"] != emu.gateway_url
        guild_ids = [int(data["id"]) for _, name, data in events.events if name == "GUILD_CREATE"]
        assert guild_ids == emu.guilds_for_shard(1, 2)
        (identify,) = emu.identify_log()
        assert identify["compress"] is None and identify["shard_id"] == 1 and identify["shard_count"] == 2
        assert identify["presence"]["status"] == "online"
        (received,) = emu.received(op=2)
        assert received["d"]["token"] == "<redacted>"
