"""The rolling restart's pure core (`ray_shards.rolling`): effects from views, restart-safe, no doubled slot."""

from __future__ import annotations

import dataclasses

import pytest

from ray_shards import rolling as roll
from ray_shards.protocol import OperationState, RollingRestartProgress


def _host(host_id: str, slot: int, **kw: object) -> roll.HostView:
    values: dict[str, object] = {"want": 2, "live": True, "owns": 2} | kw
    return roll.HostView(host_id, slot, **values)  # type: ignore[arg-type]


def _view(*hosts: roll.HostView, **kw: object) -> roll.RollView:
    return roll.RollView(hosts=tuple(hosts), **kw)  # type: ignore[arg-type]


def _kinds(effects: list[roll.Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


def test_one_slot_goes_through_every_phase_checkpointing_intent_first() -> None:
    a, b = _host("h0", 0), _host("h1", 1)
    core = roll.RollingRestart.begin(_view(a, b))
    assert core.progress.pending_slots == [0, 1] and core.progress.old_hosts == ["h0", "h1"]
    effects = core.step(_view(a, b), 0.0)
    # The slot in progress is on record before any host is touched.
    assert effects == [roll.Checkpoint(), roll.SetRetiring("h0", True), roll.StartHost(0, 2)]
    assert core.progress.current == "h0" and core.phase is roll.RollPhase.STARTING
    a = dataclasses.replace(a, retiring=True)
    # The start is in flight: asking again starts nothing more.
    assert core.step(_view(a, b, starting=frozenset({0})), 1.0) == []
    new = _host("h0r3", 0, live=False, owns=0)
    assert core.step(_view(a, b, new), 2.0) == []
    assert core.phase is roll.RollPhase.JOINING
    new = dataclasses.replace(new, live=True)
    assert core.step(_view(a, b, new), 3.0) == [roll.Drain("h0")]
    a = dataclasses.replace(a, draining=True)
    assert core.step(_view(a, b, new), 3.2) == []  # drained once per life
    a, new = dataclasses.replace(a, owns=0), dataclasses.replace(new, owns=2)
    assert core.step(_view(a, b, new, all_ready=False), 4.0) == []  # a hand-over is still resuming
    assert core.step(_view(a, b, new), 5.0) == [roll.Checkpoint(), roll.Retire("h0")]
    assert core.progress.replaced == ["h0"]
    assert core.step(_view(a, b, new, retiring=frozenset({"h0"})), 5.5) == []  # no second retirement
    # Retired: the slot is done, the next one begins in the same step.
    effects = core.step(_view(b, new), 6.0)
    assert effects == [roll.Checkpoint(), roll.Checkpoint(), roll.SetRetiring("h1", True), roll.StartHost(1, 2)]
    assert core.progress.done == 1 and core.progress.pending_slots == [1]


def test_a_replacement_that_cannot_start_fails_the_roll_and_the_old_host_keeps_running() -> None:
    a = _host("h0", 0)
    core = roll.RollingRestart.begin(_view(a))
    core.step(_view(a), 0.0)
    a = dataclasses.replace(a, retiring=True)
    core.start_failed(0, "HostStartTimeoutError: no room")
    effects = core.step(_view(a), 1.0)
    assert effects == [roll.SetRetiring("h0", False), roll.Undrain("h0", 2),
                       roll.Ended(OperationState.FAILED, "slot 0: HostStartTimeoutError: no room"), roll.Checkpoint()]
    assert core.progress.state is OperationState.FAILED and not core.active
    assert core.step(_view(a), 2.0) == []


def test_a_drain_past_its_deadline_puts_the_slot_back() -> None:
    a = _host("h0", 0, retiring=True, draining=True)
    new = _host("h0r2", 0, owns=0)
    core = roll.RollingRestart(RollingRestartProgress(total=1, pending_slots=[0], current="h0", old_hosts=["h0"]),
                               drain_timeout=10.0, drain_per_shard=0.0)
    assert core.step(_view(a, new), 100.0) == [roll.Drain("h0")]  # a new life drains again (revokes are not kept)
    assert core.step(_view(a, new), 109.0) == []
    effects = core.step(_view(a, new), 111.0)
    assert effects[:3] == [roll.SetRetiring("h0", False), roll.Undrain("h0", 2), roll.Retire("h0r2")]
    assert core.progress.state is OperationState.FAILED and "did not move off h0" in str(core.progress.error)


def test_after_a_restart_the_existing_replacement_is_reused_and_an_empty_old_host_retired() -> None:
    progress = RollingRestartProgress(total=2, pending_slots=[0, 1], current="h0", old_hosts=["h0", "h1"])
    a = _host("h0", 0, retiring=True, draining=True, owns=0)
    b, new = _host("h1", 1), _host("h0r3", 0)
    # From the checkpoint: the replacement exists (never started twice), the old host owns nothing: retire it.
    assert roll.RollingRestart(progress).step(_view(a, b, new), 0.0) == [roll.Checkpoint(), roll.Retire("h0")]
    # Retired just before the crash (the checkpoint still says slot 0): the slot is done, nothing doubled.
    effects = roll.RollingRestart(RollingRestartProgress.from_json(progress.to_json())).step(_view(b, new), 0.0)
    assert effects == [roll.Checkpoint(), roll.Checkpoint(), roll.SetRetiring("h1", True), roll.StartHost(1, 2)]
    # A replacement that was never created: started, once.
    core = roll.RollingRestart(RollingRestartProgress.from_json(progress.to_json()))
    assert core.step(_view(a, b), 0.0) == [roll.StartHost(0, 2)]
    assert core.step(_view(a, b, starting=frozenset({0})), 0.2) == []


def test_pause_and_abort_act_between_slots_only() -> None:
    a, b = _host("h0", 0), _host("h1", 1)
    core = roll.RollingRestart.begin(_view(a, b))
    core.control("pause")
    assert core.step(_view(a, b), 0.0) == []
    core.control("resume")
    core.step(_view(a, b), 0.0)
    core.control("abort")
    # Mid-slot: the slot carries on to its end.
    new = _host("h0r3", 0, owns=0)
    a = dataclasses.replace(a, retiring=True)
    assert core.step(_view(a, b, new), 1.0) == [roll.Drain("h0")]
    assert core.step(_view(b, new), 2.0) == [roll.Checkpoint(), roll.Ended(OperationState.ABORTED, None),
                                              roll.Checkpoint()]
    assert core.progress.done == 1 and core.progress.state is OperationState.ABORTED
    with pytest.raises(RuntimeError, match="no rolling restart"):
        core.control("resume")
    with pytest.raises(ValueError, match="unknown action"):
        roll.RollingRestart.begin(_view(a)).control("stop")


def test_an_old_host_that_died_ends_its_slot_and_a_replacement_that_died_is_started_again() -> None:
    a, b = _host("h0", 0), _host("h1", 1)
    core = roll.RollingRestart.begin(_view(a, b))
    core.step(_view(a, b), 0.0)
    a = dataclasses.replace(a, retiring=True)
    # The replacement died before registering: the fleet forgot it, the core starts another.
    assert core.step(_view(a, b), 1.0) == [roll.StartHost(0, 2)]
    # The old host died meanwhile: the slot is done (its start in flight becomes the slot's host).
    effects = core.step(_view(b, starting=frozenset({0})), 2.0)
    assert effects[:2] == [roll.Checkpoint(), roll.Checkpoint()] and core.progress.pending_slots == [1]


# -- effects the shell could not carry out (issue #11) ------------------------------------------------------------


def test_a_start_that_raises_skips_the_rest_and_fails_the_roll_with_the_old_host_kept() -> None:
    a, b = _host("h0", 0), _host("h1", 1)
    core = roll.RollingRestart.begin(_view(a, b))
    effects = core.step(_view(a, b), 0.0)
    assert effects == [roll.Checkpoint(), roll.SetRetiring("h0", True), roll.StartHost(0, 2)]
    # fleet.start_slot raised: nothing was started, so nothing will report the start.
    assert core.effect_failed(roll.StartHost(0, 2), "RuntimeError: no loop", ()) == []
    a = dataclasses.replace(a, retiring=True)
    effects = core.step(_view(a, b), 0.1)
    error = "slot 0: StartHost(slot=0, want=2) failed: RuntimeError: no loop"
    assert effects == [roll.SetRetiring("h0", False), roll.Undrain("h0", 2),
                       roll.Ended(OperationState.FAILED, error), roll.Checkpoint()]
    assert core.progress.state is OperationState.FAILED and core.progress.error == error
    assert core.step(_view(a, b), 0.2) == []


def test_a_failed_intent_checkpoint_skips_every_effect_that_builds_on_it() -> None:
    a = _host("h0", 0)
    core = roll.RollingRestart.begin(_view(a))
    effects = core.step(_view(a), 0.0)
    rest = tuple(effects[1:])
    assert rest == (roll.SetRetiring("h0", True), roll.StartHost(0, 2))
    assert core.effect_failed(effects[0], "AssertionError: ", rest) == []
    # The old host was never marked retiring: it is only un-drained (a no-op for the table), and keeps running.
    assert core.step(_view(a), 0.1) == [roll.Undrain("h0", 2), roll.Ended(OperationState.FAILED, core.progress.error),
                                        roll.Checkpoint()]


def test_a_drain_that_raises_puts_the_slot_back_and_retires_the_replacement() -> None:
    a = _host("h0", 0, retiring=True)
    new = _host("h0r2", 0, owns=0)
    core = roll.RollingRestart(RollingRestartProgress(total=1, pending_slots=[0], current="h0", old_hosts=["h0"]))
    assert core.step(_view(a, new), 0.0) == [roll.Drain("h0")]
    assert core.effect_failed(roll.Drain("h0"), "KeyError: 'h0'", ()) == []
    effects = core.step(_view(a, new), 0.1)
    assert effects[:3] == [roll.SetRetiring("h0", False), roll.Undrain("h0", 2), roll.Retire("h0r2")]
    assert core.progress.error == "slot 0: Drain(host_id='h0') failed: KeyError: 'h0'"


def test_a_failed_retirement_is_not_counted_as_replaced() -> None:
    a = _host("h0", 0, retiring=True, draining=True, owns=0)
    new = _host("h0r2", 0)
    core = roll.RollingRestart(RollingRestartProgress(total=1, pending_slots=[0], current="h0", old_hosts=["h0"]))
    assert core.step(_view(a, new), 0.0) == [roll.Checkpoint(), roll.Retire("h0")]
    assert core.progress.replaced == ["h0"]
    core.effect_failed(roll.Retire("h0"), "RuntimeError: no loop", ())
    assert core.progress.replaced == []
    assert core.step(_view(a, new), 0.1)[-2:] == [roll.Ended(OperationState.FAILED, core.progress.error),
                                                  roll.Checkpoint()]


def test_when_the_old_hosts_died_meanwhile_the_replacement_stays() -> None:
    a, new = _host("h0", 0, retiring=True), _host("h0r2", 0, owns=0)
    core = roll.RollingRestart(RollingRestartProgress(total=1, pending_slots=[0], current="h0", old_hosts=["h0"]))
    core.step(_view(a, new), 0.0)
    core.effect_failed(roll.Drain("h0"), "KeyError: 'h0'", ())
    effects = core.step(_view(new), 0.1)  # h0 is gone: retiring h0r2 would leave the slot with no host
    assert not any(isinstance(e, roll.Retire) for e in effects)
    assert core.progress.state is OperationState.FAILED


def test_once_the_roll_has_ended_the_rest_of_its_end_is_still_carried_out() -> None:
    a = _host("h0", 0, retiring=True, draining=True)
    new = _host("h0r2", 0, owns=0)
    core = roll.RollingRestart(RollingRestartProgress(total=1, pending_slots=[0], current="h0", old_hosts=["h0"]),
                               drain_timeout=1.0, drain_per_shard=0.0)
    core.step(_view(a, new), 0.0)
    effects = core.step(_view(a, new), 5.0)  # the drain's deadline passed: the roll fails
    assert effects[0] == roll.SetRetiring("h0", False) and not core.active
    # Un-marking the old host raised: un-draining it, retiring the replacement, the log and the checkpoint still go.
    assert core.effect_failed(effects[0], "KeyError: 'h0'", tuple(effects[1:])) == effects[1:]
