"""Event delivery that can be held, muted and de-duplicated: what live resharding switches with.

During a reshard two complete sets of sessions run side by side and Discord
sends every event to both. The new set runs in *shadow* mode (its events are
buffered, not delivered) while the old set records what it delivered. At the
switch the old set is muted, and the new set delivers its buffer minus what the
old set already delivered, then goes live: each event is handled once.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import json
import logging
import time
import types
import typing

from hikari.events import base_events
from hikari.impl import event_manager as event_manager_impl
from typing_extensions import override

from ray_shards import listener_context, sessions
from ray_shards.watermark import InFlight, ListenerWatermark

if typing.TYPE_CHECKING:
    from hikari.api import shard as shard_api

__all__ = ["DeliveryMode", "GatedEventManager", "event_identity"]

_LOGGER = logging.getLogger("ray_shards.delivery")
_HIKARI_LOGGER = logging.getLogger("hikari.event_manager")
"""Listener failures are logged where hikari logs them, so users' logging setup sees them unchanged."""

# Session life-cycle events are always consumed: they fill the cache and complete handshakes.
_ALWAYS = frozenset({"READY", "RESUMED", "GUILD_CREATE", "GUILD_DELETE", "GUILD_MEMBERS_CHUNK"})
_MAX_BUFFER = 1_000_000
_MAX_RECORDED = 2_000_000


def event_identity(name: str, payload: typing.Any) -> str:
    """What makes two copies of one Discord event (sent to two sessions) the same event."""
    if isinstance(payload, dict) and "id" in payload:
        return f"{name}:{payload['id']}"
    digest = hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    return f"{name}:{digest}"


class DeliveryMode(enum.StrEnum):
    """How a `GatedEventManager` treats incoming dispatch events."""

    LIVE = "live"
    SHADOW = "shadow"
    MUTED = "muted"


class GatedEventManager(event_manager_impl.EventManagerImpl):
    """hikari's event manager with a gate in front of listener delivery (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_current_entry",
        "_current_mark",
        "_delivered",
        "_delivered_order",
        "_max_listener_lag",
        "_mode",
        "_recording",
        "_skip",
        "_skip_until",
        "_watermarks",
    )

    def __init__(
        self, *args: typing.Any, shadow: bool = False, max_listener_lag: float = 60.0, **kwargs: typing.Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._mode = DeliveryMode.SHADOW if shadow else DeliveryMode.LIVE
        self._buffer: collections.deque[tuple[str, shard_api.GatewayShard, typing.Any, InFlight | None]] = (
            collections.deque(maxlen=_MAX_BUFFER)
        )
        self._watermarks: dict[int, ListenerWatermark] = {}
        self._max_listener_lag = max_listener_lag
        # The event being consumed right now (consumers dispatch synchronously), so _invoke_callback can
        # count the listener tasks hikari starts for it against that event's seq.
        self._current_mark: ListenerWatermark | None = None
        self._current_entry: InFlight | None = None
        self._recording = False
        self._delivered: set[str] = set()
        self._delivered_order: collections.deque[str] = collections.deque()
        self._skip: frozenset[str] = frozenset()
        self._skip_until = 0.0

    @property
    def mode(self) -> DeliveryMode:
        """Current delivery mode."""
        return self._mode

    @property
    def buffered(self) -> int:
        """Events held while in shadow mode."""
        return len(self._buffer)

    # -- listener-completion watermark -------------------------------------------------------------

    def watermark(self, shard_id: int) -> ListenerWatermark:
        """The listener-completion watermark of ``shard_id`` (created on first use)."""
        mark = self._watermarks.get(shard_id)
        if mark is None:
            mark = self._watermarks[shard_id] = ListenerWatermark(max_lag=self._max_listener_lag)
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
        # known (self._current_entry), so the listener is counted here, with no gather or done-callback per event
        # (measured: a gather per event cost about a third of dispatch capacity, mostly in GC).
        entry, mark = self._current_entry, self._current_mark
        if entry is None or mark is None:
            return super()._invoke_callback(callback, event)
        mark.hold(entry)
        return self._invoke_counted(callback, event, mark, entry)

    async def _invoke_counted(
        self, callback: typing.Any, event: base_events.Event, mark: ListenerWatermark, entry: InFlight
    ) -> None:
        """hikari's ``_invoke_callback`` (same logging and `hikari.ExceptionEvent`), then the listener is counted done.

        Inlined rather than wrapping hikari's coroutine in a second one: one coroutine per listener, as in hikari.
        ``tests/test_watermark.py`` checks that a failing listener still produces hikari's ExceptionEvent.
        """
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
            mark.finish(entry)

    def _begin(self, shard: shard_api.GatewayShard) -> tuple[ListenerWatermark, InFlight | None]:
        mark = self.watermark(shard.id)
        session_id, seq = sessions.position(shard)
        entry = mark.begin(session_id, seq, time.monotonic()) if seq is not None else None
        return mark, entry

    def _consume_counted(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any,
                         mark: ListenerWatermark, entry: InFlight | None) -> None:
        previous_mark, previous_entry = self._current_mark, self._current_entry
        self._current_mark = mark if entry is not None else None
        self._current_entry = entry
        # The listener tasks hikari builds during this consume copy the context: event_position() and
        # hold_event() in a listener (or a task it starts) then name this event.
        token = None
        if entry is not None:
            position = listener_context.EventPosition(shard.id, mark.session_id() or "", entry.event_seq)
            token = listener_context.enter(position, mark, entry)
        try:
            super().consume_raw_event(event_name, shard, payload)
        finally:
            self._current_mark, self._current_entry = previous_mark, previous_entry
            if token is not None:
                listener_context.leave(token)

    @override
    def consume_raw_event(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any) -> None:
        mark, entry = self._begin(shard)
        try:
            if event_name in _ALWAYS or (
                self._mode is DeliveryMode.LIVE and not self._recording and not self._skip
            ):
                self._consume_counted(event_name, shard, payload, mark, entry)
                return
            if self._mode is DeliveryMode.SHADOW:
                # Held, not handled: the watermark stays below it until it is delivered (or dropped at go-live).
                mark.hold(entry)
                self._buffer.append((event_name, shard, payload, entry))
                return
            if self._mode is DeliveryMode.MUTED:
                return
            self._deliver(event_name, shard, payload, mark, entry)
        finally:
            mark.finish(entry)

    def _deliver(
        self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any, mark: ListenerWatermark,
        entry: InFlight | None,
    ) -> None:
        if self._skip:
            if time.monotonic() > self._skip_until:
                self._skip = frozenset()
            elif event_identity(event_name, payload) in self._skip:
                return
        if self._recording:
            identity = event_identity(event_name, payload)
            if identity not in self._delivered:
                self._delivered.add(identity)
                self._delivered_order.append(identity)
                if len(self._delivered_order) > _MAX_RECORDED:
                    self._delivered.discard(self._delivered_order.popleft())
        self._consume_counted(event_name, shard, payload, mark, entry)

    def start_recording(self) -> None:
        """Remember the identity of every event delivered from now on."""
        self._recording = True

    def stop_recording(self) -> None:
        """Forget what was recorded and stop recording (a reshard was rolled back)."""
        self._recording = False
        self._delivered.clear()
        self._delivered_order.clear()

    def mute(self) -> list[str]:
        """Stop delivering; return the identities delivered since recording started."""
        self._mode = DeliveryMode.MUTED
        self._recording = False
        delivered = list(self._delivered_order)
        self._delivered.clear()
        self._delivered_order.clear()
        return delivered

    def go_live(self, skip: typing.Iterable[str], *, skip_for: float = 30.0) -> int:
        """Deliver the shadow buffer minus ``skip``, then deliver live (still skipping those for ``skip_for`` s).

        Returns the number of buffered events delivered.
        """
        self._skip = frozenset(skip)
        self._skip_until = time.monotonic() + skip_for
        self._mode = DeliveryMode.LIVE
        delivered = 0
        while self._buffer:
            name, shard, payload, entry = self._buffer.popleft()
            mark = self.watermark(shard.id)
            try:
                if event_identity(name, payload) in self._skip:
                    continue
                self._deliver(name, shard, payload, mark, entry)
                delivered += 1
            finally:
                mark.finish(entry)
        _LOGGER.info("went live: %s buffered events delivered, %s skipped as already handled", delivered,
                     len(self._skip))
        return delivered

