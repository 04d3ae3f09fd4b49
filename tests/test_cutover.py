"""The reshard cut-over (ray_shards.cutover) as pure logic: every event handled exactly once across old + new.

A model of the switch: one stream of guild events reaches the old set at ``t_old`` and the new set at
``t_new = t_old + skew``. The old set delivers what it received before it was muted (``mute``) and keeps
its per-guild tail; the new set holds what it received from its start (``start``) until it is told to go
live (``live``), then aligns and delivers, and delivers live after that. Every event must be delivered to
listeners by exactly one of the two sets, and the new set must consume everything it received.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_shards.cutover import (
    Seen,
    ShadowBuffer,
    TailRecorder,
    align,
    content_only_align,
    digest,
    fan_out,
    guild_key,
    guild_of_event,
    seen,
)

pytestmark = pytest.mark.timeout(120)

MAX_SKEW = 1.0


@dataclasses.dataclass(frozen=True)
class Event:
    index: int
    key: int
    name: str
    payload: dict[str, typing.Any]
    t_old: float
    t_new: float


# A small alphabet with heavy repetition: identical reaction payloads, a few edits of one message, and
# (rarely) new messages with unique ids.
_CONTENT = [
    ("MESSAGE_REACTION_ADD", {"message_id": "5", "emoji": {"name": "x"}, "user_id": "9"}),
    ("MESSAGE_REACTION_REMOVE", {"message_id": "5", "emoji": {"name": "x"}, "user_id": "9"}),
    ("MESSAGE_UPDATE", {"id": "5", "content": "a"}),
    ("MESSAGE_UPDATE", {"id": "5", "content": "b"}),
]


_KEYS = [0, 1 << 22, 2 << 22]
_GAPS = [0.01, 0.02, 0.1, 0.5, 1.3]
_STEPS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, len(_CONTENT)), st.integers(0, len(_GAPS) - 1),
              st.integers(-4, 4)),
    max_size=40,
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Event], float, float, float]:
    steps = draw(_STEPS)
    skew = draw(st.integers(-995, 995)) / 1000
    events: list[Event] = []
    t = 0.0
    last_seen: dict[tuple[int, int], float] = {}
    unique = 10_000
    for index, (key_index, choice, gap, jitter) in enumerate(steps):
        key = _KEYS[key_index]
        t += _GAPS[gap]
        if choice == len(_CONTENT):
            unique += 1
            name, payload = "MESSAGE_CREATE", {"id": str(unique), "content": "new"}
        else:
            name, payload = _CONTENT[choice]
            # Assumption 2: equal digests of one guild arrive more than 2 * max_skew apart.
            t = max(t, last_seen.get((key, choice), -10.0) + 2 * MAX_SKEW + 0.01)
            last_seen[(key, choice)] = t
        payload = dict(payload, guild_id=str(key)) if key else dict(payload)
        events.append(Event(index, key, name, payload, t, t + skew + jitter / 1000))
    end = t + 3.0
    start = draw(st.floats(-1.0, end))
    # The switch happens more than max_skew after the new set started receiving (the Orchestrator waits).
    mute = start + MAX_SKEW + 0.01 + draw(st.floats(0.0, end - start + 0.01))
    live = mute + draw(st.sampled_from([0.0, 0.001, 0.05, 0.5]))
    return events, start, mute, live


def run_switch(
    events: list[Event], start: float, mute: float, live: float, *, cap: int = 1_000_000
) -> tuple[set[int], list[int], list[int]]:
    """The old set's deliveries, the new set's deliveries and everything it consumed (both in order)."""
    tails = TailRecorder()
    old = set()
    for e in sorted(events, key=lambda e: e.t_old):
        if e.t_old < mute:
            old.add(e.index)
            tails.record(e.key, seen(e.name, e.payload, e.t_old))
    buffer: ShadowBuffer[int] = ShadowBuffer(cap, max_skew=MAX_SKEW)
    consumed: list[tuple[int, bool]] = []
    arrivals = sorted((e for e in events if e.t_new >= start), key=lambda e: e.t_new)
    for e in arrivals:
        if e.t_new < live:
            assert buffer.hold(e.key, seen(e.name, e.payload, e.t_new), e.index)
    consumed += buffer.go_live(tails.snapshot(), live)
    for e in arrivals:
        if e.t_new >= live:
            consumed += buffer.offer(e.key, seen(e.name, e.payload, e.t_new), e.index, e.t_new)
    consumed += buffer.expire(float("inf"))
    assert not buffer.pending
    new = [i for i, deliver in consumed if deliver]
    return old, new, [i for i, _ in consumed]


@settings(max_examples=2000, deadline=None)
@given(scenarios())
def test_every_event_is_handled_exactly_once_across_the_switch(
    scenario: tuple[list[Event], float, float, float],
) -> None:
    events, start, mute, live = scenario
    old, new, consumed = run_switch(events, start, mute, live)
    assert len(new) == len(set(new)), "the new set delivered an event twice"
    for e in events:
        handled = (e.index in old) + new.count(e.index)
        assert handled == 1, f"event {e.index} handled {handled} times ({e}); old {sorted(old)}, new {new}"
    seen_by_new = sorted(e.index for e in events if e.t_new >= start)
    assert sorted(consumed) == seen_by_new, "the new set must consume (at least for its cache) all it got"
    _check_order(events, consumed)


def _check_order(events: list[Event], consumed: list[int]) -> None:
    for key in {e.key for e in events}:
        order = [i for i in consumed if events[i].key == key]
        assert order == sorted(order, key=lambda i: events[i].t_new), "a guild's events were consumed out of order"


def _periodic(period: float, count: int, skew: float) -> list[Event]:
    """Reaction added, removed, added again ...: identical payloads repeating every ``period`` s."""
    add, remove = _CONTENT[0], _CONTENT[1]
    out = []
    for i in range(count):
        name, payload = add if i % 2 == 0 else remove
        t = i * period / 2
        out.append(Event(i, 0, name, dict(payload), t, t + skew))
    return out


def test_content_only_matching_is_wrong_on_a_periodic_stream_and_the_time_rule_is_right() -> None:
    # add/remove/add/remove/add, 1.5 s apart (each payload repeats every 3 s); skew 0.4 s < 3 s / 2.
    events = _periodic(3.0, 5, 0.4)
    old_delivered = events[:3]  # muted after the second add
    tail = [seen(e.name, e.payload, e.t_old) for e in old_delivered]
    held = [seen(e.name, e.payload, e.t_new) for e in events]  # the new set held all five
    # Content alone: the tail add/remove/add matches at 2 and at 4; the latest (4) loses events 3 and 4,
    # the earliest (2) would be as wrong if the old set had been muted after the third add.
    assert content_only_align(tail, held) == 5, "content alone skips the second remove and the third add"
    assert align(tail, held, max_skew=MAX_SKEW, now=100.0) == 3
    old, new, _ = run_switch(events, start=-1.0, mute=3.1, live=7.0)
    assert old == {0, 1, 2} and new == [3, 4]
    # Muted after the third add instead: the old set delivered all five, the new set nothing.
    old, new, _ = run_switch(events, start=-1.0, mute=6.1, live=7.5)
    assert old == {0, 1, 2, 3, 4} and new == []


@given(st.floats(0.0, 1.49), st.integers(3, 12), st.integers(1, 12), st.booleans())
@settings(max_examples=500, deadline=None)
def test_the_time_rule_holds_whenever_the_skew_is_under_half_the_period(
    skew: float, count: int, delivered: int, negative: bool
) -> None:
    period = 3.0
    events = _periodic(period, count, -skew if negative else skew)
    delivered = min(delivered, count)
    tail = [seen(e.name, e.payload, e.t_old) for e in events[:delivered]]
    held = [seen(e.name, e.payload, e.t_new) for e in events]
    # Any max_skew between the actual skew and half the period works: here just above the skew.
    assert align(tail, held, max_skew=skew + 0.01, now=1000.0) == delivered


def test_distinct_edits_differ_and_identical_payloads_do_not() -> None:
    edit_a, edit_b = {"id": "1", "content": "a"}, {"id": "1", "content": "b"}
    assert digest("MESSAGE_UPDATE", edit_a) != digest("MESSAGE_UPDATE", edit_b)
    assert digest("MESSAGE_REACTION_ADD", {"a": 1, "b": 2}) == digest("MESSAGE_REACTION_ADD", {"b": 2, "a": 1})
    assert digest("MESSAGE_REACTION_ADD", {"a": 1}) != digest("MESSAGE_REACTION_REMOVE", {"a": 1})
    assert seen("MESSAGE_CREATE", {"id": "1"}, 0.0).unique and not seen("MESSAGE_UPDATE", {"id": "1"}, 0.0).unique


def test_guild_keys_and_what_is_fan_out() -> None:
    assert guild_key({"guild_id": "4194304"}) == 1 << 22
    assert guild_key({"channel_id": "1"}) == 0 and guild_key(None) == 0
    assert guild_of_event("GUILD_CREATE", {"id": "8388608"}) == 2 << 22
    assert fan_out("GUILD_CREATE", {"id": "1"}), "a join is a guild event both sets receive"
    assert not fan_out("GUILD_CREATE", {"id": "1", "unavailable": False}), "availability is per session"
    assert fan_out("GUILD_DELETE", {"id": "1"}) and not fan_out("GUILD_DELETE", {"id": "1", "unavailable": True})
    assert not fan_out("READY", {}) and fan_out("MESSAGE_CREATE", {})


def test_a_unique_event_decides_even_when_times_are_far_apart() -> None:
    tail = [Seen(b"a", False, 0.0), Seen(b"m", True, 0.0), Seen(b"a", False, 0.0)]
    held = [Seen(b"a", False, 50.0), Seen(b"m", True, 50.0), Seen(b"a", False, 50.0), Seen(b"b", False, 50.0)]
    assert align(tail, held, max_skew=1.0, now=60.0) == 3


def test_the_new_set_waits_when_the_old_sets_last_delivery_has_not_reached_it() -> None:
    tail = [Seen(b"a", False, 10.0), Seen(b"b", False, 10.5)]
    assert align(tail, [Seen(b"a", False, 10.2)], max_skew=1.0, now=10.6) is None
    assert align(tail, [Seen(b"a", False, 10.2)], max_skew=1.0, now=11.6) == 0
    assert align(tail, [Seen(b"a", False, 10.2), Seen(b"b", False, 10.7)], max_skew=1.0, now=10.8) == 2
    assert align(tail, [], max_skew=1.0, now=10.6) is None


def test_the_buffer_is_bounded_and_overflow_is_reported_not_silent() -> None:
    buffer: ShadowBuffer[int] = ShadowBuffer(3, max_skew=MAX_SKEW)
    for i in range(3):
        assert buffer.hold(0, Seen(bytes([i]), False, float(i)), i)
    assert not buffer.hold(0, Seen(b"x", False, 4.0), 4)
    assert buffer.overflowed and not buffer.hold(0, Seen(b"y", False, 5.0), 5)
    assert buffer.clear() == [0, 1, 2] and len(buffer) == 0
    with pytest.raises(OverflowError):
        buffer.go_live({}, 10.0)
    tails = TailRecorder(length=4)
    for i in range(100):
        tails.record(i % 2, Seen(bytes([i]), False, float(i)))
    assert len(tails) == 8 and [len(t) for t in tails.snapshot().values()] == [4, 4]


def test_memory_is_bounded_and_measured() -> None:
    """The old set's tails cost at most 16 entries per guild, whatever the event count (about 3.5 KB a guild)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tails = TailRecorder()
        for i in range(20_000):  # 20 events a guild: every tail is full
            key = (i % 1000) << 22
            tails.record(key, seen("MESSAGE_UPDATE", {"id": str(i), "guild_id": str(key), "content": "x" * 50}, 0.0))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(tails) == 16 * 1000
    per_guild = used / 1000
    print(f"old-set tail memory: {per_guild:.0f} bytes per guild (16 entries)")
    assert per_guild < 4096, per_guild


# -- an old-set host that dies during the reshard --------------------------------------------------------
#
# Two old shards (guild -> old shard is ``(guild >> 22) % 2``): keys 0 and 2 << 22 are on old shard 0, whose
# host dies at ``death`` with its tails. Its listener-completion watermark is at ``watermark`` <= ``death``:
# it delivered (and acknowledged) everything of shard 0 up to the watermark, and maybe more up to its death.
# Another old-set host adopts shard 0 at ``since`` >= ``death`` (noting ``since`` before its RESUME), and
# Discord replays everything after the watermark: received there at about ``since`` (within max_skew), then
# live. That host records what it delivers, with its own receive times, and is muted at ``mute`` (at least
# ``3 * max_skew`` after ``since``: it waits for that). A failover replay within the old set is allowed (the
# at-least-once of guarantee 4); what must not happen is an event handled by both sets, or by neither.

OLD_COUNT = 2


@st.composite
def death_scenarios(draw: st.DrawFn) -> tuple[list[Event], float, float, float, float, float, float]:
    events, start, mute, live = draw(scenarios())
    end = max((e.t_old for e in events), default=0.0) + 3.0
    death = draw(st.floats(start - 1.0, end))
    watermark = death - draw(st.sampled_from([0.0, 0.01, 0.3, 1.5, 4.0]))
    since = death + draw(st.sampled_from([0.0, 0.02, 0.4, 1.2, 3.0]))
    mute = max(mute, since + 3 * MAX_SKEW + 0.01)
    live = max(live, mute)
    return events, start, mute, live, death, watermark, since


def run_switch_with_death(
    events: list[Event], start: float, mute: float, live: float, death: float, watermark: float, since: float,
    *, use_since: bool = True,
) -> tuple[set[int], list[int], list[int]]:
    """Like `run_switch`, with old shard 0's host dying: the old set's handled events, the new set's deliveries
    and what it consumed."""
    old: set[int] = set()
    received: list[tuple[float, Event]] = []  # by the old set's live hosts (the survivor and the adopter)
    replay_at = since
    for e in sorted(events, key=lambda e: e.t_old):
        if (e.key >> 22) % OLD_COUNT != 0:
            received.append((e.t_old, e))
            continue
        if e.t_old <= death:
            old.add(e.index)  # delivered by the host that died (its tail died with it)
        if e.t_old > watermark:
            # Replayed after the RESUME (in order, within max_skew of since), or received live after it.
            replay_at = max(e.t_old, replay_at + 0.005)
            received.append((replay_at, e))
    tails = TailRecorder()
    for t, e in sorted(received, key=lambda r: r[0]):
        if t < mute:
            old.add(e.index)
            tails.record(e.key, seen(e.name, e.payload, t))
    buffer: ShadowBuffer[int] = ShadowBuffer(1_000_000, max_skew=MAX_SKEW)
    consumed: list[tuple[int, bool]] = []
    arrivals = sorted((e for e in events if e.t_new >= start), key=lambda e: e.t_new)
    for e in arrivals:
        if e.t_new < live:
            assert buffer.hold(e.key, seen(e.name, e.payload, e.t_new), e.index)
    consumed += buffer.go_live(tails.snapshot(), live, since={0: since} if use_since else None, old_count=OLD_COUNT)
    for e in arrivals:
        if e.t_new >= live:
            consumed += buffer.offer(e.key, seen(e.name, e.payload, e.t_new), e.index, e.t_new)
    consumed += buffer.expire(float("inf"))
    assert not buffer.pending
    return old, [i for i, deliver in consumed if deliver], [i for i, _ in consumed]


def _handled_once_by_one_set(events: list[Event], old: set[int], new: list[int]) -> bool:
    return len(new) == len(set(new)) and all((e.index in old) + new.count(e.index) == 1 for e in events)


@settings(max_examples=2000, deadline=None)
@given(death_scenarios())
def test_events_of_an_old_host_that_dies_are_handled_by_exactly_one_set(
    scenario: tuple[list[Event], float, float, float, float, float, float],
) -> None:
    events, start, mute, live, death, watermark, since = scenario
    old, new, consumed = run_switch_with_death(events, start, mute, live, death, watermark, since)
    for e in events:
        handled = (e.index in old) + new.count(e.index)
        assert handled == 1, (
            f"event {e.index} handled by {handled} sets ({e}); old {sorted(old)}, new {new}; death {death}, "
            f"watermark {watermark}, since {since}, mute {mute}"
        )
    assert len(new) == len(set(new)), "the new set delivered an event twice"
    assert sorted(consumed) == sorted(e.index for e in events if e.t_new >= start)
    _check_order(events, consumed)


def test_without_since_the_events_of_a_dead_host_are_handled_twice() -> None:
    from hypothesis import find

    def broken(scenario: tuple[list[Event], float, float, float, float, float, float]) -> bool:
        events, *times = scenario
        old, new, _ = run_switch_with_death(events, *times, use_since=False)
        return not _handled_once_by_one_set(events, old, new)

    events, *times = find(death_scenarios(), broken, settings=settings(max_examples=2000, deadline=None))
    old, new, _ = run_switch_with_death(events, *times)
    assert _handled_once_by_one_set(events, old, new), "the since rule fixes the counterexample"


def _event(index: int, key: int, name: str, payload: dict[str, typing.Any], t: float) -> Event:
    return Event(index, key, name, dict(payload, guild_id=str(key)) if key else dict(payload), t, t + 0.3)


def test_a_guild_only_the_dead_host_delivered_is_not_delivered_again() -> None:
    # Guild 2 << 22 (old shard 0): two edits at 1 and 2, acknowledged (watermark 2.5), host dead at 3,
    # shard adopted at 4. Nothing to replay: the adopter never records the guild, so it has no tail.
    key = 2 << 22
    events = [_event(0, key, *_CONTENT[2], 1.0), _event(1, key, *_CONTENT[3], 2.0), _event(2, key, *_CONTENT[0], 20.0)]
    timing = {"start": 0.0, "mute": 10.0, "live": 10.5, "death": 3.0, "watermark": 2.5, "since": 4.0}
    old, new, _ = run_switch_with_death(events, **timing, use_since=False)
    assert old == {0, 1} and new == [0, 1, 2], "without since: the dead host's deliveries run again"
    old, new, consumed = run_switch_with_death(events, **timing)
    assert old == {0, 1} and new == [2] and consumed == [0, 1, 2]


def test_a_tail_that_ends_with_a_replayed_event_aligns_by_since() -> None:
    # The watermark (1.5) is before the second edit: it is replayed at about since (4) and recorded then, far
    # (more than max_skew) from when the new set received it (2.3). The time rule alone finds no candidate.
    key = 2 << 22
    events = [_event(0, key, *_CONTENT[2], 1.0), _event(1, key, *_CONTENT[3], 2.0), _event(2, key, *_CONTENT[0], 20.0)]
    timing = {"start": 0.0, "mute": 10.0, "live": 10.5, "death": 3.0, "watermark": 1.5, "since": 4.0}
    old, new, _ = run_switch_with_death(events, **timing, use_since=False)
    assert new == [0, 1, 2]
    old, new, _ = run_switch_with_death(events, **timing)
    assert old == {0, 1} and new == [2]
