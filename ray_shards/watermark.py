"""Listener-completion watermarks: up to which seq every listener of a shard has finished.

At-least-once on failover means: every event whose listeners had not *finished* when a host
died (or handed a shard over) is replayed by the next owner's RESUME. So a host must report
the highest seq such that the listeners of that event *and of every earlier event* are done,
not the seq it received, and not the seq it had a fixed time ago (a slow listener, a busy
event loop or a GC pause breaks any fixed lag).

Events of one shard are consumed in seq order, so the events still running form a queue:
the watermark is the seq just below the oldest unfinished one, or the last consumed seq when
nothing runs. Each operation is O(1) amortised. Pure logic: the clock is an argument.
"""

from __future__ import annotations

import collections
import dataclasses

__all__ = ["InFlight", "ListenerWatermark"]


@dataclasses.dataclass(slots=True, eq=False)
class InFlight:
    """One consumed event whose listeners may still run."""

    seq: int
    """The seq this entry holds the watermark at (a replay below what was consumed holds at that)."""
    started: float
    outstanding: int = 1
    """The consume itself counts as one; each listener group it dispatched adds one."""
    event_seq: int = -1
    """The event's own seq (`ray_shards.event_position`); differs from ``seq`` only for such a replay."""
    session_id: str = ""
    """The session the event came in on (`ray_shards.event_position`)."""
    owner: ListenerWatermark | None = None
    """The watermark this entry holds back (`ray_shards.hold_event` finishes it there)."""


class ListenerWatermark:
    """The watermark of one shard's current session.

    Parameters
    ----------
    max_lag
        Seconds an event may hold the watermark back. A listener stuck longer than this
        (awaiting something that never comes) would otherwise pin the RESUME point until it
        falls out of Discord's replay buffer, and then nothing could be resumed at all; past
        it the watermark moves on and `forced` counts how often.
    """

    __slots__ = ("_consumed", "_forced", "_max_lag", "_pending", "_session_id", "shard_id")

    def __init__(self, *, max_lag: float = 60.0, shard_id: int = -1) -> None:
        self.shard_id = shard_id
        """The shard this watermark is of (`ray_shards.event_position`)."""
        self._max_lag = max_lag
        self._pending: collections.deque[InFlight] = collections.deque()
        self._consumed: int | None = None
        self._session_id: str | None = None
        self._forced = 0

    @property
    def forced(self) -> int:
        """How many times a stuck event was given up to keep the watermark inside the resume window."""
        return self._forced

    @property
    def in_flight(self) -> int:
        """Events whose listeners have not all finished."""
        return sum(1 for entry in self._pending if entry.outstanding > 0)

    def begin(self, session_id: str | None, seq: int | None, now: float) -> InFlight | None:
        """An event with ``seq`` of ``session_id`` is being consumed; finish the returned entry when done.

        Returns None for an event that carries no seq (nothing to hold back for it). The entry
        counts the consume itself as one outstanding holder.
        """
        held = self.consume(session_id, seq)
        if held is None or seq is None:
            return None
        entry = self.open(held, seq, now)
        entry.outstanding = 1
        return entry

    def consume(self, session_id: str | None, seq: int | None) -> int | None:
        """An event with ``seq`` of ``session_id`` is consumed; return the seq its listeners would hold.

        Allocates nothing: this runs once per event, and most events in a large bot have no listener.
        Only when one runs is an entry `open`ed for the event (consumes are synchronous, so nothing
        can read the watermark in between). None for an event that carries no seq.
        """
        if seq is None:
            return None
        if session_id != self._session_id:
            # A new session (IDENTIFY after op 9): its seqs start again; what ran for the old one no longer
            # decides the new session's RESUME point.
            self._session_id = session_id
            self._pending.clear()
            self._consumed = None
        consumed = self._consumed
        if consumed is not None and seq <= consumed:
            # A replayed event below what was consumed: it cannot move the watermark back.
            return consumed
        self._consumed = seq
        return seq

    def open(self, held: int, event_seq: int, now: float) -> InFlight:
        """Hold the watermark at ``held`` (what `consume` returned for the event now being consumed).

        The entry starts with nothing outstanding: `hold` it once per listener group.
        """
        entry = InFlight(held, now, 0, event_seq, self._session_id or "", self)
        self._pending.append(entry)
        return entry

    def hold(self, entry: InFlight | None) -> None:
        """One more listener group runs for ``entry``."""
        if entry is not None:
            entry.outstanding += 1

    def finish(self, entry: InFlight | None) -> None:
        """One of ``entry``'s listener groups (or its consume) is done."""
        if entry is None:
            return
        entry.outstanding -= 1
        # _trim inlined: this runs once per listener of every event.
        pending = self._pending
        while pending and pending[0].outstanding <= 0:
            pending.popleft()

    def _trim(self) -> None:
        while self._pending and self._pending[0].outstanding <= 0:
            self._pending.popleft()

    def value(self, now: float) -> int | None:
        """The highest seq whose listeners, and every earlier event's, have finished (None: nothing consumed)."""
        while self._pending and now - self._pending[0].started > self._max_lag:
            self._pending[0].outstanding = 0
            self._forced += 1
            self._trim()
        if self._pending:
            return self._pending[0].seq - 1
        return self._consumed

    def session_id(self) -> str | None:
        """The session the watermark belongs to."""
        return self._session_id
