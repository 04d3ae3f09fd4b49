"""The hikari internals session hand-over depends on: this fails loudly when hikari changes them."""

from __future__ import annotations

import asyncio
import inspect
import typing

import aiohttp
import hikari
import pytest
from hikari.impl import config as config_impl
from hikari.impl import event_factory as event_factory_impl
from hikari.impl import shard as shard_impl

from ray_shards import sessions
from ray_shards.models import SessionState


def test_hikari_still_has_what_hand_over_needs() -> None:
    sessions.check_hikari_compatibility()
    for name in sessions.REQUIRED_PRIVATE_ATTRIBUTES:
        assert hasattr(hikari.impl.GatewayShardImpl, name) or name in hikari.impl.GatewayShardImpl.__slots__, name
    # detach() writes its close frame through the transport's aiohttp socket writer (see _send_close_frame_first).
    assert "_ws" in shard_impl._GatewayTransport.__slots__
    assert "self._writer = " in inspect.getsource(aiohttp.ClientWebSocketResponse.__init__)
    # GatedEventManager counts listeners in _invoke_callback, which hikari's dispatch must call synchronously.
    from hikari.impl import event_manager_base

    assert "self._invoke_callback(c, event)" in inspect.getsource(event_manager_base.EventManagerBase.dispatch)


class _Hooks:
    def __init__(self) -> None:
        self.identifies: list[int] = []
        self.resumes: list[int] = []
        self.sent: list[int] = []

    async def before_identify(self, shard_id: int) -> dict[str, typing.Any] | None:
        self.identifies.append(shard_id)
        return {"status": hikari.Status.IDLE}

    async def before_resume(self, shard_id: int) -> None:
        self.resumes.append(shard_id)

    def after_identify(self, shard_id: int) -> None:
        # The frame was written: its grant (before_identify) must have come first.
        assert len(self.identifies) == len(self.sent) + 1
        self.sent.append(shard_id)


def _shard(emu: typing.Any, token: str, hooks: _Hooks, shard_id: int = 0) -> sessions.ManagedShard:
    event_manager = hikari.impl.EventManagerImpl(
        typing.cast(typing.Any, None), typing.cast(typing.Any, _NoEvents()), hikari.Intents.ALL_UNPRIVILEGED
    )
    return sessions.ManagedShard(
        hooks=hooks,
        event_manager=event_manager,
        event_factory=typing.cast(event_factory_impl.EventFactoryImpl, _NoEvents()),
        http_settings=config_impl.HTTPSettings(),
        proxy_settings=config_impl.ProxySettings(),
        intents=hikari.Intents.ALL_UNPRIVILEGED,
        shard_id=shard_id,
        shard_count=1,
        token=token,
        url=emu.gateway_url,
    )


class _NoEvents:
    """Just enough of an event factory for a bare shard: every event deserialises to nothing listened to."""

    def __getattr__(self, name: str) -> typing.Any:
        return lambda *args, **kwargs: _Nothing()


class _Nothing(hikari.Event):
    @property
    def app(self) -> typing.Any:
        return None


@pytest.mark.timeout(60)
async def test_identify_gate_seed_and_detach_round_trip(emulator_factory: typing.Any, token: str) -> None:
    emu = emulator_factory(token, shards=1, identify_window_s=0.5)
    hooks = _Hooks()
    shard = _shard(emu, token, hooks)
    await shard.start()
    assert hooks.identifies == [0]
    assert hooks.sent == [0], "the IDENTIFY's departure was not stamped after the write"
    identify = emu.control.identify_log()[0]
    assert identify["presence"]["status"] == "idle", "the gate's presence was not used for IDENTIFY"
    emu.control.dispatch(0, "TYPING_START", {"channel_id": "1", "user_id": "2", "timestamp": 0})
    await asyncio.sleep(0.3)
    state = await sessions.detach(shard)
    assert isinstance(state, SessionState) and state.seq >= 2
    await asyncio.sleep(0.2)
    closes = [c for c in emu.control.stats()["closes"] if c["shard_id"] == 0]
    assert closes and closes[-1]["code"] == 3000, "a hand-over must not end the session"
    emu.control.dispatch(0, "TYPING_START", {"channel_id": "1", "user_id": "2", "timestamp": 0})

    second = _shard(emu, token, hooks)
    sessions.seed(second, state)
    await second.start()
    try:
        assert hooks.resumes == [0]
        assert len(emu.control.identify_log()) == 1
        assert hooks.sent == [0], "a RESUME is not an IDENTIFY"
        resume = emu.control.resume_log()[-1]
        assert resume["session_id"] == state.session_id and resume["replayed"] >= 1
        assert not emu.control.stats()["split_brain"]
        with pytest.raises(RuntimeError, match="seed it before start"):
            sessions.seed(second, state)
    finally:
        await second.close()


@pytest.mark.timeout(120)
async def test_detach_under_a_busy_stream_always_closes_resumably(emulator_factory: typing.Any, token: str) -> None:
    """A hand-over while frames keep arriving must still close with 3000.

    aiohttp's ``close()`` during hikari's ``receive()`` only asks the poll loop to stop; when a
    frame was already queued, the loop's next ``receive()`` closed the socket with aiohttp's
    default 1000, and Discord ends a session closed with 1000. Seen in CI as a re-IDENTIFY
    after a rebalance under a 20 events/s stream.
    """
    emu = emulator_factory(token, shards=1, guilds=2, identify_window_s=0.2)
    hooks = _Hooks()
    shard = _shard(emu, token, hooks)
    await shard.start()
    emu.control.start_stream(400)
    try:
        for attempt in range(25):
            await asyncio.sleep(0.05 + (attempt % 5) * 0.03)
            state = await sessions.detach(shard)
            assert state is not None
            await asyncio.sleep(0.1)
            closes = [c for c in emu.control.stats()["closes"] if c["by"] == "client"]
            assert closes and closes[-1]["code"] == 3000, f"hand-over {attempt} ended the session: {closes[-1]}"
            shard = _shard(emu, token, hooks)
            sessions.seed(shard, state)
            await shard.start()
        assert len(emu.control.identify_log()) == 1, "a hand-over was followed by an IDENTIFY"
    finally:
        emu.control.stop_stream()
        if shard.is_alive:
            await shard.close()
