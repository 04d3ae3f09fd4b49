"""Event delivery that can be held, muted and cut over: what live resharding switches with.

During a reshard two complete sets of sessions run side by side and Discord
sends every guild event to both. The new set runs in *shadow* mode (its events
are held per guild, not delivered; `ray_shards.cutover.ShadowBuffer`) while the
old set keeps, per guild, a short tail of what it delivered
(`ray_shards.cutover.TailRecorder`). At the switch the old set is muted and
hands in its tails; the new set aligns each guild's held events against that
guild's tail, consumes the ones the old set already handled for its cache only
(no listener runs), delivers the rest and goes live: each event is handled
once, under the assumptions in `ray_shards.cutover`.

Events that are not a guild's fan-out (READY, RESUMED, member chunks, and the
GUILD_CREATE / GUILD_DELETE of a guild becoming available or unavailable, which
carry the ``unavailable`` key) are never held or recorded. In a shadow (or
muted) set the availability ones fill the cache without running listeners: the
bot's listeners saw those guilds when the old set started. A guild *join* or
*leave* (no ``unavailable`` key) is a guild event like any other.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import types
import typing

from hikari.events import base_events
from hikari.impl import event_manager as event_manager_impl
from hikari.impl import shard as shard_impl
from typing_extensions import override

from ray_shards import cutover, listener_context, sessions
from ray_shards.watermark import InFlight, ListenerWatermark

if typing.TYPE_CHECKING:
    from hikari.api import shard as shard_api

__all__ = ["DeliveryMode", "GatedEventManager", "ShadowOverflowError"]

_LOGGER = logging.getLogger("ray_shards.delivery")
_HIKARI_LOGGER = logging.getLogger("hikari.event_manager")
"""Listener failures are logged where hikari logs them, so users' logging setup sees them unchanged."""

_HIKARI_CONSUME = event_manager_impl.EventManagerImpl.consume_raw_event
"""hikari's own consume, called directly on the common path (no ``super()`` object per event)."""

_Held: typing.TypeAlias = "tuple[str, shard_api.GatewayShard, typing.Any, InFlight | None]"


class ShadowOverflowError(RuntimeError):
    """A shadow set held more events than its cap before the switch: the reshard must fail."""


class DeliveryMode(enum.StrEnum):
    """How a `GatedEventManager` treats incoming dispatch events."""

    LIVE = "live"
    SHADOW = "shadow"
    MUTED = "muted"


class GatedEventManager(event_manager_impl.EventManagerImpl):
    """hikari's event manager with a gate in front of listener delivery (see the module docstring)."""

    __slots__ = (
        "_current_entry",
        "_current_held",
        "_current_mark",
        "_current_seq",
        "_expiry",
        "_max_listener_lag",
        "_mode",
        "_shadow",
        "_tails",
        "_wall_clock",
        "_watermarks",
    )

    def __init__(
        self,
        *args: typing.Any,
        shadow: bool = False,
        max_listener_lag: float = 60.0,
        buffer_cap: int = cutover.DEFAULT_BUFFER_CAP,
        max_skew: float = cutover.DEFAULT_MAX_SKEW,
        wall_clock: typing.Callable[[], float] = time.time,
        **kwargs: typing.Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # The clock receive times are stamped with. Wall time, not monotonic: two sets on different hosts
        # compare their stamps of one event (cutover's max_skew). Injected so tests can pin it.
        self._wall_clock = wall_clock
        self._mode = DeliveryMode.SHADOW if shadow else DeliveryMode.LIVE
        self._shadow: cutover.ShadowBuffer[_Held] | None = (
            cutover.ShadowBuffer(buffer_cap, max_skew=max_skew) if shadow else None
        )
        self._tails: cutover.TailRecorder | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._watermarks: dict[int, ListenerWatermark] = {}
        self._max_listener_lag = max_listener_lag
        # The event being consumed right now (consumers dispatch synchronously), so _invoke_callback can
        # count the listener tasks hikari starts for it against that event's seq. Plain attributes, not one
        # object: this is set once per event (see consume_raw_event).
        self._current_mark: ListenerWatermark | None = None
        self._current_entry: InFlight | None = None
        self._current_held = 0
        self._current_seq = 0

    @property
    def mode(self) -> DeliveryMode:
        """Current delivery mode."""
        return self._mode

    @property
    def buffered(self) -> int:
        """Events held (in shadow mode, or after the switch for guilds still being aligned)."""
        return len(self._shadow) if self._shadow is not None else 0

    @property
    def overflowed(self) -> bool:
        """The shadow buffer went over its cap (this set cannot take over: its reshard must fail)."""
        return self._shadow is not None and self._shadow.overflowed

    @property
    def near_cap(self) -> bool:
        """The shadow buffer overflowed or is within 10 % of its cap: too close to start a switch.

        The switch mutes the old set before this set goes live; the headroom keeps the buffer from
        overflowing in between (which would lose the events of that moment).
        """
        shadow = self._shadow
        return shadow is not None and not shadow.live and (shadow.overflowed or len(shadow) > 0.9 * shadow.cap)

    # -- listener-completion watermark -------------------------------------------------------------

    def watermark(self, shard_id: int) -> ListenerWatermark:
        """The listener-completion watermark of ``shard_id`` (created on first use)."""
        mark = self._watermarks.get(shard_id)
        if mark is None:
            mark = self._watermarks[shard_id] = ListenerWatermark(max_lag=self._max_listener_lag, shard_id=shard_id)
        return mark

    def forget_shard(self, shard_id: int) -> None:
        """Drop ``shard_id``'s watermark (the shard left this host)."""
        self._watermarks.pop(shard_id, None)

    async def drain(self, shard_id: int, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the listeners of ``shard_id``'s consumed events; return its watermark.

        Called after the shard stopped taking events (its connection is closed), before its
        session is handed over: the new owner then RESUMEs from exactly what was handled.
        """
        mark = self.watermark(shard_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while mark.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if mark.in_flight:
            _LOGGER.warning(
                "shard %s: %s event(s) still had listeners running after %.1f s; they will be replayed",
                shard_id, mark.in_flight, timeout,
            )
        return mark.value(time.monotonic())  # the clock InFlight.started is taken with

    @override
    def _invoke_callback(
        self, callback: typing.Any, event: typing.Any
    ) -> typing.Coroutine[typing.Any, typing.Any, None]:
        # Not a coroutine function on purpose: hikari's dispatch calls this synchronously, inside the consume of
        # the event, once per listener, to build each listener's task. That is the one moment the event's seq is
        # known (self._current_*), so the listener is counted here, with no gather or done-callback per event
        # (measured: a gather per event cost about a third of dispatch capacity, mostly in GC).
        mark = self._current_mark
        if mark is None:
            return self._invoke_counted(callback, event, None)
        entry = self._current_entry
        if entry is None:
            # The event's first listener: only now does it need an entry holding the watermark back
            # (ListenerWatermark.open, inlined: once per event).
            entry = self._current_entry = InFlight(
                self._current_held, time.monotonic(), 0, self._current_seq, mark._session_id or "", mark
            )
            mark._pending.append(entry)
        entry.outstanding += 1
        return self._invoke_counted(callback, event, entry)

    async def _invoke_counted(self, callback: typing.Any, event: base_events.Event, entry: InFlight | None) -> None:
        """hikari's ``_invoke_callback`` (same logging and `hikari.ExceptionEvent`), then the listener is counted done.

        Inlined rather than wrapping hikari's coroutine in a second one: one coroutine per listener, as in hikari.
        ``tests/test_watermark.py`` checks that a failing listener still produces hikari's ExceptionEvent.
        ``entry`` is None for an event with no seq (or dispatched by code): nothing to count.
        """
        if entry is not None:
            # Set in the listener's own task (a copy of the consuming task's context), so nothing has to be
            # undone: event_position() and hold_event() here, and in tasks this listener starts, name this event.
            listener_context.CURRENT.set(entry)
        try:
            await callback(event)
        except Exception as ex:
            trio: tuple[type[Exception], Exception, types.TracebackType | None] | Exception
            trio = (type(ex), ex, ex.__traceback__.tb_next) if ex.__traceback__ else ex
            if base_events.is_no_recursive_throw_event(event):
                _HIKARI_LOGGER.exception(
                    "an exception occurred handling an event (%s), but it has been ignored", type(event).__name__
                )
            else:
                failure = base_events.ExceptionEvent(exception=ex, failed_event=event, failed_callback=callback)
                listened = self.get_listeners(type(failure), polymorphic=True)
                log = _HIKARI_LOGGER.debug if listened else _HIKARI_LOGGER.error
                log("an exception occurred handling an event (%s)", type(event).__name__, exc_info=trio)
                self.dispatch(failure)
        finally:
            if entry is not None and (owner := entry.owner) is not None:
                owner.finish(entry)
            # The task lets go of itself (see dispatch). In hikari's own dispatch (the rare paths) a done
            # callback discards it again: a no-op.
            self._dispatched_tasks.discard(asyncio.current_task())  # type: ignore[arg-type]

    @typing.overload
    def dispatch(self, event: base_events.Event, *, return_tasks: typing.Literal[False] = False) -> None: ...

    @typing.overload
    def dispatch(
        self, event: base_events.Event, *, return_tasks: typing.Literal[True] = True
    ) -> asyncio.Future[typing.Any]: ...

    @typing.overload
    def dispatch(
        self, event: base_events.Event, *, return_tasks: bool = False
    ) -> asyncio.Future[typing.Any] | None: ...

    @override
    def dispatch(
        self, event: base_events.Event, *, return_tasks: bool = False
    ) -> asyncio.Future[typing.Any] | None:
        """hikari's ``dispatch``, without a done callback per listener task.

        hikari keeps a strong reference to each listener task in ``_dispatched_tasks`` (the loop only
        holds a task weakly while it awaits) and removes it with a done callback: one more
        ``loop.call_soon`` handle and loop iteration per listener, about 1 us of the shard loop per
        event (BENCHMARKS.md, "Events/s into one listener"). Here the task's own coroutine
        (`_invoke_counted`) removes it as it finishes. Same tasks, same names, same order.

        A task cancelled before its first step (only a cancel-everything at shutdown does that) never
        runs its coroutine and so stays in the set: the set goes with the event manager.
        """
        if return_tasks or self._waiters:
            # hikari's own: it gathers the tasks for the caller, or resolves wait_for futures (rare paths).
            return super().dispatch(event, return_tasks=return_tasks)
        listeners = self._listeners
        for cls in event.dispatches():
            callbacks = listeners.get(cls)
            if callbacks:
                for callback in callbacks:
                    self._dispatched_tasks.add(asyncio.create_task(
                        self._invoke_callback(callback, event),
                        name=f"handler '{callback.__name__}' for '{type(event).__name__}'",
                    ))
        return None

    def _consume_counted(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any,
                         mark: ListenerWatermark, entry: InFlight | None) -> None:
        """Consume an event that already has its entry (held in a shadow buffer): its listeners hold that entry."""
        self._current_mark = mark if entry is not None else None
        self._current_entry = entry
        try:
            super().consume_raw_event(event_name, shard, payload)
        finally:
            self._current_mark = self._current_entry = None

    def _consume_quietly(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any) -> None:
        """Consume for the cache only: the old set's listeners handled this event (or saw this guild).

        hikari consumes an event nobody listens to exactly like this (cache updated, nothing built or
        dispatched), so for the length of this synchronous call it is shown no listeners and no waiters.
        That keeps hikari's own ``dispatch`` on the common path, with nothing of ours in front of it.
        """
        listeners, waiters = self._listeners, self._waiters
        self._listeners, self._waiters = {}, {}
        try:
            super().consume_raw_event(event_name, shard, payload)
        finally:
            self._listeners, self._waiters = listeners, waiters

    @override
    def consume_raw_event(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any) -> None:
        if self._mode is DeliveryMode.LIVE and self._tails is None and self._shadow is None:
            # The common path, once per event, kept to a few attribute reads: the budget for the
            # watermark is 3 % of dispatch (about 4 us of ~130). Nothing is allocated unless a listener
            # runs (_invoke_callback opens the entry then).
            if isinstance(shard, shard_impl.GatewayShardImpl):  # sessions.position and shard.id, inlined
                shard_id, session_id, seq = shard._shard_id, shard._session_id, shard._seq
            else:
                shard_id, (session_id, seq) = shard.id, sessions.position(shard)
            mark = self._watermarks.get(shard_id)
            if mark is None:
                mark = self.watermark(shard_id)
            consumed = mark._consumed
            held: int | None
            if seq is not None and consumed is not None and seq > consumed and session_id == mark._session_id:
                mark._consumed = held = seq  # ListenerWatermark.consume's common case, inlined
            else:
                held = mark.consume(session_id, seq)
            if held is None or seq is None:
                _HIKARI_CONSUME(self, event_name, shard, payload)
                return
            self._current_mark, self._current_held, self._current_seq = mark, held, seq
            try:
                _HIKARI_CONSUME(self, event_name, shard, payload)
            finally:
                self._current_mark = self._current_entry = None
            return
        self._consume_gated(event_name, shard, payload)

    def _consume_gated(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any) -> None:
        """An event while a reshard holds, records or mutes this set (`ray_shards.cutover`)."""
        mark = self.watermark(shard.id)
        session_id, seq = sessions.position(shard)
        entry = mark.begin(session_id, seq, time.monotonic())
        try:
            if not cutover.fan_out(event_name, payload):
                if self._mode is not DeliveryMode.LIVE and event_name in ("GUILD_CREATE", "GUILD_DELETE"):
                    self._consume_quietly(event_name, shard, payload)
                else:
                    self._consume_counted(event_name, shard, payload, mark, entry)
                return
            if self._mode is DeliveryMode.MUTED:
                return
            key = cutover.guild_of_event(event_name, payload)
            if self._mode is DeliveryMode.SHADOW:
                assert self._shadow is not None
                seen = cutover.seen(event_name, payload, self._wall_clock())
                if self._shadow.hold(key, seen, (event_name, shard, payload, entry)):
                    # Held, not handled: the watermark stays below it until it is consumed at the switch.
                    mark.hold(entry)
                else:
                    dropped = self._shadow.clear()
                    if dropped:  # the first event over the cap: free the memory, say so once
                        _LOGGER.error("%s", self.overflow_message())
                        self._release(dropped)
                return
            if self._shadow is not None:
                # Live, with guilds still being aligned (the old set's last delivery had not arrived).
                received = self._wall_clock()
                seen = cutover.seen(event_name, payload, received)
                mark.hold(entry)
                self._consume_all(self._shadow.offer(key, seen, (event_name, shard, payload, entry), received))
                self._settle()
                return
            if self._tails is not None:
                self._tails.record(key, cutover.seen(event_name, payload, self._wall_clock()))
            self._consume_counted(event_name, shard, payload, mark, entry)
        finally:
            mark.finish(entry)

    def _release(self, items: list[_Held]) -> None:
        for _, shard, _, entry in items:
            self.watermark(shard.id).finish(entry)

    def _consume_all(self, items: list[tuple[_Held, bool]]) -> None:
        """Consume released events in order: to listeners, or (handled by the old set) for the cache only."""
        for (name, shard, payload, entry), deliver in items:
            mark = self.watermark(shard.id)
            try:
                if deliver:
                    self._consume_counted(name, shard, payload, mark, entry)
                else:
                    self._consume_quietly(name, shard, payload)
            finally:
                mark.finish(entry)

    def _settle(self) -> None:
        """After the switch: drop the buffer once every guild is aligned, else wake up at the next deadline."""
        shadow = self._shadow
        if shadow is None or not shadow.live:
            return
        deadline = shadow.next_deadline()
        if deadline is None:
            self._shadow = None
            return
        if self._expiry is None:
            delay = max(deadline - self._wall_clock(), 0.0) + 0.01
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self._shadow is not None:
            self._consume_all(self._shadow.expire(self._wall_clock()))
            self._settle()

    def start_recording(self) -> None:
        """Keep each guild's tail of delivered events from now on (this is the old set of a reshard).

        Idempotent: a host told twice (registered with recording on, then the RECORD command) keeps its tails.
        """
        if self._tails is None:
            self._tails = cutover.TailRecorder()

    @property
    def recording(self) -> bool:
        """This host records tails (it is in the old set of a reshard, not muted yet)."""
        return self._tails is not None

    def adopted(self, shard_id: int) -> None:
        """``shard_id`` starts here (called before its RESUME is sent): while recording, note when (``since``).

        During a reshard every shard an old-set host adopts is a failover (`ray_shards.cutover`).
        """
        if self._tails is not None:
            self._tails.adopted(shard_id, self._wall_clock())

    def recording_since(self) -> dict[int, float]:
        """Per shard adopted while recording, the wall time its recording started."""
        return self._tails.since() if self._tails is not None else {}

    def stop_recording(self) -> None:
        """Forget the tails and stop recording (a reshard was rolled back)."""
        self._tails = None

    def mute(self) -> dict[int, tuple[cutover.Seen, ...]]:
        """Stop delivering; return each guild's tail of what was delivered since recording started."""
        self._mode = DeliveryMode.MUTED
        tails = self._tails.snapshot() if self._tails is not None else {}
        self._tails = None
        return tails

    def go_live(
        self, tails: typing.Mapping[int, typing.Sequence[cutover.Seen]] | None = None, *,
        since: typing.Mapping[int, float] | None = None, old_count: int = 0,
    ) -> int:
        """Deliver the held events the old set did not handle (aligned against ``tails``), then deliver live.

        ``since``: per old shard (of ``old_count``) adopted by an old-set host during the reshard (a failover),
        when that host started recording it (`ray_shards.cutover`).

        On a set that was not in shadow mode (an old set whose reshard was rolled back) this just
        delivers live again. Returns the number of held events delivered to listeners.

        Raises
        ------
        ShadowOverflowError
            When the shadow buffer went over its cap: nothing is delivered (the old set must stay).
        """
        shadow = self._shadow
        if shadow is None or shadow.live:
            self._mode = DeliveryMode.LIVE
            return 0
        if shadow.overflowed:
            raise ShadowOverflowError(self.overflow_message())
        self._mode = DeliveryMode.LIVE
        released = shadow.go_live(tails or {}, self._wall_clock(), since=since, old_count=old_count)
        delivered = sum(1 for _, deliver in released if deliver)
        self._consume_all(released)
        self._settle()
        _LOGGER.info(
            "went live: %s held events delivered, %s already handled by the old set, %s guild(s) still aligning",
            delivered, len(released) - delivered, len(shadow.pending),
        )
        return delivered

    def overflow_message(self) -> str:
        """What to tell the user when the shadow buffer overflowed."""
        cap = self._shadow.cap if self._shadow is not None else 0
        return (
            f"the new shard set held more than {cap} events before the switch (the reshard took too long for the "
            "event rate); the old shards keep running. Reshard at a quieter time, with fewer shards per host, or "
            "raise Timings.reshard_buffer_cap"
        )
