"""The listener-completion watermark: as pure logic, and counted by real hikari dispatch (no Ray)."""

from __future__ import annotations

import asyncio
import random
import time
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_shards.watermark import ListenerWatermark
from tests.helpers import lone_shard, stream_briefly, wait_for, wait_for_watermark

pytestmark = pytest.mark.timeout(60)


def test_watermark_waits_for_the_oldest_unfinished_event() -> None:
    mark = ListenerWatermark()
    assert mark.value(0.0) is None
    first = mark.begin("s", 1, 0.0)
    mark.hold(first)  # a listener group runs for seq 1
    mark.finish(first)  # the consume itself is done
    second = mark.begin("s", 2, 0.1)
    mark.finish(second)  # seq 2 had no listener
    assert mark.value(0.2) == 0, "seq 1's listener still runs: nothing above 0 is handled"
    mark.finish(first)
    assert mark.value(0.3) == 2


def test_a_new_session_starts_its_own_watermark() -> None:
    mark = ListenerWatermark()
    entry = mark.begin("old", 50, 0.0)
    mark.finish(entry)
    assert mark.value(0.0) == 50
    entry = mark.begin("new", 1, 1.0)
    assert mark.session_id() == "new"
    assert mark.value(1.0) == 0
    mark.finish(entry)
    assert mark.value(1.0) == 1


def test_a_stuck_listener_is_given_up_after_max_lag() -> None:
    mark = ListenerWatermark(max_lag=10.0)
    stuck = mark.begin("s", 1, 0.0)
    mark.hold(stuck)
    mark.finish(stuck)
    later = mark.begin("s", 2, 1.0)
    mark.finish(later)
    assert mark.value(5.0) == 0
    assert mark.value(11.0) == 2, "the stuck event no longer pins the resume point"
    assert mark.forced == 1


def test_a_replayed_event_never_moves_the_watermark_back() -> None:
    mark = ListenerWatermark()
    for seq in (1, 2, 3):
        mark.finish(mark.begin("s", seq, 0.0))
    assert mark.value(0.0) == 3
    mark.finish(mark.begin("s", 2, 0.0))
    assert mark.value(0.0) == 3


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), events=st.integers(1, 60))
def test_the_watermark_is_exactly_the_highest_fully_handled_prefix(seed: int, events: int) -> None:
    """Against a brute-force model: listeners finish in a random order."""
    rng = random.Random(seed)
    mark = ListenerWatermark(max_lag=1e9)
    open_listeners: list[tuple[int, object]] = []
    running: dict[int, int] = {}
    entries = {}
    for seq in range(1, events + 1):
        entry = mark.begin("s", seq, 0.0)
        entries[seq] = entry
        listeners = rng.randint(0, 3)
        for _ in range(listeners):
            mark.hold(entry)
            open_listeners.append((seq, entry))
        running[seq] = listeners
        mark.finish(entry)
        while open_listeners and rng.random() < 0.4:
            done_seq, done_entry = open_listeners.pop(rng.randrange(len(open_listeners)))
            running[done_seq] -= 1
            mark.finish(done_entry)  # type: ignore[arg-type]
        expected = seq
        for s in range(1, seq + 1):
            if running[s] > 0:
                expected = s - 1
                break
        assert mark.value(0.0) == expected


@pytest.mark.timeout(60)
async def test_gated_event_manager_counts_real_listener_tasks(emulator_factory: typing.Any, token: str) -> None:
    """Real hikari dispatch over a real socket: the watermark stays below events whose listeners still run.

    hikari builds one task per listener inside the consume of an event; the GatedEventManager counts
    each against that event's seq (no gather per event) and finishes it when the listener returns,
    also when it raises.
    """
    import hikari

    from ray_shards import sessions
    from ray_shards.delivery import GatedEventManager

    emu = emulator_factory(token, shards=1, guilds=2, identify_window_s=0.2)
    app = hikari.GatewayBot(token, banner=None, intents=hikari.Intents.ALL_UNPRIVILEGED)
    manager = GatedEventManager(app.entity_factory, app.event_factory, hikari.Intents.ALL_UNPRIVILEGED)
    release = asyncio.Event()
    seen: list[int] = []

    async def slow(event: hikari.MessageCreateEvent) -> None:
        seen.append(int(event.message_id))
        await release.wait()

    async def failing(event: hikari.MessageCreateEvent) -> None:
        raise RuntimeError("a listener that fails still finishes")

    failures: list[typing.Any] = []

    async def on_failure(event: hikari.ExceptionEvent[typing.Any]) -> None:
        failures.append(event.failed_callback)

    manager.subscribe(hikari.MessageCreateEvent, slow)
    manager.subscribe(hikari.MessageCreateEvent, failing)
    manager.subscribe(hikari.ExceptionEvent, on_failure)

    shard = lone_shard(emu, token, app, manager)
    await shard.start()
    try:
        sent = await stream_briefly(emu, lambda: len(seen))
        assert sent >= 5 and len(seen) == sent
        mark = manager.watermark(0)
        _, seq = sessions.position(shard)
        assert seq is not None
        value = mark.value(time.monotonic())
        assert value is not None and value < seq - sent + 1, (value, seq, sent)
        assert mark.in_flight == sent
        release.set()
        assert await wait_for_watermark(mark, seq) == seq and mark.in_flight == 0
        # Each listener task let go of itself as it ended (GatedEventManager.dispatch: no done callback).
        await wait_for(lambda: not manager._dispatched_tasks, 5, "the listener tasks to let go")
        assert not manager._dispatched_tasks
        # hikari's own failure handling is kept: one ExceptionEvent per failed call, naming the user's listener.
        assert len(failures) == sent and all(f is failing for f in failures)
    finally:
        release.set()
        await shard.close()


def test_an_event_nobody_listens_to_allocates_nothing_and_moves_the_watermark() -> None:
    # consume() is the per-event path: only an event whose listener runs opens an entry holding the mark.
    mark = ListenerWatermark()
    assert mark.consume("s", 1) == 1
    held = mark.consume("s", 2)
    assert held == 2
    entry = mark.open(held, 2, 0.0)
    entry.outstanding += 1
    assert mark.consume("s", 3) == 3  # no listener: nothing opened
    assert mark.value(0.0) == 1, "the listener of seq 2 still runs"
    assert mark.consume("s", 2) == 3, "a replay below what was consumed holds at what was consumed"
    mark.finish(entry)
    assert mark.value(0.0) == 3
    assert mark.in_flight == 0
