"""Test support shipped with the package: a Ray actor that records which events listeners got.

Failover and rolling-restart tests prove "no event lost" by comparing what the
emulator sent with what listeners recorded here. The recorder lives in its own
actor, so it survives the hosts that the tests kill.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import typing

import hikari
import ray

from ray_shards.bot import Bot
from ray_shards.connection import NAMESPACE
from ray_shards.listener_context import EventHold, hold_event

__all__ = ["DeliveryRecorder", "record_deliveries", "recording_callback", "start_recorder"]


class DeliveryRecorder:
    """Counts, per message id, how many times a listener received it (and on which host)."""

    def __init__(self) -> None:
        self._counts: collections.Counter[int] = collections.Counter()
        self._hosts: dict[int, str] = {}
        self._deliveries: dict[int, list[str]] = {}
        self._labels: collections.Counter[str] = collections.Counter()
        self._label_hosts: collections.Counter[str] = collections.Counter()

    def record(self, host_id: str, message_ids: list[int]) -> None:
        """Record deliveries."""
        for message_id in message_ids:
            self._counts[message_id] += 1
            self._hosts[message_id] = host_id
            self._deliveries.setdefault(message_id, []).append(host_id)

    def record_labels(self, host_id: str, labels: list[str]) -> None:
        """Record handled guild events by label (``edit <content>``, ``react_add``, ``join <guild>``, ...)."""
        self._labels.update(labels)
        self._label_hosts[host_id] += len(labels)

    def labels(self) -> dict[str, int]:
        """Label to number of times a listener handled it."""
        return dict(self._labels)

    def label_hosts(self) -> dict[str, int]:
        """Host id to the number of labelled events its listeners handled."""
        return dict(self._label_hosts)

    def counts(self) -> dict[int, int]:
        """Message id to number of deliveries."""
        return dict(self._counts)

    def hosts(self) -> dict[int, str]:
        """Message id to the host that last received it."""
        return dict(self._hosts)

    def deliveries(self) -> dict[int, list[str]]:
        """Message id to the host of each delivery, in the order they were recorded."""
        return {m: list(h) for m, h in self._deliveries.items()}


def start_recorder(name: str) -> typing.Any:
    """Start a named `DeliveryRecorder` actor on this process's node (the caller kills it when done)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return (
        ray.remote(DeliveryRecorder)
        .options(name=name, namespace=NAMESPACE, num_cpus=0, scheduling_strategy=here)  # type: ignore[attr-defined]
        .remote()
    )


def record_deliveries(
    recorder_name: str, bot: Bot, *, delay: float = 0.0, guild_events: bool = False, background: bool = False
) -> None:
    """Callback: every MESSAGE_CREATE reaching ``bot`` is recorded in the named recorder.

    With ``delay`` the listener first sleeps that long, like a listener doing real work (a database
    write, a REST call waiting out a 429): an event is recorded only once its listener finished.
    With ``background`` the MESSAGE_CREATE listener returns at once and hands the work to a task of
    its own under `ray_shards.hold_event` (the event stays unacknowledged until the task is done).
    With ``guild_events`` the emulator's scripted events (`ray_shards.emulator.script`) are recorded
    too, by label: ``edit <content>``, ``react_add``, ``react_remove``, ``join <guild>``, ``leave <guild>``.
    """
    recorder = ray.get_actor(recorder_name, namespace=NAMESPACE)

    async def work(event: hikari.MessageCreateEvent) -> None:
        if delay:
            await asyncio.sleep(delay)
        await recorder.record.remote(bot.host_id, [int(event.message_id)])

    tasks: set[asyncio.Task[None]] = set()

    async def held(event: hikari.MessageCreateEvent, hold: EventHold) -> None:
        with hold:
            await work(event)

    @bot.listen(hikari.MessageCreateEvent)
    async def on_message(event: hikari.MessageCreateEvent) -> None:
        if not background:
            await work(event)
            return
        task = asyncio.get_running_loop().create_task(held(event, hold_event()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if not guild_events:
        return

    async def label(text: str) -> None:
        if delay:
            await asyncio.sleep(delay)
        await recorder.record_labels.remote(bot.host_id, [text])

    @bot.listen(hikari.MessageUpdateEvent)
    async def on_edit(event: hikari.MessageUpdateEvent) -> None:
        await label(f"edit {event.message.content}")

    @bot.listen(hikari.ReactionAddEvent)
    async def on_react_add(event: hikari.ReactionAddEvent) -> None:
        await label("react_add")

    @bot.listen(hikari.ReactionDeleteEvent)
    async def on_react_remove(event: hikari.ReactionDeleteEvent) -> None:
        await label("react_remove")

    @bot.listen(hikari.GuildJoinEvent)
    async def on_join(event: hikari.GuildJoinEvent) -> None:
        await label(f"join {event.guild_id}")

    @bot.listen(hikari.GuildLeaveEvent)
    async def on_leave(event: hikari.GuildLeaveEvent) -> None:
        await label(f"leave {event.guild_id}")


def recording_callback(
    recorder_name: str, *, delay: float = 0.0, guild_events: bool = False, background: bool = False
) -> typing.Callable[[Bot], None]:
    """A picklable callback recording deliveries into ``recorder_name`` (after ``delay`` s of "work")."""
    return functools.partial(
        record_deliveries, recorder_name, delay=delay, guild_events=guild_events, background=background
    )
