"""Split-brain detection and the MESSAGE_CREATE load generator."""

from __future__ import annotations

import asyncio
import socket
import time
import typing

from ray_shards.emulator import Emulator

EmulatorFactory = typing.Callable[..., typing.Awaitable[Emulator]]


async def test_two_concurrent_sessions_for_one_shard_are_detected(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=2, enforce_identify_rate_limit=False)
    first, _ = hk.make_shard(emu)
    second, _ = hk.make_shard(emu)
    async with hk.running_shard(first), hk.running_shard(second):
        stats = emu.stats()
        assert stats["connected"] == {0: 2}
        assert stats["max_concurrent"] == {0: 2} and stats["split_brain"] is True


async def test_sequential_sessions_are_not_split_brain(emu: Emulator, hk: typing.Any) -> None:
    for _ in range(2):
        shard, _ = hk.make_shard(emu)
        async with hk.running_shard(shard):
            assert emu.stats()["connected"] == {0: 1}
        await hk.wait_for(lambda: emu.stats()["connected"] == {0: 0})
        await asyncio.sleep(0.5)  # the identify window
    stats = emu.stats()
    assert stats["identifies"] == 2 and stats["max_concurrent"] == {0: 1} and stats["split_brain"] is False


async def test_resharding_runs_both_shard_counts_without_split_brain(emu: Emulator, hk: typing.Any) -> None:
    old, _ = hk.make_shard(emu, shard_id=0, shard_count=1)
    new, _ = hk.make_shard(emu, shard_id=0, shard_count=2)
    async with hk.running_shard(old):
        await asyncio.sleep(0.55)
        async with hk.running_shard(new):
            assert emu.stats()["connected"] == {0: 2}
    assert emu.stats()["split_brain"] is False


async def test_resume_on_a_second_connection_takes_the_session_over(emu: Emulator, hk: typing.Any) -> None:
    """As at Discord, a RESUME moves the session and closes its old connection: one session, a takeover.

    It is counted apart from split brain (two sessions of one shard connected): a shard moving off
    a host whose process Ray already reported dead, but whose socket is not closed yet, does this.
    """
    async with hk.raw_client(emu.gateway_url) as first:
        await first.identify()
        frames = await first.recv_until(lambda p: p.get("t") == "READY")
        async with hk.raw_client(emu.gateway_url) as second:
            await second.resume(frames[0]["d"]["session_id"], frames[-1]["s"])
            await second.recv_until(lambda p: p.get("t") == "RESUMED")
            assert await first.wait_closed() == 4000
            stats = emu.stats()
            assert stats["max_concurrent"] == {0: 1} and stats["split_brain"] is False
            assert stats["takeovers"] == 1
            assert stats["connected"] == {0: 1}
    emu.reset_logs()
    assert emu.stats()["takeovers"] == 0


async def test_a_dead_clients_unread_close_is_not_a_second_session(emu: Emulator, hk: typing.Any) -> None:
    """A new IDENTIFY handled before the EOF of a client that is already gone counts one session.

    The emulator's loop is held while the first client vanishes and the second identifies, so both
    are ready at once and may be handled in either order.
    """
    async with hk.raw_client(emu.gateway_url) as first:
        await first.identify()
        await first.recv_until(lambda p: p.get("t") == "READY")
        await asyncio.sleep(0.6)  # the identify window
        async with hk.raw_client(emu.gateway_url) as second:
            # The emulator runs on this loop: block it, so the EOF and the IDENTIFY both wait in the kernel.
            asyncio.get_running_loop().call_soon(time.sleep, 0.5)
            first.ws.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            await second.identify()
            await second.recv_until(lambda p: p.get("t") == "READY")
            await hk.wait_for(lambda: emu.stats()["connected"] == {0: 1})
    stats = emu.stats()
    assert stats["split_brain"] is False, stats["max_concurrent"]


async def test_stream_sequence_numbers_and_message_ids_increase(emu: Emulator, hk: typing.Any) -> None:
    async with hk.raw_client(emu.gateway_url, compress=True) as client:
        await client.identify()
        frames = await client.recv_until(lambda p: p.get("t") == "GUILD_CREATE" and p["s"] == 5)
        emu.start_stream(400)
        await asyncio.sleep(0.5)
        sent = emu.stop_stream()
        assert sent >= 50
        frames += await client.recv_until(lambda p: p.get("t") == "MESSAGE_CREATE" and p["s"] == 5 + sent)
    seqs = [p["s"] for p in frames]
    assert seqs == list(range(1, len(frames) + 1))
    messages = [p["d"] for p in frames if p.get("t") == "MESSAGE_CREATE"]
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(set(ids)) and ids == [e["id"] for e in emu.stream_sent()]
    guilds = emu.guild_ids()
    assert [int(m["guild_id"]) for m in messages[:8]] == (guilds * 2)[:8]
    assert [m["content"] for m in messages[:2]] == ["stream 1", "stream 2"]


async def test_stream_reaches_every_shard_count(emu_factory: EmulatorFactory, hk: typing.Any) -> None:
    emu = await emu_factory(guilds=5, enforce_identify_rate_limit=False)
    async with (
        hk.raw_client(emu.gateway_url) as whole,
        hk.raw_client(emu.gateway_url) as half0,
        hk.raw_client(emu.gateway_url) as half1,
    ):
        for client, shard in ((whole, (0, 1)), (half0, (0, 2)), (half1, (1, 2))):
            await client.identify(shard)
            await client.recv_until(lambda p: p.get("t") == "READY")
        emu.start_stream(100)
        await asyncio.sleep(0.3)
        sent = emu.stop_stream()
        seen = {}
        for name, client in (("whole", whole), ("half0", half0), ("half1", half1)):
            frames = await client.drain()
            seen[name] = {int(f["d"]["id"]) for f in frames if f.get("t") == "MESSAGE_CREATE"}
    every = {e["id"] for e in emu.stream_sent()}
    assert len(every) == sent
    assert seen["whole"] == every
    assert seen["half0"] | seen["half1"] == every and not seen["half0"] & seen["half1"]


async def test_the_stream_count_keeps_growing_past_the_stream_log_cap(emu: Emulator, hk: typing.Any) -> None:
    # The log of stream events is capped (1 M entries); the count stop_stream returns is not. With the count
    # read from the log's length, a benchmark that had streamed more than the cap read 0 sent per burst.
    import collections

    emu._recorder.stream_sent = collections.deque(maxlen=10)
    async with hk.raw_client(emu.gateway_url) as client:
        await client.identify()
        await client.recv_until(lambda p: p.get("t") == "READY")
        emu.start_stream(400)
        await asyncio.sleep(0.3)
        first = emu.stop_stream()
        emu.start_stream(400)
        await asyncio.sleep(0.3)
        second = emu.stop_stream()
    assert first > 10, first
    assert second - first > 10, (first, second)
    assert len(emu.stream_sent()) == 10
