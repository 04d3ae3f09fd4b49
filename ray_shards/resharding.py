"""The live reshard as target state: a pure core that the reconcile step converges on.

No Ray, no asyncio, no I/O. The shell (the Orchestrator actor) builds a `ReshardView` of the two
shard sets, calls `Reshard.step` with its own monotonic clock, and carries out the typed effects it
returns, in order. Host commands and host starts are asynchronous: the shell reports each outcome
back (`Reshard.command_done`, `Reshard.start_done`, `Reshard.tails_delivered`,
`Reshard.old_set_retired`). A result the core no longer waits for (late, duplicated, or for a
command it already gave up on) is ignored. An effect the shell could not carry out (it raised) is an
event as well (`Reshard.effect_failed`): before the commit point the reshard rolls back; while
rolling back the rest of the rollback is still carried out; after the commit point the close is
tried again, and given up (the reshard finishes with a ``detail``) after `CLOSE_ATTEMPTS`.

Only `ReshardProgress` is checkpointed (its JSON form is unchanged); the phase, the commands in
flight and the collected tails live in this process only. Its ``state`` tells a restarted
Orchestrator what to do (`Reshard.restore`): before the commit point (``closing``) the new set is
abandoned and the old set goes live again (rolled back); at ``closing`` the new set is the bot
and the reshard carries on to its end::

    RECORDING ──▶ IDENTIFYING ──▶ SETTLING ──▶ SWITCHING ──────────▶ COMMIT ──▶ CLOSING ──▶ FINISHED
    RECORD to     start the new   wait          SHADOW_CHECK (new),   swap the   retire the
    the old set   fleet; wait     reshard_      SWITCH_OUT (old),     sets;      old hosts
                  until every     max_skew      GO_LIVE per new host  checkpoint (no hand-over)
                  new shard READY               with its own tails    = commit point
        │              │ start failed / READY deadline  │ a command failed or timed out
        ▼              ▼                                ▼
    ROLLING_BACK: kill only the new fleet; the old fleet replaces hosts again; GO_LIVE
    (stop_recording) to every old host, again to a live one that did not confirm (up to
    ``UNMUTE_ATTEMPTS`` batches) ──▶ FAILED (``rolled back`` after an Orchestrator restart)

The commit waits until every new host has gone live: one that joined after GO_LIVE went out (the
replacement of one that died) gets its GO_LIVE too, and new hosts still starting are waited for (up to
``command_timeout``, then the reshard rolls back).

Checkpointed ``state`` by phase: RECORDING ``starting``; IDENTIFYING ``identifying``; SETTLING,
SWITCHING ``switching``; CLOSING ``closing old sessions``; the state stays active while rolling
back (with ``error`` set), so a restart in the middle of a rollback finishes it.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import typing

from ray_shards.models import CommandKind
from ray_shards.protocol import GuildTails, ReshardProgress, ReshardState

__all__ = [
    "Checkpoint",
    "Commit",
    "Effect",
    "Ended",
    "HostCommand",
    "KillNewSet",
    "PauseOldFleet",
    "Reshard",
    "ReshardPhase",
    "ReshardView",
    "ResumeOldFleet",
    "RetireOldSet",
    "StartNewSet",
]

RESTARTED = "the orchestrator restarted during the reshard; start it again"
"""The error of a reshard rolled back because the Orchestrator restarted before its commit point."""

UNMUTE_ATTEMPTS = 3
"""How many times a rollback tells a live old host to go live again before it gives up on it.

A command leaves with a sync reply and is lost with it: one lost reply must not leave an old host muted
(or recording) for good.
"""

CLOSE_ATTEMPTS = 3
"""How often the close (the commit's checkpoint, then `RetireOldSet`) is tried when one of its effects fails."""


class ReshardPhase(enum.StrEnum):
    """Where the reshard is (this process's view; only `ReshardProgress` is checkpointed)."""

    RECORDING = "telling the old set to record"
    IDENTIFYING = "starting the new set"
    SETTLING = "waiting for the skew bound"
    SWITCHING = "switching"
    COMMIT = "committing"
    CLOSING = "closing the old set"
    ROLLING_BACK = "rolling back"
    FINISHED = "finished"
    FAILED = "failed"


class _Stage(enum.Enum):
    """The command batch in flight within RECORDING, SWITCHING and ROLLING_BACK."""

    NONE = enum.auto()
    RECORD = enum.auto()
    SHADOW_CHECK = enum.auto()
    SWITCH_OUT = enum.auto()
    GO_LIVE = enum.auto()
    UNMUTE = enum.auto()
    RETIRE = enum.auto()
    RETIRED = enum.auto()


# -- what the shell sees ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReshardView:
    """What a step reads: the live hosts of both sets, and the new set's shards and readiness."""

    old_hosts: tuple[str, ...] = ()
    """Live hosts of the bot's current table (the old set), not fenced."""
    new_shards: typing.Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    """Live hosts of the new set's table, each with the shards it owns there."""
    new_ready: int = 0
    """How many shards of the new set's table are READY."""
    old_desired: int = 0
    """How many hosts the old fleet keeps (the new fleet gets as many, at most one per shard)."""
    new_starting: int = 0
    """Hosts of the new set being started (replacements of dead ones) that have not joined its table yet."""


# -- what the shell does ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """Write the progress (with the fleet and the table) before carrying out the effects after this one."""


@dataclasses.dataclass(frozen=True, slots=True)
class HostCommand:
    """Run a host-wide command on ``host_id``; report its outcome with `Reshard.command_done` (``token``).

    ``tails`` (GO_LIVE of the switch) are the old set's tails of the guilds the host's shards cover;
    ``stop_recording`` (GO_LIVE of a rollback) ends the old host's recording.
    """

    host_id: str
    kind: CommandKind
    token: int
    tails: GuildTails | None = None
    stop_recording: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class StartNewSet:
    """Create the new set's table and fleet (shadow mode, prefix ``s<count>-h``) and start slots ``0..hosts-1``.

    Report every start's outcome with `Reshard.start_done`.
    """

    shard_count: int
    hosts: int


@dataclasses.dataclass(frozen=True, slots=True)
class PauseOldFleet:
    """The old fleet stops replacing hosts that die (desired 0): the switch is about to retire it."""


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeOldFleet:
    """The old fleet replaces hosts again (the reshard rolled back)."""


@dataclasses.dataclass(frozen=True, slots=True)
class KillNewSet:
    """Kill only the new fleet's hosts (and cancel its starts) and drop the new set's table."""


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """The new set is live: make its table and fleet the bot's (shard count ``shard_count``)."""

    shard_count: int


@dataclasses.dataclass(frozen=True, slots=True)
class RetireOldSet:
    """Close every host of the old fleet without hand-over and kill it; report with `Reshard.old_set_retired`."""


@dataclasses.dataclass(frozen=True, slots=True)
class Ended:
    """The reshard ended; ``error`` says why it failed, ``detail`` what the rollback could not do."""

    state: ReshardState
    error: str | None
    detail: str | None = None


Effect = (
    Checkpoint | HostCommand | StartNewSet | PauseOldFleet | ResumeOldFleet | KillNewSet | Commit | RetireOldSet | Ended
)


@dataclasses.dataclass(slots=True)
class _Sent:
    host_id: str
    kind: CommandKind
    done: bool = False
    error: str | None = None


# -- the core -----------------------------------------------------------------------------------------


class Reshard:
    """One live reshard: `ReshardProgress` (checkpointed) plus what this process saw (not).

    Parameters
    ----------
    progress
        The target state, new (`Reshard.begin`) or restored from a checkpoint (`Reshard.restore`).
    identify_window
        Seconds between IDENTIFYs of a bucket: the new set gets ``60 + target * (identify_window + 1)``
        seconds, from when its hosts started, to be READY.
    max_skew
        ``Timings.reshard_max_skew``: how long to wait once every new shard is READY, before the switch.
    command_timeout
        How long a host may take to run a command of the reshard.
    """

    __slots__ = ("_close_failures", "_deadline", "_effect_failure", "_live", "_merged", "_outcome",
                 "_rollback_errors", "_sent", "_stage", "_starts", "_tails", "_tokens", "_unmutes", "command_timeout",
                 "identify_window", "max_skew", "phase", "progress")

    def __init__(
        self,
        progress: ReshardProgress,
        *,
        identify_window: float = 5.0,
        max_skew: float = 1.0,
        command_timeout: float = 30.0,
    ) -> None:
        self.progress = progress
        self.identify_window = identify_window
        self.max_skew = max_skew
        self.command_timeout = command_timeout
        self.phase = ReshardPhase.RECORDING
        self._stage = _Stage.NONE
        self._tokens = itertools.count(1)
        self._sent: dict[int, _Sent] = {}
        self._deadline = math.inf
        self._starts: dict[int, str | None] | None = None
        self._tails: dict[str, GuildTails] = {}
        self._merged: GuildTails | None = None
        self._live: set[str] = set()
        """New hosts sent GO_LIVE in this switch."""
        self._outcome = ReshardState.FAILED
        self._unmutes = 0
        # An effect the shell could not carry out before the commit point: the next step rolls back.
        self._effect_failure: str | None = None
        # Effects of the rollback that failed (it carries on): the end's detail names them.
        self._rollback_errors: list[str] = []
        # Failed effects of the close, and the last one's error once the close is given up.
        self._close_failures: list[str] = []

    @classmethod
    def begin(cls, source: int, target: int, *, started_at: float = 0.0, **options: float) -> Reshard:
        """A new reshard from ``source`` to ``target`` shards (the caller checked that it may start)."""
        return cls(ReshardProgress(source=source, target=target, started_at=started_at), **options)

    @classmethod
    def restore(cls, progress: ReshardProgress, **options: float) -> Reshard:
        """The reshard a checkpoint shows in flight, in a restarted Orchestrator.

        At ``closing`` (the commit point passed) it carries on: the new set is the bot, what is left
        of the old set is retired. Before that the new set is abandoned (a restarted Orchestrator kills
        its hosts as strays: their names were never checkpointed) and the old set goes live again; the
        reshard ends ``rolled back``, or ``failed`` with its own error when it was already rolling back.
        """
        core = cls(progress, **options)
        if progress.state is ReshardState.CLOSING:
            core.phase = ReshardPhase.CLOSING
        elif progress.state.active:
            if progress.error is None or progress.error == RESTARTED:
                # A second restart in the middle of the first one's rollback is still that rollback: it must not
                # end ``failed`` (an operator's, or the auto-reshard policy's, cue that retrying is pointless).
                progress.error = RESTARTED
                core._outcome = ReshardState.ROLLED_BACK
            core.phase = ReshardPhase.ROLLING_BACK
        else:
            core.phase = ReshardPhase.FINISHED if progress.state is ReshardState.FINISHED else ReshardPhase.FAILED
        return core

    # -- events -------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the reshard still has work to do."""
        return self.phase not in (ReshardPhase.FINISHED, ReshardPhase.FAILED)

    @property
    def old_set_records(self) -> bool:
        """Whether the old set records what it delivers (a host joining it records before it adopts anything).

        From just before RECORD is sent until the switch is done with, or abandoned: not from the commit
        on (the old table is no longer the bot's), nor while rolling back (no switch will read what it
        records, and a host joining after the rollback told the old set to stop recording would record
        for good). The old table is not rebalanced meanwhile either.
        """
        return self.active and self.phase not in (ReshardPhase.CLOSING, ReshardPhase.ROLLING_BACK)

    def command_done(self, token: int, error: str | None) -> None:
        """A host ran (or failed: ``error``) the command of `HostCommand` ``token``; late or repeated: ignored."""
        sent = self._sent.get(token)
        if sent is not None and not sent.done:
            sent.done, sent.error = True, error

    def start_done(self, slot: int, error: str | None) -> None:
        """A start of `StartNewSet` ended (``error`` when it failed); one for a slot not waited for is ignored."""
        if self._starts is not None and slot in self._starts and self._starts[slot] is None:
            self._starts[slot] = "" if error is None else error

    def tails_delivered(self, host_id: str, tails: GuildTails) -> None:
        """An old host handed in its tails (it runs SWITCH_OUT); outside the switch-out they are ignored."""
        if self._stage is _Stage.SWITCH_OUT:
            self._tails[host_id] = tails

    def old_set_retired(self) -> None:
        """`RetireOldSet` is done: every old host closed and was killed."""
        if self.phase is ReshardPhase.CLOSING and self._stage is _Stage.RETIRE:
            self._stage = _Stage.RETIRED

    def effect_failed(self, effect: Effect, error: str, remaining: typing.Sequence[Effect]) -> list[Effect]:
        """The shell could not carry out ``effect`` (it raised ``error``): what to carry out instead of ``remaining``.

        ``remaining`` are the effects of the same step not carried out yet.

        - Before the commit point (the `Commit` itself included: the shell swaps the sets only once
          it can): the rest of the step is skipped, as it builds on the failed effect, and the next
          step rolls back with "<effect> failed: <error>" as the reshard's error.
        - While rolling back (which cannot roll back in turn): the rest is still carried out. A
          `HostCommand` that failed counts as that host's answer; any other failure is named in the
          ``detail`` of `Ended`.
        - After the commit point (the new set is the bot; there is nothing to roll back to): the rest
          is skipped and the next step tries the close again from its start (the commit's checkpoint,
          then `RetireOldSet`); after `CLOSE_ATTEMPTS` failures the close is given up and the reshard
          finishes, with a ``detail`` saying the old set may not be retired.
        - Once the reshard has ended (its `Ended`, its last checkpoint): the rest is carried out.
        """
        described = f"{effect!r} failed: {error}"
        if not self.active:
            return list(remaining)
        if self.phase is ReshardPhase.ROLLING_BACK:
            if isinstance(effect, HostCommand) and effect.token in self._sent:
                self.command_done(effect.token, error)
            else:
                self._rollback_errors.append(described)
            return list(remaining)
        if self.phase is ReshardPhase.CLOSING and not isinstance(effect, Commit):
            self._close_failures.append(described)
            # From its start: the checkpoint that records the commit comes before any old host goes.
            self._stage = _Stage.RETIRED if len(self._close_failures) >= CLOSE_ATTEMPTS else _Stage.NONE
            return []
        if isinstance(effect, Commit):
            # The sets were not swapped: this is still the switch, and what is checkpointed says so.
            self.phase, self.progress.state = ReshardPhase.SWITCHING, ReshardState.SWITCHING
        if self._effect_failure is None:
            self._effect_failure = described
        return []

    # -- the step -----------------------------------------------------------------------------------

    def step(self, view: ReshardView, now: float) -> list[Effect]:
        """What to do now, given the two sets in ``view`` and the monotonic ``now``.

        Idempotent: a step with nothing new to act on asks for nothing (commands and starts are asked
        for once per phase, and waited for).
        """
        effects: list[Effect] = []
        p = self.progress
        failure, self._effect_failure = self._effect_failure, None
        if failure is not None and self.active and self.phase not in (ReshardPhase.ROLLING_BACK, ReshardPhase.CLOSING):
            return self._fail(effects, view, now, failure)
        for _ in range(12):  # each pass either returns or moves to a later phase
            phase = self.phase
            if phase is ReshardPhase.RECORDING:
                if self._stage is _Stage.NONE:
                    # Intent first: the reshard is on record before any host is told anything.
                    effects.append(Checkpoint())
                    self._send(effects, _Stage.RECORD, CommandKind.RECORD, view.old_hosts, now)
                failure = self._batch_failure(view, now)
                if failure is None:
                    return effects
                if failure:
                    return self._fail(effects, view, now, failure)
                self.phase, self._stage = ReshardPhase.IDENTIFYING, _Stage.NONE
                p.state = ReshardState.IDENTIFYING
                self._sent, self._deadline = {}, math.inf  # the READY deadline begins once every host started
                hosts = max(1, min(view.old_desired, p.target))
                self._starts = dict.fromkeys(range(hosts))
                effects.append(Checkpoint())
                effects.append(StartNewSet(p.target, hosts))
                return effects
            if phase is ReshardPhase.IDENTIFYING:
                assert self._starts is not None
                failed = next((e for e in self._starts.values() if e), None)
                if failed is not None:
                    return self._fail(effects, view, now, failed)
                if any(e is None for e in self._starts.values()):
                    return effects
                if self._deadline == math.inf:
                    # Counted from when every host started, as the shards identify only then.
                    self._deadline = now + 60.0 + p.target * (self.identify_window + 1.0)
                p.ready = view.new_ready
                if view.new_ready < p.target:
                    if now > self._deadline:
                        return self._fail(effects, view, now,
                                          f"TimeoutError: only {view.new_ready}/{p.target} new shards became READY")
                    return effects
                self.phase, p.state = ReshardPhase.SETTLING, ReshardState.SWITCHING
                # Every new session has received events for at least the skew bound (ray_shards.cutover, assumption 2).
                self._deadline = now + self.max_skew
                continue
            if phase is ReshardPhase.SETTLING:
                if now < self._deadline:
                    return effects
                self.phase, self._stage = ReshardPhase.SWITCHING, _Stage.NONE
                effects.append(PauseOldFleet())
                continue
            if phase is ReshardPhase.SWITCHING:
                if self._stage is _Stage.NONE:
                    # Every new host must still hold all it received (ray_shards.cutover), checked before the old
                    # set is muted, so that a failure leaves the old set delivering and nothing is lost.
                    self._send(effects, _Stage.SHADOW_CHECK, CommandKind.SHADOW_CHECK, tuple(view.new_shards), now)
                failure = self._batch_failure(view, now)
                if failure is None:
                    return effects
                if failure:
                    return self._fail(effects, view, now, failure)
                if self._stage is _Stage.SHADOW_CHECK:
                    self._tails.clear()
                    self._merged, self._live = None, set()
                    # The old set as it is now: hosts that died during the reshard were replaced (and told to record).
                    self._send(effects, _Stage.SWITCH_OUT, CommandKind.SWITCH_OUT, view.old_hosts, now)
                    continue
                if self._stage is _Stage.SWITCH_OUT:
                    self._go_live(effects, view, now, tuple(view.new_shards))
                    continue
                # A new host that joined after GO_LIVE went out (the replacement of one that died) holds every event
                # it receives: it goes live too, with its shards' tails, and the commit waits for the new hosts still
                # starting (a host started in shadow mode that joins after the commit would hold its events for good).
                late = tuple(h for h in view.new_shards if h not in self._live)
                if late:
                    self._go_live(effects, view, now, late)
                    continue
                if view.new_starting:
                    if now > self._deadline:
                        return self._fail(effects, view, now, f"TimeoutError: {view.new_starting} new host(s) did not "
                                          f"start within {self.command_timeout:.0f} s of the switch")
                    return effects
                # Every new host is live: make the new set the bot, then end the old sessions.
                self.phase, self._stage = ReshardPhase.CLOSING, _Stage.NONE
                self._tails.clear()
                self._merged = None
                p.state = ReshardState.CLOSING
                effects.append(Commit(p.target))
                # The commit point: from this checkpoint on, a restarted Orchestrator runs the new set.
                effects.append(Checkpoint())
                continue
            if phase is ReshardPhase.CLOSING:
                if self._stage is _Stage.NONE:
                    self._stage = _Stage.RETIRE
                    if self._close_failures:
                        # A retry: the commit point may not be on record yet, and must be before any old host goes.
                        effects.append(Checkpoint())
                    effects.append(RetireOldSet())
                    return effects
                if self._stage is _Stage.RETIRE:
                    return effects
                self.phase = ReshardPhase.FINISHED
                p.state = ReshardState.FINISHED
                given_up = len(self._close_failures) >= CLOSE_ATTEMPTS
                detail = (f"gave up closing the old set (its hosts may still run): {self._close_failures[-1]}"
                          if given_up else None)
                effects.append(Ended(ReshardState.FINISHED, None, detail))
                effects.append(Checkpoint())
                return effects
            if phase is ReshardPhase.ROLLING_BACK:
                if self._stage is not _Stage.UNMUTE:
                    self._rollback_effects(effects, view, now)
                failure = self._batch_failure(view, now)
                if failure is None:
                    return effects
                if failure and self._unmutes < UNMUTE_ATTEMPTS:
                    # Ask again the live old hosts that did not confirm (their command, or its answer, was lost).
                    live = set(view.old_hosts)
                    again = [s.host_id for s in self._sent.values()
                             if s.host_id in live and not (s.done and s.error is None)]
                    self._send(effects, _Stage.UNMUTE, CommandKind.GO_LIVE, again, now, stop_recording=True)
                    self._unmutes += 1
                    return effects
                self.phase = ReshardPhase.FAILED
                p.state = self._outcome
                details = [f"could not tell every old host to go live again: {failure}"] if failure else []
                details.extend(self._rollback_errors)
                effects.append(Ended(self._outcome, p.error, "; ".join(details) or None))
                effects.append(Checkpoint())
                return effects
            return effects
        return effects

    # -- helpers ------------------------------------------------------------------------------------

    def _send(
        self, effects: list[Effect], stage: _Stage, kind: CommandKind, hosts: typing.Iterable[str], now: float,
        *, stop_recording: bool = False,
    ) -> None:
        """A new batch of one command for each of ``hosts``; results of the batch before are ignored from now on."""
        self._stage = stage
        self._sent = {}
        self._deadline = now + self.command_timeout
        for host_id in hosts:
            token = next(self._tokens)
            self._sent[token] = _Sent(host_id, kind)
            effects.append(HostCommand(host_id, kind, token, stop_recording=stop_recording))

    def _go_live(self, effects: list[Effect], view: ReshardView, now: float, hosts: tuple[str, ...]) -> None:
        """GO_LIVE to each of ``hosts`` with only the tails of the guilds its shards cover, never one global list."""
        if self._merged is None:
            self._merged = GuildTails.merge(self._tails.values(), old_count=self.progress.source)
            self._tails.clear()
        tails = self._merged
        self._stage = _Stage.GO_LIVE
        self._sent = {}
        self._deadline = now + self.command_timeout
        for host_id in hosts:
            shards = view.new_shards[host_id]
            self._live.add(host_id)
            token = next(self._tokens)
            self._sent[token] = _Sent(host_id, CommandKind.GO_LIVE)
            effects.append(HostCommand(host_id, CommandKind.GO_LIVE, token,
                                       tails=tails.for_shards(set(shards), self.progress.target)))

    def _batch_failure(self, view: ReshardView, now: float) -> str | None:
        """None while the batch runs; then "" when it succeeded, else the first failure's error.

        A host that died meanwhile is no failure (its shards moved, or are the old set's to move).
        """
        live = set(view.old_hosts) | set(view.new_shards)
        waiting = False
        for sent in self._sent.values():
            if sent.host_id not in live:
                continue
            if sent.done:
                if sent.error is not None:
                    return sent.error
            elif now > self._deadline:
                return (f"ShardUnavailableError: host {sent.host_id} did not run {sent.kind.value} within "
                        f"{self.command_timeout:.0f} s")
            else:
                waiting = True
        return None if waiting else ""

    def _fail(self, effects: list[Effect], view: ReshardView, now: float, error: str) -> list[Effect]:
        """Before the commit point: roll back (the state stays active, with the error, until the old set is live)."""
        self.progress.error = error
        self.phase = ReshardPhase.ROLLING_BACK
        self._rollback_effects(effects, view, now)
        effects.append(Checkpoint())
        return effects

    def _rollback_effects(self, effects: list[Effect], view: ReshardView, now: float) -> None:
        # Only the new set's hosts go; the old set was told to record (and maybe to mute): it delivers live
        # again, nothing held back.
        self._starts = None
        self._tails.clear()
        self._merged, self._live = None, set()
        effects.append(KillNewSet())
        effects.append(ResumeOldFleet())
        self._send(effects, _Stage.UNMUTE, CommandKind.GO_LIVE, view.old_hosts, now, stop_recording=True)
        self._unmutes = 1
