"""Callbacks that run inside the shard hosts (importable by Ray workers as ``bench._callbacks``)."""

from __future__ import annotations

import functools
import time
import typing

import hikari
import ray

from ray_shards import main_thread
from ray_shards.connection import NAMESPACE

if typing.TYPE_CHECKING:
    from ray_shards import Bot


def _record_ready(notes_name: str, bot: Bot) -> None:
    notes = ray.get_actor(notes_name, namespace=NAMESPACE)

    @bot.listen(hikari.ShardReadyEvent)
    async def on_ready(event: hikari.ShardReadyEvent) -> None:
        await notes.add.remote("ready", [(event.shard.id, time.time(), bot.host_id)])


def ready_recorder(notes_name: str) -> typing.Callable[[Bot], None]:
    """Every ShardReadyEvent's arrival time (wall clock) goes into the `Notes` actor ``notes_name`` as ``ready``."""
    return functools.partial(_record_ready, notes_name)


def _record_chunks(notes_name: str, bot: Bot) -> None:
    notes = ray.get_actor(notes_name, namespace=NAMESPACE)

    @bot.listen(hikari.MemberChunkEvent)
    async def on_chunk(event: hikari.MemberChunkEvent) -> None:
        arrived = time.time()  # taken first: the Ray call below is not part of the measured latency
        await notes.add.remote("chunk", [(event.nonce, arrived, event.shard.id)])


def chunk_recorder(notes_name: str) -> typing.Callable[[Bot], None]:
    """Every GUILD_MEMBERS_CHUNK's arrival time at a listener goes into ``notes_name`` as ``chunk``."""
    return functools.partial(_record_chunks, notes_name)


def _count_messages(notes_name: str, interval: float, bot: Bot, switch_interval: float | None = None) -> None:
    import asyncio
    import gc
    import sys

    from bench import _listener

    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    notes = ray.get_actor(notes_name, namespace=NAMESPACE)
    bot.subscribe(hikari.MessageCreateEvent, _listener.on_message)

    async def report() -> None:
        # What the host's main thread runs with (Timings.host_main_thread_timer_slack_ns), for the JSON.
        await notes.add.remote("main_thread_timer_slack_ns", [main_thread.read_timer_slack_ns()])
        await notes.add.remote("gc_threshold", [gc.get_threshold()[0]])  # Timings.host_gc_threshold
        while True:
            await notes.add.remote("stats", [_listener.snapshot()])
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(report())
    _TASKS.append(task)


_TASKS: list[typing.Any] = []


def message_counter(
    notes_name: str, interval: float = 0.25, switch_interval: float | None = None
) -> typing.Callable[[Bot], None]:
    """Subscribe `bench._listener.on_message` and push its snapshot to ``notes_name`` every ``interval`` s.

    ``switch_interval`` sets the host's ``sys.setswitchinterval`` (a diagnostic: GIL hand-offs to Ray's threads).
    """
    return functools.partial(_count_messages, notes_name, interval, switch_interval=switch_interval)
