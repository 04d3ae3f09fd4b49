"""RESUME: replay of missed dispatches, session end on 1000/1001, op 7 / op 9 / zombie reconnects."""

from __future__ import annotations

import asyncio
import typing

import hikari
import pytest

from ray_shards.emulator import Emulator

EmulatorFactory = typing.Callable[..., typing.Awaitable[Emulator]]


async def test_hikari_resumes_after_dropped_connection_and_sees_every_event_once(
    emu_factory: EmulatorFactory, hk: typing.Any
) -> None:
    emu = await emu_factory(guilds=4)
    bot = hk.make_bot(emu)
    seen: list[int] = []

    async def on_message(event: hikari.GuildMessageCreateEvent) -> None:
        seen.append(int(event.message_id))

    bot.subscribe(hikari.GuildMessageCreateEvent, on_message)
    async with hk.running_bot(bot, shard_count=1):
        emu.start_stream(40)
        await hk.wait_for(lambda: len(seen) >= 10)
        assert emu.drop(0) == 1
        await hk.wait_for(lambda: emu.stats()["connected"].get(0) == 0)
        # hikari backs off ~1-2 s; the stream keeps filling the disconnected session's buffer.
        await hk.wait_for(lambda: len(emu.resume_log()) == 1, timeout=30)
        await asyncio.sleep(0.3)
        emu.stop_stream()
        sent = [entry["id"] for entry in emu.stream_sent()]
        await hk.wait_for(lambda: len(seen) >= len(sent))
        await asyncio.sleep(0.2)
    assert len(seen) == len(sent) and sorted(seen) == sorted(sent)
    (resume,) = emu.resume_log()
    assert resume["path"] == emu.config.resume_gateway_path
    assert resume["replayed"] > 0
    assert resume["replayed"] == resume["session_seq"] - resume["seq"]
    stats = emu.stats()
    assert stats["identifies"] == 1 and stats["resumes"] == 1
    assert any(c["code"] == 1006 and c["by"] == "server" for c in stats["closes"])


async def test_resume_replays_exactly_the_dispatches_after_seq(emu: Emulator, hk: typing.Any) -> None:
    async with hk.raw_client(emu.gateway_url) as first:
        await first.identify()
        frames = await first.recv_until(lambda p: p.get("t") == "GUILD_CREATE" and p["s"] == 5)
        ready = frames[0]["d"]
        session_id, last_seq = ready["session_id"], frames[-1]["s"]
        await first.ws.close(code=3000)
    await hk.wait_for(lambda: emu.stats()["connected"].get(0) == 0)
    assert emu.dispatch(0, "CUSTOM_EVENT", {"n": 1}) == 1
    assert emu.dispatch(0, "CUSTOM_EVENT", {"n": 2}) == 1
    async with hk.raw_client(ready["resume_gateway_url"]) as second:
        await second.resume(session_id, last_seq - 1)
        replay = await second.recv_until(lambda p: p.get("t") == "RESUMED")
    assert [(p["s"], p["t"]) for p in replay] == [
        (5, "GUILD_CREATE"),
        (6, "CUSTOM_EVENT"),
        (7, "CUSTOM_EVENT"),
        (8, "RESUMED"),
    ]
    assert [p["d"]["n"] for p in replay if p["t"] == "CUSTOM_EVENT"] == [1, 2]
    (resume,) = emu.resume_log()
    assert (resume["seq"], resume["replayed"], resume["shard_id"]) == (4, 3, 0)


@pytest.mark.parametrize("code", [1000, 1001])
async def test_client_close_1000_or_1001_ends_the_session(emu: Emulator, hk: typing.Any, code: int) -> None:
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify()
        ready = (await client.recv_until(lambda p: p.get("t") == "READY"))[0]["d"]
        await client.ws.close(code=code)
    await hk.wait_for(lambda: emu.stats()["sessions"] == 0)
    async with hk.raw_client(emu.gateway_url) as client:
        await client.resume(ready["session_id"], 1)
        answer = await client.recv()
    assert answer == {"op": 9, "d": False}
    assert emu.resume_log() == []


async def test_bare_shard_close_ends_session(emu: Emulator, hk: typing.Any) -> None:
    shard, events = hk.make_shard(emu)
    async with hk.running_shard(shard):
        session_id = events.events[0][2]["session_id"]
    await hk.wait_for(lambda: emu.stats()["sessions"] == 0)
    assert emu.stats()["closes"][-1]["code"] == 1001
    async with hk.raw_client(emu.gateway_url) as client:
        await client.resume(session_id, 1)
        assert await client.recv() == {"op": 9, "d": False}


async def test_op7_reconnect_makes_hikari_resume(emu: Emulator, hk: typing.Any) -> None:
    shard, events = hk.make_shard(emu)
    async with hk.running_shard(shard):
        assert emu.reconnect(0) == 1
        await hk.wait_for(lambda: len(emu.resume_log()) == 1 and shard.is_connected, timeout=30)
        assert "RESUMED" in events.names()
        assert emu.stats()["identifies"] == 1
        assert emu.stats()["closes"][0]["code"] == 3000  # hikari closes with 3000 to keep the session


async def test_op9_resumable_and_not(emu: Emulator, hk: typing.Any) -> None:
    shard, events = hk.make_shard(emu)
    async with hk.running_shard(shard):
        assert emu.invalidate(0, resumable=True) == 1
        await hk.wait_for(lambda: len(emu.resume_log()) == 1 and shard.is_connected, timeout=30)
        assert emu.stats()["identifies"] == 1
        assert emu.invalidate(0, resumable=False) == 1
        assert emu.stats()["connected"] == {0: 0} and emu.stats()["sessions"] == 0
        await hk.wait_for(lambda: emu.stats()["identifies"] == 2 and shard.is_connected, timeout=30)
        assert events.names().count("READY") == 2
        assert len(emu.resume_log()) == 1


async def test_zombie_connection_makes_hikari_reconnect(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=2, heartbeat_interval_ms=300)
    shard, _ = hk.make_shard(emu)
    async with hk.running_shard(shard):
        emu.zombie(0, True)
        await hk.wait_for(lambda: len(emu.resume_log()) >= 1, timeout=30)
        emu.zombie(0, False)
        resumes = len(emu.resume_log())
        await hk.wait_for(lambda: shard.is_connected and shard.heartbeat_latency == shard.heartbeat_latency, timeout=30)
        await asyncio.sleep(1.0)  # stays healthy: no further reconnects once ACKs flow again
        assert len(emu.resume_log()) <= resumes + 1
        assert emu.stats()["identifies"] == 1


async def test_server_close_code_4000_is_resumed(emu: Emulator, hk: typing.Any) -> None:
    shard, _ = hk.make_shard(emu)
    async with hk.running_shard(shard):
        assert emu.close(0, 4000) == 1
        await hk.wait_for(lambda: len(emu.resume_log()) == 1 and shard.is_connected, timeout=30)
    closes = emu.stats()["closes"]
    assert closes[0]["code"] == 4000 and closes[0]["by"] == "server"


async def test_disconnected_session_expires_after_session_timeout(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=2, session_timeout_s=0.3)
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify()
        ready = (await client.recv_until(lambda p: p.get("t") == "READY"))[0]["d"]
        await client.ws.close(code=3000)
    await hk.wait_for(lambda: emu.stats()["connected"].get(0) == 0)
    assert emu.sessions()[0]["resumable"] is True
    await asyncio.sleep(0.5)
    assert emu.dispatch(0, "LATE", {}) == 0  # nothing is buffered for an expired session
    async with hk.raw_client(ready["resume_gateway_url"]) as client:
        await client.resume(ready["session_id"], 1)
        assert await client.recv() == {"op": 9, "d": False}
    assert emu.sessions() == []
