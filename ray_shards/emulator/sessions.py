"""Gateway sessions: sequence numbers, replay buffers, resumability, concurrency counts."""

from __future__ import annotations

import collections
import itertools
import secrets
import time
import typing

from ray_shards.emulator.protocol import dispatch_frame

if typing.TYPE_CHECKING:
    from ray_shards.emulator.connection import Connection

__all__ = ["Session", "SessionRegistry"]


class Session:
    """One Discord gateway session (survives its connections until it ends or expires).

    Parameters
    ----------
    shard_id, shard_count
        The shard the session was identified for.
    bot_id
        The bot user of the identifying token.
    intents, large_threshold, compress
        From IDENTIFY.
    buffer_size
        Dispatches kept for replay.
    """

    __slots__ = (
        "_buffer",
        "bot_id",
        "connection",
        "created_at",
        "disconnected_at",
        "ended",
        "intents",
        "large_threshold",
        "seq",
        "session_id",
        "shard_count",
        "shard_id",
    )

    def __init__(
        self,
        *,
        shard_id: int,
        shard_count: int,
        bot_id: int,
        intents: int,
        large_threshold: int,
        buffer_size: int,
    ) -> None:
        self.session_id = secrets.token_hex(16)
        self.shard_id = shard_id
        self.shard_count = shard_count
        self.bot_id = bot_id
        self.intents = intents
        self.large_threshold = large_threshold
        self.seq = 0
        self._buffer: collections.deque[tuple[int, str]] = collections.deque(maxlen=buffer_size)
        self.connection: Connection | None = None
        self.created_at = time.time()
        self.disconnected_at: float | None = None
        self.ended = False

    def __repr__(self) -> str:
        return f"Session({self.session_id}, shard={self.shard_id}/{self.shard_count}, seq={self.seq})"

    def dispatch(self, event_name: str, data_json: str) -> int:
        """Append a dispatch to the session and send it to the live connection, if any.

        Parameters
        ----------
        event_name
            The event (``t``).
        data_json
            The serialized ``d`` object.

        Returns
        -------
        int
            The dispatch's sequence number.
        """
        self.seq += 1
        frame = dispatch_frame(self.seq, event_name, data_json)
        self._buffer.append((self.seq, frame))
        if self.connection is not None:
            self.connection.send_frame(frame)
        return self.seq

    def frames_after(self, seq: int) -> list[str] | None:
        """Return the buffered dispatch frames with a sequence number above ``seq``.

        Parameters
        ----------
        seq
            The last sequence number the client processed.

        Returns
        -------
        list[str] | None
            The frames in order, or `None` when some were already dropped from the buffer.
        """
        if seq >= self.seq:
            return []
        oldest = self._buffer[0][0] if self._buffer else self.seq + 1
        if seq + 1 < oldest:
            return None
        return [frame for _, frame in itertools.islice(self._buffer, seq + 1 - oldest, None)]

    def is_resumable(self, now: float, timeout_s: float) -> bool:
        """Return whether a RESUME (or a new dispatch) may still target the session."""
        if self.ended:
            return False
        if self.connection is not None or self.disconnected_at is None:
            return True
        return now - self.disconnected_at <= timeout_s

    def describe(self, now: float, timeout_s: float) -> dict[str, typing.Any]:
        """Return a JSON summary of the session (``now`` is a `time.monotonic` value)."""
        return {
            "session_id": self.session_id,
            "shard_id": self.shard_id,
            "shard_count": self.shard_count,
            "seq": self.seq,
            "connected": self.connection is not None,
            "resumable": self.is_resumable(now, timeout_s),
            "created_at": self.created_at,
            "disconnected_for_s": None if self.disconnected_at is None else now - self.disconnected_at,
        }


class SessionRegistry:
    """All sessions, indexed by id and by (shard_count, shard_id), plus connection counts.

    Parameters
    ----------
    timeout_s
        How long a disconnected session stays resumable.
    buffer_size
        Replay buffer length of each session.
    """

    __slots__ = ("_by_id", "_connected", "_groups", "_max", "buffer_size", "timeout_s")

    def __init__(self, *, timeout_s: float, buffer_size: int) -> None:
        self.timeout_s = timeout_s
        self.buffer_size = buffer_size
        self._by_id: dict[str, Session] = {}
        self._groups: dict[int, dict[int, set[Session]]] = {}
        self._connected: dict[tuple[int, int], int] = {}
        self._max: dict[tuple[int, int], int] = {}

    # -- sessions -----------------------------------------------------------------------------

    def create(self, *, shard_id: int, shard_count: int, bot_id: int, intents: int, large_threshold: int) -> Session:
        """Start a new session."""
        session = Session(
            shard_id=shard_id,
            shard_count=shard_count,
            bot_id=bot_id,
            intents=intents,
            large_threshold=large_threshold,
            buffer_size=self.buffer_size,
        )
        self._by_id[session.session_id] = session
        self._groups.setdefault(shard_count, {}).setdefault(shard_id, set()).add(session)
        return session

    def get(self, session_id: object) -> Session | None:
        """Return the resumable session with that id (expired ones are ended first)."""
        if not isinstance(session_id, str):
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if not session.is_resumable(time.monotonic(), self.timeout_s):
            self.end(session)
            return None
        return session

    def end(self, session: Session) -> None:
        """End a session: it can no longer be resumed nor receive dispatches."""
        session.ended = True
        self._by_id.pop(session.session_id, None)
        group = self._groups.get(session.shard_count)
        if group is not None:
            members = group.get(session.shard_id)
            if members is not None:
                members.discard(session)
                if not members:
                    del group[session.shard_id]
            if not group:
                del self._groups[session.shard_count]

    def expire(self) -> int:
        """End every disconnected session older than the timeout; return how many."""
        now = time.monotonic()
        stale = [s for s in self._by_id.values() if not s.is_resumable(now, self.timeout_s)]
        for session in stale:
            self.end(session)
        return len(stale)

    def all(self) -> list[Session]:
        """Return every live (not ended) session."""
        return list(self._by_id.values())

    def for_shard(self, shard_id: int) -> list[Session]:
        """Return the resumable sessions of shard ``shard_id`` under any shard count."""
        now = time.monotonic()
        result: list[Session] = []
        for group in self._groups.values():
            result.extend(s for s in group.get(shard_id, ()) if s.is_resumable(now, self.timeout_s))
        return result

    def for_guild(self, gid: int) -> list[Session]:
        """Return the resumable sessions, of any shard count, that cover guild ``gid``."""
        now = time.monotonic()
        timeout = self.timeout_s
        shard_key = gid >> 22
        result: list[Session] = []
        for shard_count, group in self._groups.items():
            members = group.get(shard_key % shard_count)
            if members:
                result.extend(s for s in members if s.is_resumable(now, timeout))
        return result

    # -- connection counts --------------------------------------------------------------------

    def connection_opened(self, shard_id: int, shard_count: int) -> None:
        """Count an authenticated connection (before any old one is closed)."""
        key = (shard_id, shard_count)
        value = self._connected.get(key, 0) + 1
        self._connected[key] = value
        if value > self._max.get(key, 0):
            self._max[key] = value

    def connection_closed(self, shard_id: int, shard_count: int) -> None:
        """Uncount an authenticated connection."""
        key = (shard_id, shard_count)
        self._connected[key] = max(0, self._connected.get(key, 0) - 1)

    def connected(self) -> dict[int, int]:
        """Return shard id -> currently connected authenticated connections (all shard counts)."""
        result: dict[int, int] = {}
        for (shard_id, _), value in self._connected.items():
            result[shard_id] = result.get(shard_id, 0) + value
        return result

    def max_concurrent(self) -> dict[int, int]:
        """Return shard id -> most simultaneous connections ever seen under one shard count."""
        result: dict[int, int] = {}
        for (shard_id, _), value in self._max.items():
            result[shard_id] = max(result.get(shard_id, 0), value)
        return result

    def reset_max(self) -> None:
        """Restart the maxima from the current counts."""
        self._max = {key: value for key, value in self._connected.items() if value}
