"""Fixtures and helpers for the emulator tests (real sockets, unmodified hikari)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import typing
import zlib

import aiohttp
import hikari
import hikari.impl
import pytest

from ray_shards.emulator import DEFAULT_TOKEN, Emulator, EmulatorConfig

ALL_INTENTS = hikari.Intents.ALL


async def wait_for(predicate: typing.Callable[[], object], timeout: float = 20.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` on the running loop until it is truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            name = getattr(predicate, "__qualname__", repr(predicate))
            raise TimeoutError(f"condition {name} not met within {timeout}s")
        await asyncio.sleep(interval)


class RawEvents:
    """Minimal event manager/factory for a bare `GatewayShardImpl`: records raw dispatches."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, typing.Any]] = []

    def consume_raw_event(self, name: str, shard: hikari.api.GatewayShard, payload: typing.Any) -> None:
        self.events.append((shard.id, name, payload))

    async def dispatch(self, event: object, *, return_tasks: bool = False) -> list[asyncio.Task[None]]:
        return []

    def deserialize_connected_event(self, shard: hikari.api.GatewayShard) -> object:
        return object()

    def deserialize_disconnected_event(self, shard: hikari.api.GatewayShard) -> object:
        return object()

    def names(self) -> list[str]:
        return [name for _, name, _ in self.events]


def make_shard(
    emu: Emulator,
    *,
    shard_id: int = 0,
    shard_count: int = 1,
    compression: typing.Any = None,
    token: str = DEFAULT_TOKEN,
    intents: hikari.Intents = ALL_INTENTS,
    events: RawEvents | None = None,
    url: str | None = None,
) -> tuple[hikari.impl.GatewayShardImpl, RawEvents]:
    """Build an unmodified hikari `GatewayShardImpl` pointed at the emulator."""
    events = events or RawEvents()
    shard = hikari.impl.GatewayShardImpl(
        compression=compression,
        intents=intents,
        shard_id=shard_id,
        shard_count=shard_count,
        http_settings=hikari.impl.HTTPSettings(),
        proxy_settings=hikari.impl.ProxySettings(),
        event_manager=typing.cast(typing.Any, events),
        event_factory=typing.cast(typing.Any, events),
        token=token,
        url=url or emu.gateway_url,
    )
    return shard, events


def make_bot(emu: Emulator, *, token: str = DEFAULT_TOKEN, intents: hikari.Intents = ALL_INTENTS) -> hikari.GatewayBot:
    """Build an unmodified `hikari.GatewayBot` using the emulator's REST URL."""
    return hikari.GatewayBot(
        token, rest_url=emu.rest_url, intents=intents, banner=None, logs=None, suppress_optimization_warning=True
    )


@contextlib.asynccontextmanager
async def running_bot(bot: hikari.GatewayBot, **start: typing.Any) -> typing.AsyncIterator[hikari.GatewayBot]:
    """Start a bot (no update check) and always close it."""
    start.setdefault("check_for_updates", False)
    try:
        await asyncio.wait_for(bot.start(**start), timeout=60)
        yield bot
    finally:
        if bot.is_alive:
            await asyncio.wait_for(bot.close(), timeout=30)


@contextlib.asynccontextmanager
async def running_shard(shard: hikari.impl.GatewayShardImpl) -> typing.AsyncIterator[hikari.impl.GatewayShardImpl]:
    """Start a bare shard and always close it."""
    try:
        await asyncio.wait_for(shard.start(), timeout=30)
        yield shard
    finally:
        if shard.is_alive:
            await asyncio.wait_for(shard.close(), timeout=30)


class RawClient:
    """A bare websocket gateway client for protocol-level tests."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, compress: bool) -> None:
        self.session = session
        self.ws = ws
        self._inflator = zlib.decompressobj() if compress else None
        self.close_code: int | None = None

    async def recv(self, timeout: float = 10.0) -> dict[str, typing.Any] | None:
        """Return the next payload, or None once the server closed (see `close_code`)."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return typing.cast(dict[str, typing.Any], json.loads(msg.data))
        if msg.type == aiohttp.WSMsgType.BINARY:
            assert self._inflator is not None, "BINARY frame without compression"
            return typing.cast(dict[str, typing.Any], json.loads(self._inflator.decompress(msg.data)))
        if msg.type == aiohttp.WSMsgType.CLOSE:
            self.close_code = int(msg.data)
        elif self.close_code is None:
            self.close_code = self.ws.close_code
        return None

    async def recv_until(
        self, predicate: typing.Callable[[dict[str, typing.Any]], bool], timeout: float = 10.0
    ) -> list[dict[str, typing.Any]]:
        """Collect payloads up to and including the first one matching ``predicate``."""
        collected: list[dict[str, typing.Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            payload = await self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if payload is None:
                raise AssertionError(f"connection closed with {self.close_code} after {collected[-3:]}")
            collected.append(payload)
            if predicate(payload):
                return collected

    async def drain(self, idle: float = 0.3) -> list[dict[str, typing.Any]]:
        """Collect payloads until none arrives for ``idle`` seconds (or the connection closes)."""
        collected: list[dict[str, typing.Any]] = []
        while True:
            try:
                payload = await self.recv(timeout=idle)
            except TimeoutError:
                return collected
            if payload is None:
                return collected
            collected.append(payload)

    async def send(self, op: int, d: object) -> None:
        await self.ws.send_str(json.dumps({"op": op, "d": d}))

    async def identify(
        self, shard: tuple[int, int] = (0, 1), token: str = DEFAULT_TOKEN, intents: int = int(ALL_INTENTS)
    ) -> None:
        await self.send(2, {"token": token, "intents": intents, "shard": list(shard), "properties": {}})

    async def resume(self, session_id: str, seq: int, token: str = DEFAULT_TOKEN) -> None:
        await self.send(6, {"token": token, "session_id": session_id, "seq": seq})

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; return its close code."""
        deadline = time.monotonic() + timeout
        while self.close_code is None:
            await self.recv(timeout=max(0.01, deadline - time.monotonic()))
        return self.close_code


@contextlib.asynccontextmanager
async def raw_client(url: str, *, compress: bool = False, hello: bool = True) -> typing.AsyncIterator[RawClient]:
    """Connect a `RawClient` (``?v=10&encoding=json``); it reads HELLO first unless ``hello`` is false."""
    query = "?v=10&encoding=json" + ("&compress=zlib-stream" if compress else "")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url + query, autoclose=False, max_msg_size=0)
        client = RawClient(session, ws, compress)
        try:
            if hello:
                first = await client.recv()
                assert first is not None and first["op"] == 10, first
            yield client
        finally:
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=1000), timeout=5)


class Helpers:
    """Helpers handed to tests through the `hk` fixture (so tests import nothing from this directory)."""

    ALL_INTENTS = ALL_INTENTS
    RawEvents = RawEvents
    wait_for = staticmethod(wait_for)
    make_shard = staticmethod(make_shard)
    make_bot = staticmethod(make_bot)
    running_bot = staticmethod(running_bot)
    running_shard = staticmethod(running_shard)
    raw_client = staticmethod(raw_client)


@pytest.fixture
def hk() -> type[Helpers]:
    """The helper namespace."""
    return Helpers


@pytest.fixture
async def emu_factory() -> typing.AsyncIterator[typing.Callable[..., typing.Awaitable[Emulator]]]:
    """Start emulators with config overrides; every one is stopped at teardown."""
    started: list[Emulator] = []

    async def factory(**overrides: typing.Any) -> Emulator:
        overrides.setdefault("identify_window_s", 0.5)
        emu = Emulator(EmulatorConfig(**overrides))
        await emu.start()
        started.append(emu)
        return emu

    yield factory
    for emu in reversed(started):
        await emu.stop()


@pytest.fixture
async def emu(emu_factory: typing.Callable[..., typing.Awaitable[Emulator]]) -> Emulator:
    """A small in-process emulator: 4 guilds, 5 members each, 0.5 s identify window."""
    return await emu_factory(guilds=4, members_per_guild=5)


@pytest.fixture(autouse=True)
def _quiet_hikari() -> typing.Iterator[None]:
    logging.getLogger("hikari").setLevel(logging.WARNING)
    yield
