"""Scripted guild events: edits, identical reaction add/remove/add, a guild join and leave, to every shard count."""

from __future__ import annotations

import asyncio
import typing

import pytest

from ray_shards.emulator import Emulator, EmulatorConfig, EmulatorThread
from ray_shards.emulator.script import SCRIPT_ACTIONS

EmulatorFactory = typing.Callable[..., typing.Awaitable[Emulator]]


async def test_scripted_events_reach_every_session_covering_the_guild(
    emu_factory: EmulatorFactory, hk: typing.Any
) -> None:
    emu = await emu_factory(guilds=3, enforce_identify_rate_limit=False)
    async with (
        hk.raw_client(emu.gateway_url) as whole,
        hk.raw_client(emu.gateway_url) as half0,
        hk.raw_client(emu.gateway_url) as half1,
    ):
        for client, shard in ((whole, (0, 1)), (half0, (0, 2)), (half1, (1, 2))):
            await client.identify(shard)
            await client.recv_until(lambda p: p.get("t") == "READY")
        await asyncio.sleep(0.2)
        for client in (whole, half0, half1):
            await client.drain(idle=0.2)  # the initial GUILD_CREATEs
        gid = emu.guild_ids()[0]
        sent = [
            emu.script("edit", gid, content="first"),
            emu.script("edit", gid, content="second"),
            emu.script("react_add", gid),
            emu.script("react_remove", gid),
            emu.script("react_add", gid),
            emu.script("join"),
        ]
        joined = sent[-1]["guild_id"]
        assert joined not in emu.guild_ids()[:3] and emu.guild_ids()[-1] == joined
        sent.append(emu.script("leave", joined))
        assert joined not in emu.guild_ids()
        received = {name: [f for f in await client.drain() if f.get("op") == 0]
                    for name, client in (("whole", whole), ("half0", half0), ("half1", half1))}

    assert emu.script_sent() == sent
    assert [e["action"] for e in sent] == ["edit", "edit", "react_add", "react_remove", "react_add", "join", "leave"]
    whole_frames = received["whole"]
    assert [f["t"] for f in whole_frames] == [e["event"] for e in sent], "the 1-shard session covers every guild"
    edits = [f["d"] for f in whole_frames if f["t"] == "MESSAGE_UPDATE"]
    assert [d["content"] for d in edits] == ["first", "second"] and edits[0]["id"] == edits[1]["id"]
    reactions = [f["d"] for f in whole_frames if f["t"].startswith("MESSAGE_REACTION")]
    assert reactions[0] == reactions[2], "a reaction added again has the same payload"
    join = next(f["d"] for f in whole_frames if f["t"] == "GUILD_CREATE")
    leave = next(f["d"] for f in whole_frames if f["t"] == "GUILD_DELETE")
    assert "unavailable" not in join and "unavailable" not in leave, "a join and a leave, not availability"
    assert int(join["id"]) == joined and int(leave["id"]) == joined
    # Of the two halves, exactly the session owning each guild got its events.
    for gid_, event in ((gid, "MESSAGE_UPDATE"), (joined, "GUILD_CREATE")):
        owner = "half0" if (gid_ >> 22) % 2 == 0 else "half1"
        other = "half1" if owner == "half0" else "half0"
        assert any(f["t"] == event for f in received[owner]) and not any(f["t"] == event for f in received[other])
    assert all(e["sessions"] == 2 for e in sent)


async def test_scripted_events_refuse_bad_input(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown scripted action"):
        emu.script("explode")
    with pytest.raises(ValueError, match="unknown guild"):
        emu.script("edit", 12345 << 22)
    with pytest.raises(ValueError, match="only the last guild"):
        emu.script("leave", emu.guild_ids()[0])
    assert set(SCRIPT_ACTIONS) == {"edit", "react_add", "react_remove", "join", "leave"}


def test_scripted_events_over_the_control_surface() -> None:
    with EmulatorThread(EmulatorConfig(guilds=2)) as emu:
        first = emu.control.script("edit", content="hello")
        assert first["event"] == "MESSAGE_UPDATE" and first["content"] == "hello" and first["sessions"] == 0
        joined = emu.control.script("join")
        assert joined["event"] == "GUILD_CREATE" and len(emu.control.guild_ids()) == 3
        assert emu.control.script("leave")["guild_id"] == joined["guild_id"]
        assert [e["action"] for e in emu.control.script_sent()] == ["edit", "join", "leave"]
        emu.control.reset_logs()
        assert emu.control.script_sent() == []
