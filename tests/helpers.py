"""Test helpers: bounded waits and a bot under a steady event stream that records every delivery."""

from __future__ import annotations

import asyncio
import time
import typing
import uuid

import hikari
import ray

from ray_shards import BotDeployment, Client, ShardStatus
from ray_shards.testing import recording_callback, start_recorder
from ray_shards.timings import Timings

FAST = Timings(identify_window=1.0)


class _OpenHooks:
    """Shard hooks that let a lone `ManagedShard` IDENTIFY and RESUME without an Orchestrator."""

    async def before_identify(self, shard_id: int) -> dict[str, typing.Any] | None:
        return None

    async def before_resume(self, shard_id: int) -> None:
        return None

    def after_identify(self, shard_id: int) -> None:
        return None


def lone_shard(emu: typing.Any, token: str, app: hikari.GatewayBot, manager: typing.Any) -> typing.Any:
    """One real `sessions.ManagedShard` (shard 0 of 1) on the emulator, dispatching into ``manager`` (no Ray)."""
    from hikari.impl import config as config_impl

    from ray_shards import sessions

    return sessions.ManagedShard(
        hooks=_OpenHooks(), event_manager=manager, event_factory=app.event_factory,
        http_settings=config_impl.HTTPSettings(), proxy_settings=config_impl.ProxySettings(),
        intents=hikari.Intents.ALL_UNPRIVILEGED, shard_id=0, shard_count=1, token=token, url=emu.gateway_url,
    )


async def stream_briefly(emu: typing.Any, handled: typing.Callable[[], int], *, rate: float = 50,
                         seconds: float = 0.4, timeout: float = 10) -> int:
    """Stream MESSAGE_CREATEs for ``seconds``; wait (bounded) until ``handled()`` reaches what was sent; return that."""
    emu.control.start_stream(rate)
    await asyncio.sleep(seconds)
    sent: int = emu.control.stop_stream()
    deadline = time.monotonic() + timeout
    while handled() < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return sent


async def wait_for_watermark(mark: typing.Any, seq: int, timeout: float = 10) -> typing.Any:
    """Wait (bounded) until the listener watermark ``mark`` reaches ``seq``; return its value then."""
    deadline = time.monotonic() + timeout
    while mark.value(time.monotonic()) != seq and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return mark.value(time.monotonic())


async def wait_for(predicate: typing.Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``predicate``; return how long it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


class StreamingBot:
    """A bot under a steady event stream whose listeners record every delivery."""

    def __init__(
        self, emu: typing.Any, token: str, *, listener_delay: float = 0.0, guild_events: bool = False,
        timings: Timings = FAST, background: bool = False,
    ) -> None:
        self.emu = emu
        self.token = token
        self.listener_delay = listener_delay
        self.guild_events = guild_events
        self.background = background
        self.timings = timings
        self.recorder_name = f"recorder-{uuid.uuid4().hex[:8]}"
        self.recorder = start_recorder(self.recorder_name)
        self.deployment: BotDeployment | None = None
        self.client: Client | None = None

    async def start(self, hosts: int) -> None:
        self.deployment = await BotDeployment.start(
            self.token,
            subprocess_count=hosts,
            rest_url=self.emu.rest_url,
            callback=recording_callback(
                self.recorder_name, delay=self.listener_delay, guild_events=self.guild_events,
                background=self.background,
            ),
            intents=hikari.Intents.ALL,
            timings=self.timings,
        )
        self.client = Client(self.token, None, refresh_interval=0.1)
        await self.client.start()

    def shards(self) -> dict[int, typing.Any]:
        assert self.client is not None
        return {i: s.info for i, s in self.client.remote_shards.items()}

    def all_ready(self, exclude_hosts: typing.Collection[str] = ()) -> bool:
        infos = self.shards().values()
        return bool(infos) and all(
            i is not None and i.status is ShardStatus.READY and i.host_id not in exclude_hosts for i in infos
        )

    async def assert_nothing_lost(self) -> None:
        self.emu.control.stop_stream()
        sent = {int(e["id"]) for e in self.emu.control.stream_sent()}
        assert sent, "the stream sent nothing"

        def missing() -> set[int]:
            return sent - set(ray.get(self.recorder.counts.remote()))

        try:
            await wait_for(lambda: not missing(), 60, "every streamed event to reach a listener")
        except AssertionError as exc:
            lost = sorted(missing())
            sent_at = {int(e["id"]): (e["guild_id"], e["time"]) for e in self.emu.control.stream_sent()}
            detail = {
                "lost": len(lost),
                "first lost (id, guild, time)": [(m, *sent_at[m]) for m in lost[:10]],
                "identifies": [(e.get("shard_id"), e.get("time")) for e in self.emu.control.identify_log()],
                "resumes": [(e.get("shard_id"), e.get("seq"), e.get("time")) for e in self.emu.control.resume_log()],
                "resume attempts": [
                    (e.get("shard_id"), (e.get("d") or {}).get("seq"), e.get("time"))
                    for e in self.emu.control.received(op=6)
                ],
                "closes": [
                    (c.get("shard_id"), c.get("code"), c.get("by"), c.get("time"))
                    for c in self.emu.control.stats()["closes"]
                ],
            }
            raise AssertionError(f"{exc}: {detail}") from None
        counts = ray.get(self.recorder.counts.remote())
        duplicates = sum(c - 1 for m, c in counts.items() if m in sent and c > 1)
        print(f"events sent {len(sent)}, delivered at least once {len(sent)}, replayed twice {duplicates}")

    def handled_by_both_sets(self, new_count: int) -> dict[int, list[str]]:
        """Streamed events a host of a reshard's new set (``s<new_count>-h…``) and an old-set host both handled."""
        sent = {int(e["id"]) for e in self.emu.control.stream_sent()}
        prefix = f"s{new_count}-"
        deliveries: dict[int, list[str]] = ray.get(self.recorder.deliveries.remote())
        return {
            m: hosts for m, hosts in deliveries.items()
            if m in sent and any(h.startswith(prefix) for h in hosts) and not all(h.startswith(prefix) for h in hosts)
        }

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.deployment is not None:
            await self.deployment.stop()
        ray.kill(self.recorder)


