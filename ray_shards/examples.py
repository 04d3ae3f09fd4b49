"""Example bot callbacks: what a user passes as ``callback`` to `run_subprocesses`.

They live in the package so Ray workers can import them (a callback defined in
a script is pickled by value; one in an importable module by reference).
``python -m ray_shards run --entrypoint ray_shards.examples:echo_bot`` runs one.
"""

from __future__ import annotations

import logging
import typing

import hikari

from ray_shards.bot import Bot

arc: typing.Any
try:  # hikari-arc is optional; arc_bot needs it.
    import arc
except ImportError:  # pragma: no cover - only without the test extras
    arc = None

__all__ = ["arc_bot", "echo_bot"]

_LOGGER = logging.getLogger("ray_shards.examples")


def echo_bot(bot: Bot) -> None:
    """Answer ``!ping`` with ``pong from <host>`` (through REST), wherever the message's shard runs."""

    @bot.listen(hikari.MessageCreateEvent)
    async def on_message(event: hikari.MessageCreateEvent) -> None:
        if event.is_bot or not event.message.content or not event.message.content.startswith("!ping"):
            return
        await bot.rest.create_message(event.channel_id, f"pong from {bot.host_id} (shard {event.shard.id})")


def arc_bot(bot: Bot) -> None:
    """A hikari-arc slash command ``/ping`` on a ray_shards `Bot` (a `hikari.GatewayBotAware`)."""
    if arc is None:
        msg = "arc_bot needs hikari-arc: pip install hikari-arc"
        raise RuntimeError(msg)
    client = arc.GatewayClient(bot)

    @client.include  # type: ignore[untyped-decorator]
    @arc.slash_command("ping", "Answer with the host that runs the shard")  # type: ignore[untyped-decorator]
    async def ping(ctx: arc.GatewayContext) -> None:
        await ctx.respond(f"pong from {bot.host_id}")

    bot.subscribe(hikari.StartedEvent, _log_started)


async def _log_started(event: hikari.StartedEvent) -> None:
    _LOGGER.info("arc bot started")
