"""The capabilities the Orchestrator hands to token holders: bounded, idle-expiring, revocable.

Pure: the clock is the caller's (monotonic) ``now`` and the capability factory is injected, so
tests decide both. A caller proves the bot token once (`Orchestrator.authenticate`) and then uses
the capability it got; every Client start and CLI call makes one, so the set is bounded (least
recently used out first) and forgets any left idle for ``idle_ttl``.
"""

from __future__ import annotations

import collections
import typing

from ray_shards.auth import new_capability

__all__ = ["Capabilities"]


class Capabilities:
    """Known capabilities by last use, oldest first."""

    def __init__(
        self, *, limit: int, idle_ttl: float, factory: typing.Callable[[], str] = new_capability
    ) -> None:
        self._limit = limit
        self._idle_ttl = idle_ttl
        self._factory = factory
        self._last_use: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._last_use)

    def issue(self, now: float) -> str:
        """A new capability; drops the least recently used ones beyond ``limit``."""
        capability = self._factory()
        self._last_use[capability] = now
        while len(self._last_use) > self._limit:
            self._last_use.popitem(last=False)
        return capability

    def use(self, capability: object, now: float) -> bool:
        """Whether ``capability`` is known (and not idle past the TTL); a known one counts as used now."""
        if not isinstance(capability, str) or capability not in self._last_use:
            return False
        if now - self._last_use[capability] > self._idle_ttl:
            # Expired, though the periodic sweep has not reached it yet.
            del self._last_use[capability]
            return False
        self._last_use[capability] = now
        self._last_use.move_to_end(capability)
        return True

    def revoke(self, capability: str) -> bool:
        """Forget ``capability`` (its holder is done with it). Returns whether it was known."""
        return self._last_use.pop(capability, None) is not None

    def expire(self, now: float) -> None:
        """Forget every capability idle for longer than ``idle_ttl`` (oldest first, so this stops early)."""
        while self._last_use:
            capability, used = next(iter(self._last_use.items()))
            if now - used <= self._idle_ttl:
                break
            del self._last_use[capability]
