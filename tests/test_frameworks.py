"""Command frameworks run unchanged on the launchers' hosts: hikari-tanjun and hikari-lightbulb.

hikari-arc has its own test in test_core.py. Each framework answers through the emulator
over real sockets, on two ShardHost actors of a real Ray cluster. lightbulb 3 pins
hikari 2.6, so its test runs in CI's second environment (hikari 2.6); in the main one
(hikari 2.7) it is skipped with that reason.
"""

from __future__ import annotations

import typing

import hikari
import pytest

from ray_shards import BotDeployment
from ray_shards.timings import Timings

pytestmark = pytest.mark.timeout(240)

FAST = Timings(identify_window=1.0)


def _message(guild_id: int, content: str) -> dict[str, typing.Any]:
    from ray_shards.emulator import payloads

    author = {"id": "5555", "username": "tester", "discriminator": "0", "avatar": None, "global_name": None}
    return payloads.message(
        message_id=(910_000 + guild_id % 1000) << 22,
        channel_id=guild_id + 1,
        author=author,
        content=content,
        guild_id=guild_id,
    )


async def test_tanjun_prefix_and_slash_commands_are_answered(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    pytest.importorskip("tanjun", reason="hikari-tanjun is not installed (it is in the test extras)")
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)

    # The callbacks below are pickled by value into the hosts, with only the globals they name: tanjun's and
    # lightbulb's dependency injection evaluate string annotations there, so their commands take none.
    def tanjun_bot(bot: typing.Any) -> None:
        import tanjun

        # Not declare_global_commands=True: tanjun 2.17.7's declaration reads SlashCommandBuilder.is_dm_enabled,
        # which hikari 2.7 removed (AttributeError in tanjun, with or without ray_shards). Slash commands are
        # answered by name all the same.
        client = tanjun.Client.from_gateway_bot(bot, mention_prefix=False)
        client.add_prefix("!")
        component = tanjun.Component(name="fidelity")

        @component.with_command
        @tanjun.as_message_command("tping")
        async def prefix_ping(ctx) -> None:  # type: ignore[no-untyped-def]
            await ctx.respond(f"tanjun prefix pong from {bot.host_id}")

        @component.with_command
        @tanjun.as_slash_command("tping", "Answer with the host that runs the shard")
        async def slash_ping(ctx) -> None:  # type: ignore[no-untyped-def]
            await ctx.respond(f"tanjun slash pong from {bot.host_id}")

        client.add_component(component)

    deployment = await BotDeployment.start(
        token, subprocess_count=2, rest_url=emu.rest_url, callback=tanjun_bot, timings=FAST,
        intents=hikari.Intents.ALL_UNPRIVILEGED | hikari.Intents.MESSAGE_CONTENT,
    )
    try:
        guilds = emu.control.guild_ids()  # every shard is READY: BotDeployment.start waited for it
        for guild in guilds[:2]:
            emu.control.dispatch_to_guild(guild, "MESSAGE_CREATE", _message(guild, "!tping"))
        emu.control.wait_until(lambda c: len(c.messages()) >= 2, timeout=30)
        replies = sorted(m["content"] for m in emu.control.messages())
        assert all(r.startswith("tanjun prefix pong from h") for r in replies), replies
        emu.control.interaction(guilds[1], "tping")
        emu.control.wait_until(lambda c: len(c.interaction_responses()) >= 1, timeout=30)
        assert "tanjun slash pong from h" in str(emu.control.interaction_responses()[-1])
    finally:
        await deployment.stop()


async def test_lightbulb_slash_command_is_answered(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    pytest.importorskip(
        "lightbulb",
        reason="hikari-lightbulb 3 pins hikari 2.6; it runs in .ci/run's hikari 2.6 environment",
    )
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)

    def lightbulb_bot(bot: typing.Any) -> None:
        import hikari
        import lightbulb

        client = lightbulb.client_from_app(bot)
        bot.subscribe(hikari.StartingEvent, client.start)

        @client.register()
        class Ping(lightbulb.SlashCommand, name="lping", description="Answer with the host that runs the shard"):
            @lightbulb.invoke
            async def invoke(self, ctx) -> None:  # type: ignore[no-untyped-def]
                await ctx.respond(f"lightbulb pong from {bot.host_id}")

    deployment = await BotDeployment.start(
        token, subprocess_count=2, rest_url=emu.rest_url, callback=lightbulb_bot, timings=FAST
    )
    try:
        emu.control.wait_until(lambda c: any("commands" in r["path"] for r in c.rest_log()), timeout=30)
        emu.control.interaction(emu.control.guild_ids()[1], "lping")
        emu.control.wait_until(lambda c: len(c.interaction_responses()) >= 1, timeout=30)
        assert "lightbulb pong from h" in str(emu.control.interaction_responses()[-1])
    finally:
        await deployment.stop()
