"""Where the new set of a live reshard starts delivering: the cut-over decision, per guild (pure logic).

During a reshard two sets of sessions run side by side and Discord sends every
guild event to both. The *old* set delivers to listeners and keeps, per guild,
only a short tail of what it delivered: the last `TAIL_LENGTH` events as `Seen`
(a digest of the event name and the full canonical payload, whether the event
carries a unique snowflake, and the wall time it was received). The *new* set
holds what it receives (`ShadowBuffer`). At the switch the old set is muted and
hands in its tails; the new set aligns each guild's held events against that
guild's tail, consumes the events up to the old set's last delivery for its
cache only (no listener runs), and delivers the rest.

Alignment (`align`): a candidate is a position ``k`` of the held events where
``held[k]`` has the digest of the tail's last entry and every earlier held event
that overlaps the tail has the digest of the tail entry it lines up with.

* A candidate whose matched window contains a unique-snowflake event (a new
  message, interaction, channel or thread) is certain: that window occurs once.
* Otherwise the candidate whose receive time is closest to the tail's last
  receive time is taken, if the two are at most ``max_skew`` apart. By content
  alone a periodic stream (reaction added, removed, added again: identical
  payloads) is ambiguous; `tests/test_cutover.py` shows content-only matching
  picking the wrong repetition and the time rule picking the right one.
* No candidate: the old set's last delivery precedes the held events (deliver
  them all), unless it may not have reached the new set yet (the new set lags):
  then the guild stays held until a candidate arrives or ``max_skew`` has passed
  since the old set received it.

Assumptions (exactly-once holds when they do; otherwise an event may be handled
twice or, in the second case, skipped):

1. Both sets receive one guild's events in the same order (Discord fans each
   guild's events out to every session covering it in order), and the new set
   started holding after the old set started recording (the Orchestrator tells
   the old set to record before it starts the new one).
2. For a window without a unique-snowflake event: the same event is received by
   the two sets at wall times at most ``max_skew`` apart, and two events with
   equal digests in one guild are received more than ``2 * max_skew`` apart
   (so the skew is under half the repeat period of any periodic stream).
3. Events that are not a guild's fan-out (READY, RESUMED, the GUILD_CREATE /
   GUILD_DELETE of a guild becoming available or unavailable, which carry the
   ``unavailable`` key, member chunks answering one session's request) are kept
   out of both tails and buffers (`fan_out`).

An old-set host that dies during the reshard takes its tails with it. Its shards
RESUME on another old-set host from the dead host's listener-completion watermark
W, and Discord replays everything after W, so the adopting host delivers and
records those. Every shard an old-set host adopts while it records is such a
failover (the Orchestrator does not rebalance the old set during a reshard), and
the adopting host notes, per shard, the wall time ``since`` at which it started
recording that shard, before its RESUME is sent. At the switch, for a guild of
an old shard with a ``since`` (`since_start`):

* The guild has a tail: it aligns as above, except that its last entry may be a
  replayed event, received by the old set at about ``since`` but by the new set
  when Discord first sent it, long before. So the candidate taken is the latest
  one the new set received no later than ``max_skew`` after the tail's last
  entry (a later event with that digest would have been delivered by the old set
  after it, and the tail would not end there), decided once the new set has
  received everything up to then.
* The guild has no tail: no event of it was replayed (a replayed event is
  recorded), so the old set delivered only what the dead host delivered and
  acknowledged, at or before W, received by the old set before it died, hence
  before ``since``; and nothing after that until it was muted. The held events
  the new set received before ``since + max_skew`` are consumed for the cache
  only; the rest (received after the old set was muted) are delivered.

Skew assumption for this rule (on top of assumption 2): the old host muted at
least ``3 * max_skew`` after the latest ``since`` it hands in (it waits for that
before muting, so that what it received after the mute reaches the new set after
``since + max_skew``), and the replay after a RESUME reaches the adopting host
within ``max_skew`` of ``since``. Not covered: a host that dies during the switch
itself (between the Orchestrator's SWITCH_OUT and its own mute).

Memory is bounded: `TAIL_LENGTH` entries per guild on the old set, and at most
``cap`` held events in total on the new set (`ShadowBuffer.hold` refuses the
one over the cap; the reshard then fails and the old set keeps delivering).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import typing

__all__ = [
    "DEFAULT_BUFFER_CAP",
    "DEFAULT_MAX_SKEW",
    "TAIL_LENGTH",
    "UNIQUE_EVENTS",
    "Seen",
    "ShadowBuffer",
    "TailRecorder",
    "align",
    "content_only_align",
    "digest",
    "fan_out",
    "guild_key",
    "seen",
    "since_start",
]

TAIL_LENGTH = 16
"""Entries of the old set's tail per guild."""
DEFAULT_BUFFER_CAP = 100_000
"""Events a new-set host may hold in total before its reshard fails."""
DEFAULT_MAX_SKEW = 1.0
"""Seconds by which the two sets' receive times of one event may differ."""

UNIQUE_EVENTS = frozenset({"MESSAGE_CREATE", "INTERACTION_CREATE", "CHANNEL_CREATE", "THREAD_CREATE",
                           "GUILD_AUDIT_LOG_ENTRY_CREATE"})
"""Events whose payload carries a snowflake no other event of that name carries."""

_SESSION_EVENTS = frozenset({"READY", "RESUMED", "GUILD_MEMBERS_CHUNK"})

T = typing.TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """One event as the cut-over sees it."""

    digest: bytes
    """`digest` of the event name and the full payload."""
    unique: bool
    """The event carries a unique snowflake (`UNIQUE_EVENTS`): equal digests mean the same event."""
    received: float
    """Wall time (``time.time()``) the set received it."""


def guild_key(payload: typing.Any) -> int:
    """The alignment key of an event: its guild id, or 0 when it has none (DMs)."""
    if isinstance(payload, dict):
        gid = payload.get("guild_id")
        if gid is not None:
            try:
                return int(gid)
            except (TypeError, ValueError):
                return 0
    return 0


def guild_of_event(name: str, payload: typing.Any) -> int:
    """`guild_key`, except that GUILD_* events about the guild itself carry its id as ``id``."""
    if name in ("GUILD_CREATE", "GUILD_DELETE", "GUILD_UPDATE") and isinstance(payload, dict) and "id" in payload:
        try:
            return int(payload["id"])
        except (TypeError, ValueError):
            return 0
    return guild_key(payload)


def fan_out(name: str, payload: typing.Any) -> bool:
    """Whether both sets receive this event as one of the guild's events (see assumption 3)."""
    if name in _SESSION_EVENTS:
        return False
    return not (name in ("GUILD_CREATE", "GUILD_DELETE") and isinstance(payload, dict) and "unavailable" in payload)


def digest(name: str, payload: typing.Any) -> bytes:
    """Hash of the event name and the canonical JSON of the whole payload."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(f"{name}\n{text}".encode(), digest_size=16).digest()


def seen(name: str, payload: typing.Any, received: float) -> Seen:
    """The `Seen` of an event received at ``received``."""
    unique = name in UNIQUE_EVENTS and not (name == "THREAD_CREATE" and isinstance(payload, dict)
                                            and payload.get("newly_created") is False)
    return Seen(digest(name, payload), unique, received)


def _window_matches(tail: typing.Sequence[Seen], held: typing.Sequence[Seen], k: int) -> tuple[bool, bool]:
    """Whether ``tail`` ends at ``held[k]`` by content, and whether the matched window has a unique event."""
    m = len(tail)
    unique = False
    for i in range(min(m, k + 1)):
        entry = tail[m - 1 - i]
        if held[k - i].digest != entry.digest:
            return False, False
        unique = unique or entry.unique
    return True, unique


def since_start(held: typing.Sequence[Seen], since: float, *, max_skew: float) -> int:
    """A guild with no tail whose old shard failed over at ``since``: the held events before it were delivered.

    Returns the index of the first held event received after ``since + max_skew`` (see the module docstring).
    """
    return sum(1 for entry in held if entry.received <= since + max_skew)


def align(
    tail: typing.Sequence[Seen], held: typing.Sequence[Seen], *, max_skew: float, now: float,
    since: float | None = None,
) -> int | None:
    """Index of the first held event the new set must deliver (see the module docstring); None: wait.

    ``tail`` is the old set's tail of one guild (oldest first), ``held`` the new set's held events of
    that guild in arrival order, ``now`` the wall time, ``since`` the time the old set's current owner of
    the guild's old shard adopted it during the reshard (a failover: its tail may hold replayed events).
    """
    if not tail:
        return 0 if since is None else since_start(held, since, max_skew=max_skew)
    last = tail[-1]
    replayed = since is not None and last.received >= since
    certain: list[int] = []
    best: int | None = None
    best_skew = 0.0
    for k, entry in enumerate(held):
        if entry.digest != last.digest:
            continue
        matches, unique = _window_matches(tail, held, k)
        if not matches:
            continue
        skew = abs(entry.received - last.received)
        if unique:
            certain.append(k)
        elif replayed:
            if entry.received <= last.received + max_skew:
                best = k  # the latest one (see the module docstring)
        elif skew <= max_skew and (best is None or skew < best_skew):
            best, best_skew = k, skew
    if certain:
        return min(certain, key=lambda k: abs(held[k].received - last.received)) + 1
    arrived_by = last.received + max_skew
    arrived = now > arrived_by or (bool(held) and held[-1].received > arrived_by)
    if replayed:
        # The latest candidate is known only once all the new set received by arrived_by is here.
        return (0 if best is None else best + 1) if arrived else None
    if best is not None:
        return best + 1
    if arrived:
        return 0
    return None


def content_only_align(tail: typing.Sequence[Seen], held: typing.Sequence[Seen]) -> int:
    """Alignment by content alone (the latest matching window): what `align` must not do (tests show why)."""
    if not tail:
        return 0
    for k in range(len(held) - 1, -1, -1):
        if _window_matches(tail, held, k)[0]:
            return k + 1
    return 0


class TailRecorder:
    """The old set's side: the last `TAIL_LENGTH` delivered events of each guild."""

    __slots__ = ("_length", "_since", "_tails")

    def __init__(self, length: int = TAIL_LENGTH) -> None:
        self._length = length
        self._tails: dict[int, collections.deque[Seen]] = {}
        self._since: dict[int, float] = {}

    def adopted(self, shard_id: int, now: float) -> None:
        """The host starts recording ``shard_id`` (a failover) at ``now``, before its RESUME is sent."""
        self._since[shard_id] = now

    def since(self) -> dict[int, float]:
        """Per shard adopted while recording, when its recording started."""
        return dict(self._since)

    def record(self, key: int, entry: Seen) -> None:
        """Remember that the event ``entry`` of guild ``key`` was delivered."""
        tail = self._tails.get(key)
        if tail is None:
            tail = self._tails[key] = collections.deque(maxlen=self._length)
        tail.append(entry)

    def snapshot(self) -> dict[int, tuple[Seen, ...]]:
        """Every guild's tail, oldest entry first."""
        return {key: tuple(tail) for key, tail in self._tails.items()}

    def clear(self) -> None:
        """Forget everything."""
        self._tails.clear()
        self._since.clear()

    def __len__(self) -> int:
        return sum(len(t) for t in self._tails.values())


class ShadowBuffer(typing.Generic[T]):
    """The new set's side: events held per guild until the switch, then released by `align`.

    Items are opaque (the caller's event); `hold`, `go_live`, `offer` and `expire` return the
    items to consume in order, each with ``True`` (deliver to listeners) or ``False`` (the old
    set handled it: fill the cache only).
    """

    __slots__ = ("_cap", "_held", "_live", "_max_skew", "_order", "_pending", "_since", "_tails", "overflowed")

    def __init__(self, cap: int = DEFAULT_BUFFER_CAP, *, max_skew: float = DEFAULT_MAX_SKEW) -> None:
        self._cap = cap
        self._max_skew = max_skew
        self._order: collections.deque[tuple[int, Seen, T]] = collections.deque()
        self._held: dict[int, list[tuple[Seen, T]]] = {}
        self._pending: dict[int, tuple[Seen, ...]] = {}
        self._tails: dict[int, tuple[Seen, ...]] = {}
        self._since: dict[int, float] = {}
        self._live = False
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._order) + sum(len(v) for v in self._held.values())

    @property
    def cap(self) -> int:
        """Events that may be held in total."""
        return self._cap

    @property
    def live(self) -> bool:
        """`go_live` was called."""
        return self._live

    @property
    def pending(self) -> frozenset[int]:
        """Guilds still held after `go_live`, waiting for the old set's last delivery to arrive."""
        return frozenset(self._pending)

    def hold(self, key: int, entry: Seen, item: T) -> bool:
        """Hold an event before the switch; False when that would exceed the cap (the item is not held).

        An overflowed buffer holds nothing more: the reshard must fail (the old set still delivers all);
        `clear` frees what it held.
        """
        if self.overflowed:
            return False
        if len(self._order) >= self._cap:
            self.overflowed = True
            return False
        self._order.append((key, entry, item))
        return True

    def clear(self) -> list[T]:
        """Drop every held item; return them (the caller releases what it attached to them)."""
        items = [item for _, _, item in self._order]
        items += [item for held in self._held.values() for _, item in held]
        self._order.clear()
        self._held.clear()
        self._pending.clear()
        return items

    def go_live(
        self, tails: typing.Mapping[int, typing.Sequence[Seen]], now: float, *,
        since: typing.Mapping[int, float] | None = None, old_count: int = 0,
    ) -> list[tuple[T, bool]]:
        """Align every held guild against ``tails``; return what to consume now, in arrival order.

        ``since``: per old shard (of ``old_count``) that failed over during the reshard, when its new
        owner started recording it (see the module docstring).
        """
        if self.overflowed:
            msg = "the shadow buffer overflowed"
            raise OverflowError(msg)
        self._live = True
        self._tails = {k: tuple(v) for k, v in tails.items() if v}
        if since and old_count > 0:
            self._since = {k: since[(k >> 22) % old_count] for k in set(self._tails) | {k for k, _, _ in self._order}
                           if (k >> 22) % old_count in since}
        by_guild: dict[int, list[Seen]] = {}
        for key, entry, _ in self._order:
            by_guild.setdefault(key, []).append(entry)
        starts: dict[int, int | None] = {}
        for key in set(by_guild) | set(self._tails):
            starts[key] = align(self._tails.get(key, ()), by_guild.get(key, []), max_skew=self._max_skew, now=now,
                                since=self._since.get(key))
        out: list[tuple[T, bool]] = []
        index: dict[int, int] = {}
        for key, entry, item in self._order:
            start = starts[key]
            if start is None:
                self._held.setdefault(key, []).append((entry, item))
                continue
            i = index.get(key, 0)
            index[key] = i + 1
            out.append((item, i >= start))
        self._order.clear()
        for key, start in starts.items():
            if start is None:
                self._pending[key] = self._tails[key]
                self._held.setdefault(key, [])
        return out

    def offer(self, key: int, entry: Seen, item: T, now: float) -> list[tuple[T, bool]]:
        """A live event after `go_live`: delivered at once, unless its guild is still pending."""
        out = self.expire(now)
        if key not in self._pending:
            out.append((item, True))
            return out
        self._held[key].append((entry, item))
        # Bounded like the buffer: past the cap the guild is decided with what arrived.
        out.extend(self._resolve(key, now if len(self._held[key]) < self._cap else float("inf")))
        return out

    def expire(self, now: float) -> list[tuple[T, bool]]:
        """Release the pending guilds whose wait is over."""
        out: list[tuple[T, bool]] = []
        for key in [k for k, tail in self._pending.items() if now > tail[-1].received + self._max_skew]:
            out.extend(self._resolve(key, now))
        return out

    def next_deadline(self) -> float | None:
        """Wall time by which every pending guild is decided (None: none pending)."""
        if not self._pending:
            return None
        return max(tail[-1].received for tail in self._pending.values()) + self._max_skew

    def _resolve(self, key: int, now: float) -> list[tuple[T, bool]]:
        held = self._held[key]
        start = align(self._pending[key], [e for e, _ in held], max_skew=self._max_skew, now=now,
                      since=self._since.get(key))
        if start is None:
            return []
        del self._pending[key]
        del self._held[key]
        return [(item, i >= start) for i, (_, item) in enumerate(held)]
