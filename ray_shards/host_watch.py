"""The Orchestrator's watch over its hosts: death watches, silence, health checks and fencing (the Ray side).

What to do about a silent host is decided by `ray_shards.liveness` (pure); this carries it out with
actor handles: it watches each host's ``wait_closed``, asks a silent host's health check (its own
concurrency group, so a host busy with a burst of events still answers), kills a host that is stuck or
gone (fencing), and tells the Orchestrator, through ``on_gone``, when a host is gone for good so its
shards can move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import typing

from ray_shards import liveness
from ray_shards.ray_errors import log_background_failure

if typing.TYPE_CHECKING:
    from ray_shards.protocol import HostHealth
    from ray_shards.table import HostRecord
    from ray_shards.timings import Timings

__all__ = ["HostWatch"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


class HostWatch:
    """Watches the hosts of one bot; ``on_gone(host_id, reason)`` is called once a host is taken for gone.

    Every host is taken for gone only after ``Timings.death_quarantine``: a host that dies while it
    still held a session gets that long for Discord to notice before the shard may RESUME elsewhere.
    """

    def __init__(self, bot_id: int, timings: Timings, on_gone: typing.Callable[[str, str], None]) -> None:
        self._bot_id = bot_id
        self._timings = timings
        self._on_gone = on_gone
        self._handles: dict[str, typing.Any] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._last_sync: dict[str, float] = {}
        self._health_checks: dict[str, asyncio.Task[None]] = {}
        self.fenced: set[str] = set()
        """Hosts being killed for silence: their shards count as gone to the long operations."""

    def handle(self, host_id: str) -> typing.Any:
        """The host's actor handle (None: a host without one, such as a Client's own shards, or not found yet)."""
        return self._handles.get(host_id)

    def synced(self, host_id: str) -> None:
        """The host synced just now (silence is measured on the monotonic clock: a wall-clock step fences no one)."""
        self._last_sync[host_id] = time.monotonic()

    def since_sync(self, host_id: str, mono: float) -> float | None:
        """Seconds from the host's last sync to ``mono`` (None: not synced since this Orchestrator started)."""
        last = self._last_sync.get(host_id)
        if last is None or last == math.inf:
            return None
        return max(0.0, mono - last)

    def forget(self, host_id: str) -> None:
        """The host is gone: drop its handle and its fence (its watch ends by itself)."""
        self._handles.pop(host_id, None)
        self.fenced.discard(host_id)

    def watch(self, host_id: str, handle: typing.Any) -> None:
        """Watch the host's actor: when it closes or dies, ``on_gone`` is called after the death quarantine."""
        self._handles[host_id] = handle
        old = self._watches.get(host_id)
        if old is not None and not old.done():
            return
        self._watches[host_id] = asyncio.get_running_loop().create_task(self._watch(host_id, handle))

    async def _watch(self, host_id: str, handle: typing.Any) -> None:
        import ray.exceptions

        delay = 0.2
        while True:
            try:
                await handle.wait_closed.remote()
                reason = "closed"
                break
            except ray.exceptions.ActorUnavailableError:
                # Transient (a network blip, the node's raylet restarting): the actor may still run its shards.
                # Taking it for dead would hand them to another host while they still run here.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except ray.exceptions.RayActorError as exc:
                reason = f"died ({type(exc).__name__})"
                break
            except Exception as exc:
                # Anything else says nothing about the actor: ask again rather than presume it dead.
                _LOGGER.warning("watching host %s: %s: %s; watching again", host_id, type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await asyncio.sleep(self._timings.death_quarantine)
        self._on_gone(host_id, reason)

    async def check_silent(self, hosts: typing.Iterable[HostRecord]) -> None:
        """Carry out what `liveness.silent_host_actions` decides about the live ``hosts`` that stopped syncing."""
        mono = time.monotonic()
        silences = []
        live = list(hosts)
        for host in live:
            checking = self._health_checks.get(host.host_id)
            silences.append(liveness.HostSilence(
                host.host_id, silent=mono - self._last_sync.setdefault(host.host_id, mono),
                watched=host.host_id in self._handles, has_handle=host.has_handle,
                fenced=host.host_id in self.fenced, checking=checking is not None and not checking.done(),
            ))
        actions = liveness.silent_host_actions(
            silences, host_timeout=self._timings.host_timeout,
            sync_interval=self._timings.longest_sync_interval_at(len(live)),
            standalone_lease_ttl=self._timings.standalone_lease_ttl,
        )
        for action in actions:
            if isinstance(action, liveness.FindHandle):
                self._find_handle(action.host_id)
            elif isinstance(action, liveness.Quarantine):
                self._last_sync[action.host_id] = math.inf  # once: the quarantine task takes it from here
                task = asyncio.get_running_loop().create_task(self._gone_after_quarantine(action.host_id,
                                                                                          action.reason))
                task.add_done_callback(log_background_failure)
            else:
                self._health_checks[action.host_id] = asyncio.get_running_loop().create_task(
                    self._check_health(action.host_id, action.silent)
                )

    def _find_handle(self, host_id: str) -> None:
        """After a restart: re-watch a checkpointed host actor by name, or declare it gone."""
        import ray

        from ray_shards.connection import NAMESPACE, host_actor_name

        try:
            handle = ray.get_actor(host_actor_name(self._bot_id, host_id), namespace=NAMESPACE)
        except ValueError:
            self._on_gone(host_id, "did not come back after the orchestrator restarted")
            return
        self.watch(host_id, handle)

    async def _gone_after_quarantine(self, host_id: str, reason: str) -> None:
        await asyncio.sleep(self._timings.death_quarantine)
        self._on_gone(host_id, reason)
        self._last_sync.pop(host_id, None)

    async def _check_health(self, host_id: str, silent: float) -> None:
        """A host stopped syncing: fence it only if its health loop does not answer or its shard loop is stuck.

        The health check runs in the host's own concurrency group (its own event loop), so a host that is
        merely busy with a burst of events answers, and is left alone.
        """
        handle = self._handles.get(host_id)
        if handle is None:
            return
        try:
            health: HostHealth = await asyncio.wait_for(handle.health.remote(), self._timings.health_timeout)
        except Exception as exc:
            why = liveness.fence_reason(answered=False, failure=type(exc).__name__,
                                        host_timeout=self._timings.host_timeout)
        else:
            why = liveness.fence_reason(answered=True, loop_lag=health.loop_lag,
                                        host_timeout=self._timings.host_timeout)
        if why is not None:
            self._fence(host_id, silent, why)
        else:
            _LOGGER.warning("host %s has not synced for %.1f s but is alive (shard loop lag %.1f s); not fenced",
                            host_id, silent, health.loop_lag)

    def _fence(self, host_id: str, silent: float, why: str) -> None:
        import ray

        self.fenced.add(host_id)
        _LOGGER.warning("host %s has not synced for %.1f s and %s; killing it so its shards can move", host_id,
                        silent, why)
        with contextlib.suppress(Exception):
            ray.kill(self._handles[host_id], no_restart=True)

