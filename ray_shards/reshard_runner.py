"""The live reshard in the Orchestrator actor: its pure core (`ray_shards.resharding`) stepped against the bot's
sets (`ray_shards.bot_sets`), and the core's effects carried out (the new set's start, host commands, the
commit, the old set's retirement, checkpoints).

The core decides; this only builds its view (`ray_shards.operation_views`), runs its effects in order
(`ray_shards.effects.carry_out`), and turns the outcomes of what runs in the background (host starts and
commands) into the core's events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import typing

from ray_shards import operation_views
from ray_shards import resharding as rs
from ray_shards.effects import carry_out
from ray_shards.protocol import GuildTails, ReshardProgress, ReshardState
from ray_shards.ray_errors import log_background_failure, task_failure
from ray_shards.table import ShardTable

if typing.TYPE_CHECKING:
    from ray_shards.bot_sets import BotSets
    from ray_shards.fleet import HostFleet
    from ray_shards.host_mailboxes import Mailboxes
    from ray_shards.timings import Timings

__all__ = ["ReshardRunner"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


class ReshardRunner:
    """Runs the bot's reshard, if any (``core``), and keeps the last one's ``progress`` (what status shows).

    The actor's callbacks: ``new_fleet(prefix)`` makes an (empty) fleet of the bot; ``checkpoint()`` writes
    the checkpoint now and raises `CheckpointWriteError` when it cannot (strict); ``committed(shard_count)``
    says the bot now has ``shard_count`` shards; ``table_changed()`` says a table changed;
    ``wake_reconcile()`` runs the next reconcile pass at once; ``fenced()`` are the hosts being killed for
    silence (gone, to the core).
    """

    def __init__(
        self,
        timings: Timings,
        sets: BotSets,
        mail: Mailboxes,
        *,
        new_fleet: typing.Callable[[str], HostFleet],
        checkpoint: typing.Callable[[], typing.Awaitable[None]],
        committed: typing.Callable[[int], None],
        table_changed: typing.Callable[[], None],
        wake_reconcile: typing.Callable[[], None],
        fenced: typing.Callable[[], typing.Collection[str]],
    ) -> None:
        self._timings = timings
        self._sets = sets
        self._mail = mail
        self._new_fleet = new_fleet
        self._checkpoint = checkpoint
        self._committed = committed
        self._table_changed = table_changed
        self._wake_reconcile = wake_reconcile
        self._fenced = fenced
        self.core: rs.Reshard | None = None
        """The reshard in flight (None, or ended: none)."""
        self.progress: ReshardProgress | None = None
        """The last reshard's progress, kept after it ended."""

    def _options(self) -> dict[str, float]:
        return {"identify_window": self._timings.identify_window, "max_skew": self._timings.reshard_max_skew}

    def begin(self, source: int, target: int) -> ReshardProgress:
        """A reshard from ``source`` to ``target`` shards is target state from now; returns a copy of its progress.

        Admission (`ray_shards.admission.check_reshard`) is the caller's. The reconcile pass steps the core (its
        first effect checkpoints it) and carries out the rest.
        """
        self.core = rs.Reshard.begin(source, target, started_at=time.time(), **self._options())
        self.progress = self.core.progress
        self._wake_reconcile()
        return self.progress.snapshot()

    def refused(self, source: int, target: int, error: str) -> None:
        """A reshard the Orchestrator began by itself was refused: status shows why."""
        now = time.time()
        self.progress = ReshardProgress(source=source, target=target, state=ReshardState.FAILED, error=error,
                                        started_at=now, finished_at=now)

    def restore(self, progress: ReshardProgress) -> None:
        """The last reshard, as the checkpoint holds it; one in flight carries on or rolls back (`Reshard.restore`).

        Before the commit point (the checkpoint written once the new set went live, state ``closing``)
        its new set is abandoned: the new set's hosts were never checkpointed and were killed as strays
        (they held their events, none was delivered, so nothing is lost by it), and the old hosts, which
        may have been told to record or to mute, go live again. At ``closing`` the checkpoint already
        holds the new set as the bot, and the old fleet beside it (``BotSets.old_set``): the reshard
        retires the old hosts still alive as it would have (draining their listeners, ending their
        sessions), and finishes.
        The reconcile pass steps it once the recovery grace is over (every host has reported by then).
        """
        self.progress = progress
        if not progress.state.active:
            return
        self.core = rs.Reshard.restore(progress, **self._options())
        if self.core.phase is rs.ReshardPhase.CLOSING:
            _LOGGER.warning("reshard to %s shards carries on after an orchestrator restart: the new shards are live",
                            progress.target)
        else:
            _LOGGER.warning("reshard to %s shards rolled back after an orchestrator restart; the old shards keep "
                            "running", progress.target)

    @property
    def busy(self) -> bool:
        """A reshard is in flight (or its new set still exists, or its progress says it is not over)."""
        return (self._sets.next_table is not None or (self.core is not None and self.core.active)
                or (self.progress is not None and self.progress.state.active))

    @property
    def last_failed(self) -> bool:
        return self.progress is not None and self.progress.state is ReshardState.FAILED

    @property
    def old_set_records(self) -> bool:
        """Whether the old set records (from just before RECORD is sent until the reshard ends, but for its close).

        A host joining the old set then must record before it adopts anything (Registration.record), and the
        old table is not rebalanced.
        """
        return self.core is not None and self.core.old_set_records

    def tails_delivered(self, host_id: str, tails: GuildTails) -> None:
        """An old-set host handed in, per guild, the last events it delivered (the switch)."""
        if self.core is not None:
            self.core.tails_delivered(host_id, tails)

    def view(self) -> rs.ReshardView:
        """The two sets as the core reads them (fenced hosts count as gone)."""
        table, fleet, new_fleet = self._sets.table, self._sets.fleet, self._sets.next_fleet
        assert table is not None and fleet is not None
        new_starting = 0
        if new_fleet is not None:
            new_starting = sum(1 for slot in range(new_fleet.desired) if new_fleet.is_starting(slot))
        return operation_views.reshard_view(
            table, self._sets.next_table, old_desired=fleet.desired, new_starting=new_starting, fenced=self._fenced()
        )

    async def step(self) -> None:
        """One reconcile step: ask the core what to do, and do it, in order."""
        core = self.core
        if core is None or not core.active or self._sets.table is None or self._sets.fleet is None:
            return
        effects = core.step(self.view(), time.monotonic())
        run = functools.partial(self._effect, core)
        if await carry_out(effects, run, core.effect_failed, what="reshard"):
            # Before the commit point the core rolls back at its next step, after it the close is tried again: at
            # once, not a reconcile period later.
            self._wake_reconcile()
        if effects:
            self._table_changed()

    async def _effect(self, core: rs.Reshard, effect: rs.Effect) -> None:
        """Carry out one effect of the core (`carry_out` reports a failure to it)."""
        fleet = self._sets.fleet
        assert fleet is not None
        if isinstance(effect, rs.Checkpoint):
            await self._checkpoint()
        elif isinstance(effect, rs.HostCommand):
            arguments: dict[str, typing.Any] = {}
            if effect.tails is not None:
                arguments["tails"] = effect.tails
            if effect.stop_recording:
                arguments["stop_recording"] = True
            # The core gives up at its own command_timeout (with the message a timeout here would give):
            # this one only keeps the call bounded.
            task = asyncio.get_running_loop().create_task(
                self._mail.run(effect.host_id, effect.kind, None, arguments, core.command_timeout + 5.0)
            )
            task.add_done_callback(functools.partial(self._command_done, core, effect.token))
        elif isinstance(effect, rs.StartNewSet):
            self._start_new_set(core, effect)
        elif isinstance(effect, rs.PauseOldFleet):
            # The old set is about to be retired: a host of it that dies now is not replaced.
            fleet.desired = 0
        elif isinstance(effect, rs.ResumeOldFleet):
            fleet.desired = fleet.desired or len(fleet.wants)
        elif isinstance(effect, rs.KillNewSet):
            # Only the new set's hosts go: the fleets' name prefixes keep this from touching the live hosts. The set
            # is forgotten first: were a kill to raise, the fleet's repair must not start its hosts again (a restart
            # kills whatever is left as strays).
            new_fleet = self._sets.abandon_new_set()
            if new_fleet is not None:
                new_fleet.kill_all()
        elif isinstance(effect, rs.Commit):
            # The new set is live: it becomes the bot (the checkpoint right after is the commit point).
            self._sets.commit()
            self._committed(effect.shard_count)
        elif isinstance(effect, rs.RetireOldSet):
            if self._sets.old_set is None:
                # Restarted from a checkpoint without the old fleet (written by an older ray_shards): its hosts
                # were killed as strays.
                core.old_set_retired()
            else:
                task = asyncio.get_running_loop().create_task(self._retire_old_set(core, *self._sets.old_set))
                task.add_done_callback(log_background_failure)
        elif isinstance(effect, rs.Ended):
            core.progress.finished_at = time.time()
            if effect.state is ReshardState.FINISHED:
                _LOGGER.info("reshard to %s shards finished", core.progress.target)
            else:
                _LOGGER.error("reshard to %s shards %s; the old shards keep running: %s", core.progress.target,
                              effect.state.value, effect.error)
            if effect.detail is not None:
                _LOGGER.error("reshard to %s shards: %s", core.progress.target, effect.detail)

    def _start_new_set(self, core: rs.Reshard, effect: rs.StartNewSet) -> None:
        """The new set's table and fleet (shadow mode: its hosts hold every event), and its hosts' starts."""
        old_fleet = self._sets.fleet
        assert old_fleet is not None
        count = effect.shard_count
        new_table, new_fleet = ShardTable(count), self._new_fleet(f"s{count}-h")
        self._sets.start_new_set(new_table, new_fleet)
        old_fleet.share_token(new_fleet)
        new_fleet.use_resource = old_fleet.use_resource
        new_fleet.configure(desired=effect.hosts, shard_count=count, callback=old_fleet.callback)
        new_fleet.shard_count = count
        new_fleet.shadow = True
        for slot in range(effect.hosts):
            new_fleet.start_slot(slot).add_done_callback(functools.partial(self._start_done, core, slot))

    async def _retire_old_set(self, core: rs.Reshard, old_table: ShardTable, old_fleet: HostFleet) -> None:
        """Close the old sessions (after draining their listeners) and kill the old hosts, one at a time."""
        try:
            for host in list(old_fleet.hosts):
                self._sets.host_tables[host] = old_table
                await old_fleet.retire(host, hand_over=False)
        finally:
            self._sets.old_set = None
            core.old_set_retired()
            self._wake_reconcile()

    def _command_done(self, core: rs.Reshard, token: int, task: asyncio.Task[None]) -> None:
        """A host command of the reshard ended: its outcome is an event for the core."""
        core.command_done(token, task_failure(task, "the command", unwrap=False))
        self._wake_reconcile()

    def _start_done(self, core: rs.Reshard, slot: int, task: asyncio.Task[None]) -> None:
        """A host start of the reshard's new set ended: its outcome is an event for the core."""
        core.start_done(slot, task_failure(task, "the host start", unwrap=True))
        self._wake_reconcile()
