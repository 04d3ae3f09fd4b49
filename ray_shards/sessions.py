"""Session hand-over: the only module that touches hikari's private shard attributes.

hikari does not expose a public way to seed a shard with an existing session
(``session_id``, ``seq``, ``resume_gateway_url``) or to observe it, nor a hook
that runs before an IDENTIFY is sent. ray_shards needs all three to move a live
session between processes by RESUME and to schedule IDENTIFYs across a whole
cluster. Everything that depends on hikari internals lives here, and
``tests/test_sessions.py`` fails loudly when hikari changes them.
"""

from __future__ import annotations

import asyncio
import logging
import typing

import hikari
from hikari.impl import shard as shard_impl

from ray_shards.models import SessionState

__all__ = [
    "REQUIRED_PRIVATE_ATTRIBUTES",
    "GateHooks",
    "ManagedShard",
    "check_hikari_compatibility",
    "detach",
    "position",
    "seed",
    "set_event_manager_intents",
    "snapshot",
]

_LOGGER = logging.getLogger("ray_shards.sessions")

_IDENTIFY_OP: typing.Final[int] = 2
_RESUME_OP: typing.Final[int] = 6
# hikari closes with 3000 when it means to resume; Discord keeps the session alive for it.
_RESUMABLE_CLOSE_CODE: typing.Final[int] = 3000
_HAND_OVER_REASON: typing.Final[bytes] = b"ray_shards hand-over"

REQUIRED_PRIVATE_ATTRIBUTES: typing.Final[tuple[str, ...]] = (
    "_session_id",
    "_seq",
    "_resume_gateway_url",
    "_user_id",
    "_ws",
    "_send_json",
    "_serialize_and_store_presence_payload",
)


def check_hikari_compatibility() -> None:
    """Raise `RuntimeError` when this hikari's shard lacks what session hand-over needs."""
    slots: set[str] = set()
    for cls in shard_impl.GatewayShardImpl.__mro__:
        slots.update(getattr(cls, "__slots__", ()))
        slots.update(vars(cls))
    missing = [name for name in REQUIRED_PRIVATE_ATTRIBUTES if name not in slots]
    if missing:
        msg = (
            f"hikari {hikari.__version__} changed GatewayShardImpl (missing {', '.join(missing)}); "
            "ray_shards cannot hand sessions over with it. Install a hikari version within ray_shards' pinned range."
        )
        raise RuntimeError(msg)


class GateHooks(typing.Protocol):
    """What a `ManagedShard` asks its owner before it authenticates."""

    async def before_identify(self, shard_id: int) -> dict[str, typing.Any] | None:
        """Wait for an identify grant; return ``update_presence`` keyword arguments to identify with, or None."""

    async def before_resume(self, shard_id: int) -> None:
        """Raise if this process no longer holds the lease for ``shard_id``."""

    def after_identify(self, shard_id: int) -> None:
        """The IDENTIFY frame of ``shard_id`` was written to its socket (stamp its departure now)."""


class ManagedShard(shard_impl.GatewayShardImpl):
    """A hikari shard whose IDENTIFY and RESUME wait for the owner's permission.

    Every IDENTIFY (first start, and re-identify after a non-resumable op 9) first
    awaits an identify grant from the Orchestrator's cluster-wide queue, and every
    RESUME first checks that this process still holds the shard's lease.
    """

    __slots__ = ("_detaching", "_hooks")

    def __init__(self, *, hooks: GateHooks, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self._hooks = hooks
        self._detaching = False

    async def _send_json(self, data: typing.Any, *, priority: bool = False) -> None:
        op = data.get("op") if isinstance(data, dict) else None
        if op in (_IDENTIFY_OP, _RESUME_OP):
            if self._detaching:
                # Handing over: never authenticate again from this process. Wait to be cancelled.
                await asyncio.Event().wait()
            if op == _IDENTIFY_OP:
                presence = await self._hooks.before_identify(self.id)
                if presence is not None:
                    data["d"]["presence"] = self._serialize_and_store_presence_payload(**presence)
            else:
                await self._hooks.before_resume(self.id)
        await super()._send_json(data, priority=priority)
        if op == _IDENTIFY_OP:
            # Only now is the frame in the kernel: a stamp taken before the write (before hikari's send rate
            # limiter and the websocket's lock) can be seconds early on a busy loop (BENCHMARKS.md, F5).
            self._hooks.after_identify(self.id)


def snapshot(shard: hikari.api.GatewayShard) -> SessionState | None:
    """Return the resumable session of ``shard``, or None when it has none (or is not a hikari shard)."""
    if not isinstance(shard, shard_impl.GatewayShardImpl):
        return None
    session_id = shard._session_id
    seq = shard._seq
    url = shard._resume_gateway_url
    if session_id is None or seq is None or url is None:
        return None
    user_id = shard._user_id
    return SessionState(session_id=session_id, seq=seq, resume_gateway_url=url, user_id=int(user_id or 0))


def position(shard: hikari.api.GatewayShard) -> tuple[str | None, int | None]:
    """``(session_id, seq)`` of ``shard`` right now, without building a `SessionState` (once per event)."""
    if not isinstance(shard, shard_impl.GatewayShardImpl):
        return None, None
    return shard._session_id, shard._seq


def seed(shard: shard_impl.GatewayShardImpl, state: SessionState) -> None:
    """Make a not-yet-started ``shard`` RESUME ``state`` instead of identifying."""
    if shard.is_alive:
        msg = f"shard {shard.id} is running; seed it before start()"
        raise RuntimeError(msg)
    shard._session_id = state.session_id
    shard._seq = state.seq
    shard._resume_gateway_url = state.resume_gateway_url
    shard._user_id = hikari.Snowflake(state.user_id) if state.user_id else None


async def _send_close_frame_first(transport: typing.Any) -> None:
    """Put the resumable close frame on the wire before anything else can close the socket.

    aiohttp's ``close()`` called while hikari's poll loop waits in ``receive()`` does not send
    a frame: it only asks that loop to stop, and sends its own frame once the loop returns.
    When a dispatch was already queued, the loop returns that dispatch instead, calls
    ``receive()`` again, finds the socket closing and closes it itself with aiohttp's default
    code 1000 -- and Discord ends a session its client closed with 1000 or 1001. So under a
    busy stream a hand-over could end the very session it hands over, and the next owner
    had to IDENTIFY, losing every event its listeners had not finished. Writing the close
    frame through the socket's writer first makes 3000 the code the gateway sees, whoever
    closes the socket afterwards (a second close frame is ignored).
    """
    web_socket = getattr(transport, "_ws", None)
    writer = getattr(web_socket, "_writer", None)
    if web_socket is None or writer is None or web_socket.closed:
        return
    await asyncio.wait_for(writer.close(_RESUMABLE_CLOSE_CODE, _HAND_OVER_REASON), timeout=5.0)


async def detach(shard: hikari.api.GatewayShard) -> SessionState | None:
    """Stop ``shard`` without ending its Discord session, and return that session.

    ``shard.close()`` sends close code 1001, which ends the session. For a hand-over
    the connection is instead closed with 3000 (resumable) first, and the shard is
    forbidden to authenticate again before it is stopped.
    """
    if not isinstance(shard, shard_impl.GatewayShardImpl):
        if shard.is_alive:
            await shard.close()
        return None
    if isinstance(shard, ManagedShard):
        shard._detaching = True
    state = snapshot(shard)
    transport = shard._ws
    if transport is not None:
        try:
            await _send_close_frame_first(transport)
            await transport.send_close(code=_RESUMABLE_CLOSE_CODE, message=_HAND_OVER_REASON)
        except Exception:  # the socket may already be gone; the session survives either way
            _LOGGER.debug("shard %s: close frame for hand-over failed", shard.id, exc_info=True)
    if shard.is_alive:
        try:
            await shard.close()
        except Exception:
            _LOGGER.debug("shard %s: close after hand-over raised", shard.id, exc_info=True)
    # The last events may have arrived between the snapshot and the close.
    return snapshot(shard) or state


def set_event_manager_intents(event_manager: typing.Any, intents: hikari.Intents) -> None:
    """Give a hikari event manager built before the bot's intents were known the bot's real intents.

    A `ray_shards.Bot` built with ``intents=None`` learns them from the Orchestrator in
    ``start()``; hikari's event manager reads ``_intents`` for member chunking on
    GUILD_CREATE and for its missing-intent warnings, and has no public setter.
    """
    if "_intents" not in _slots_of(type(event_manager)):
        msg = f"hikari {hikari.__version__} changed EventManagerImpl (no _intents); cannot set the bot's intents"
        raise RuntimeError(msg)
    event_manager._intents = intents


def _slots_of(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(getattr(klass, "__slots__", ()))
    return names
