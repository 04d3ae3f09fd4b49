"""The cluster-wide IDENTIFY queue: Discord's identify rate limit as pure logic.

Discord allows one IDENTIFY per bucket (``shard_id % max_concurrency``) per 5
second window, and a daily number of session starts. This module decides who
may identify when; it does no I/O and takes the clock as an argument, so it is
tested exhaustively without Ray or sockets.
"""

from __future__ import annotations

import dataclasses

__all__ = ["IdentifyBudgetExhaustedError", "IdentifyGrant", "IdentifyScheduler"]


class IdentifyBudgetExhaustedError(RuntimeError):
    """The daily ``session_start_limit`` has no identifies left."""


@dataclasses.dataclass(frozen=True, slots=True)
class IdentifyGrant:
    """Permission for one shard to send one IDENTIFY now."""

    shard_id: int
    bucket: int
    granted_at: float


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
    """

    __slots__ = ("_free_at", "_grant_timeout", "_held", "_margin", "_max_concurrency", "_remaining", "_waiting",
                 "_window")

    def __init__(
        self,
        max_concurrency: int,
        *,
        remaining: int,
        window: float = 5.0,
        margin: float = 0.1,
        grant_timeout: float = 30.0,
    ) -> None:
        if max_concurrency < 1:
            msg = f"max_concurrency must be at least 1, not {max_concurrency}"
            raise ValueError(msg)
        self._max_concurrency = max_concurrency
        self._remaining = remaining
        self._window = window
        self._margin = margin
        self._grant_timeout = grant_timeout
        self._free_at: dict[int, float] = {}
        self._held: dict[int, IdentifyGrant] = {}
        self._waiting: dict[int, set[int]] = {}

    @property
    def max_concurrency(self) -> int:
        """Number of buckets."""
        return self._max_concurrency

    @property
    def remaining(self) -> int:
        """Identifies left in the daily budget."""
        return self._remaining

    @property
    def window(self) -> float:
        """Seconds between two IDENTIFYs of one bucket, margin included."""
        return self._window + self._margin

    def set_remaining(self, remaining: int) -> None:
        """Replace the daily budget (after Discord's reset, or from a fresh ``/gateway/bot``)."""
        self._remaining = remaining

    def bucket_of(self, shard_id: int) -> int:
        """Return Discord's rate limit bucket of ``shard_id``."""
        return shard_id % self._max_concurrency

    def waiting(self) -> int:
        """Number of shards waiting for a grant."""
        return sum(len(w) for w in self._waiting.values())

    def request(self, shard_id: int, now: float) -> IdentifyGrant | float:
        """Ask to identify ``shard_id``.

        Returns
        -------
        IdentifyGrant | float
            A grant to identify now, or how many seconds to wait before asking again.

        Raises
        ------
        IdentifyBudgetExhaustedError
            When the daily budget has no identify left.
        """
        self.expire(now)
        bucket = self.bucket_of(shard_id)
        held = self._held.get(bucket)
        if held is not None and held.shard_id == shard_id:
            # The same shard asks again: its previous attempt failed before READY.
            self.release(shard_id, now)
        waiting = self._waiting.setdefault(bucket, set())
        waiting.add(shard_id)
        if self._remaining <= 0:
            waiting.discard(shard_id)
            msg = (
                "Discord's daily identify budget (session_start_limit) is used up; no shard can start until it "
                "resets. Check session_start_limit.reset_after from GET /gateway/bot."
            )
            raise IdentifyBudgetExhaustedError(msg)
        if bucket in self._held:
            return max(0.05, self._held[bucket].granted_at + self._grant_timeout - now)
        free_at = self._free_at.get(bucket, 0.0)
        if now < free_at:
            return free_at - now
        if shard_id != min(waiting):
            return 0.05
        waiting.discard(shard_id)
        grant = IdentifyGrant(shard_id=shard_id, bucket=bucket, granted_at=now)
        self._held[bucket] = grant
        self._remaining -= 1
        return grant

    def cancel(self, shard_id: int) -> None:
        """Stop waiting for ``shard_id`` (its host gave up or died)."""
        self._waiting.get(self.bucket_of(shard_id), set()).discard(shard_id)

    def release(self, shard_id: int, now: float, *, identified_at: float | None = None) -> None:
        """Free ``shard_id``'s bucket once its IDENTIFY was answered (READY) or failed.

        ``identified_at`` is when the IDENTIFY was sent; without it the release time is
        used, which is never earlier and so always safe.
        """
        bucket = self.bucket_of(shard_id)
        held = self._held.get(bucket)
        if held is None or held.shard_id != shard_id:
            return
        del self._held[bucket]
        sent = now if identified_at is None else max(held.granted_at, min(identified_at, now))
        self._free_at[bucket] = max(self._free_at.get(bucket, 0.0), sent + self._window + self._margin)

    def expire(self, now: float) -> None:
        """Treat grants older than ``grant_timeout`` as spent now."""
        for grant in [g for g in self._held.values() if now - g.granted_at > self._grant_timeout]:
            self.release(grant.shard_id, now)

    def eta(self, pending: int) -> float:
        """Seconds the schedule needs to identify ``pending`` more shards (spread evenly over buckets)."""
        if pending <= 0:
            return 0.0
        rounds = -(-pending // self._max_concurrency)
        return (rounds - 1) * (self._window + self._margin)
