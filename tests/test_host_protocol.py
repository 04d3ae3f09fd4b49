"""A host's side of the protocol (`Bot.before_identify`, `Bot._adopt`), against a scripted Orchestrator link."""

from __future__ import annotations

import asyncio
import itertools
import time
import types
import typing

import pytest

from ray_shards import bot as bot_module
from ray_shards.bot import Bot, _Slot
from ray_shards.models import Lease
from ray_shards.presence import PresenceState
from ray_shards.protocol import IdentifyAnswer

pytestmark = pytest.mark.timeout(30)


class _Metrics:
    def count(self, name: str) -> None:
        pass


class _Link:
    """Answers the first ask with a grant that arrives late, every later ask at once."""

    def __init__(self) -> None:
        self.asks: list[tuple[int | None, int | None]] = []

    async def request_identify(
        self, host_id: str, shard_id: int, epoch: int, *, ask: int | None = None, dropped: int | None = None,
        early: bool = False, retry_for: float = 30.0,
    ) -> IdentifyAnswer:
        assert early, "a host takes not-before grants"
        self.asks.append((ask, dropped))
        if len(self.asks) == 1:
            await asyncio.sleep(0.2)  # past the (patched) grant use limit
        return IdentifyAnswer(granted=True, wait=0.0, presence=PresenceState())


def _host(link: _Link) -> Bot:
    host = Bot.__new__(Bot)
    lease = Lease(shard_id=3, shard_count=4, epoch=9)
    host._slots = {3: _Slot(lease=lease, shard=typing.cast(typing.Any, None))}
    host._host_id = "h0"
    host._link = typing.cast(typing.Any, link)
    host._asks = itertools.count(100)
    host._metrics = typing.cast(typing.Any, _Metrics())
    return host


async def test_a_grant_that_arrives_too_late_is_named_unused_in_the_next_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot_module, "_GRANT_USE_LIMIT", 0.1)
    link = _Link()
    host = _host(link)
    await host.before_identify(3)
    # The late grant (ask 100) was not used: the next ask says so, and its own timely grant is used.
    assert link.asks == [(100, None), (101, 100)]
    assert host._slots[3].identify_pending


class _NotBeforeLink:
    """Answers every ask with a grant to send ``wait`` seconds after the answer arrives."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.asks: list[tuple[int | None, int | None]] = []
        self.done: list[tuple[int, object]] = []
        self.left_ago: list[object] = []
        self.answered: list[float] = []

    async def request_identify(
        self, host_id: str, shard_id: int, epoch: int, *, ask: int | None = None, dropped: int | None = None,
        early: bool = False, retry_for: float = 30.0,
    ) -> IdentifyAnswer:
        self.asks.append((ask, dropped))
        self.answered.append(time.monotonic())
        return IdentifyAnswer(granted=True, wait=self.wait, presence=PresenceState())

    async def identify_done(self, shard_id: int, sent_at: float | None, **kwargs: object) -> None:
        self.done.append((shard_id, kwargs.get("ask")))
        self.left_ago.append(kwargs.get("left_ago"))


async def test_a_not_before_grant_is_slept_from_the_answers_arrival() -> None:
    link = _NotBeforeLink(0.3)
    host = _host(typing.cast(typing.Any, link))
    await host.before_identify(3)
    # Never sooner than the wait after the answer arrived: the Orchestrator made the grant before that.
    assert time.monotonic() - link.answered[0] >= 0.3
    assert link.asks == [(100, None)]


async def test_a_not_before_grant_overslept_past_the_limit_is_named_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot_module, "_GRANT_USE_LIMIT", 0.05)
    link = _NotBeforeLink(0.1)
    host = _host(typing.cast(typing.Any, link))
    real_sleep = asyncio.sleep

    async def oversleep(delay: float) -> None:
        # A loop too busy to wake on time the first time: the IDENTIFY would leave past not_before + the limit.
        await real_sleep(delay + (0.2 if len(link.asks) == 1 else 0.0))

    monkeypatch.setattr(bot_module.asyncio, "sleep", oversleep)
    await host.before_identify(3)
    assert link.asks == [(100, None), (101, 100)]


async def test_the_ready_report_names_the_ask_whose_grant_was_used() -> None:
    # A late or repeated report of an earlier IDENTIFY of the shard must not free a later grant: it names its ask.
    link = _NotBeforeLink(0.0)
    host = _host(typing.cast(typing.Any, link))
    await host.before_identify(3)
    await host.before_identify(3)  # a second IDENTIFY on the same lease (the session was not resumable)
    event = typing.cast(typing.Any, types.SimpleNamespace(shard=types.SimpleNamespace(id=3)))
    await host._on_shard_ready(event)
    assert link.done == [(3, 101)]


async def test_the_ready_report_says_how_long_ago_the_identify_frame_left() -> None:
    link = _NotBeforeLink(0.0)
    host = _host(typing.cast(typing.Any, link))
    event = typing.cast(typing.Any, types.SimpleNamespace(shard=types.SimpleNamespace(id=3)))
    await host.before_identify(3)
    await asyncio.sleep(0.05)  # granted, but the frame is not written yet: the age counts from the write only
    host.after_identify(3)
    await asyncio.sleep(0.1)
    await host._on_shard_ready(event)
    age = link.left_ago[-1]
    assert isinstance(age, float) and 0.1 <= age < 0.15, age
    # A write that never returned (the connection died in it) stamps nothing: the Orchestrator counts from READY.
    await host.before_identify(3)
    await host._on_shard_ready(event)
    assert link.left_ago[-1] is None


class _ReleaseLink:
    def __init__(self) -> None:
        self.released: list[tuple[int, int]] = []

    async def release(self, host_id: str, shard_id: int, epoch: int, session: object, **_: object) -> None:
        self.released.append((shard_id, epoch))


@pytest.mark.parametrize("epoch", [3, 5])
async def test_an_adopt_at_or_below_an_epoch_the_host_ended_is_given_back(epoch: int) -> None:
    # A table restored from a checkpoint older than the host's release re-sends an adopt the host already ended, at
    # that epoch or (restored from even older) below it: the host must not run it again, and must release it again,
    # or the table waits for a shard nobody runs (the simulator's seed 13539 found the "below" case).
    link = _ReleaseLink()
    host = Bot.__new__(Bot)
    host._host_id = "h0"
    host._link = typing.cast(typing.Any, link)
    host._config = typing.cast(typing.Any, object())
    host._ended = {3: 5}
    host._slots = {}
    host._tasks = set()
    host._adopt(Lease(shard_id=3, shard_count=4, epoch=epoch))
    await asyncio.gather(*host._tasks)
    assert host._slots == {}
    assert link.released == [(3, epoch)]
