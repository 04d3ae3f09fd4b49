"""Op 8 member chunks, op 4 voice state and op 3 presence through an unmodified GatewayBot."""

from __future__ import annotations

import typing

import hikari

from ray_shards.emulator import Emulator

EmulatorFactory = typing.Callable[..., typing.Awaitable[Emulator]]


async def test_member_chunks_through_hikari(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=3, members_per_guild=12, shards=2, max_concurrency=2)
    bot = hk.make_bot(emu)
    chunks: list[hikari.MemberChunkEvent] = []

    async def on_chunk(event: hikari.MemberChunkEvent) -> None:
        chunks.append(event)

    bot.subscribe(hikari.MemberChunkEvent, on_chunk)

    def by_nonce(nonce: str) -> list[hikari.MemberChunkEvent]:
        return [c for c in chunks if c.nonce == nonce]

    async with hk.running_bot(bot, shard_count=2):
        gid = emu.guild_ids()[1]
        owner = (gid >> 22) % 2
        await bot.request_guild_members(gid, nonce="abc")
        await hk.wait_for(lambda: by_nonce("abc"))
        (chunk,) = by_nonce("abc")
        assert chunk.guild_id == gid and chunk.shard.id == owner
        assert (chunk.chunk_index, chunk.chunk_count) == (0, 1)
        assert len(chunk.members) == 13 and not chunk.presences

        await bot.request_guild_members(gid, query="USER1", limit=2, nonce="query")
        await hk.wait_for(lambda: by_nonce("query"))
        names = sorted(m.username for m in by_nonce("query")[0].members.values())
        assert len(names) == 2 and all(n.startswith("user1") for n in names)

        members = sorted(bot.cache.get_members_view_for_guild(gid))
        unknown = hikari.Snowflake(12345 << 22)
        await bot.request_guild_members(gid, users=[members[0], unknown], include_presences=True, nonce="ids")
        await hk.wait_for(lambda: by_nonce("ids"))
        chunk = by_nonce("ids")[0]
        assert list(chunk.members) == [members[0]] and chunk.not_found == [unknown]
        assert list(chunk.presences) == [members[0]]

        # A request for a guild the shard does not own is ignored, like Discord does.
        other = next(g for g in emu.guild_ids() if (g >> 22) % 2 != owner)
        await bot.shards[owner].request_guild_members(other, nonce="wrong")
        await bot.request_guild_members(gid, nonce="after")
        await hk.wait_for(lambda: by_nonce("after"))
        assert by_nonce("wrong") == []

    requests = emu.received(op=8)
    assert len(requests) == 5 and {r["d"]["nonce"] for r in requests} == {"abc", "query", "ids", "wrong", "after"}


async def test_voice_state_and_presence_updates(emu: Emulator, hk: typing.Any) -> None:
    bot = hk.make_bot(emu)
    states: list[hikari.VoiceStateUpdateEvent] = []
    servers: list[hikari.VoiceServerUpdateEvent] = []

    async def on_state(event: hikari.VoiceStateUpdateEvent) -> None:
        states.append(event)

    async def on_server(event: hikari.VoiceServerUpdateEvent) -> None:
        servers.append(event)

    bot.subscribe(hikari.VoiceStateUpdateEvent, on_state)
    bot.subscribe(hikari.VoiceServerUpdateEvent, on_server)
    async with hk.running_bot(bot, shard_count=1):
        gid = emu.guild_ids()[0]
        voice_channel = gid + 2
        await bot.update_voice_state(gid, voice_channel, self_deaf=True)
        await hk.wait_for(lambda: states and servers)
        assert states[0].state.channel_id == voice_channel and states[0].state.is_self_deafened
        assert states[0].state.user_id == bot.get_me().id
        assert servers[0].guild_id == gid and servers[0].token
        await bot.update_voice_state(gid, None)
        await hk.wait_for(lambda: len(states) == 2)
        assert states[1].state.channel_id is None and len(servers) == 1

        await bot.update_presence(status=hikari.Status.IDLE, activity=hikari.Activity(name="tests"))
        await hk.wait_for(lambda: emu.received(op=3))
    (presence,) = emu.received(op=3)
    assert presence["d"]["status"] == "idle" and presence["d"]["game"]["name"] == "tests"
    assert [r["d"]["channel_id"] for r in emu.received(op=4)] == [str(gid + 2), None]
