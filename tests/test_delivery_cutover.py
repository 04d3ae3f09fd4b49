"""The reshard gate with real hikari dispatch and cache (no Ray, no sockets): two sets, one switch.

An old set (live, recording its tails) and a new set (shadow) get the same guild events; the old set
is muted, the new set goes live with the old set's tails. Each edit, each of the identical reaction
adds, the join and the leave must reach exactly one set's listeners, and the new set's cache must
know every guild (its initial GUILD_CREATEs and the join it skipped fill the cache without listeners).
"""

from __future__ import annotations

import asyncio
import time
import typing

import hikari
import pytest

from ray_shards import cutover
from ray_shards.delivery import GatedEventManager, ShadowOverflowError
from ray_shards.emulator import ids
from ray_shards.emulator.world import World

pytestmark = pytest.mark.timeout(60)

BOT_ID = 4242 << 22
GAP = 0.03  # identical payloads repeat more than 2 * max_skew apart (assumption 2 of ray_shards.cutover)
MAX_SKEW = 0.01


class _Shard:
    id = 0

    def get_user_id(self) -> hikari.Snowflake:
        return hikari.Snowflake(BOT_ID)


class _Set:
    """One set of sessions: a GatedEventManager with a cache, and listeners that record what they handle."""

    def __init__(
        self,
        token: str,
        name: str,
        handled: list[tuple[str, str]],
        *,
        shadow: bool,
        cap: int = 1000,
        wall_clock: typing.Callable[[], float] = time.time,
    ) -> None:
        self.app = hikari.GatewayBot(token, banner=None, intents=hikari.Intents.ALL_UNPRIVILEGED)
        self.manager = GatedEventManager(
            self.app.entity_factory, self.app.event_factory, hikari.Intents.ALL_UNPRIVILEGED,
            cache=self.app._cache, shadow=shadow, buffer_cap=cap, max_skew=MAX_SKEW, wall_clock=wall_clock,
        )
        self.name = name
        self.shard = _Shard()

        async def on_update(event: hikari.GuildMessageUpdateEvent) -> None:
            handled.append((name, f"edit {event.message.content}"))

        async def on_add(event: hikari.GuildReactionAddEvent) -> None:
            handled.append((name, "react_add"))

        async def on_remove(event: hikari.GuildReactionDeleteEvent) -> None:
            handled.append((name, "react_remove"))

        async def on_join(event: hikari.GuildJoinEvent) -> None:
            handled.append((name, f"join {event.guild_id}"))

        async def on_leave(event: hikari.GuildLeaveEvent) -> None:
            handled.append((name, f"leave {event.guild_id}"))

        async def on_available(event: hikari.GuildAvailableEvent) -> None:
            handled.append((name, f"available {event.guild_id}"))

        for event_type, callback in (
            (hikari.GuildMessageUpdateEvent, on_update), (hikari.GuildReactionAddEvent, on_add),
            (hikari.GuildReactionDeleteEvent, on_remove), (hikari.GuildJoinEvent, on_join),
            (hikari.GuildLeaveEvent, on_leave), (hikari.GuildAvailableEvent, on_available),
        ):
            self.manager.subscribe(event_type, callback)

    def feed(self, name: str, payload: dict[str, typing.Any]) -> None:
        self.manager.consume_raw_event(name, typing.cast(typing.Any, self.shard), payload)

    def guilds(self) -> set[int]:
        return {int(g) for g in self.app.cache.get_guilds_view()}


def _events(world: World, gid: int) -> list[tuple[str, str, dict[str, typing.Any]]]:
    """(what a listener records, event name, payload): edits, reaction add/remove/add, a join and a leave."""
    user = World.user(world.member_numbers(gid)[0])
    member = World.member(user)
    message = {"id": str(9 << 22), "channel_id": str(ids.text_channel_id(gid)), "guild_id": str(gid),
               "author": user, "member": {k: v for k, v in member.items() if k != "user"}, "content": "",
               "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": "2024-01-01T00:00:01+00:00",
               "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
               "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": []}
    reaction = {"user_id": user["id"], "channel_id": str(ids.text_channel_id(gid)), "message_id": message["id"],
                "guild_id": str(gid), "emoji": {"id": None, "name": "x"}, "burst": False, "type": 0}
    joined = world.join_guild()
    join = world.guild_create(joined, BOT_ID, presences=False, large_threshold=250)
    del join["unavailable"]
    return [
        ("edit a", "MESSAGE_UPDATE", dict(message, content="a")),
        ("edit b", "MESSAGE_UPDATE", dict(message, content="b")),
        ("react_add", "MESSAGE_REACTION_ADD", dict(reaction, member=member)),
        ("react_remove", "MESSAGE_REACTION_REMOVE", dict(reaction)),
        ("react_add", "MESSAGE_REACTION_ADD", dict(reaction, member=member)),
        (f"join {joined}", "GUILD_CREATE", join),
        ("edit c", "MESSAGE_UPDATE", dict(message, content="c")),
        (f"leave {joined}", "GUILD_DELETE", {"id": str(joined)}),
        ("edit d", "MESSAGE_UPDATE", dict(message, content="d")),
    ]


class _ReceiveClock:
    """The wall clock both sets' managers stamp receive times with, pinned per event while the test feeds it.

    Assumption 2 of `ray_shards.cutover` is about Discord and the network: both sets receive an event within
    ``max_skew`` of each other. Fed one after the other on a loaded 2-core CI machine, the old set's dispatch
    alone once took longer than ``MAX_SKEW``, so the test broke the assumption it relies on and saw duplicates.
    Pinning both sets' stamp of one event to one value keeps the assumption true by construction; between
    events, and after the loop, the clock is the real one (pinned values never run ahead of it: each event is
    pinned to the start plus the sum of the real GAP sleeps before it).
    """

    def __init__(self) -> None:
        self.pinned: float | None = None

    def time(self) -> float:
        return time.time() if self.pinned is None else self.pinned


@pytest.fixture
def receive_clock() -> _ReceiveClock:
    return _ReceiveClock()


# The old set is muted only after the new set started receiving (the Orchestrator switches after READY).
@pytest.mark.parametrize(("new_starts_at", "mute_after"), [(s, m) for s in (0, 3) for m in range(s, 10)])
async def test_each_edit_reaction_join_and_leave_is_handled_once_across_the_switch(
    token: str, mute_after: int, new_starts_at: int, receive_clock: _ReceiveClock
) -> None:
    world = World(2, 3)
    gid = world.guild_ids()[0]
    handled: list[tuple[str, str]] = []
    old = _Set(token, "old", handled, shadow=False, wall_clock=receive_clock.time)
    for g in world.guild_ids():
        old.feed("GUILD_CREATE", world.guild_create(g, BOT_ID, presences=False, large_threshold=250))
    events = _events(world, gid)
    old.manager.start_recording()
    new = _Set(token, "new", handled, shadow=True, wall_clock=receive_clock.time)
    started = time.time()
    for i, (_, name, payload) in enumerate(events):
        if i == new_starts_at:
            # The new set's sessions start: their initial GUILD_CREATEs fill its cache, no listener runs.
            for g in world.guild_ids()[:2]:
                new.feed("GUILD_CREATE", world.guild_create(g, BOT_ID, presences=False, large_threshold=250))
            assert new.guilds() == set(world.guild_ids()[:2])
        if i == mute_after:
            tails = old.manager.mute()
        receive_clock.pinned = started + i * GAP  # both sets receive this event at one time (see _ReceiveClock)
        old.feed(name, payload)
        if i >= new_starts_at:
            new.feed(name, payload)
        receive_clock.pinned = None
        await asyncio.sleep(GAP)
    if mute_after >= len(events):
        tails = old.manager.mute()
    new.manager.go_live(tails)
    await asyncio.sleep(0.1)

    expected = [label for label, _, _ in events]
    events_handled = [(who, label) for who, label in handled if not label.startswith("available")]
    assert sorted(label for _, label in events_handled) == sorted(expected), handled
    assert [label for who, label in events_handled if who == "old"] == expected[:mute_after]
    assert [label for who, label in events_handled if who == "new"] == expected[mute_after:]
    available = [(who, label) for who, label in handled if label.startswith("available")]
    assert available == [("old", f"available {g}") for g in world.guild_ids()[:2]], "availability ran twice"
    assert new.guilds() == set(world.guild_ids()[:2]), "the new set's cache: joined then left"


async def test_a_cache_only_consume_wakes_no_waiter_and_keeps_the_listeners(token: str) -> None:
    # The shadow set's availability GUILD_CREATE fills the cache only: hikari is shown no listeners and no
    # waiters for that one synchronous consume. A wait_for must stay pending, and the listeners must be back.
    world = World(2, 3)
    first, second = world.guild_ids()[:2]
    handled: list[tuple[str, str]] = []
    new = _Set(token, "new", handled, shadow=True)
    waiter = asyncio.ensure_future(new.manager.wait_for(hikari.GuildAvailableEvent, timeout=5))
    await asyncio.sleep(0)
    new.feed("GUILD_CREATE", world.guild_create(first, BOT_ID, presences=False, large_threshold=250))
    await asyncio.sleep(0.05)
    assert new.guilds() == {first}, "the cache was not filled"
    assert not waiter.done(), "a waiter saw a cache-only event"
    assert handled == []
    new.manager.go_live({})
    new.feed("GUILD_CREATE", world.guild_create(second, BOT_ID, presences=False, large_threshold=250))
    event = await asyncio.wait_for(waiter, 5)
    assert event.guild_id == second
    await asyncio.sleep(0.05)
    assert handled == [("new", f"available {second}")], "the listeners did not come back after the quiet consume"


async def test_a_shadow_set_over_its_cap_refuses_to_go_live(token: str) -> None:
    world = World(1, 2)
    handled: list[tuple[str, str]] = []
    new = _Set(token, "new", handled, shadow=True, cap=3)
    for _, name, payload in _events(world, world.guild_ids()[0])[:5]:
        new.feed(name, payload)
    assert new.manager.overflowed and new.manager.near_cap and new.manager.buffered == 0
    with pytest.raises(ShadowOverflowError, match="reshard_buffer_cap"):
        new.manager.go_live({})
    assert not handled


async def test_a_shadow_set_near_its_cap_is_too_close_to_switch(token: str) -> None:
    world = World(1, 2)
    new = _Set(token, "new", [], shadow=True, cap=10)
    events = _events(world, world.guild_ids()[0])
    for _, name, payload in events[:9]:
        new.feed(name, payload)
    assert not new.manager.near_cap, "9 of 10 is within the headroom"
    new.feed(*events[0][1:])
    assert new.manager.near_cap and not new.manager.overflowed


def test_an_unavailable_guild_is_not_a_guild_event() -> None:
    assert not cutover.fan_out("GUILD_CREATE", {"id": "1", "unavailable": False})


@pytest.mark.parametrize("acknowledged", [2, 1, 0])
async def test_an_old_host_that_dies_takes_its_tails_but_not_exactly_once(token: str, acknowledged: int) -> None:
    """Old host A delivers two edits and dies (its tails with it); B adopts the shard (noting ``since`` before
    its RESUME) and Discord replays what came after A's watermark (``acknowledged`` of the two). B is muted, the
    new set goes live with B's tails and ``since``: each event is handled by one set only."""
    world = World(1, 2)
    gid = world.guild_ids()[0]
    handled: list[tuple[str, str]] = []
    events = _events(world, gid)
    dead = _Set(token, "old", handled, shadow=False)
    new = _Set(token, "new", handled, shadow=True)
    for who in (dead, new):
        who.feed("GUILD_CREATE", world.guild_create(gid, BOT_ID, presences=False, large_threshold=250))
    dead.manager.start_recording()
    for _, name, payload in events[:2]:
        dead.feed(name, payload)
        new.feed(name, payload)
        await asyncio.sleep(GAP)
    await asyncio.sleep(2 * MAX_SKEW)  # detection and re-lease of the dead host's shard
    adopter = _Set(token, "old", handled, shadow=False)
    adopter.manager.start_recording()
    adopter.manager.adopted(0)  # before the RESUME
    since = adopter.manager.recording_since()
    assert list(since) == [0]
    adopter.feed("GUILD_CREATE", world.guild_create(gid, BOT_ID, presences=False, large_threshold=250))
    for _, name, payload in events[acknowledged:2]:  # the replay
        adopter.feed(name, payload)
    await asyncio.sleep(3 * MAX_SKEW + GAP)  # the adopter mutes no earlier than 3 * max_skew after since
    tails = adopter.manager.mute()
    for _, name, payload in events[2:4]:  # after the switch: the new set's
        new.feed(name, payload)
    assert set(tails) == ({gid} if acknowledged < 2 else set())
    new.manager.go_live(tails, since=since, old_count=1)
    await asyncio.sleep(0.1)
    handled_by = [(who, label) for who, label in handled if not label.startswith("available")]
    expected = [label for label, _, _ in events]
    assert [label for who, label in handled_by if who == "new"] == expected[2:4], handled
    assert [label for who, label in handled_by if who == "old"] == expected[:2] + expected[acknowledged:2]

    # Without since, the guild's events the dead host delivered run again in the new set.
    handled.clear()
    again = _Set(token, "new", handled, shadow=True)
    again.feed("GUILD_CREATE", world.guild_create(gid, BOT_ID, presences=False, large_threshold=250))
    for _, name, payload in events[:2]:
        again.feed(name, payload)
    again.manager.go_live(tails)
    await asyncio.sleep(0.1)
    assert [label for _, label in handled if not label.startswith("available")] == expected[:2]
