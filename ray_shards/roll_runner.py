"""The rolling restart in the Orchestrator actor: its pure core (`ray_shards.rolling`) stepped against the live
fleet and table, and the core's effects carried out (host starts and retirements, drains, checkpoints).

The core decides; this only builds its view (`ray_shards.operation_views`), runs its effects in order
(`ray_shards.effects.carry_out`) and turns the outcomes of what runs in the background (a host start)
into the core's events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import typing

from ray_shards import operation_views
from ray_shards import rolling as roll
from ray_shards.effects import carry_out, describe_error
from ray_shards.protocol import OperationState, RollingRestartProgress
from ray_shards.ray_errors import log_background_failure, unwrap_ray_error

if typing.TYPE_CHECKING:
    from ray_shards.fleet import HostFleet
    from ray_shards.table import ShardTable
    from ray_shards.timings import Timings

__all__ = ["RollRunner"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


class RollRunner:
    """Runs the bot's rolling restart, if any (``core``).

    The actor's callbacks: ``checkpoint()`` writes the checkpoint now and raises `CheckpointWriteError`
    when it cannot (strict: the core must not act on an intent that is not on record); ``head_changed()``
    marks the checkpoint head dirty; ``table_changed()`` says the table changed (hosts and followers
    learn it); ``wake_host(host_id)`` wakes a host's parked sync; ``wake_reconcile()`` runs the next
    reconcile pass at once.
    """

    def __init__(
        self,
        timings: Timings,
        *,
        checkpoint: typing.Callable[[], typing.Awaitable[None]],
        head_changed: typing.Callable[[], None],
        table_changed: typing.Callable[[], None],
        wake_host: typing.Callable[[str], None],
        wake_reconcile: typing.Callable[[], None],
    ) -> None:
        self._timings = timings
        self._checkpoint = checkpoint
        self._head_changed = head_changed
        self._table_changed = table_changed
        self._wake_host = wake_host
        self._wake_reconcile = wake_reconcile
        self.core: roll.RollingRestart | None = None
        self._retires: dict[str, asyncio.Task[None]] = {}

    def resume(self, progress: RollingRestartProgress) -> roll.RollingRestart:
        """Run the roll of ``progress`` (begun now, or restored from the checkpoint), replacing any other."""
        # A replacement may take host_start_timeout to start (the fleet gives up then), and some more to register.
        self.core = roll.RollingRestart(progress, join_timeout=self._timings.host_start_timeout + 60.0)
        return self.core

    @property
    def busy(self) -> bool:
        """A roll is running or paused (not ended)."""
        return self.core is not None and self.core.active

    @property
    def current_slot(self) -> int | None:
        """The slot the roll replaces now: the roll starts its host, not the fleet's repair."""
        return self.core.current_slot if self.core is not None else None

    def progress(self) -> RollingRestartProgress | None:
        """A copy of the last roll's progress (None: there never was one)."""
        return self.core.progress.snapshot() if self.core is not None else None

    def view(self, fleet: HostFleet, table: ShardTable) -> roll.RollView:
        """The fleet and the table as the core reads them."""
        return operation_views.roll_view(
            table,
            [operation_views.FleetHost(h.host_id, h.slot, h.want, h.retiring) for h in fleet.hosts.values()],
            starting=(s for s in {h.slot for h in fleet.hosts.values()} | set(range(fleet.desired))
                      if fleet.is_starting(s)),
            retiring=(h for h, task in self._retires.items() if not task.done()),
        )

    async def step(self, fleet: HostFleet, table: ShardTable) -> None:
        """One reconcile step: ask the core what to do, and do it, in order."""
        core = self.core
        if core is None or not core.active:
            return
        self._retires = {h: t for h, t in self._retires.items() if not t.done()}
        effects = core.step(self.view(fleet, table), time.monotonic())
        run = functools.partial(self._effect, core, fleet, table)
        if await carry_out(effects, run, core.effect_failed, what="rolling restart"):
            # The core fails the roll at its next step: at once, not a reconcile period later.
            self._wake_reconcile()

    async def _effect(self, core: roll.RollingRestart, fleet: HostFleet, table: ShardTable,
                      effect: roll.Effect) -> None:
        """Carry out one effect of the core (`carry_out` reports a failure to it)."""
        if isinstance(effect, roll.Checkpoint):
            await self._checkpoint()
        elif isinstance(effect, roll.StartHost):
            _LOGGER.info("rolling restart: starting the replacement of slot %s (%s shards)", effect.slot,
                         effect.want)
            fleet.start_slot(effect.slot, effect.want).add_done_callback(
                functools.partial(_start_done, core, effect.slot)
            )
        elif isinstance(effect, roll.SetRetiring):
            if effect.host_id in fleet.hosts:
                fleet.hosts[effect.host_id].retiring = effect.retiring
            self._head_changed()
        elif isinstance(effect, roll.Drain):
            _LOGGER.info("rolling restart: draining host %s", effect.host_id)
            table.drain(effect.host_id)
            self._wake_host(effect.host_id)
            self._table_changed()
        elif isinstance(effect, roll.Undrain):
            table.undrain(effect.host_id, effect.want)
            self._table_changed()
        elif isinstance(effect, roll.Retire):
            _LOGGER.info("rolling restart: retiring host %s", effect.host_id)
            task = asyncio.get_running_loop().create_task(fleet.retire(effect.host_id))
            task.add_done_callback(log_background_failure)
            self._retires[effect.host_id] = task
        elif isinstance(effect, roll.Ended):
            core.progress.finished_at = time.time()
            if effect.state is OperationState.FAILED:
                _LOGGER.error("rolling restart failed (the slot's old host keeps running): %s", effect.error)
            _LOGGER.info("rolling restart %s: %s/%s hosts replaced", effect.state.value, core.progress.done,
                         core.progress.total)


def _start_done(core: roll.RollingRestart, slot: int, task: asyncio.Task[None]) -> None:
    """A host start of the roll ended: a failure is an event for its core."""
    if task.cancelled():
        core.start_failed(slot, "the host start was cancelled")
        return
    exc = task.exception()
    if exc is not None:
        core.start_failed(slot, describe_error(unwrap_ray_error(exc)))

