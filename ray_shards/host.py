"""`ShardHost`: the Ray actor that runs one ray_shards `Bot` with many local shards.

A host is created without the token (Ray records constructor arguments in the
GCS and shows them in its state API); the token arrives in the `start` method
call, which travels worker to worker. The user's ``callback(bot)`` runs in the
host before its bot starts, so listeners and command frameworks are set up
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import hmac
import logging
import os
import sys
import time
import typing

import ray

from ray_shards.auth import command_key, redact
from ray_shards.bot import Bot
from ray_shards.errors import ShardFailedError, StaleLeaseError
from ray_shards.models import CommandKind
from ray_shards.presence import PresenceState
from ray_shards.protocol import HostHealth
from ray_shards.settings import HostSetup
from ray_shards.timings import Timings

__all__ = ["HostCallbackError", "ShardHost"]

_LOGGER = logging.getLogger("ray_shards.host")


@functools.cache
def _libc_trim() -> typing.Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return typing.cast(typing.Callable[[int], int] | None, trim)


def malloc_trim() -> bool:
    """Give the pages glibc holds free in every malloc arena back to the OS; False where there is no glibc.

    ctypes releases the GIL for the call, so it runs in a worker thread without holding up the shard loop.
    """
    trim = _libc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HostCallbackError(RuntimeError):
    """The user's callback raised in a host; the host did not start its bot."""


class ShardHost:
    """Runs one `Bot` in a Ray actor. Created by the launchers; see `ray_shards.launch`.

    Parameters
    ----------
    bot_id
        The bot's user id (not secret).
    host_id
        This host's name among the bot's hosts.
    want
        How many shards this host should run.
    rest_url
        Discord REST base URL.
    timings
        Reaction times.
    """

    def __init__(self, bot_id: int, host_id: str, want: int, rest_url: str, timings: Timings) -> None:
        self._bot_id = bot_id
        self._host_id = host_id
        self._want = want
        self._rest_url = rest_url
        self._timings = timings
        self._bot: Bot | None = None
        self._closed = asyncio.Event()
        self._started_at = time.time()
        self._last_tick = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[dict[str, typing.Any]] | None = None
        self._command_key: str | None = None
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s %(levelname)s [host {host_id}] %(name)s: %(message)s"
        )
        if timings.host_switch_interval is not None:
            # See Timings.host_switch_interval: Ray's main thread gets the GIL at once instead of waiting out a burst.
            sys.setswitchinterval(timings.host_switch_interval)
        if timings.host_gc_threshold is not None:
            # See Timings.host_gc_threshold: fewer young collections walking the events still in flight.
            gc.set_threshold(timings.host_gc_threshold, *gc.get_threshold()[1:])

    def __repr__(self) -> str:
        return f"ShardHost(bot_id={self._bot_id}, host_id={self._host_id!r})"

    async def start(
        self,
        token: str,
        callback: typing.Callable[[Bot], typing.Any] | bytes | None = None,
        *,
        intents: int | None = None,
        shard_count: int | None = None,
        shadow: bool = False,
    ) -> dict[str, typing.Any]:
        """Build the bot, run ``callback(bot)``, join the Orchestrator and start the leased shards.

        Returns a summary (host id, node id, pid, shard ids). Idempotent: an Orchestrator
        that restarted without knowing whether its call arrived simply calls again, and a
        call while a start is in progress waits for that start.

        Raises
        ------
        HostCallbackError
            When ``callback`` raised (the bot is not started).
        """
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(
                self._start(token, callback, intents=intents, shard_count=shard_count, shadow=shadow)
            )
        return await asyncio.shield(self._start_task)

    async def _start(
        self,
        token: str,
        callback: typing.Callable[[Bot], typing.Any] | bytes | None,
        *,
        intents: int | None,
        shard_count: int | None,
        shadow: bool,
    ) -> dict[str, typing.Any]:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        self._command_key = command_key(token)
        if isinstance(callback, bytes):
            try:
                callback = typing.cast(typing.Callable[[Bot], typing.Any], ray.cloudpickle.loads(callback))
            except Exception as exc:
                msg = f"host {self._host_id} cannot load the callback: {type(exc).__name__}: {exc}"
                raise HostCallbackError(msg) from None
        options: dict[str, typing.Any] = {}
        if isinstance(callback, HostSetup):  # the launcher's settings for this host's Bot (ray_shards.launch)
            try:
                options = callback.bot_options()
            except Exception as exc:
                msg = redact(f"the settings factory raised in host {self._host_id}: {type(exc).__name__}: {exc}", token)
                raise HostCallbackError(msg) from None
        bot = Bot(
            None,
            token,
            **options,
            intents=intents,
            rest_url=self._rest_url,
            local_shard_count=self._want,
            host_id=self._host_id,
            timings=self._timings,
            actor_handle=ray.get_runtime_context().current_actor,
            global_shard_count=shard_count,
            shadow=shadow,
        )
        if callback is not None:
            try:
                result = callback(bot)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                msg = redact(f"the callback raised in host {self._host_id}: {type(exc).__name__}: {exc}", token)
                _LOGGER.error(msg)
                raise HostCallbackError(msg) from None
        self._bot = bot
        # Everything built so far (Ray, hikari, the user's callback and its imports: ~110 k objects) lives as
        # long as the host. Frozen out of the collector, full collections stop walking it for every event's
        # garbage: the same dispatch path measured ~4 % fewer instructions per event with a heap that much
        # smaller (BENCHMARKS.md, F3a). Refcounting still frees these objects; only cycles among them stay.
        gc.freeze()
        try:
            await bot.start(large_threshold=callback.large_threshold if isinstance(callback, HostSetup) else None)
        except BaseException:
            self._bot = None
            raise
        asyncio.get_running_loop().create_task(self._watch_bot(bot))
        trim_every = self._timings.host_memory_trim_interval
        if trim_every is not None and self._trimmer is None:
            self._trimmer = asyncio.get_running_loop().create_task(self._trim_forever(trim_every))
        return self.describe()

    async def _trim_forever(self, interval: float) -> None:
        # Right after the boot (its GUILD_CREATE payloads and zlib buffers are freed by now), then every
        # `interval`: glibc keeps freed pages in its arenas (Ray's threads each have one), so a host's USS
        # would otherwise stay at its high-water mark (Timings.host_memory_trim_interval).
        while not self._closed.is_set():
            try:
                if not await asyncio.to_thread(malloc_trim):
                    return
            except Exception:  # never let memory housekeeping take a host down
                _LOGGER.debug("malloc_trim failed", exc_info=True)
                return
            await asyncio.sleep(interval)

    async def _watch_bot(self, bot: Bot) -> None:
        while bot.is_alive:
            # A shard that failed for good is recorded by the Orchestrator; the host keeps running the others.
            try:
                await bot.join()
            except ShardFailedError:
                continue
            except Exception:
                break
        self._closed.set()

    def started(self) -> bool:
        """Whether `start` was ever called (a restarted Orchestrator asks before it starts a host again)."""
        return self._start_task is not None

    def describe(self) -> dict[str, typing.Any]:
        """Who and where this host is, and which shards it runs."""
        bot = self._bot
        return {
            "host_id": self._host_id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "shards": sorted(bot.local_shards) if bot else [],
            "uptime": time.time() - self._started_at,
        }

    async def _tick_forever(self) -> None:
        # Stamps the shard loop's progress, so the health check (which runs on another loop) can tell a loop
        # that is busy but moving from one that is stuck.
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(0.25)

    @ray.method(concurrency_group="health")  # type: ignore[untyped-decorator]
    async def health(self) -> HostHealth:
        """Liveness, answered on the host's own health event loop (not the shard loop).

        A host whose shard loop is busy with a burst stops syncing for a while but still
        answers here, with how long its shard loop has not ticked; the Orchestrator fences
        only a host that does not answer or whose loop has been stuck for too long.
        """
        return HostHealth(
            host_id=self._host_id,
            loop_lag=time.monotonic() - self._last_tick,
            closed=self._closed.is_set(),
        )

    async def command(
        self, key: str, kind: CommandKind, shard_id: int, epoch: int, arguments: dict[str, typing.Any]
    ) -> None:
        """Run a per-shard command sent straight here by a Client or another host, fenced by lease epoch.

        Raises
        ------
        PermissionError
            When ``key`` is not the bot token's command key.
        StaleLeaseError
            When this host does not run the shard under ``epoch`` (the sender refreshes and retries once).
        """
        await self._keyed_bot(key, "command").run_direct_command(kind, shard_id, epoch, arguments)

    async def apply_presence(self, key: str, presence: PresenceState, version: int) -> bool:
        """Send the bot-wide presence ``version`` on every shard here, pushed by the Orchestrator.

        One hop from the Orchestrator, which keeps the presence as versioned state; this host
        ignores a version older than the one it holds (`Bot.apply_presence`).

        Raises
        ------
        PermissionError
            When ``key`` is not the bot token's command key.
        StaleLeaseError
            When this host has not started its bot (the Orchestrator falls back to its mailbox).
        """
        return await self._keyed_bot(key, "presence").apply_presence(presence, version)

    def _keyed_bot(self, key: str, what: str) -> Bot:
        """This host's bot, for a caller that sent the token's command key (direct commands, presence pushes)."""
        bot, expected = self._bot, self._command_key
        if bot is None or expected is None:
            msg = f"host {self._host_id} has not started its bot"
            raise StaleLeaseError(msg)
        if not hmac.compare_digest(key, expected):
            msg = f"this {what} was not sent with the bot's token"
            raise PermissionError(msg)
        return bot

    async def wait_closed(self) -> None:
        """Return when the host's bot has closed (the Orchestrator watches hosts with it)."""
        await self._closed.wait()

    async def close(self, hand_over: bool = True) -> None:
        """Close the bot; with ``hand_over`` its sessions move to other hosts by RESUME."""
        bot = self._bot
        if bot is not None and bot.is_alive:
            await bot.close(hand_over=hand_over)
        self._closed.set()

    def memory(self) -> dict[str, int]:
        """Unique and resident memory of this process, in bytes (Linux)."""
        result = {"rss": 0, "uss": 0}
        with contextlib.suppress(OSError), open(f"/proc/{os.getpid()}/smaps_rollup") as smaps:
            for line in smaps:
                key, _, rest = line.partition(":")
                value = int(rest.split()[0]) * 1024 if rest.strip() else 0
                if key == "Rss":
                    result["rss"] = value
                elif key in ("Private_Clean", "Private_Dirty"):
                    result["uss"] += value
        return result
