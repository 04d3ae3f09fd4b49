"""`event_position()` names an event's dispatch; `hold_event()` keeps it unacknowledged past its listener.

Pure part against `ListenerWatermark`; then real hikari dispatch over a real socket (no Ray).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import typing

import pytest

from ray_shards.listener_context import EventHold, EventPosition, bind, event_position, hold_event
from ray_shards.watermark import ListenerWatermark
from tests.helpers import lone_shard, stream_briefly, wait_for_watermark

pytestmark = pytest.mark.timeout(60)


def test_outside_a_listener_there_is_no_position_and_a_hold_holds_nothing() -> None:
    assert event_position() is None
    hold = hold_event()
    assert not hold.held
    hold.release()


def test_a_hold_keeps_the_event_unfinished_until_released_once() -> None:
    mark = ListenerWatermark(shard_id=3)
    entry = mark.begin("s", 7, 0.0)
    assert entry is not None

    def in_listener(entry: typing.Any) -> EventHold:
        # As in a listener's task: bound in a copied context, so nothing leaks out of it.
        bind(entry)
        assert event_position() == EventPosition(3, "s", 7 if entry.event_seq == 7 else 8)
        return hold_event()

    hold = contextvars.copy_context().run(in_listener, entry)
    assert event_position() is None
    mark.finish(entry)  # the consume (and every listener) is done ...
    assert mark.value(0.0) == 6, "... but the hold keeps seq 7 unacknowledged"
    with hold:
        pass
    assert mark.value(0.0) == 7
    later = mark.begin("s", 8, 0.0)
    assert later is not None
    second = contextvars.copy_context().run(in_listener, later)
    mark.finish(later)
    hold.release()  # the first hold again: it must not release the second one
    assert mark.value(0.0) == 7 and second.held
    second.release()
    assert mark.value(0.0) == 8


async def test_listeners_see_their_events_position_and_a_held_task_holds_the_watermark(
    emulator_factory: typing.Any, token: str
) -> None:
    import hikari

    from ray_shards import sessions
    from ray_shards.delivery import GatedEventManager

    emu = emulator_factory(token, shards=1, guilds=2, identify_window_s=0.2)
    app = hikari.GatewayBot(token, banner=None, intents=hikari.Intents.ALL_UNPRIVILEGED)
    manager = GatedEventManager(app.entity_factory, app.event_factory, hikari.Intents.ALL_UNPRIVILEGED)
    release = asyncio.Event()
    positions: list[EventPosition | None] = []
    in_tasks: list[EventPosition | None] = []
    background: set[asyncio.Task[None]] = set()

    async def work(hold: EventHold) -> None:
        async with hold:
            in_tasks.append(event_position())
            await release.wait()

    async def on_message(event: hikari.MessageCreateEvent) -> None:
        positions.append(event_position())
        task = asyncio.create_task(work(hold_event()))  # returns at once: only the hold keeps the event open
        background.add(task)

    manager.subscribe(hikari.MessageCreateEvent, on_message)

    shard = lone_shard(emu, token, app, manager)
    await shard.start()
    try:
        sent = await stream_briefly(emu, lambda: len(in_tasks))
        assert sent >= 5 and len(positions) == sent and len(in_tasks) == sent
        session_id, seq = sessions.position(shard)
        assert session_id is not None and seq is not None
        assert all(p is not None and p.shard_id == 0 and p.session_id == session_id for p in positions)
        seqs = [p.seq for p in positions if p is not None]
        assert seqs == sorted(seqs) and len(set(seqs)) == sent and seqs[-1] <= seq, seqs
        assert in_tasks == positions, "a task a listener starts sees the listener's event"
        mark = manager.watermark(0)
        value = mark.value(time.monotonic())
        assert value is not None and value < seqs[0], "every listener returned, but the holds keep the events open"
        release.set()
        assert await wait_for_watermark(mark, seq) == seq
    finally:
        release.set()
        await shard.close()
        for task in background:
            task.cancel()
