"""REST: authorization, hikari's REST client against the emulator, and the request log."""

from __future__ import annotations

import typing

import aiohttp
import hikari
import pytest

from ray_shards.emulator import DEFAULT_BOT_ID, DEFAULT_TOKEN, Emulator, make_token


@pytest.mark.parametrize(
    "header",
    [None, "Bot nope", f"Bearer {DEFAULT_TOKEN}", "Bot " + make_token(1 << 22)],
    ids=["missing", "garbage", "bearer", "other-bot"],
)
async def test_rest_rejects_bad_authorization(emu: Emulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession() as session:
        for path in ("/gateway/bot", "/users/@me", f"/channels/{emu.guild_ids()[0] + 1}/messages"):
            method = "POST" if path.endswith("messages") else "GET"
            async with session.request(method, emu.rest_url + path, headers=headers, json={"content": "x"}) as resp:
                assert resp.status == 401
                assert await resp.json() == {"message": "401: Unauthorized", "code": 0}
    assert emu.messages() == []
    assert {entry["status"] for entry in emu.rest_log()} == {401}


async def test_hikari_rest_client_against_the_emulator(emu: Emulator) -> None:
    rest_app = hikari.RESTApp(url=emu.rest_url)
    await rest_app.start()
    try:
        async with rest_app.acquire(DEFAULT_TOKEN, hikari.TokenType.BOT) as client:
            me = await client.fetch_my_user()
            assert me.id == DEFAULT_BOT_ID and me.is_bot and me.username == "ray-shards-emulator"
            info = await client.fetch_gateway_bot_info()
            assert info.url == emu.gateway_url and info.shard_count == 1
            assert info.session_start_limit.remaining == 1000
            assert info.session_start_limit.max_concurrency == 1
            assert await client.fetch_gateway_url() == emu.gateway_url
            application = await client.fetch_application()
            assert application.id == DEFAULT_BOT_ID
            channel = emu.guild_ids()[2] + 1
            message = await client.create_message(channel, "hello world", embed=hikari.Embed(title="t"))
            assert message.content == "hello world" and message.channel_id == channel
            assert message.guild_id == emu.guild_ids()[2] and message.author.id == DEFAULT_BOT_ID
            with pytest.raises(hikari.NotFoundError):
                await client.create_message(42, "nowhere")
            with pytest.raises(hikari.NotFoundError):
                await client.fetch_guild(emu.guild_ids()[0])  # not emulated: 404, and logged
            guild = emu.guild_ids()[0]
            commands = await client.set_application_commands(
                DEFAULT_BOT_ID, [client.slash_command_builder("ping", "Ping!")], guild
            )
            assert [c.name for c in commands] == ["ping"] and commands[0].guild_id == guild
            fetched = await client.fetch_application_commands(DEFAULT_BOT_ID, guild)
            assert [c.id for c in fetched] == [commands[0].id]
            assert await client.fetch_application_commands(DEFAULT_BOT_ID) == []
    finally:
        await rest_app.close()
    (posted,) = emu.messages()
    assert posted["content"] == "hello world" and posted["json"]["embeds"][0]["title"] == "t"
    log = emu.rest_log()
    assert ("GET", f"/api/v10/guilds/{emu.guild_ids()[0]}", 404) in [(e["method"], e["path"], e["status"]) for e in log]
    assert DEFAULT_TOKEN not in repr(log)
    assert all("Authorization" not in repr(entry) for entry in log)


async def test_extra_tokens_are_accepted_as_other_bots(emu_factory: typing.Any, hk: typing.Any) -> None:
    other = make_token(555 << 22, "another-bot-secret-long-enough-xx")
    emu = await emu_factory(guilds=2, extra_tokens=[other])
    assert other not in repr(emu.config)
    async with aiohttp.ClientSession() as session:
        for token, bot_id in ((DEFAULT_TOKEN, DEFAULT_BOT_ID), (other, 555 << 22)):
            async with session.get(emu.rest_url + "/users/@me", headers={"Authorization": f"Bot {token}"}) as resp:
                assert resp.status == 200 and int((await resp.json())["id"]) == bot_id
        async with session.get(emu.base_url + "/somewhere/else") as resp:
            assert resp.status == 404 and await resp.json() == {"message": "404: Not Found", "code": 0}
    shard, events = hk.make_shard(emu, token=other)
    async with hk.running_shard(shard):
        assert int(events.events[0][2]["user"]["id"]) == 555 << 22
    assert emu.rest_log()[-1]["path"] == "/somewhere/else" and emu.rest_log()[-1]["status"] == 404
