"""IDENTIFY rules: rate limit buckets, daily budget, token, shard, sharding and intent close codes."""

from __future__ import annotations

import asyncio
import time
import typing

import aiohttp
import hikari
import pytest

from ray_shards.emulator import Emulator, make_token

EmulatorFactory = typing.Callable[..., typing.Awaitable[Emulator]]


async def test_identify_over_the_rate_limit_gets_op9(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=4, max_concurrency=2, identify_window_s=5.0)
    async with hk.raw_client(emu.gateway_url) as a, hk.raw_client(emu.gateway_url) as b:
        await a.identify((0, 4))
        await a.recv_until(lambda p: p.get("t") == "READY")
        await b.identify((2, 4))  # same bucket as shard 0: 2 % 2 == 0
        assert await b.recv() == {"op": 9, "d": False}
    async with hk.raw_client(emu.gateway_url) as c:
        await c.identify((1, 4))  # bucket 1 is free
        await c.recv_until(lambda p: p.get("t") == "READY")
    stats = emu.stats()
    assert stats["rate_limit_violations"] == 1 and stats["identifies"] == 2 and stats["identify_attempts"] == 3
    assert stats["session_start_limit"]["remaining"] == 998
    assert [(e["shard_id"], e["shard_count"]) for e in emu.identify_log()] == [(0, 4), (1, 4)]


async def test_identify_window_is_measured_from_the_last_accepted(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=1, identify_window_s=1.0)
    async with hk.raw_client(emu.gateway_url) as a:
        await a.identify((0, 2))
        await a.recv_until(lambda p: p.get("t") == "READY")
        accepted_at = time.monotonic()
        async with hk.raw_client(emu.gateway_url) as b:
            await b.identify((1, 2))
            assert await b.recv() == {"op": 9, "d": False}
        await asyncio.sleep(max(0.0, accepted_at + 1.05 - time.monotonic()))
        async with hk.raw_client(emu.gateway_url) as c:
            await c.identify((1, 2))
            await c.recv_until(lambda p: p.get("t") == "READY")
    assert emu.stats()["rate_limit_violations"] == 1


async def test_daily_budget(emu: Emulator, hk: typing.Any) -> None:
    emu.set_limits(remaining=1)
    async with hk.raw_client(emu.gateway_url) as a:
        await a.identify((0, 1))
        await a.recv_until(lambda p: p.get("t") == "READY")
    await asyncio.sleep(0.55)  # outside the identify window
    async with hk.raw_client(emu.gateway_url) as b:
        await b.identify((0, 1))
        assert await b.recv() == {"op": 9, "d": False}
    stats = emu.stats()
    assert stats["budget_exhausted"] == 1 and stats["identifies"] == 1
    assert stats["session_start_limit"]["remaining"] == 0


async def test_bad_token_closes_4004_and_gateway_bot_gives_up(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    gateway = await emu_factory(guilds=2)
    bad = make_token(4242 << 22, "this-is-not-the-right-secret-at-all")
    # REST accepts the bad token and points hikari at the real gateway, which rejects it.
    rest = await emu_factory(guilds=2, token=bad, advertised_gateway_url=gateway.gateway_url)
    bot = hikari.GatewayBot(bad, rest_url=rest.rest_url, banner=None, logs=None, intents=hk.ALL_INTENTS)
    started = time.monotonic()
    with pytest.raises(hikari.errors.GatewayServerClosedConnectionError) as info:
        async with hk.running_bot(bot, shard_count=1):
            pass
    assert info.value.code == 4004 and not info.value.can_reconnect
    assert time.monotonic() - started < 15
    assert gateway.stats()["identify_attempts"] == 1 and gateway.stats()["identifies"] == 0
    assert len(gateway.received(op=2)) == 1
    assert gateway.stats()["closes"] == [
        {"shard_id": 0, "code": 4004, "by": "server", "time": gateway.stats()["closes"][0]["time"]}
    ]
    assert bad not in repr(gateway.received()) and bad not in repr(rest.rest_log())


async def test_bare_shard_bad_token_raises(emu: Emulator, hk: typing.Any) -> None:
    shard, _ = hk.make_shard(emu, token=make_token(77 << 22))
    with pytest.raises(hikari.errors.GatewayServerClosedConnectionError) as info:
        await asyncio.wait_for(shard.start(), timeout=30)
    assert info.value.code == 4004


@pytest.mark.parametrize(("shard_id", "shard_count"), [(2, 2), (0, 0), (-1, 3)])
async def test_invalid_shard_closes_4010(emu: Emulator, hk: typing.Any, shard_id: int, shard_count: int) -> None:
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify((shard_id, shard_count))
        assert await client.wait_closed() == 4010
    assert emu.stats()["identifies"] == 0


async def test_hikari_shard_with_invalid_shard_id_raises_4010(emu: Emulator, hk: typing.Any) -> None:
    shard, _ = hk.make_shard(emu, shard_id=3, shard_count=2)
    with pytest.raises(hikari.errors.GatewayServerClosedConnectionError) as info:
        await asyncio.wait_for(shard.start(), timeout=30)
    assert info.value.code == 4010


async def test_sharding_required_closes_4011(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=5, max_guilds_per_shard=2)
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify((0, 2))
        assert await client.wait_closed() == 4011
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify((0, 3))
        await client.recv_until(lambda p: p.get("t") == "READY")


async def test_unknown_intents_close_4013(emu: Emulator, hk: typing.Any) -> None:
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify(intents=1 << 30)
        assert await client.wait_closed() == 4013


async def test_privileged_intents_disallowed_close_4014(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=1, allow_privileged_intents=False)
    shard, _ = hk.make_shard(emu, intents=hikari.Intents.ALL)
    with pytest.raises(hikari.errors.GatewayServerClosedConnectionError) as info:
        await asyncio.wait_for(shard.start(), timeout=30)
    assert info.value.code == 4014
    shard, _ = hk.make_shard(emu, intents=hikari.Intents.ALL_UNPRIVILEGED)
    async with hk.running_shard(shard):
        assert shard.is_connected


async def test_protocol_errors_close_without_crashing(emu: Emulator, hk: typing.Any) -> None:
    async with hk.raw_client(emu.gateway_url) as client:
        await client.ws.send_str("{not json")
        assert await client.wait_closed() == 4002
    async with hk.raw_client(emu.gateway_url) as client:
        await client.send(99, None)
        assert await client.wait_closed() == 4001
    async with hk.raw_client(emu.gateway_url) as client:
        await client.send(8, {"guild_id": "1"})
        assert await client.wait_closed() == 4003
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify()
        await client.recv_until(lambda p: p.get("t") == "READY")
        await client.identify()
        assert await client.wait_closed() == 4005
    async with hk.raw_client(emu.gateway_url) as client:
        await client.send(1, None)
        assert await client.recv() == {"op": 11, "d": None}
    assert emu.health()["ok"]


async def test_send_limit_closes_4008(emu: Emulator, hk: typing.Any) -> None:
    async with hk.raw_client(emu.gateway_url) as client:
        for _ in range(121):
            await client.send(1, None)
        assert await client.wait_closed() == 4008
    assert emu.stats()["send_limit_violations"] == 1


async def test_unsupported_compression_and_version(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(emu.gateway_url + "?v=10&encoding=json&compress=bogus")
        assert info.value.status == 400
        async with session.ws_connect(emu.gateway_url + "?v=9&encoding=json", autoclose=False) as ws:
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4012
