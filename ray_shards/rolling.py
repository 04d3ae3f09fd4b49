"""The rolling restart as target state: a pure core that a reconcile step converges on.

No Ray, no asyncio, no I/O. The shell (the Orchestrator actor, or the simulator's model of it)
builds a `RollView` of the fleet and the shard table, calls `RollingRestart.step` with its own
monotonic clock, and carries out the typed effects it returns, in order. Starting a host is
asynchronous and can fail: the shell reports a failure with `RollingRestart.start_failed`. An effect
the shell could not carry out (it raised) is an event too: `RollingRestart.effect_failed` says which
of the step's other effects still to carry out, and the next step fails the roll.

What is checkpointed is only `RollingRestartProgress` (its JSON form is unchanged): the slots still to
replace, the old host ids and the slot in progress (``current``). Everything else is re-derived
from the fleet and the table on every step, so a step after a crash and a restore from the last
checkpoint picks up where the roll was:

- a replacement host that already exists for the slot is reused, never doubled;
- an old host that owns nothing (and every placed shard READY) is retired;
- an old host that is gone (retired, or died) ends its slot.

One slot at a time::

    BETWEEN ──▶ STARTING ──▶ JOINING ──▶ DRAINING ──▶ RETIRING ──▶ BETWEEN (next slot)
    (pause and    start the    the new host  drain the     the olds own
     abort act    slot's       registers     olds; wait    nothing, every
     only here)   replacement                until they    placed shard READY:
                    │                        own nothing   retire them
                    │ start failed  │ join / drain deadline │
                    ▼               ▼                       ▼
                  FAILED: the old hosts are un-drained and keep running; a replacement that
                  exists is retired (each slot ends with exactly one host). An effect that
                  failed (`effect_failed`) fails the roll the same way, in any phase.

The deadline of a phase runs on the injected monotonic clock and is not checkpointed: a restarted
Orchestrator starts the phase's timer again (a monotonic time means nothing to another process).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing

from ray_shards.protocol import OperationState, RollingRestartProgress

__all__ = [
    "Checkpoint",
    "Drain",
    "Effect",
    "Ended",
    "HostView",
    "Retire",
    "RollPhase",
    "RollView",
    "RollingRestart",
    "SetRetiring",
    "StartHost",
    "Undrain",
]


class RollPhase(enum.StrEnum):
    """Where the slot in progress is."""

    BETWEEN = "between slots"
    STARTING = "starting the replacement"
    JOINING = "waiting for the replacement to join"
    DRAINING = "draining the old host"
    RETIRING = "retiring the old host"
    DONE = "done"


# -- what the shell sees ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class HostView:
    """One host of the fleet, as the fleet and the shard table see it."""

    host_id: str
    slot: int
    want: int
    """Its share of the shards (the fleet's, not the table's: draining sets the table's to 0)."""
    retiring: bool = False
    """The fleet's flag: it is being replaced (it registers wanting nothing, and its slot counts as empty)."""
    live: bool = False
    """Registered in the table and not known to be gone."""
    draining: bool = False
    owns: int = 0
    """How many shards the table says it owns."""


@dataclasses.dataclass(frozen=True, slots=True)
class RollView:
    """What a step reads: the fleet's hosts, the starts and retirements in flight, and the table's readiness."""

    hosts: tuple[HostView, ...]
    starting: frozenset[int] = frozenset()
    """Slots with a host start in flight."""
    retiring: frozenset[str] = frozenset()
    """Hosts whose retirement (close, then kill) is in flight."""
    all_ready: bool = True
    """Every shard that has an owner is READY."""


# -- what the shell does ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StartHost:
    """Start a new host in ``slot`` with a share of ``want`` shards; report a failure with `start_failed`."""

    slot: int
    want: int


@dataclasses.dataclass(frozen=True, slots=True)
class SetRetiring:
    """Set the fleet's ``retiring`` flag of a host (the fleet then neither counts it nor replaces it)."""

    host_id: str
    retiring: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Drain:
    """``table.drain(host_id)`` and wake the host: it gets nothing new and hands every shard over."""

    host_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Undrain:
    """The roll failed: the host takes shards again, ``want`` of them."""

    host_id: str
    want: int


@dataclasses.dataclass(frozen=True, slots=True)
class Retire:
    """Close the host (handing over whatever it still runs) and kill its actor; it then leaves the fleet."""

    host_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """Write the progress (with the fleet and the table) before carrying out the effects after this one."""


@dataclasses.dataclass(frozen=True, slots=True)
class Ended:
    """The restart ended (finished, aborted or failed); ``error`` says why it failed."""

    state: OperationState
    error: str | None


Effect = StartHost | SetRetiring | Drain | Undrain | Retire | Checkpoint | Ended


# -- the core -----------------------------------------------------------------------------------------


class RollingRestart:
    """One rolling restart: `RollingRestartProgress` (checkpointed) plus what this process saw (not).

    Parameters
    ----------
    progress
        The target state, new (`RollingRestart.begin`) or restored from a checkpoint.
    drain_timeout, drain_per_shard
        How long the old hosts of a slot may take to hand their shards over: ``drain_timeout +
        drain_per_shard * want`` seconds from when the drain began (or from a restart).
    join_timeout
        How long a started replacement may take to register (a restored one included), and how long a
        start may stay in flight (the fleet's own ``host_start_timeout`` normally fires first).
    """

    __slots__ = ("_deadline", "_drained", "_effect_failure", "_failure", "_phase_key", "drain_per_shard",
                 "drain_timeout", "join_timeout", "phase", "progress")

    def __init__(
        self,
        progress: RollingRestartProgress,
        *,
        drain_timeout: float = 30.0,
        drain_per_shard: float = 5.0,
        join_timeout: float = 120.0,
    ) -> None:
        self.progress = progress
        self.drain_timeout = drain_timeout
        self.drain_per_shard = drain_per_shard
        self.join_timeout = join_timeout
        self.phase = RollPhase.BETWEEN if progress.current is None else RollPhase.STARTING
        self._phase_key: tuple[int, RollPhase] | None = None
        self._deadline = math.inf
        self._failure: tuple[int, str] | None = None
        # An effect of the last step that the shell could not carry out: the next step fails the roll.
        self._effect_failure: str | None = None
        self._drained: set[str] = set()

    @classmethod
    def begin(cls, view: RollView, *, started_at: float = 0.0, **options: float) -> RollingRestart:
        """A new restart of every slot that has a host now; exactly the hosts there now are replaced."""
        slots = sorted({h.slot for h in view.hosts if not h.retiring})
        progress = RollingRestartProgress(
            total=len(slots), pending_slots=slots, started_at=started_at,
            old_hosts=sorted(h.host_id for h in view.hosts),
        )
        return cls(progress, **options)

    # -- events -------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the restart still has work to do."""
        return self.progress.state.active

    @property
    def current_slot(self) -> int | None:
        """The slot being replaced (the roll owns it: the fleet must not fill it), or None between slots."""
        p = self.progress
        return p.pending_slots[0] if p.current is not None and p.pending_slots and p.state.active else None

    def control(self, action: str) -> None:
        """``pause``, ``resume`` or ``abort``; they act between slots, never in the middle of a hand-over.

        Raises
        ------
        RuntimeError
            When no restart is in progress.
        ValueError
            For another action.
        """
        p = self.progress
        if p.state not in (OperationState.RUNNING, OperationState.PAUSED):
            msg = "no rolling restart is in progress"
            raise RuntimeError(msg)
        states = {"pause": OperationState.PAUSED, "resume": OperationState.RUNNING, "abort": OperationState.ABORTING}
        if action not in states:
            msg = f"unknown action {action!r}; use pause, resume or abort"
            raise ValueError(msg)
        p.state = states[action]

    def start_failed(self, slot: int, error: str) -> None:
        """A host start for ``slot`` failed (callback error, no room in the cluster in time)."""
        self._failure = (slot, error)

    def effect_failed(self, effect: Effect, error: str, remaining: typing.Sequence[Effect]) -> list[Effect]:
        """The shell could not carry out ``effect`` (it raised ``error``): what to carry out instead of ``remaining``.

        ``remaining`` are the effects of the same step not carried out yet. While the roll is active
        they are skipped, as they build on the one that failed (a start after the old host was marked
        retiring, a retirement after the checkpoint that records it), and the next step fails the roll
        the way a failed start does: the slot's old hosts keep running, un-drained, and a replacement
        that exists is retired (but never the last host of a slot). Once the roll has ended (a step that
        failed or finished it: un-drain, retire the replacement, log, checkpoint), every effect left is
        still carried out, as each puts back what it can on its own.
        """
        if not self.active:
            return list(remaining)
        if isinstance(effect, Retire) and effect.host_id in self.progress.replaced:
            self.progress.replaced.remove(effect.host_id)
        if self._effect_failure is None:
            self._effect_failure = f"{effect!r} failed: {error}"
        return []

    # -- the step -----------------------------------------------------------------------------------

    def step(self, view: RollView, now: float) -> list[Effect]:
        """What to do now, given the fleet and table in ``view`` and the monotonic ``now``.

        Idempotent: calling it again with the same view asks for nothing new that could double a
        host (a start only when the slot has no replacement and no start in flight; a retirement
        only when none is in flight).
        """
        effects: list[Effect] = []
        p = self.progress
        effect_failure, self._effect_failure = self._effect_failure, None
        if effect_failure is not None and p.state.active:
            if p.current is None or not p.pending_slots:
                return self._end(effects, OperationState.FAILED, effect_failure)
            slot = p.pending_slots[0]
            olds = self._olds(view, slot)
            # With its old hosts gone (died meanwhile) the replacement is all the slot has: it stays.
            news = [h for h in view.hosts if h.slot == slot and h.host_id not in p.old_hosts] if olds else []
            return self._fail(effects, olds, news, f"slot {slot}: {effect_failure}")
        # Each pass either returns or finishes one slot, so this ends.
        for _ in range(len(p.pending_slots) + 2):
            if not p.state.active:
                return effects
            if p.current is None:
                self._enter(RollPhase.BETWEEN, -1, now)
                if p.state is OperationState.ABORTING:
                    return self._end(effects, OperationState.ABORTED, None)
                if p.state is OperationState.PAUSED:
                    return effects
                if not p.pending_slots:
                    return self._end(effects, OperationState.FINISHED, None)
                slot = p.pending_slots[0]
                olds = self._olds(view, slot)
                if not olds:
                    self._slot_done(effects)
                    continue
                p.current = ",".join(h.host_id for h in olds)
                self._failure = None
                # Intent first: the slot in progress is on record before any host is touched.
                effects.append(Checkpoint())
            slot = p.pending_slots[0]
            olds = self._olds(view, slot)
            if not olds:
                # Every old host of the slot is gone: retired (maybe just before a crash), or it died.
                self._slot_done(effects)
                continue
            effects.extend(SetRetiring(h.host_id, True) for h in olds if not h.retiring)
            news = [h for h in view.hosts if h.slot == slot and h.host_id not in p.old_hosts]
            if not news:
                failure, self._failure = self._failure, None
                if failure is not None and failure[0] == slot and slot not in view.starting:
                    return self._fail(effects, olds, news, f"slot {slot}: {failure[1]}")
                if self._enter(RollPhase.STARTING, slot, now, self.join_timeout):
                    return self._fail(effects, olds, news, f"slot {slot}: the replacement host did not start "
                                      f"within {self.join_timeout:.0f} s")
                if slot not in view.starting:
                    effects.append(StartHost(slot, sum(h.want for h in olds) or 1))
                return effects
            if not any(h.live for h in news):
                if self._enter(RollPhase.JOINING, slot, now, self.join_timeout):
                    return self._fail(effects, olds, news, f"slot {slot}: the replacement host did not register "
                                      f"within {self.join_timeout:.0f} s")
                return effects
            if any(h.owns for h in olds) or not view.all_ready:
                want = sum(h.want for h in olds)
                if self._enter(RollPhase.DRAINING, slot, now, self.drain_timeout + self.drain_per_shard * want):
                    return self._fail(effects, olds, news, f"slot {slot}: shards did not move off {p.current} in "
                                      "time")
                for old in olds:
                    if old.live and (not old.draining or old.host_id not in self._drained):
                        # The old host gets no new shard and hands every one over (by RESUME on the new host).
                        self._drained.add(old.host_id)
                        effects.append(Drain(old.host_id))
                return effects
            self._enter(RollPhase.RETIRING, slot, now)
            retire = [h.host_id for h in olds if h.host_id not in view.retiring]
            if retire:
                p.replaced.extend(h for h in retire if h not in p.replaced)
                effects.append(Checkpoint())
                effects.extend(Retire(h) for h in retire)
            return effects
        return effects

    # -- helpers ------------------------------------------------------------------------------------

    def _olds(self, view: RollView, slot: int) -> list[HostView]:
        return [h for h in view.hosts if h.slot == slot and h.host_id in self.progress.old_hosts]

    def _enter(self, phase: RollPhase, slot: int, now: float, timeout: float = math.inf) -> bool:
        """Enter ``phase`` (its timer starts at the first step that sees it); True once its deadline passed."""
        self.phase = phase
        if self._phase_key != (slot, phase):
            self._phase_key = (slot, phase)
            self._deadline = now + timeout
        return now > self._deadline

    def _slot_done(self, effects: list[Effect]) -> None:
        p = self.progress
        p.pending_slots.pop(0)
        p.done += 1
        p.current = None
        self._failure = None
        effects.append(Checkpoint())

    def _end(self, effects: list[Effect], state: OperationState, error: str | None) -> list[Effect]:
        p = self.progress
        p.state = state
        p.error = error
        p.current = None
        self.phase = RollPhase.DONE
        effects.append(Ended(state, error))
        effects.append(Checkpoint())
        return effects

    def _fail(self, effects: list[Effect], olds: list[HostView], news: list[HostView], error: str) -> list[Effect]:
        """Put the slot back as it was: the old hosts keep running and take shards again; a replacement goes."""
        for old in olds:
            if old.retiring or any(isinstance(e, SetRetiring) and e.host_id == old.host_id for e in effects):
                effects.append(SetRetiring(old.host_id, False))
            if old.live:
                effects.append(Undrain(old.host_id, old.want))
        effects.extend(Retire(h.host_id) for h in news)
        return self._end(effects, OperationState.FAILED, error)
