"""The Orchestrator's fleet of ShardHost actors: start, replace, retire and roll them.

Hosts are detached named actors owned by no process, so neither a launcher
exiting nor the Orchestrator restarting takes them down (the way Ray Serve's
controller keeps its replicas). The fleet keeps ``desired`` hosts alive, each
with a slot index and a share of the shards; a rolling restart replaces them one
slot at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
import typing

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_shards import main_thread
from ray_shards.connection import NAMESPACE, host_actor_name
from ray_shards.host import ShardHost
from ray_shards.timings import Timings

__all__ = ["MAX_HOSTS", "FleetHost", "HostFleet", "HostStartTimeoutError", "split_shards"]

_LOGGER = logging.getLogger("ray_shards.fleet")


MAX_HOSTS = 100_000
"""Most hosts one bot may ask for: far above any real bot (20k shards at 1 shard a host), and a bound on
every list sized by the host count."""


class HostStartTimeoutError(TimeoutError):
    """A new host actor did not start in time (usually: the cluster has no room for it)."""


def split_shards(shard_count: int, hosts: int) -> list[int]:
    """How many shards each of ``hosts`` hosts runs: as even as possible, larger shares first (10/4 = 3,3,2,2).

    Raises
    ------
    ValueError
        When either count is not a whole number of at least 1, there are more hosts than shards
        (a host with no shard is a wasted process) or more than `MAX_HOSTS` (the list is as long as it).
    """
    for name, value in (("shard_count", shard_count), ("hosts", hosts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"{name} must be a whole number of at least 1, not {value!r}"
            raise ValueError(msg)
    if hosts > shard_count:
        msg = f"cannot split {shard_count} shard(s) over {hosts} hosts: use at most {shard_count} hosts"
        raise ValueError(msg)
    if hosts > MAX_HOSTS:
        msg = f"{hosts} hosts is more than ray_shards runs for one bot (at most {MAX_HOSTS})"
        raise ValueError(msg)
    base, extra = divmod(shard_count, hosts)
    return [base + (1 if i < extra else 0) for i in range(hosts)]


@dataclasses.dataclass(slots=True)
class FleetHost:
    """One host actor of the fleet."""

    host_id: str
    slot: int
    want: int
    handle: typing.Any
    """The actor handle; None for a host whose start was decided (and checkpointed) but not yet made."""
    retiring: bool = False
    node_id: str | None = None


class HostFleet:
    """Host actors of one bot. All methods run on the Orchestrator's event loop.

    Parameters
    ----------
    bot_id
        The bot's user id.
    rest_url
        Discord REST base URL the hosts use.
    intents
        The bot's intents.
    timings
        Reaction times handed to every host.
    prefix
        Host ids are the prefix and the slot (``h0``, ``h1``...).
    persist
        Writes the checkpoint: a new host's name is on record before its actor exists.
    progress
        How far a starting host has got: whether it registered, and how many of the bot's shards are READY.
        A start is given up after ``Timings.host_start_timeout`` without the host registering or the count
        reaching a new high. Without it the timeout counts from the call.
    """

    __slots__ = (
        "_bot_id",
        "_callback",
        "_counter",
        "_failed_at",
        "_intents",
        "_persist",
        "_prefix",
        "_progress",
        "_rest_url",
        "_starting",
        "_timings",
        "_token",
        "desired",
        "hosts",
        "shadow",
        "shard_count",
        "use_resource",
        "wants",
    )

    def __init__(
        self,
        bot_id: int,
        *,
        rest_url: str,
        intents: int,
        timings: Timings,
        prefix: str = "h",
        persist: typing.Callable[[], typing.Awaitable[None]] | None = None,
        progress: typing.Callable[[str], tuple[bool, int]] | None = None,
    ) -> None:
        self._bot_id = bot_id
        self._persist = persist
        self._progress = progress
        self._rest_url = rest_url
        self._intents = intents
        self._timings = timings
        self._callback: bytes | None = None
        self._token: str | None = None
        self._counter = 0
        self._prefix = prefix
        self.shard_count: int | None = None
        self.shadow = False
        self._starting: dict[int, asyncio.Task[None]] = {}
        self._failed_at: dict[int, float] = {}
        self.desired = 0
        self.wants: list[int] = []
        self.hosts: dict[str, FleetHost] = {}
        self.use_resource = False

    def __repr__(self) -> str:
        return f"HostFleet(bot_id={self._bot_id}, desired={self.desired}, hosts={sorted(self.hosts)})"

    @property
    def prefix(self) -> str:
        """What this fleet's host ids start with (``h``, or ``s<count>-h`` for a reshard's new set)."""
        return self._prefix

    @property
    def callback(self) -> bytes | None:
        """The pickled user callback every new host runs."""
        return self._callback

    def remember_token(self, token: str) -> None:
        """Keep the token in memory (never checkpointed) to start hosts with."""
        self._token = token

    @property
    def token(self) -> str | None:
        """The token held in memory to start hosts with (never checkpointed)."""
        return self._token

    def share_token(self, other: HostFleet) -> None:
        """Give ``other`` the token this fleet starts hosts with (if it has it)."""
        if self._token is not None:
            other.remember_token(self._token)

    def configure(self, *, desired: int, shard_count: int, callback: bytes | None) -> None:
        """Set how many hosts to run and the callback they run."""
        self.desired = desired
        self.wants = split_shards(shard_count, desired)
        self._callback = callback

    def set_callback(self, callback: bytes | None) -> None:
        """Use ``callback`` for hosts started from now on."""
        self._callback = callback

    def to_json(self) -> dict[str, typing.Any]:
        """What a restarted Orchestrator needs to find and keep its hosts (no token)."""
        return {
            "prefix": self._prefix,
            "shard_count": self.shard_count,
            "desired": self.desired,
            "wants": self.wants,
            "counter": self._counter,
            "callback": self._callback.hex() if self._callback is not None else None,
            "hosts": [
                {"host_id": h.host_id, "slot": h.slot, "want": h.want, "retiring": h.retiring}
                for h in self.hosts.values()
            ],
        }

    def restore(self, data: dict[str, typing.Any]) -> None:
        """Load from a checkpoint; live host actors are found again by name."""
        self._prefix = str(data.get("prefix", self._prefix))
        self.shard_count = data.get("shard_count")
        self.desired = int(data.get("desired", 0))
        self.wants = [int(w) for w in data.get("wants", [])]
        self._counter = int(data.get("counter", 0))
        raw = data.get("callback")
        self._callback = bytes.fromhex(raw) if raw else None
        for entry in data.get("hosts", []):
            try:
                handle = ray.get_actor(host_actor_name(self._bot_id, entry["host_id"]), namespace=NAMESPACE)
            except ValueError:
                continue
            self.hosts[entry["host_id"]] = FleetHost(
                entry["host_id"], int(entry["slot"]), int(entry["want"]), handle, bool(entry.get("retiring"))
            )

    def host_gone(self, host_id: str) -> bool:
        """Forget a host that died or was retired; returns whether it was one of the fleet's."""
        return self.hosts.pop(host_id, None) is not None

    def active_in_slot(self, slot: int) -> list[FleetHost]:
        """The fleet's non-retiring hosts in ``slot``."""
        return [h for h in self.hosts.values() if h.slot == slot and not h.retiring]

    def is_starting(self, slot: int) -> bool:
        """Whether a host start for ``slot`` is under way in this process."""
        task = self._starting.get(slot)
        return task is not None and not task.done()

    def missing_slots(self) -> list[int]:
        """Slots with no live (or starting) host."""
        now = time.monotonic()
        return [
            slot
            for slot in range(self.desired)
            if not self.active_in_slot(slot)
            and (slot not in self._starting or self._starting[slot].done())
            and now - self._failed_at.get(slot, -math.inf) > 2.0
        ]

    def _placement(self) -> tuple[dict[str, typing.Any], str | None]:
        if self.use_resource:
            return {"resources": {"shard_host": 1}}, None
        # Ray's SPREAD does not spread actors that ask for no CPU: pick the node with the fewest hosts.
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        if not nodes:
            return {"scheduling_strategy": "SPREAD"}, None
        load = dict.fromkeys(nodes, 0)
        for host in self.hosts.values():
            if host.node_id in load:
                load[host.node_id] += 1
        node_id = min(nodes, key=lambda n: (load[n], nodes.index(n)))
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}, node_id

    def start_slot(self, slot: int, want: int | None = None) -> asyncio.Task[None]:
        """Start a new host for ``slot`` in the background (replacing, or joining a rolling restart)."""
        task = asyncio.get_running_loop().create_task(self._start(slot, self.wants[slot] if want is None else want))
        self._starting[slot] = task
        return task

    async def _start(self, slot: int, want: int) -> None:
        if self._token is None:
            msg = "no token in memory yet (a host or client must authenticate after an orchestrator restart)"
            raise RuntimeError(msg)
        self._counter += 1
        prefix = self._prefix
        host_id = f"{prefix}{slot}" if self._counter <= self.desired else f"{prefix}{slot}r{self._counter}"
        placement, node_id = self._placement()
        host = FleetHost(host_id, slot, want, None, node_id=node_id)
        self.hosts[host_id] = host
        # Intent first: the host's name is checkpointed before its actor exists, so an Orchestrator that dies
        # right after creating it finds it again by name instead of leaking a detached actor.
        if self._persist is not None:
            await self._persist()
        options: dict[str, typing.Any] = {
            "name": host_actor_name(self._bot_id, host_id),
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "num_cpus": 0,
            "max_restarts": 0,
            "max_concurrency": 1000,
            **placement,
        }
        env_vars = main_thread.host_env_vars(self._timings.host_main_thread_timer_slack_ns)
        if env_vars:
            # Set by Ray's setup hook on the host's main thread, the one thread no actor code runs on.
            options["runtime_env"] = {"env_vars": env_vars}
        # The health check runs on its own event loop, so a host busy with a burst of events still answers.
        remote: typing.Any = ray.remote
        actor_class: typing.Any = remote(concurrency_groups={"health": 1})(ShardHost)
        handle = actor_class.options(**options).remote(self._bot_id, host_id, want, self._rest_url, self._timings)
        host.handle = handle
        await self._call_start(host)

    async def _call_start(self, host: FleetHost) -> None:
        handle, slot, host_id = host.handle, host.slot, host.host_id
        try:
            summary = await self._await_start(
                host_id,
                handle.start.remote(
                    self._token, self._callback, intents=self._intents, shard_count=self.shard_count,
                    shadow=self.shadow,
                ),
            )
        except TimeoutError:
            self._failed_at[slot] = time.monotonic()
            self.hosts.pop(host_id, None)
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
            msg = (
                f"host {host_id} did not start within {self._timings.host_start_timeout:.0f} s: the cluster may have "
                "no room for it (no node offers the `shard_host` resource, or the autoscaler reached max_workers); "
                "check `ray status`"
            )
            raise HostStartTimeoutError(msg) from None
        except BaseException:
            self._failed_at[slot] = time.monotonic()
            self.hosts.pop(host_id, None)
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
            raise
        host.node_id = summary["node_id"]
        _LOGGER.info("host %s (slot %s) started on node %s with shards %s", host_id, slot, summary["node_id"],
                     summary["shards"])

    async def _await_start(self, host_id: str, call: typing.Awaitable[typing.Any]) -> typing.Any:
        """The host's ``start`` answer; TimeoutError once ``host_start_timeout`` passes without progress.

        A host's start returns once its shards are READY, and a big bot's shards wait their turn in Discord's
        identify queue: 2,048 shards at ``max_concurrency`` 16 take ten minutes. So the timeout counts from the
        last progress (the host registered, or the bot's READY shards reached a new high), not from the call: a
        host with no room in the cluster, or a boot that stalled, is still given up after ``host_start_timeout``.
        """
        started = asyncio.ensure_future(call)
        registered, best = self._progress(host_id) if self._progress is not None else (False, 0)
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(started), self._timings.host_start_timeout)
                except TimeoutError:
                    if self._progress is None:
                        raise
                    # Only a registered host is waited for, and only while the bot gains READY shards: one that
                    # never registers (no room) or a boot whose count merely flaps is given up as before.
                    now_registered, ready = self._progress(host_id)
                    advanced = now_registered and (not registered or ready > best)
                    registered, best = now_registered, max(best, ready)
                    if not advanced:
                        raise
                    _LOGGER.info("host %s is still starting (%s shards of the bot READY)", host_id, ready)
        finally:
            if not started.done():
                started.cancel()

    async def ensure_started(self, host_id: str) -> None:
        """Start a restored host whose `start` call may never have arrived (the Orchestrator died in between).

        ``ShardHost.start`` is idempotent, so asking again is always safe; a host that cannot
        start is killed and forgotten, and its slot is filled again like any missing one.
        """
        host = self.hosts.get(host_id)
        if host is None or host.handle is None or self._token is None:
            return
        try:
            if await asyncio.wait_for(host.handle.started.remote(), 30.0):
                return
        except Exception as exc:
            _LOGGER.warning("host %s did not answer whether it started (%s); replacing it", host_id,
                            type(exc).__name__)
            self.hosts.pop(host_id, None)
            with contextlib.suppress(Exception):
                ray.kill(host.handle, no_restart=True)
            return
        _LOGGER.warning("host %s was created but never started (the orchestrator restarted); starting it", host_id)
        await self._call_start(host)

    async def retire(self, host_id: str, *, hand_over: bool = True) -> None:
        """Close a host (handing its remaining shards over, or ending their sessions), then kill its actor."""
        host = self.hosts.get(host_id)
        if host is None:
            return
        host.retiring = True
        if host.handle is not None:
            with contextlib.suppress(Exception):
                # The host drains its listeners (up to drain_timeout) before it hands its sessions on.
                await asyncio.wait_for(
                    host.handle.close.remote(hand_over=hand_over), 15.0 + self._timings.drain_timeout
                )
            with contextlib.suppress(Exception):
                ray.kill(host.handle, no_restart=True)
        self.hosts.pop(host_id, None)

    def kill_all(self) -> int:
        """Kill every host actor (after the bot was shut down). Returns how many."""
        count = 0
        for host in list(self.hosts.values()):
            if host.handle is None:
                continue
            with contextlib.suppress(Exception):
                ray.kill(host.handle, no_restart=True)
                count += 1
        for task in self._starting.values():
            task.cancel()
        self.hosts.clear()
        return count + self.kill_strays(keep=())

    def owns_name(self, host_id: str) -> bool:
        """Whether ``host_id`` is named like this fleet's hosts.

        Hosts of the live fleet are ``h<slot>…`` and a reshard's shadow fleet's are ``s<count>-h<slot>…``; the
        prefixes never match each other, so one fleet's clean-up cannot kill the other's hosts (a failed reshard
        once killed the live hosts because the shadow fleet swept every ``host-<bot id>-`` actor).
        """
        rest = host_id[len(self._prefix):]
        return host_id.startswith(self._prefix) and rest[:1].isdigit()

    def kill_strays(self, keep: typing.Collection[str], *, any_prefix: bool = False) -> int:
        """Kill this fleet's named host actors that are not in ``keep`` (started just before a crash, then lost).

        With ``any_prefix``, every host actor of the bot not in ``keep`` goes (a restarted Orchestrator whose
        checkpoint knows one fleet: the other's hosts were a reshard's, rolled back or already switched from).
        Returns how many were killed.
        """
        count = 0
        prefix = host_actor_name(self._bot_id, "")
        for actor in ray.util.list_named_actors(all_namespaces=True):
            name = str(actor.get("name", ""))
            if actor.get("namespace") != NAMESPACE or not name.startswith(prefix):
                continue
            host_id = name[len(prefix):]
            if (not any_prefix and not self.owns_name(host_id)) or host_id in keep:
                continue
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                count += 1
                _LOGGER.warning("killed stray host actor %s (no record of it survived)", host_id)
        return count
