"""The load generator: a steady stream of MESSAGE_CREATE events over all guilds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ray_shards.emulator import ids, payloads
from ray_shards.emulator.gateway import Gateway
from ray_shards.emulator.ids import SnowflakeGenerator
from ray_shards.emulator.protocol import dumps
from ray_shards.emulator.recorder import Recorder
from ray_shards.emulator.world import JSON, World

__all__ = ["EventStream"]

_LOGGER = logging.getLogger("ray_shards.emulator")
_MAX_CATCH_UP_S = 0.5
_MAX_SLEEP_S = 0.05


class EventStream:
    """Generates ``MESSAGE_CREATE`` at a fixed total rate, round-robin over the guilds.

    Each event goes into every resumable session (any shard count) covering its
    guild, so disconnected sessions buffer it for RESUME replay.

    Parameters
    ----------
    gateway
        Where events are dispatched.
    world
        The guilds.
    recorder
        Receives one ``stream_sent`` entry per event.
    snowflakes
        Source of the strictly increasing message ids.
    """

    __slots__ = (
        "_authors",
        "_counter",
        "_gateway",
        "_guild_ids",
        "_rate",
        "_recorder",
        "_snowflakes",
        "_task",
        "_world",
    )

    def __init__(self, *, gateway: Gateway, world: World, recorder: Recorder, snowflakes: SnowflakeGenerator) -> None:
        self._gateway = gateway
        self._world = world
        self._recorder = recorder
        self._snowflakes = snowflakes
        self._rate = 0.0
        self._counter = 0
        self._task: asyncio.Task[None] | None = None
        self._authors: dict[int, tuple[JSON, JSON]] = {}
        self._guild_ids = world.guild_ids()

    @property
    def running(self) -> bool:
        """Whether the stream is generating events."""
        return self._task is not None and not self._task.done()

    @property
    def rate(self) -> float:
        """Events per second (in total)."""
        return self._rate

    def start(self, rate: float) -> None:
        """Start generating (or change the rate of a running stream).

        Parameters
        ----------
        rate
            Events per second in total, > 0.
        """
        if not rate > 0:
            raise ValueError("rate must be > 0")
        if not self._world.guild_count:
            raise ValueError("the emulator has no guilds to stream events to")
        self._rate = float(rate)
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="emulator event stream")
            _LOGGER.info("event stream started at %.1f events/s", rate)

    def stop(self) -> asyncio.Task[None] | None:
        """Stop generating events (no event is generated after this call returns).

        Returns
        -------
        asyncio.Task[None] | None
            The cancelled task, to await if wanted.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            _LOGGER.info("event stream stopped after %d events", self._counter)
        return task

    async def aclose(self) -> None:
        """Stop generating events and wait for the task to finish."""
        task = self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _author(self, gid: int) -> tuple[JSON, JSON]:
        cached = self._authors.get(gid)
        if cached is None:
            numbers = self._world.member_numbers(gid)
            user = World.user(numbers[0]) if numbers else World.user(0)
            cached = (user, World.member(user))
            self._authors[gid] = cached
        return cached

    def emit_one(self) -> int:
        """Generate one event now; return its message id."""
        gid = self._guild_ids[self._counter % len(self._guild_ids)]
        self._counter += 1
        message_id = self._snowflakes.next()
        author, member = self._author(gid)
        message = payloads.message(
            message_id=message_id,
            channel_id=ids.text_channel_id(gid),
            author=author,
            content=f"stream {self._counter}",
            guild_id=gid,
            member=member,
        )
        self._gateway.dispatch_to_guild(gid, "MESSAGE_CREATE", dumps(message))
        self._recorder.stream_sent.append({"id": message_id, "guild_id": gid, "time": time.time()})
        self._recorder.streamed += 1
        return message_id

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        done = 0
        last_rate = self._rate
        while True:
            rate = self._rate
            now = loop.time()
            if rate != last_rate:
                started = now - done / rate
                last_rate = rate
            due = int((now - started) * rate) - done
            cap = max(1, int(rate * _MAX_CATCH_UP_S))
            if due > cap:
                # The loop lagged: generate at most `cap` late events and forget the rest.
                started += (due - cap) / rate
                due = cap
            for _ in range(due):
                self.emit_one()
            done += max(due, 0)
            wake = started + (done + 1) / rate
            await asyncio.sleep(min(max(wake - loop.time(), 0.001), _MAX_SLEEP_S))
