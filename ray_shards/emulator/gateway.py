"""The gateway: websocket handler, IDENTIFY/RESUME rules, opcodes and per-shard control."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
import typing

import aiohttp
from aiohttp import web

from ray_shards.emulator import payloads
from ray_shards.emulator.compression import supported_compressions
from ray_shards.emulator.config import DEFAULT_BOT_ID, EmulatorConfig, bot_id_from_token, token_matches
from ray_shards.emulator.connection import Connection
from ray_shards.emulator.limits import IdentifyLimiter, IdentifyVerdict
from ray_shards.emulator.protocol import ALL_INTENTS, CLIENT_OPS, PRIVILEGED_INTENTS, Close, Intent, Op, dumps
from ray_shards.emulator.recorder import Recorder, redact
from ray_shards.emulator.sessions import Session, SessionRegistry
from ray_shards.emulator.world import JSON, World

__all__ = ["Gateway"]

_LOGGER = logging.getLogger("ray_shards.emulator")
_TRACE = dumps({"_trace": ["ray-shards-emulator"]})
_CLIENT_GOING_AWAY = frozenset({1000, 1001})
_MAX_MESSAGE_SIZE = 1 << 20


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class Gateway:
    """Serves gateway websockets and applies Discord's session rules.

    Parameters
    ----------
    config
        The emulator configuration.
    world
        Guilds and members.
    limiter
        Identify rate limit and daily budget.
    recorder
        Where observations go.
    registry
        The sessions.
    """

    __slots__ = (
        "_housekeeping",
        "_next_conn_id",
        "config",
        "connections",
        "limiter",
        "recorder",
        "registry",
        "resume_url",
        "voice_endpoint",
        "world",
        "zombies",
    )

    def __init__(
        self,
        *,
        config: EmulatorConfig,
        world: World,
        limiter: IdentifyLimiter,
        recorder: Recorder,
        registry: SessionRegistry,
    ) -> None:
        self.config = config
        self.world = world
        self.limiter = limiter
        self.recorder = recorder
        self.registry = registry
        self.connections: set[Connection] = set()
        self.zombies: set[int] = set()
        self.resume_url = ""
        self.voice_endpoint = "voice.emulator.invalid:443"
        self._next_conn_id = 0
        self._housekeeping: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the task that expires stale sessions."""
        if self._housekeeping is None:
            self._housekeeping = asyncio.create_task(self._expire_loop(), name="emulator session expiry")

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            expired = self.registry.expire()
            if expired:
                _LOGGER.info("%d disconnected session(s) expired", expired)

    async def stop(self) -> None:
        """Stop housekeeping and close every connection with 1001."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        for conn in list(self.connections):
            conn.close(1001, "Emulator shutting down.")
        deadline = time.monotonic() + 3.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort(force=True)

    # -- websocket handler --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Accept a gateway websocket (both the gateway and the resume path)."""
        query = request.query
        compress = query.get("compress")
        if compress is not None and compress not in supported_compressions():
            return web.json_response({"message": f"Unsupported compression {compress!r}.", "code": 0}, status=400)
        if query.get("encoding", "json") != "json":
            return web.json_response({"message": "Only encoding=json is supported.", "code": 0}, status=400)
        ws = web.WebSocketResponse(compress=False, max_msg_size=_MAX_MESSAGE_SIZE, timeout=5.0, autoping=True)
        await ws.prepare(request)
        self._next_conn_id += 1
        conn = Connection(
            ws,
            transport=request.transport,
            compression=compress,
            path=request.path,
            conn_id=self._next_conn_id,
        )
        self.connections.add(conn)
        writer = asyncio.create_task(conn.run_writer(), name=f"emulator writer #{conn.conn_id}")
        client_code: int | None = None
        try:
            version = query.get("v")
            if version is not None and version != "10":
                conn.close(Close.INVALID_API_VERSION, Close.REASONS[Close.INVALID_API_VERSION])
            else:
                conn.send_json(
                    {
                        "op": Op.HELLO,
                        "d": {"heartbeat_interval": self.config.heartbeat_interval_ms},
                        "s": None,
                        "t": None,
                    }
                )
            client_code = await self._read_loop(conn)
        finally:
            self.connections.discard(conn)
            self._disconnected(conn, client_code)
            await self._finish_writer(conn, writer)
        return ws

    async def _read_loop(self, conn: Connection) -> int | None:
        """Process client frames; return the client's close code (None if it did not send one)."""
        idle_timeout = max(10.0, self.config.heartbeat_interval_ms / 1000.0 * 2 + 5.0)
        ws = conn.ws
        while True:
            try:
                msg = await ws.receive(timeout=idle_timeout)
            except TimeoutError:
                _LOGGER.warning("%r sent nothing for %.0f s; closing with 4009", conn, idle_timeout)
                conn.close(Close.SESSION_TIMED_OUT, "No heartbeat received.")
                return None
            except Exception as exc:
                _LOGGER.debug("%r: receive failed: %s", conn, type(exc).__name__)
                return None
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                if not conn.closing:
                    self._on_frame(conn, msg.data)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data) if isinstance(msg.data, int) else None
            else:
                return None

    async def _finish_writer(self, conn: Connection, writer: asyncio.Task[None]) -> None:
        if not writer.done():
            if conn.closed_by == "server" and conn.close_code != 1006:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(writer, timeout=7.0)
            else:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        if not conn.ws.closed:
            try:
                await asyncio.wait_for(conn.ws.close(), timeout=2.0)
            except Exception:
                conn.abort(force=True)

    def _disconnected(self, conn: Connection, client_code: int | None) -> None:
        by_server = conn.closed_by == "server"
        code = conn.close_code if by_server else (client_code if client_code is not None else 1006)
        if conn.authenticated:
            assert conn.shard_id is not None and conn.shard_count is not None
            self.registry.connection_closed(conn.shard_id, conn.shard_count)
            conn.authenticated = False
        by = "server" if by_server else "client"
        self.recorder.closes.append({"shard_id": conn.shard_id, "code": code, "by": by, "time": time.time()})
        session = conn.session
        conn.session = None
        if session is not None and session.connection is conn:
            session.connection = None
            session.disconnected_at = time.monotonic()
            if not by_server and client_code in _CLIENT_GOING_AWAY:
                self.registry.end(session)
                _LOGGER.info("shard %s closed with %s; session %s ended", session.shard_id, code, session.session_id)
            else:
                _LOGGER.info("shard %s disconnected (code %s); session stays resumable", session.shard_id, code)

    # -- inbound frames -----------------------------------------------------------------------

    def _on_frame(self, conn: Connection, raw: str | bytes) -> None:
        if not conn.note_received(time.monotonic()):
            self.recorder.send_limit_violations += 1
            _LOGGER.warning("shard %s exceeded the send limit; closing with 4008", conn.shard_id)
            conn.close(Close.RATE_LIMITED, Close.REASONS[Close.RATE_LIMITED])
            return
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            conn.close(Close.DECODE_ERROR, Close.REASONS[Close.DECODE_ERROR])
            return
        op = payload.get("op") if isinstance(payload, dict) else None
        if not isinstance(op, int) or isinstance(op, bool):
            conn.close(Close.DECODE_ERROR, Close.REASONS[Close.DECODE_ERROR])
            return
        if op not in CLIENT_OPS:
            conn.close(Close.UNKNOWN_OPCODE, Close.REASONS[Close.UNKNOWN_OPCODE])
            return
        data = payload.get("d")
        try:
            self._on_payload(conn, op, data)
        except Exception:
            _LOGGER.exception("error handling op %s from shard %s", op, conn.shard_id)
            conn.close(Close.UNKNOWN_ERROR, Close.REASONS[Close.UNKNOWN_ERROR])

    def _record(
        self, conn: Connection, op: int, data: object, shard: tuple[int | None, int | None] | None = None
    ) -> None:
        shard_id, shard_count = shard if shard is not None else (conn.shard_id, conn.shard_count)
        self.recorder.received.append(
            {"shard_id": shard_id, "shard_count": shard_count, "op": op, "d": redact(data), "time": time.time()}
        )

    def _on_payload(self, conn: Connection, op: int, data: object) -> None:
        if op == Op.HEARTBEAT:
            if conn.shard_id is None or conn.shard_id not in self.zombies:
                conn.send_json({"op": Op.HEARTBEAT_ACK, "d": None})
            return
        if op == Op.IDENTIFY:
            self._on_identify(conn, data)
            return
        if op == Op.RESUME:
            self._on_resume(conn, data)
            return
        self._record(conn, op, data)
        if not conn.authenticated or conn.session is None:
            conn.close(Close.NOT_AUTHENTICATED, Close.REASONS[Close.NOT_AUTHENTICATED])
            return
        if not isinstance(data, dict):
            conn.close(Close.DECODE_ERROR, Close.REASONS[Close.DECODE_ERROR])
            return
        if op == Op.VOICE_STATE_UPDATE:
            self._on_voice_state(conn.session, data)
        elif op == Op.REQUEST_GUILD_MEMBERS:
            self._on_request_members(conn.session, data)
        elif op == Op.REQUEST_CHANNEL_INFO:
            self._on_channel_info(conn.session, data)
        # op 3 (presence update) is only recorded.

    # -- IDENTIFY -----------------------------------------------------------------------------

    def _shard_of_identify(self, data: JSON) -> tuple[int, int] | None:
        raw = data.get("shard", [0, 1])
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            return None
        shard_id, shard_count = _as_int(raw[0]), _as_int(raw[1])
        if shard_id is None or shard_count is None:
            return None
        return shard_id, shard_count

    def _on_identify(self, conn: Connection, data: object) -> None:
        if not isinstance(data, dict):
            self._record(conn, Op.IDENTIFY, data)
            conn.close(Close.DECODE_ERROR, Close.REASONS[Close.DECODE_ERROR])
            return
        shard = self._shard_of_identify(data)
        self._record(conn, Op.IDENTIFY, data, shard if shard is not None else (None, None))
        if conn.authenticated:
            conn.close(Close.ALREADY_AUTHENTICATED, Close.REASONS[Close.ALREADY_AUTHENTICATED])
            return
        self.recorder.identify_attempts += 1
        if shard is not None:
            conn.shard_id, conn.shard_count = shard
        token = data.get("token")
        if not token_matches(token, self.config.accepted_tokens()):
            _LOGGER.warning("IDENTIFY with an invalid token (shard %s); closing with 4004", shard)
            conn.close(Close.AUTHENTICATION_FAILED, Close.REASONS[Close.AUTHENTICATION_FAILED])
            return
        assert isinstance(token, str)
        if shard is None or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
            _LOGGER.warning("IDENTIFY with invalid shard %s; closing with 4010", data.get("shard"))
            conn.close(Close.INVALID_SHARD, Close.REASONS[Close.INVALID_SHARD])
            return
        shard_id, shard_count = shard
        if math.ceil(self.world.guild_count / shard_count) > self.config.max_guilds_per_shard:
            _LOGGER.warning(
                "shard count %s too small for %s guilds; closing with 4011", shard_count, self.world.guild_count
            )
            conn.close(Close.SHARDING_REQUIRED, Close.REASONS[Close.SHARDING_REQUIRED])
            return
        intents = _as_int(data.get("intents"))
        if intents is None or intents < 0 or intents & ~ALL_INTENTS:
            conn.close(Close.INVALID_INTENTS, Close.REASONS[Close.INVALID_INTENTS])
            return
        if intents & PRIVILEGED_INTENTS and not self.config.allow_privileged_intents:
            conn.close(Close.DISALLOWED_INTENTS, Close.REASONS[Close.DISALLOWED_INTENTS])
            return
        verdict = self.limiter.check(shard_id)
        if verdict is IdentifyVerdict.RATE_LIMITED:
            self.recorder.rate_limit_violations += 1
            _LOGGER.warning(
                "IDENTIFY rate limit violated by shard %s/%s (bucket %s); answering op 9",
                shard_id,
                shard_count,
                self.limiter.bucket(shard_id),
            )
            conn.send_json({"op": Op.INVALID_SESSION, "d": False})
            return
        if verdict is IdentifyVerdict.BUDGET_EXHAUSTED:
            self.recorder.budget_exhausted += 1
            _LOGGER.warning("session start budget exhausted; IDENTIFY of shard %s answered with op 9", shard_id)
            conn.send_json({"op": Op.INVALID_SESSION, "d": False})
            return
        large_threshold = _as_int(data.get("large_threshold"))
        large_threshold = min(250, max(50, large_threshold if large_threshold is not None else 50))
        bot_id = bot_id_from_token(token) or DEFAULT_BOT_ID
        session = self.registry.create(
            shard_id=shard_id,
            shard_count=shard_count,
            bot_id=bot_id,
            intents=intents,
            large_threshold=large_threshold,
        )
        self._attach(conn, session)
        self.recorder.identifies += 1
        self.recorder.identify_log.append(
            {
                "shard_id": shard_id,
                "shard_count": shard_count,
                "session_id": session.session_id,
                "intents": intents,
                "presence": data.get("presence"),
                "compress": conn.compression,
                "path": conn.path,
                "time": time.time(),
            }
        )
        _LOGGER.info("shard %s/%s identified, session %s", shard_id, shard_count, session.session_id)
        ready = payloads.ready(
            world=self.world,
            bot_id=bot_id,
            session_id=session.session_id,
            resume_gateway_url=self.resume_url,
            shard=(shard_id, shard_count),
        )
        session.dispatch("READY", dumps(ready))
        presences = bool(intents & Intent.GUILD_PRESENCES)
        for gid in self.world.guilds_for_shard(shard_id, shard_count):
            guild = self.world.guild_create_json(gid, bot_id, presences=presences, large_threshold=large_threshold)
            session.dispatch("GUILD_CREATE", guild)

    def _attach(self, conn: Connection, session: Session) -> None:
        conn.shard_id = session.shard_id
        conn.shard_count = session.shard_count
        self._uncount_dead_peers(conn)
        self.registry.connection_opened(session.shard_id, session.shard_count)
        conn.authenticated = True
        conn.session = session
        session.connection = conn
        session.disconnected_at = None

    def _uncount_dead_peers(self, conn: Connection) -> None:
        """Stop counting other connections of this shard whose client is already gone.

        Their disconnect is still processed as usual when their read loop sees the EOF; only
        the concurrency count (split brain) is settled now, in the order the kernel saw things.
        """
        for other in list(self.connections):
            if (
                other is not conn
                and other.authenticated
                and (other.shard_id, other.shard_count) == (conn.shard_id, conn.shard_count)
                and other.peer_has_closed()
            ):
                assert other.shard_id is not None and other.shard_count is not None
                self.registry.connection_closed(other.shard_id, other.shard_count)
                other.authenticated = False

    # -- RESUME -------------------------------------------------------------------------------

    def _on_resume(self, conn: Connection, data: object) -> None:
        if not isinstance(data, dict):
            self._record(conn, Op.RESUME, data)
            conn.close(Close.DECODE_ERROR, Close.REASONS[Close.DECODE_ERROR])
            return
        session = self.registry.get(data.get("session_id"))
        shard = (session.shard_id, session.shard_count) if session is not None else None
        self._record(conn, Op.RESUME, data, shard)
        if conn.authenticated:
            conn.close(Close.ALREADY_AUTHENTICATED, Close.REASONS[Close.ALREADY_AUTHENTICATED])
            return
        token = data.get("token")
        if not token_matches(token, self.config.accepted_tokens()):
            _LOGGER.warning("RESUME with an invalid token; closing with 4004")
            conn.close(Close.AUTHENTICATION_FAILED, Close.REASONS[Close.AUTHENTICATION_FAILED])
            return
        assert isinstance(token, str)
        seq = _as_int(data.get("seq"))
        seq = 0 if seq is None else seq
        if session is None or session.bot_id != (bot_id_from_token(token) or DEFAULT_BOT_ID):
            _LOGGER.info("RESUME of an unknown or expired session; answering op 9")
            conn.send_json({"op": Op.INVALID_SESSION, "d": False})
            return
        frames = session.frames_after(seq)
        if frames is None:
            _LOGGER.warning("RESUME of session %s from seq %s is past the replay buffer", session.session_id, seq)
            self.registry.end(session)
            conn.send_json({"op": Op.INVALID_SESSION, "d": False})
            return
        old = session.connection
        if old is not None and old is not conn and old.authenticated:
            # Discord moves a resumed session to the new connection and closes the old one at that
            # instant: one session, never dispatched to both. So the old connection stops counting
            # before the new one counts; split brain means two *sessions* of a shard connected.
            # A takeover is counted apart: it is how a shard moves off a host that is still dying.
            assert old.shard_id is not None and old.shard_count is not None
            self.registry.connection_closed(old.shard_id, old.shard_count)
            old.authenticated = False
            self.recorder.takeovers += 1
        self._attach(conn, session)
        if old is not None and old is not conn:
            _LOGGER.warning(
                "session %s of shard %s resumed while another connection held it; closing the old one",
                session.session_id,
                session.shard_id,
            )
            old.close(Close.UNKNOWN_ERROR, "Session resumed on another connection.")
        for frame in frames:
            conn.send_frame(frame)
        session.dispatch("RESUMED", _TRACE)
        self.recorder.resumes += 1
        self.recorder.resume_log.append(
            {
                "shard_id": session.shard_id,
                "shard_count": session.shard_count,
                "session_id": session.session_id,
                "seq": seq,
                "session_seq": session.seq - 1,
                "replayed": len(frames),
                "path": conn.path,
                "time": time.time(),
            }
        )
        _LOGGER.info(
            "shard %s/%s resumed session %s from seq %s (%d replayed)",
            session.shard_id,
            session.shard_count,
            session.session_id,
            seq,
            len(frames),
        )

    # -- op 4, 8, 43 --------------------------------------------------------------------------

    def _owned_guild(self, session: Session, raw: object) -> int | None:
        gid = _as_int(raw)
        if gid is None or not self.world.has_guild(gid):
            return None
        if World.shard_of(gid, session.shard_count) != session.shard_id:
            return None
        return gid

    def _on_voice_state(self, session: Session, data: JSON) -> None:
        gid = self._owned_guild(session, data.get("guild_id"))
        if gid is None:
            return
        channel_id = data.get("channel_id")
        bot_user = World.bot_user(session.bot_id)
        state = payloads.voice_state(
            gid=gid,
            channel_id=channel_id,
            bot_user=bot_user,
            session_id=session.session_id,
            self_mute=bool(data.get("self_mute", False)),
            self_deaf=bool(data.get("self_deaf", False)),
        )
        session.dispatch("VOICE_STATE_UPDATE", dumps(state))
        if channel_id is not None:
            server = payloads.voice_server_update(gid=gid, token=secrets.token_hex(8), endpoint=self.voice_endpoint)
            session.dispatch("VOICE_SERVER_UPDATE", dumps(server))

    def _on_request_members(self, session: Session, data: JSON) -> None:
        raw = data.get("guild_id")
        for candidate in raw if isinstance(raw, list) else [raw]:
            gid = self._owned_guild(session, candidate)
            if gid is None:
                continue
            for chunk in payloads.member_chunks(world=self.world, gid=gid, bot_id=session.bot_id, request=data):
                session.dispatch("GUILD_MEMBERS_CHUNK", dumps(chunk))

    def _on_channel_info(self, session: Session, data: JSON) -> None:
        gid = self._owned_guild(session, data.get("guild_id"))
        if gid is None:
            return
        channels = [{"id": str(gid + 2), "status": None, "voice_start_time": None}]
        session.dispatch("CHANNEL_INFO", dumps({"guild_id": str(gid), "channels": channels}))

    # -- control ------------------------------------------------------------------------------

    def live_connections(self, shard_id: int) -> list[Connection]:
        """Return the authenticated, open connections of a shard id (any shard count)."""
        return [c for c in self.connections if c.authenticated and c.shard_id == shard_id and not c.closing]

    def reconnect(self, shard_id: int) -> int:
        """Send op 7 RECONNECT to the shard's connections; return how many."""
        conns = self.live_connections(shard_id)
        for conn in conns:
            conn.send_json({"op": Op.RECONNECT, "d": None})
        return len(conns)

    def invalidate(self, shard_id: int, resumable: bool) -> int:
        """Send op 9 INVALID_SESSION; when not resumable the session ends. Return how many."""
        conns = self.live_connections(shard_id)
        for conn in conns:
            conn.send_json({"op": Op.INVALID_SESSION, "d": resumable})
            session = conn.session
            if not resumable and session is not None:
                # The session is dead: the connection no longer counts as a live session.
                self.registry.end(session)
                self.registry.connection_closed(session.shard_id, session.shard_count)
                conn.authenticated = False
                conn.session = None
                if session.connection is conn:
                    session.connection = None
        return len(conns)

    def close_shard(self, shard_id: int, code: int, reason: str = "Closed by the emulator.") -> int:
        """Close the shard's connections with ``code``; return how many."""
        conns = self.live_connections(shard_id)
        for conn in conns:
            conn.close(code, reason)
        return len(conns)

    def drop(self, shard_id: int) -> int:
        """Abort the shard's TCP connections without a close frame; return how many."""
        conns = self.live_connections(shard_id)
        for conn in conns:
            conn.abort()
        return len(conns)

    def set_zombie(self, shard_id: int, enabled: bool) -> None:
        """Stop (or resume) acknowledging the shard's heartbeats."""
        if enabled:
            self.zombies.add(shard_id)
        else:
            self.zombies.discard(shard_id)

    def dispatch_to_shard(self, shard_id: int, event_name: str, data: object) -> int:
        """Add a dispatch to every resumable session of a shard id; return how many sessions."""
        data_json = dumps(data)
        sessions = self.registry.for_shard(shard_id)
        for session in sessions:
            session.dispatch(event_name, data_json)
        return len(sessions)

    def dispatch_to_guild(self, gid: int, event_name: str, data_json: str) -> int:
        """Add a pre-serialized dispatch to every resumable session covering a guild."""
        sessions = self.registry.for_guild(gid)
        for session in sessions:
            session.dispatch(event_name, data_json)
        return len(sessions)

    def sessions(self) -> list[dict[str, typing.Any]]:
        """Return a summary of every live session."""
        now = time.monotonic()
        return [s.describe(now, self.registry.timeout_s) for s in self.registry.all()]

    def stats(self) -> dict[str, typing.Any]:
        """Return the counters and concurrency observations."""
        max_concurrent = self.registry.max_concurrent()
        return {
            **self.recorder.counters(),
            "session_start_limit": self.limiter.session_start_limit(),
            "connected": self.registry.connected(),
            "max_concurrent": max_concurrent,
            "split_brain": any(v > 1 for v in max_concurrent.values()),
            "closes": [dict(c) for c in self.recorder.closes],
            "sessions": len(self.registry.all()),
            "connections": len(self.connections),
        }
