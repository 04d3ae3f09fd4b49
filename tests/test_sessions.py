"""The hikari internals session hand-over depends on: this fails loudly when hikari changes them."""

from __future__ import annotations

import asyncio
import typing

import hikari
import pytest
from hikari.impl import config as config_impl
from hikari.impl import event_factory as event_factory_impl

from ray_shards import sessions
from ray_shards.models import SessionState


def test_hikari_still_has_what_hand_over_needs() -> None:
    sessions.check_hikari_compatibility()
    for name in sessions.REQUIRED_PRIVATE_ATTRIBUTES:
        assert hasattr(hikari.impl.GatewayShardImpl, name) or name in hikari.impl.GatewayShardImpl.__slots__, name


class _Hooks:
    def __init__(self) -> None:
        self.identifies: list[int] = []
        self.resumes: list[int] = []

    async def before_identify(self, shard_id: int) -> dict[str, typing.Any] | None:
        self.identifies.append(shard_id)
        return {"status": hikari.Status.IDLE}

    async def before_resume(self, shard_id: int) -> None:
        self.resumes.append(shard_id)


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
        resume = emu.control.resume_log()[-1]
        assert resume["session_id"] == state.session_id and resume["replayed"] >= 1
        assert not emu.control.stats()["split_brain"]
        with pytest.raises(RuntimeError, match="seed it before start"):
            sessions.seed(second, state)
    finally:
        await second.close()
