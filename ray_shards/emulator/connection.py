"""One gateway websocket connection: ordered outbound queue, compression, send limit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import select
import typing

from aiohttp import web

from ray_shards.emulator.compression import make_encoder
from ray_shards.emulator.protocol import dumps

if typing.TYPE_CHECKING:
    from ray_shards.emulator.sessions import Session

__all__ = ["MAX_QUEUED_FRAMES", "SEND_LIMIT", "SEND_LIMIT_WINDOW_S", "Connection"]

_LOGGER = logging.getLogger("ray_shards.emulator")

SEND_LIMIT = 120
"""Payloads a client may send per connection per `SEND_LIMIT_WINDOW_S`."""
SEND_LIMIT_WINDOW_S = 60.0
_PEER_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR
MAX_QUEUED_FRAMES = 100_000
"""Outbound frames queued for one connection before it is dropped as too slow."""


class _CloseRequest:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Connection:
    """Server side of one gateway websocket.

    Frames are queued and written in order by `run_writer`; a server-initiated
    close is queued too, so it happens after every frame queued before it.

    Parameters
    ----------
    ws
        The prepared aiohttp websocket.
    transport
        The underlying transport (aborted by `abort`).
    compression
        ``"zlib-stream"`` / ``"zstd-stream"`` (BINARY frames) or `None` (TEXT frames).
    path
        The URL path the client connected to.
    conn_id
        A number identifying the connection in logs.
    """

    __slots__ = (
        "_encoder",
        "_queue",
        "_received_times",
        "authenticated",
        "close_code",
        "closed_by",
        "closing",
        "compression",
        "conn_id",
        "path",
        "session",
        "shard_count",
        "shard_id",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        transport: asyncio.BaseTransport | None,
        compression: str | None,
        path: str,
        conn_id: int,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.compression = compression
        self.path = path
        self.conn_id = conn_id
        self._encoder = make_encoder(compression)
        self._queue: asyncio.Queue[str | _CloseRequest] = asyncio.Queue()
        self._received_times: collections.deque[float] = collections.deque()
        self.shard_id: int | None = None
        self.shard_count: int | None = None
        self.session: Session | None = None
        self.authenticated = False
        self.closing = False
        self.close_code: int | None = None
        self.closed_by: str | None = None

    def __repr__(self) -> str:
        return f"Connection(#{self.conn_id}, shard={self.shard_id}/{self.shard_count}, path={self.path})"

    def peer_has_closed(self) -> bool:
        """Whether the client's end is already gone at the socket level, processed here or not.

        A busy emulator can handle a new connection's RESUME before it has read the EOF of a
        client that died earlier (both are ready in one loop iteration, in no set order). Asking
        the kernel -- FIN or RST received (``POLLRDHUP``/``POLLHUP``/``POLLERR``), or the
        transport already closing -- tells a dead client from a live second session, which is
        what the split-brain count must measure. Pending unread data does not hide a FIN here,
        unlike a peek.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        sock = transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), _PEER_GONE | select.POLLIN)
        return any(events & _PEER_GONE for _, events in poller.poll(0))

    # -- outbound -------------------------------------------------------------------------------

    def send_frame(self, frame: str) -> None:
        """Queue a serialized payload (dropped once the connection is closing).

        A client that stops reading is dropped once `MAX_QUEUED_FRAMES` pile up;
        its session stays resumable.
        """
        if self.closing:
            return
        if self._queue.qsize() >= MAX_QUEUED_FRAMES:
            _LOGGER.warning("%r is not reading its frames; dropping the connection", self)
            self.abort()
            return
        self._queue.put_nowait(frame)

    def send_json(self, payload: object) -> None:
        """Serialize and queue a payload."""
        self.send_frame(dumps(payload))

    def close(self, code: int, reason: str = "") -> bool:
        """Queue a server-initiated close after everything already queued.

        Parameters
        ----------
        code
            The websocket close code.
        reason
            The close reason.

        Returns
        -------
        bool
            False when the connection was already closing.
        """
        if self.closing:
            return False
        self.closing = True
        self.close_code = code
        self.closed_by = "server"
        self._queue.put_nowait(_CloseRequest(code, reason))
        return True

    def abort(self, *, force: bool = False) -> bool:
        """Drop the TCP connection at once, without a close frame.

        Parameters
        ----------
        force
            Abort even when a close is already under way.

        Returns
        -------
        bool
            False when the connection was already closing (and ``force`` is false).
        """
        if self.closing and not force:
            return False
        if not self.closing:
            self.close_code = 1006
            self.closed_by = "server"
        self.closing = True
        if self.transport is not None:
            if isinstance(self.transport, asyncio.WriteTransport):
                self.transport.abort()
            else:
                self.transport.close()
        return True

    async def run_writer(self) -> None:
        """Write queued frames until a close request or a send failure."""
        ws = self.ws
        encoder = self._encoder
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _CloseRequest):
                    with contextlib.suppress(Exception):
                        await ws.close(code=item.code, message=item.reason.encode())
                    return
                if encoder is not None:
                    await ws.send_bytes(encoder.encode(item))
                else:
                    await ws.send_str(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead socket: the reader side will notice and clean up
            _LOGGER.debug("writer of %r stopped: %s", self, type(exc).__name__)

    # -- inbound --------------------------------------------------------------------------------

    def note_received(self, now: float) -> bool:
        """Count a client payload against the send limit.

        Parameters
        ----------
        now
            `time.monotonic` value.

        Returns
        -------
        bool
            False when the payload exceeds 120 per 60 s.
        """
        times = self._received_times
        times.append(now)
        horizon = now - SEND_LIMIT_WINDOW_S
        while times and times[0] <= horizon:
            times.popleft()
        return len(times) <= SEND_LIMIT
