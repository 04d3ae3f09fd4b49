"""The identify rate limit and the daily session start budget (pure logic)."""

from __future__ import annotations

import enum
import time

__all__ = ["IdentifyLimiter", "IdentifyVerdict"]


class IdentifyVerdict(enum.Enum):
    """Outcome of an IDENTIFY that passed the token, shard and intent checks."""

    ACCEPTED = "accepted"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXHAUSTED = "budget_exhausted"


class IdentifyLimiter:
    """Discord's ``session_start_limit`` and per-bucket identify window.

    Parameters
    ----------
    total, remaining, reset_after_ms, max_concurrency
        Initial ``session_start_limit``; ``remaining`` refills to ``total``
        every ``reset_after_ms``.
    window_s
        At most one accepted IDENTIFY per bucket (``shard_id % max_concurrency``)
        per window, measured from the previous accepted one.
    enforce
        When false the window is not checked (the budget still is).
    """

    __slots__ = ("_last", "_reset_at", "enforce", "max_concurrency", "remaining", "reset_after_ms", "total", "window_s")

    def __init__(
        self,
        *,
        total: int,
        remaining: int,
        reset_after_ms: int,
        max_concurrency: int,
        window_s: float,
        enforce: bool,
    ) -> None:
        self.total = total
        self.remaining = remaining
        self.reset_after_ms = reset_after_ms
        self.max_concurrency = max_concurrency
        self.window_s = window_s
        self.enforce = enforce
        self._reset_at = time.monotonic() + reset_after_ms / 1000.0
        self._last: dict[int, float] = {}

    def _refill(self, now: float) -> None:
        if now >= self._reset_at:
            self.remaining = self.total
            self._reset_at = now + self.reset_after_ms / 1000.0

    def bucket(self, shard_id: int) -> int:
        """Return the identify bucket of a shard."""
        return shard_id % self.max_concurrency

    def check(self, shard_id: int, now: float | None = None) -> IdentifyVerdict:
        """Decide an IDENTIFY and, when accepted, spend one session start.

        Parameters
        ----------
        shard_id
            The identifying shard.
        now
            `time.monotonic` value (defaults to the current one).

        Returns
        -------
        IdentifyVerdict
            What to do with the IDENTIFY.
        """
        now = time.monotonic() if now is None else now
        self._refill(now)
        bucket = self.bucket(shard_id)
        last = self._last.get(bucket)
        if self.enforce and last is not None and now - last < self.window_s:
            return IdentifyVerdict.RATE_LIMITED
        if self.remaining <= 0:
            return IdentifyVerdict.BUDGET_EXHAUSTED
        self.remaining -= 1
        self._last[bucket] = now
        return IdentifyVerdict.ACCEPTED

    def session_start_limit(self) -> dict[str, int]:
        """Return the ``session_start_limit`` object of ``GET /gateway/bot``."""
        now = time.monotonic()
        self._refill(now)
        return {
            "total": self.total,
            "remaining": self.remaining,
            "reset_after": max(0, int((self._reset_at - now) * 1000)),
            "max_concurrency": self.max_concurrency,
        }

    def set_limits(
        self,
        *,
        remaining: int | None = None,
        max_concurrency: int | None = None,
        total: int | None = None,
    ) -> None:
        """Change the budget or concurrency at run time."""
        if total is not None:
            if total < 0:
                raise ValueError("total must be >= 0")
            self.total = total
        if remaining is not None:
            if remaining < 0:
                raise ValueError("remaining must be >= 0")
            self.remaining = remaining
        if max_concurrency is not None:
            if max_concurrency < 1:
                raise ValueError("max_concurrency must be >= 1")
            if max_concurrency != self.max_concurrency:
                self.max_concurrency = max_concurrency
                self._last.clear()
