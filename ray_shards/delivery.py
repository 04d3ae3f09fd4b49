"""Event delivery that can be held, muted and de-duplicated: what live resharding switches with.

During a reshard two complete sets of sessions run side by side and Discord
sends every event to both. The new set runs in *shadow* mode (its events are
buffered, not delivered) while the old set records what it delivered. At the
switch the old set is muted, and the new set delivers its buffer minus what the
old set already delivered, then goes live: each event is handled once.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import logging
import time
import typing

from hikari.impl import event_manager as event_manager_impl
from typing_extensions import override

if typing.TYPE_CHECKING:
    from hikari.api import shard as shard_api

__all__ = ["DeliveryMode", "GatedEventManager", "event_identity"]

_LOGGER = logging.getLogger("ray_shards.delivery")

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

    __slots__ = ("_buffer", "_delivered", "_delivered_order", "_mode", "_recording", "_skip", "_skip_until")

    def __init__(self, *args: typing.Any, shadow: bool = False, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        self._mode = DeliveryMode.SHADOW if shadow else DeliveryMode.LIVE
        self._buffer: collections.deque[tuple[str, shard_api.GatewayShard, typing.Any]] = collections.deque(
            maxlen=_MAX_BUFFER
        )
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

    @override
    def consume_raw_event(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any) -> None:
        if event_name in _ALWAYS or (self._mode is DeliveryMode.LIVE and not self._recording and not self._skip):
            super().consume_raw_event(event_name, shard, payload)
            return
        if self._mode is DeliveryMode.SHADOW:
            self._buffer.append((event_name, shard, payload))
            return
        if self._mode is DeliveryMode.MUTED:
            return
        self._deliver(event_name, shard, payload)

    def _deliver(self, event_name: str, shard: shard_api.GatewayShard, payload: typing.Any) -> None:
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
        super().consume_raw_event(event_name, shard, payload)

    def start_recording(self) -> None:
        """Remember the identity of every event delivered from now on."""
        self._recording = True

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
            name, shard, payload = self._buffer.popleft()
            if event_identity(name, payload) in self._skip:
                continue
            self._deliver(name, shard, payload)
            delivered += 1
        _LOGGER.info("went live: %s buffered events delivered, %s skipped as already handled", delivered,
                     len(self._skip))
        return delivered
