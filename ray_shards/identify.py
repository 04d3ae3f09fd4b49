"""The cluster-wide IDENTIFY queue: Discord's identify rate limit as pure logic.

Discord allows one IDENTIFY per bucket (``shard_id % max_concurrency``) per 5
second window, and a daily number of session starts. This module decides who
may identify when; it does no I/O and takes the clock as an argument, so it is
tested exhaustively without Ray or sockets.

Every ``now`` (and ``identified_at``, ``asked_at``) is in seconds of the
*caller's monotonic clock* (``time.monotonic()`` in the Orchestrator). Never
pass the wall clock: a step of the wall clock would open a window early. A
monotonic clock has no meaning across processes, so nothing here is meant to
be checkpointed except the budget, which is re-fetched after a restart anyway.

What a host must do for the guarantees to hold
-----------------------------------------------
- Send its IDENTIFY at most ``grant_use_limit`` seconds after it *asked* for the
  grant, or drop the grant and ask again (``grant_use_limit <= grant_timeout``).
  The scheduler relies on it when it infers that a grant was used: at expiry, when
  the same shard asks again (a duplicated or retried call cannot free the bucket
  before the grant's IDENTIFY left), and when it counts grants Discord may not
  have seen yet in a budget refresh.
- With a not-before grant (``early``), sleep the grant's wait *after the answer arrived* and send no later
  than ``wait + grant_use_limit`` after asking (see "Grants ahead of the opening" below).
- Report READY (or failure) with `release`, fenced by its ``(host_id, epoch)``.
- Ask again within `LATE_ASK` after the wait it was told: a shard that stops asking
  no longer holds the lower-ids-first order of its bucket (order only; never safety).
- Number each ask (``ask``, unique for the holder), and name a grant it received too late
  and never used (``dropped``: that ask's number) in its next ask. The scheduler then frees
  the bucket at once instead of counting the grant as sent at the latest moment it could have
  been: a busy host starting many shards at once received most of its first grants late, and
  each one closed its bucket for a whole window (a 256-shard boot at ``max_concurrency`` 64
  took 1.5 x Discord's floor). Only the grant of that very ask, held for that very holder, is
  freed so: a duplicated or reordered ask names no grant it could have used.

Waits are lower bounds of a shard's turn, so a big boot asks little: a shard with
``k`` lower shards waiting in its bucket cannot be granted before ``k - 1`` more
windows have passed (each grant holds the bucket until READY, then a whole window),
so it is told to sleep that long (at most `MAX_WAIT`). A 2,048-shard boot at
``max_concurrency`` 16 asked about 400 times a second when every shard asked once
a window; now each shard asks a few times in all, and no call is ever parked.

Grants ahead of the opening
---------------------------
A bucket opens ``window + margin`` after READY, and a shard told to ask at the opening would then
pay a whole ask round trip before its IDENTIFY leaves. An asker that says it understands not-before
grants (``early``) may instead be granted up to ``lead`` seconds before the opening, with the grant's
``not_before`` at the opening. The answer carries the wait as a duration (``not_before - now``), not
as a time: no clock is shared across processes. The host sleeps that wait from when the answer
*arrived*, which is after the grant was made, so its IDENTIFY leaves no earlier than ``not_before``;
and it sends within ``wait + grant_use_limit`` of *asking*, which is before the grant was made, so
its IDENTIFY leaves no later than ``not_before + grant_use_limit``. Every place that reasons about the
latest send (a re-ask, an expiry, a budget refresh, a restart) counts from ``not_before`` so. The
bucket is still released at READY, and the opening is still counted from it: only the ask's round
trip leaves the path between two IDENTIFYs of a bucket.

Where a window starts
---------------------
Discord counts a bucket's window from when its rate limiter sees an IDENTIFY. `release` opens the
bucket ``window + margin`` after ``identified_at``, which must therefore be a time on the caller's
clock *no earlier* than the IDENTIFY left its host. Two choices (`Timings.identify_window_from`):

- READY's arrival (``identified_at`` None): after Discord received the IDENTIFY, whatever the delays.
  Each round then also pays READY's latency.
- The frame's departure, which the host measures after the write to its socket returned and reports
  as an *age* (seconds before its report, on its own monotonic clock). The caller computes
  ``arrival of the report - age``, which is never earlier than the departure: the report's transit, a
  retry or a duplicate only make it later. This bound is safe at Discord only while the two
  IDENTIFYs' one-way delays to its rate limiter differ by less than ``margin``. Never stamp before the
  write: on a busy loop the frame can leave long after (BENCHMARKS.md, F5).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import typing

__all__ = [
    "GRANT_USE_LIMIT",
    "LATE_ASK",
    "MAX_WAIT",
    "WINDOW_FROM_MODES",
    "IdentifyBudgetExhaustedError",
    "IdentifyGrant",
    "IdentifyScheduler",
    "WindowFrom",
    "window_start",
]

_POLL = 0.5
"""Seconds to wait before asking again when the answer depends on someone else (a refresh, a lower shard)."""

GRANT_USE_LIMIT = 1.0
"""Seconds within which a host sends the IDENTIFY it was granted, counted from its ask (plus the wait of a
not-before grant), or drops the grant. The one value the host (`ray_shards.bot`), the Orchestrator's scheduler
and `Timings`' check of ``identify_lead`` share: were they to differ, the Orchestrator would count a grant as
spent while a host could still send it."""

LATE_ASK = 1.0
"""A waiting shard keeps its place in line until this long after the time it was told to ask again: enough for
a busy host's event loop, short enough that a phantom (a duplicated call of a shard that will never ask again)
holds its bucket for little more than the wait it was told."""

MAX_WAIT = 30.0
"""Longest wait told to a shard far back in its bucket's queue: were the shards ahead of it to go (their host
died), its bucket would stand idle no longer than this."""


WindowFrom = typing.Literal["ready", "sent"]
"""Where a bucket's window starts (`Timings.identify_window_from`): READY's arrival, or the IDENTIFY's departure."""

WINDOW_FROM_MODES: typing.Final[tuple[WindowFrom, ...]] = typing.get_args(WindowFrom)
"""Every `WindowFrom`, the default first: what `Timings`, the simulator and the benchmarks accept."""


def window_start(now: float, left_ago: float | None, *, from_sent: bool) -> float | None:
    """The ``identified_at`` to `IdentifyScheduler.release` with, for a READY report that arrived at ``now``.

    ``left_ago`` is the host's measure of how long before its report the IDENTIFY's frame was written.
    With ``from_sent`` (`Timings.identify_window_from` ``"sent"``) and a usable age, ``now - left_ago``;
    otherwise None: the window counts from ``now``, READY's arrival ("Where a window starts" above).
    """
    if not from_sent or left_ago is None or not 0.0 <= left_ago < math.inf:
        return None
    return now - left_ago


class IdentifyBudgetExhaustedError(RuntimeError):
    """The daily ``session_start_limit`` has no identifies left and no reset time is known."""


@dataclasses.dataclass(frozen=True, slots=True)
class IdentifyGrant:
    """Permission for one shard to send one IDENTIFY, from ``not_before`` on.

    ``holder`` is the ``(host_id, lease epoch)`` the grant was given to, if the caller said.
    """

    shard_id: int
    bucket: int
    granted_at: float
    holder: tuple[str, int] | None = None
    ask: int | None = None
    """The number of the ask it answered, if the asker numbered it."""
    not_before: float | None = None
    """The earliest the IDENTIFY may leave (caller's clock), for a grant made ahead of its bucket's opening;
    None for a grant to send at once."""

    @property
    def opens(self) -> float:
        """When the IDENTIFY may leave: ``not_before``, or the grant time."""
        return self.granted_at if self.not_before is None else self.not_before


class IdentifyScheduler:
    """Grants IDENTIFYs by Discord's rule, to whichever host asks.

    A bucket is held from the grant until the shard reports READY or failure
    (`release`), and the next grant in that bucket comes no earlier than
    ``window + margin`` after the IDENTIFY was sent. Within a bucket the lowest
    waiting shard id goes first, so boots proceed in shard order.

    Parameters
    ----------
    max_concurrency
        Discord's ``session_start_limit.max_concurrency``.
    remaining
        Identifies left today (``session_start_limit.remaining``).
    window
        Seconds between two IDENTIFYs of one bucket (5 on Discord).
    margin
        Safety added to every window, covering clock and network jitter.
    grant_timeout
        A grant not released after this long is treated as spent at expiry.
    grant_use_limit
        Hosts send their IDENTIFY within this many seconds of asking for the grant, or
        drop it (see the module docstring).
    lead
        How long before its bucket opens a shard asking ``early`` may be granted, with a
        not-before time (0: grants only once the bucket is open). ``lead + grant_use_limit``
        must not exceed ``grant_timeout``.
    """

    __slots__ = (
        "_free_at",
        "_grant_timeout",
        "_grant_use_limit",
        "_held",
        "_lead",
        "_margin",
        "_max_concurrency",
        "_recent",
        "_remaining",
        "_reset_at",
        "_waiting",
        "_window",
    )

    def __init__(
        self,
        max_concurrency: int,
        *,
        remaining: int,
        window: float = 5.0,
        margin: float = 0.1,
        grant_timeout: float = 30.0,
        grant_use_limit: float = GRANT_USE_LIMIT,
        lead: float = 0.0,
    ) -> None:
        if max_concurrency < 1:
            msg = f"max_concurrency must be at least 1, not {max_concurrency}"
            raise ValueError(msg)
        if not 0 <= grant_use_limit <= grant_timeout:
            msg = f"grant_use_limit must be within 0..grant_timeout, not {grant_use_limit}"
            raise ValueError(msg)
        if lead < 0 or lead + grant_use_limit > grant_timeout:
            msg = f"lead must be at least 0 and leave lead + grant_use_limit within grant_timeout, not {lead}"
            raise ValueError(msg)
        self._grant_use_limit = grant_use_limit
        self._lead = lead
        self._max_concurrency = max_concurrency
        self._remaining = remaining
        self._window = window
        self._margin = margin
        self._grant_timeout = grant_timeout
        self._free_at: dict[int, float] = {}
        self._held: dict[int, IdentifyGrant] = {}
        # Per bucket, the waiting shards and when each said it will ask again (now plus the wait it was told).
        self._waiting: dict[int, dict[int, float]] = {}
        self._reset_at: float | None = None
        # Times of recent grants (and of grants a previous Orchestrator may have made): an IDENTIFY this
        # recent may not be counted yet in a budget Discord reports, so `set_budget` subtracts them.
        self._recent: collections.deque[float] = collections.deque()

    @property
    def max_concurrency(self) -> int:
        """Number of buckets."""
        return self._max_concurrency

    @property
    def remaining(self) -> int:
        """Identifies left in the daily budget."""
        return self._remaining

    @property
    def reset_at(self) -> float | None:
        """When the daily budget resets (caller's monotonic clock), if known."""
        return self._reset_at

    @property
    def window(self) -> float:
        """Seconds between two IDENTIFYs of one bucket, margin included."""
        return self._window + self._margin

    def set_remaining(self, remaining: int) -> None:
        """Replace the daily budget, keeping the known reset time (prefer `set_budget`)."""
        self._remaining = remaining

    def set_budget(self, remaining: int, reset_after: float, now: float, *, asked_at: float | None = None) -> None:
        """Take a fresh ``session_start_limit`` from ``GET /gateway/bot``.

        Parameters
        ----------
        remaining
            ``session_start_limit.remaining``.
        reset_after
            ``session_start_limit.reset_after`` in seconds (Discord sends milliseconds).
        now
            When the answer arrived.
        asked_at
            When the request was sent (defaults to ``now``). Grants made less than
            ``grant_use_limit`` before it may have IDENTIFYs Discord had not counted
            yet when it answered, so they are subtracted: the budget errs low.
        """
        self._prune(now)
        since = (now if asked_at is None else min(asked_at, now)) - self._grant_use_limit
        uncounted = sum(1 for at in self._recent if at >= since)
        self._remaining = max(0, remaining - uncounted)
        self._reset_at = now + max(0.0, reset_after)

    def budget_stale(self, now: float) -> bool:
        """Whether the daily budget has reset since it was last set (re-fetch it and call `set_budget`)."""
        return self._reset_at is not None and now >= self._reset_at

    def start_full(self, now: float, *, in_flight: float = 0.0) -> None:
        """Start every bucket with a full window at ``now`` (after an Orchestrator restart).

        The previous Orchestrator may have granted an IDENTIFY just before it crashed; this
        scheduler cannot know, so it assumes one per bucket. ``in_flight`` is how long such a
        grant may still be used after it opens (hosts drop grants older than that), and a grant made
        ahead of its opening may open up to ``lead`` after ``now``; the next grant in every bucket
        comes ``lead + in_flight + window`` after ``now``.
        """
        opens = now + self._lead + max(0.0, in_flight) + self._window + self._margin
        for bucket in range(self._max_concurrency):
            self._free_at[bucket] = max(self._free_at.get(bucket, opens), opens)
        # One possible uncounted IDENTIFY per bucket, for the next budget refresh.
        self._recent.extend([now + self._lead] * self._max_concurrency)

    def bucket_of(self, shard_id: int) -> int:
        """Return Discord's rate limit bucket of ``shard_id``."""
        return shard_id % self._max_concurrency

    def waiting(self) -> int:
        """Number of shards waiting for a grant."""
        return sum(len(w) for w in self._waiting.values())

    def _ahead(self, waiting: dict[int, float], shard_id: int, now: float) -> int:
        """How many lower shards wait in the bucket, after forgetting the ones that stopped asking."""
        # A shard that stopped asking (its host moved on, or a duplicated call put it here) must not hold up
        # the others for ever: a shard counts until LATE_ASK after it was told to ask again.
        for stale in [s for s, due in waiting.items() if now - due > LATE_ASK]:
            del waiting[stale]
        return sum(1 for other in waiting if other < shard_id)

    def _told(self, waiting: dict[int, float], shard_id: int, now: float, wait: float) -> float:
        """Tell ``shard_id`` to ask again after ``wait``, and note when it will."""
        waiting[shard_id] = now + wait
        return wait

    def request(
        self,
        shard_id: int,
        now: float,
        *,
        holder: tuple[str, int] | None = None,
        ask: int | None = None,
        dropped: int | None = None,
        early: bool = False,
    ) -> IdentifyGrant | float:
        """Ask to identify ``shard_id``.

        Parameters
        ----------
        shard_id
            The shard that wants to IDENTIFY.
        now
            The caller's monotonic clock.
        holder
            ``(host_id, lease epoch)`` of the asker, stored in the grant so that only
            that holder's `release` frees the bucket early.
        ask
            The asker's number for this ask (unique for the holder), stored in the grant.
        dropped
            The number of an earlier ask whose grant reached the asker too late and was never
            used: if that grant still holds the bucket for this holder, it is freed as if never
            made (the bucket is not closed for a window, and the session start is given back).
        early
            Whether the asker takes a grant with a ``not_before`` time up to ``lead`` ahead of
            its bucket's opening (and sleeps ``not_before - now`` from the answer's arrival).

        Returns
        -------
        IdentifyGrant | float
            A grant to identify (now, or from its ``not_before``), or how many seconds to wait
            before asking again.
            With the daily budget used up this is the wait until it resets (or a short
            poll once the reset is due, until the caller refreshes it with `set_budget`).

        Raises
        ------
        IdentifyBudgetExhaustedError
            When the daily budget has no identify left and no reset time is known.
        """
        self.expire(now)
        bucket = self.bucket_of(shard_id)
        held = self._held.get(bucket)
        if held is not None and held.shard_id == shard_id:
            if dropped is not None and holder is not None and held.holder == holder and held.ask == dropped:
                # Its holder says this very grant came too late and no IDENTIFY was sent under it. Only the holder
                # can know, and only for an ask it numbered: a duplicate or a retry of the granted ask itself
                # names an older ask (or none), so it takes the conservative path below.
                del self._held[bucket]
                self._remaining += 1
            else:
                # The same shard asks again: its previous attempt failed before READY, or this call is a duplicate
                # or a retry and the grant may still be on its way: count it as sent at the latest moment it can be.
                self.release(shard_id, now, identified_at=max(now, held.opens + self._grant_use_limit))
        waiting = self._waiting.setdefault(bucket, {})
        if self._remaining <= 0:
            waiting.pop(shard_id, None)
            if self._reset_at is None:
                msg = (
                    "Discord's daily identify budget (session_start_limit) is used up; no shard can start until it "
                    "resets. Check session_start_limit.reset_after from GET /gateway/bot."
                )
                raise IdentifyBudgetExhaustedError(msg)
            # Wait for the reset instead of failing for good; past it, poll until the caller refreshes.
            return max(self._reset_at - now, _POLL)
        waiting[shard_id] = now
        ahead = self._ahead(waiting, shard_id, now)
        # The lower bound of this shard's turn: each shard ahead of it but the next holds the bucket for at least
        # a whole window after its grant (the next may be granted as soon as the bucket opens).
        later = min((ahead - 1) * self.window, MAX_WAIT) if ahead > 1 else 0.0
        lead = self._lead if early else 0.0
        if bucket in self._held:
            held = self._held[bucket]
            # The bucket opens a window after the held grant's IDENTIFY left, and it cannot leave before the grant's
            # opening: come back then (an early asker half its lead before), when READY is most likely in and the
            # opening known. Past that time (READY is slow), ask again a window later, as a bucket held until
            # grant_timeout must not be polled for.
            soonest = held.opens + self.window - lead / 2 - now
            wait = soonest if soonest > 0.05 else min(held.granted_at + self._grant_timeout - now, self.window)
            return self._told(waiting, shard_id, now, max(0.05, later, wait))
        free_at = self._free_at.get(bucket, float("-inf"))
        if now < free_at and not (lead and not ahead and free_at - now <= lead):
            # An early asker comes back half the lead before the opening, so that a late host loop still asks
            # before it and gets a not-before grant; the ask's round trip then leaves the bucket's path.
            return self._told(waiting, shard_id, now, max(free_at - now - lead / 2, later))
        if ahead:
            return self._told(waiting, shard_id, now, max(0.05, later))
        del waiting[shard_id]
        not_before = free_at if now < free_at else None
        grant = IdentifyGrant(
            shard_id=shard_id, bucket=bucket, granted_at=now, holder=holder, ask=ask, not_before=not_before
        )
        self._held[bucket] = grant
        self._remaining -= 1
        self._recent.append(grant.opens)
        self._prune(now)
        return grant

    def cancel(self, shard_id: int) -> None:
        """Stop waiting for ``shard_id`` (its host gave up or died)."""
        self._waiting.get(self.bucket_of(shard_id), {}).pop(shard_id, None)

    def release(
        self,
        shard_id: int,
        now: float,
        *,
        identified_at: float | None = None,
        holder: tuple[str, int] | None = None,
        ask: int | None = None,
    ) -> bool:
        """Free ``shard_id``'s bucket once its IDENTIFY was answered (READY) or failed.

        ``identified_at`` is when the IDENTIFY was sent, on the *caller's* clock (a host's
        clock is not comparable); without it the release time is used, which is never
        earlier and so always safe (a holder releases only after its IDENTIFY was answered or
        failed, so after it left, whatever the grant's ``not_before``). When
        ``holder`` is given and is not the grant's holder, nothing happens: a late
        ``identify_done`` from a host that lost the lease cannot free the bucket early.
        When ``ask`` is given (the number of the ask whose grant the IDENTIFY used) and the held
        grant answered another ask, nothing happens either: a delayed or duplicated ``identify_done``
        of the same holder's *previous* grant of this shard (a re-IDENTIFY on the same lease) would
        otherwise free the new grant before its IDENTIFY left, and the bucket would open a window
        after the stale message instead of after the IDENTIFY (simulator seed 38823: 4.73 s apart).

        Returns
        -------
        bool
            Whether a grant was released.
        """
        bucket = self.bucket_of(shard_id)
        held = self._held.get(bucket)
        if held is None or held.shard_id != shard_id:
            return False
        if holder is not None and held.holder != holder:
            return False
        if ask is not None and held.ask is not None and held.ask != ask:
            return False
        del self._held[bucket]
        # Never before the grant's opening: the host cannot send earlier, whatever age it reports.
        sent = now if identified_at is None else max(held.opens, identified_at)
        self._free_at[bucket] = max(self._free_at.get(bucket, float("-inf")), sent + self._window + self._margin)
        return True

    def expire(self, now: float) -> None:
        """Treat grants older than ``grant_timeout`` as spent now.

        Safe for a grant made ahead of its opening too: its IDENTIFY leaves by
        ``not_before + grant_use_limit``, at most ``lead + grant_use_limit <= grant_timeout``
        after the grant.
        """
        for grant in [g for g in self._held.values() if now - g.granted_at > self._grant_timeout]:
            self.release(grant.shard_id, now)

    def eta(self, pending: int) -> float:
        """Seconds the schedule needs to identify ``pending`` more shards (spread evenly over buckets)."""
        if pending <= 0:
            return 0.0
        rounds = -(-pending // self._max_concurrency)
        return (rounds - 1) * (self._window + self._margin)

    def _prune(self, now: float) -> None:
        # Grants older than twice the timeout cannot matter to any refresh asked after now - timeout.
        horizon = now - 2 * self._grant_timeout
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
