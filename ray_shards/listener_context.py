"""Where an event came from, and holding it unfinished: for listeners that hand work elsewhere.

Delivery is at-least-once: after a host dies (or a listener outlives `Timings.drain_timeout` in a
hand-over), the next owner RESUMEs from the listener-completion watermark and Discord replays
what came after it, so a listener can see an event twice. A replayed event carries the same
session id and seq as the first copy, so `event_position()`'s ``(shard_id, session_id, seq)``
names one dispatch of one session: store it with the work a listener does (a unique key in a
database, say) and a replay is recognised.

The watermark waits for a listener's own coroutine, not for tasks it starts. A listener that
hands the event to a background task calls `hold_event()` first and releases the hold when the
task is done; until then the event counts as unfinished (up to `Timings.max_listener_lag`).

Both read a context variable that `ray_shards.delivery` sets at the start of each listener's own
task: a task copies the context it is created in, so every task such a listener starts sees
that event too, and nothing has to be undone when the listener ends.
"""

from __future__ import annotations

import contextvars
import types
import typing

from ray_shards.watermark import InFlight, ListenerWatermark

__all__ = ["EventHold", "EventPosition", "event_position", "hold_event"]


class EventPosition(typing.NamedTuple):
    """One dispatch of one gateway session."""

    shard_id: int
    session_id: str
    seq: int


# What delivery sets per listener: the event's watermark entry, which knows its seq, session and watermark
# (one object, no tuple: this runs once per listener; the position is built only when asked for).
# Read by event_position()/hold_event(); set by ray_shards.delivery (internal: not in __all__).
CURRENT: contextvars.ContextVar[InFlight | None] = contextvars.ContextVar("ray_shards_dispatch", default=None)


def event_position() -> EventPosition | None:
    """The position of the event whose listener is running, or None outside one.

    None also for events dispatched by code (``bot.dispatch``) and for a standalone bot that is
    not a ray_shards `Bot`.

    Examples
    --------
    ```py
    @bot.listen()
    async def on_message(event: hikari.MessageCreateEvent) -> None:
        position = ray_shards.event_position()
        if position is not None and await db.seen(position):
            return  # a replay after a failover: already handled
        ...
    ```
    """
    entry = CURRENT.get()
    if entry is None or entry.owner is None:
        return None
    return EventPosition(entry.owner.shard_id, entry.session_id, entry.event_seq)


class EventHold:
    """Keeps one event unfinished (its seq is not acknowledged) until `release` (see `hold_event`).

    A context manager too (sync or async): the hold is released on exit. Releasing twice is harmless.
    """

    __slots__ = ("_entry", "_mark")

    def __init__(self, entry: InFlight | None) -> None:
        self._entry = entry
        self._mark: ListenerWatermark | None = entry.owner if entry is not None else None
        if self._mark is not None:
            self._mark.hold(entry)

    @property
    def held(self) -> bool:
        """Whether this still holds an event back."""
        return self._mark is not None

    def release(self) -> None:
        """The work is done: the event may be acknowledged once its listeners are done too."""
        mark, self._mark = self._mark, None
        if mark is not None:
            mark.finish(self._entry)

    def __enter__(self) -> EventHold:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    async def __aenter__(self) -> EventHold:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        self.release()


def hold_event() -> EventHold:
    """Hold the current event unfinished until the returned hold is released.

    Call it in a listener before handing the event to a task of your own; release the hold when
    that task is done. If its host dies first, the event is replayed to the next owner. Outside a
    listener of a ray_shards bot it holds nothing.

    Examples
    --------
    ```py
    @bot.listen()
    async def on_message(event: hikari.MessageCreateEvent) -> None:
        hold = ray_shards.hold_event()
        asyncio.create_task(store(event, hold))

    async def store(event: hikari.MessageCreateEvent, hold: ray_shards.EventHold) -> None:
        with hold:
            await db.insert(event.message_id, event.content)
    ```
    """
    return EventHold(CURRENT.get())


def bind(entry: InFlight) -> None:
    """Make ``entry``'s event current for the rest of this task.

    `ray_shards.delivery` sets `CURRENT` itself (first thing in a listener's own task, whose context is a
    copy: nothing to undo); this is the same for tests.
    """
    CURRENT.set(entry)
