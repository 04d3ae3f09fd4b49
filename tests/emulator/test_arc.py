"""A hikari-arc slash command on a plain GatewayBot answers through the emulator."""

from __future__ import annotations

import typing

import aiohttp
import arc
import hikari

from ray_shards.emulator import DEFAULT_BOT_ID, Emulator


async def test_arc_slash_command_round_trip(emu: Emulator, hk: typing.Any) -> None:
    bot = hk.make_bot(emu)
    client = arc.GatewayClient(bot)
    invoked: list[str] = []

    @client.include
    @arc.slash_command("ping", "Answer with pong.")
    async def ping(ctx: arc.GatewayContext, text: arc.Option[str, arc.StrParams("What to echo.")] = "") -> None:
        invoked.append(text)
        await ctx.respond(f"pong {text}".strip())

    async with hk.running_bot(bot, shard_count=1):
        await hk.wait_for(lambda: any(e["method"] == "PUT" for e in emu.rest_log()), timeout=30)
        await hk.wait_for(lambda: client.application is not None)
        guild = emu.guild_ids()[1]
        created = emu.interaction(guild, "ping", {"text": "hi"})
        assert created["sessions"] == 1
        await hk.wait_for(lambda: emu.interaction_responses(), timeout=30)
        assert invoked == ["hi"]
        # A second callback for the same interaction is refused like Discord does.
        url = f"{emu.rest_url}/interactions/{created['id']}/{created['token']}/callback"
        async with aiohttp.ClientSession() as session, session.post(url, json={"type": 4, "data": {}}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060
    (response,) = emu.interaction_responses()
    assert response["kind"] == "callback" and response["interaction_id"] == created["id"]
    assert response["type"] == int(hikari.ResponseType.MESSAGE_CREATE)
    assert response["content"] == "pong hi"
    put = next(e for e in emu.rest_log() if e["method"] == "PUT")
    assert put["path"] == f"/api/v10/applications/{DEFAULT_BOT_ID}/commands"
    assert [c["name"] for c in put["json"]] == ["ping"]
    callbacks = [e for e in emu.rest_log() if e["path"].endswith("/callback")]
    assert callbacks[0]["status"] == 200 and callbacks[0]["query"] == {"with_response": "true"}
