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

Both read a context variable that `ray_shards.delivery` sets while hikari consumes the event:
hikari builds each listener's task right then, and a task copies the context it is created in,
so every listener of one event (and every task such a listener starts) sees that event.
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


# What delivery sets per consumed event: (shard id, session id, the watermark, its entry). A plain tuple:
# this runs once per event, and a frozen dataclass plus an EventPosition cost about ten times as much
# (measured ~5 us against ~0.6 us, a few percent of dispatch); the position is built only when asked for.
_Dispatch: typing.TypeAlias = tuple[int, str, ListenerWatermark, InFlight]

_CURRENT: contextvars.ContextVar[_Dispatch | None] = contextvars.ContextVar("ray_shards_dispatch", default=None)


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
    current = _CURRENT.get()
    if current is None:
        return None
    shard_id, session_id, _, entry = current
    return EventPosition(shard_id, session_id, entry.event_seq)


class EventHold:
    """Keeps one event unfinished (its seq is not acknowledged) until `release` (see `hold_event`).

    A context manager too (sync or async): the hold is released on exit. Releasing twice is harmless.
    """

    __slots__ = ("_entry", "_mark")

    def __init__(self, mark: ListenerWatermark | None, entry: InFlight | None) -> None:
        self._mark, self._entry = mark, entry
        if mark is not None:
            mark.hold(entry)

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
    current = _CURRENT.get()
    if current is None:
        return EventHold(None, None)
    return EventHold(current[2], current[3])


_Token: typing.TypeAlias = "contextvars.Token[_Dispatch | None]"


def enter(shard_id: int, session_id: str, mark: ListenerWatermark, entry: InFlight) -> _Token:
    """Make an event current while hikari consumes it (`ray_shards.delivery` only)."""
    return _CURRENT.set((shard_id, session_id, mark, entry))


def leave(token: _Token) -> None:
    """Undo `enter`."""
    _CURRENT.reset(token)
