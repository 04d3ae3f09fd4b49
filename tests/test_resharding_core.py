"""The reshard's pure core (`ray_shards.resharding`): effects from views, failures roll back, restart-safe."""

from __future__ import annotations

import pytest

from ray_shards import resharding as rs
from ray_shards.cutover import Seen
from ray_shards.models import CommandKind
from ray_shards.protocol import GuildTails, ReshardProgress, ReshardState

OLD = ("h0", "h1")
NEW = {"s4-h0": (0, 1), "s4-h1": (2, 3)}
WINDOW, SKEW = 1.0, 0.5
READY_DEADLINE = 60.0 + 4 * (WINDOW + 1.0)


def _core() -> rs.Reshard:
    return rs.Reshard.begin(2, 4, started_at=100.0, identify_window=WINDOW, max_skew=SKEW)


def _view(
    *, old: tuple[str, ...] = OLD, new: dict[str, tuple[int, ...]] | None = None, ready: int = 0
) -> rs.ReshardView:
    return rs.ReshardView(old_hosts=old, new_shards=new or {}, new_ready=ready, old_desired=2)


def _commands(effects: list[rs.Effect], kind: CommandKind | None = None) -> list[rs.HostCommand]:
    return [e for e in effects if isinstance(e, rs.HostCommand) and (kind is None or e.kind is kind)]


def _answer(core: rs.Reshard, effects: list[rs.Effect], error: str | None = None) -> None:
    for command in _commands(effects):
        core.command_done(command.token, error)


def _to_identifying(core: rs.Reshard) -> None:
    effects = core.step(_view(), 0.0)
    _answer(core, effects)
    assert core.step(_view(), 0.1) == [rs.Checkpoint(), rs.StartNewSet(4, 2)]


def _to_switching(core: rs.Reshard) -> list[rs.Effect]:
    """Up to the SHADOW_CHECK commands (returned)."""
    _to_identifying(core)
    core.start_done(0, None)
    core.start_done(1, None)
    assert core.step(_view(new=NEW, ready=4), 1.0) == []  # settling: the skew bound first
    assert core.phase is rs.ReshardPhase.SETTLING
    return core.step(_view(new=NEW, ready=4), 1.0 + SKEW + 0.01)


def _seen(received: float) -> Seen:
    return Seen(digest=b"d", unique=True, received=received)


def _rolled_back(effects: list[rs.Effect], old: tuple[str, ...] = OLD) -> list[rs.HostCommand]:
    """The rollback's effects: only the new set is killed, the old fleet repairs again, the old hosts go live."""
    assert effects[:2] == [rs.KillNewSet(), rs.ResumeOldFleet()]
    unmute = _commands(effects, CommandKind.GO_LIVE)
    assert [c.host_id for c in unmute] == list(old) and all(c.stop_recording and c.tails is None for c in unmute)
    assert not any(isinstance(e, rs.Commit | rs.RetireOldSet | rs.PauseOldFleet) for e in effects)
    return unmute


def test_happy_path_effects_in_order() -> None:
    core = _core()
    assert core.old_set_records and core.progress.state is ReshardState.STARTING
    effects = core.step(_view(), 0.0)
    # Intent first: the reshard is on record before any host is told anything.
    assert effects[0] == rs.Checkpoint()
    assert [(c.host_id, c.kind) for c in _commands(effects)] == [("h0", CommandKind.RECORD), ("h1", CommandKind.RECORD)]
    assert core.step(_view(), 0.05) == []  # waits for both
    _answer(core, effects)
    assert core.step(_view(), 0.1) == [rs.Checkpoint(), rs.StartNewSet(4, 2)]
    assert core.progress.state is ReshardState.IDENTIFYING
    core.start_done(0, None)
    assert core.step(_view(new={"s4-h0": (0, 1)}), 0.2) == []  # a start still in flight
    core.start_done(1, None)
    assert core.step(_view(new=NEW, ready=3), 0.3) == [] and core.progress.ready == 3
    assert core.step(_view(new=NEW, ready=4), 0.4) == []
    assert core.progress.state is ReshardState.SWITCHING and core.phase is rs.ReshardPhase.SETTLING
    effects = core.step(_view(new=NEW, ready=4), 0.4 + SKEW + 0.01)
    assert effects[0] == rs.PauseOldFleet()
    shadow = _commands(effects)
    assert [(c.host_id, c.kind) for c in shadow] == [(h, CommandKind.SHADOW_CHECK) for h in NEW]
    _answer(core, effects)
    effects = core.step(_view(new=NEW, ready=4), 1.0)
    assert [(c.host_id, c.kind) for c in _commands(effects)] == [(h, CommandKind.SWITCH_OUT) for h in OLD]
    # Guild 1 << 22 is on new shard 1 (s4-h0), 2 << 22 on new shard 2 (s4-h1); each new host gets only its own.
    core.tails_delivered("h0", GuildTails("h0", {1 << 22: (_seen(1.0),)}, {}))
    core.tails_delivered("h1", GuildTails("h1", {2 << 22: (_seen(2.0),)}, {}))
    _answer(core, effects)
    effects = core.step(_view(new=NEW, ready=4), 1.1)
    go_live = _commands(effects, CommandKind.GO_LIVE)
    assert [c.host_id for c in go_live] == list(NEW) and not any(c.stop_recording for c in go_live)
    assert go_live[0].tails is not None and set(go_live[0].tails.tails) == {1 << 22}
    assert go_live[1].tails is not None and set(go_live[1].tails.tails) == {2 << 22}
    assert go_live[0].tails.old_count == 2
    _answer(core, effects)
    effects = core.step(_view(new=NEW, ready=4), 1.2)
    # The swap, then the commit point's checkpoint (state closing), then the old set goes.
    assert effects == [rs.Commit(4), rs.Checkpoint(), rs.RetireOldSet()]
    assert core.progress.state is ReshardState.CLOSING and not core.old_set_records
    assert core.step(_view(old=tuple(NEW), ready=4), 1.3) == []  # retiring
    core.old_set_retired()
    assert core.step(_view(old=tuple(NEW), ready=4), 1.4) == [rs.Ended(ReshardState.FINISHED, None), rs.Checkpoint()]
    assert core.progress.state is ReshardState.FINISHED and core.progress.error is None and not core.active
    assert core.step(_view(old=tuple(NEW), ready=4), 2.0) == []


def test_a_new_host_that_cannot_start_rolls_back_killing_only_the_new_fleet() -> None:
    core = _core()
    _to_identifying(core)
    core.start_done(1, "HostCallbackError: the new code does not start")
    effects = core.step(_view(new={"s4-h0": (0, 1)}), 0.5)
    unmute = _rolled_back(effects)
    assert effects[-1] == rs.Checkpoint()
    # Rolling back: the failure is on record, the state stays active until the old set is live again.
    assert core.progress.state.active and core.progress.error == "HostCallbackError: the new code does not start"
    assert core.phase is rs.ReshardPhase.ROLLING_BACK
    core.start_done(0, None)  # the other start ends meanwhile: ignored
    assert core.step(_view(), 0.6) == []
    for command in unmute:
        core.command_done(command.token, None)
    effects = core.step(_view(), 0.7)
    assert effects == [rs.Ended(ReshardState.FAILED, "HostCallbackError: the new code does not start"), rs.Checkpoint()]
    assert core.progress.state is ReshardState.FAILED and not core.active


def test_new_shards_not_ready_by_the_deadline_roll_back() -> None:
    core = _core()
    _to_identifying(core)
    core.start_done(0, None)
    assert core.step(_view(new=NEW), 10.0) == []  # a start in flight: the deadline has not begun
    core.start_done(1, None)
    assert core.step(_view(new=NEW, ready=3), 20.0) == []  # the deadline counts from here
    assert core.step(_view(new=NEW, ready=3), 20.0 + READY_DEADLINE - 0.1) == []
    effects = core.step(_view(new=NEW, ready=3), 20.0 + READY_DEADLINE + 0.1)
    _rolled_back(effects)
    assert core.progress.error == "TimeoutError: only 3/4 new shards became READY"


def test_a_failed_shadow_check_rolls_back_before_the_old_set_is_muted() -> None:
    core = _core()
    effects = _to_switching(core)
    overflow = "CommandFailedError: a new host held more than reshard_buffer_cap (30 events)"
    shadow = _commands(effects, CommandKind.SHADOW_CHECK)
    core.command_done(shadow[0].token, None)
    core.command_done(shadow[1].token, overflow)
    effects = core.step(_view(new=NEW, ready=4), 3.0)
    _rolled_back(effects)
    assert not _commands(effects, CommandKind.SWITCH_OUT) and core.progress.error == overflow


def test_a_go_live_that_fails_rolls_back_and_a_dead_host_is_no_failure() -> None:
    core = _core()
    _answer(core, _to_switching(core))
    effects = core.step(_view(new=NEW, ready=4), 3.0)
    # h1 died during the switch-out: its answer (an error) does not count, nor does it fail the reshard.
    switch_out = _commands(effects, CommandKind.SWITCH_OUT)
    core.command_done(switch_out[0].token, None)
    core.command_done(switch_out[1].token, "host h1 died before running the command")
    effects = core.step(_view(old=("h0",), new=NEW, ready=4), 3.1)
    go_live = _commands(effects, CommandKind.GO_LIVE)
    assert len(go_live) == 2
    core.command_done(go_live[0].token, None)
    core.command_done(go_live[1].token, "CommandFailedError: boom")
    effects = core.step(_view(old=("h0",), new=NEW, ready=4), 3.2)
    _rolled_back(effects, old=("h0",))
    assert core.progress.error == "CommandFailedError: boom"


def test_a_new_host_that_joins_after_go_live_is_told_to_go_live_before_the_commit() -> None:
    """s4-h1 died during the switch; its replacement (started in shadow mode, holding every event) registered
    after the GO_LIVE batch left. Committing then would leave it holding forever: it gets GO_LIVE with the
    tails of the shards it owns, and the commit waits for it."""
    core = _core()
    _answer(core, _to_switching(core))
    effects = core.step(_view(new=NEW, ready=4), 3.0)
    core.tails_delivered("h0", GuildTails("h0", {2 << 22: (_seen(2.0),)}, {}))
    _answer(core, effects)
    effects = core.step(_view(new=NEW, ready=4), 3.1)
    go_live = _commands(effects, CommandKind.GO_LIVE)
    assert [c.host_id for c in go_live] == list(NEW)
    _answer(core, effects)
    replaced = {"s4-h0": (0, 1), "s4-h1.2": (2, 3)}  # s4-h1 is gone; its replacement adopted shards 2 and 3
    effects = core.step(_view(new=replaced, ready=4), 3.2)
    (late,) = _commands(effects)
    assert late.host_id == "s4-h1.2" and late.kind is CommandKind.GO_LIVE
    assert late.tails is not None and set(late.tails.tails) == {2 << 22}
    assert not any(isinstance(e, rs.Commit) for e in effects)
    assert core.step(_view(new=replaced, ready=4), 3.3) == []  # waits for its answer
    _answer(core, effects)
    effects = core.step(_view(new=replaced, ready=4), 3.4)
    assert effects == [rs.Commit(4), rs.Checkpoint(), rs.RetireOldSet()]


def test_a_command_that_never_answers_times_out_and_late_or_repeated_answers_are_ignored() -> None:
    core = rs.Reshard.begin(2, 4, identify_window=WINDOW, max_skew=SKEW, command_timeout=30.0)
    effects = core.step(_view(), 0.0)
    record = _commands(effects)
    core.command_done(record[0].token, None)
    # h1's reply is lost: at the timeout the reshard rolls back, with the message a shell timeout gives.
    assert core.step(_view(), 29.0) == []
    effects = core.step(_view(), 30.5)
    unmute = _rolled_back(effects)
    assert core.progress.error == "ShardUnavailableError: host h1 did not run record within 30 s"
    # The lost reply arrives, twice, and so does the first one again: none is taken for an unmute's answer.
    for _ in range(2):
        core.command_done(record[1].token, "late")
        core.command_done(record[0].token, None)
    assert core.step(_view(), 31.0) == []
    core.command_done(unmute[0].token, None)
    core.command_done(unmute[0].token, "a duplicate of an answered command")  # ignored: already answered
    core.command_done(unmute[1].token, None)
    effects = core.step(_view(), 31.1)
    assert effects == [rs.Ended(ReshardState.FAILED, core.progress.error), rs.Checkpoint()]


def test_duplicated_answers_in_the_happy_path_change_nothing() -> None:
    core = _core()
    effects = core.step(_view(), 0.0)
    _answer(core, effects)
    _answer(core, effects, "a duplicate must not turn a success into a failure")
    assert core.step(_view(), 0.1) == [rs.Checkpoint(), rs.StartNewSet(4, 2)]
    core.start_done(0, None)
    core.start_done(0, "a duplicate start outcome")
    core.start_done(7, "a slot it never started")
    core.start_done(1, None)
    assert core.step(_view(new=NEW, ready=4), 0.2) == [] and core.phase is rs.ReshardPhase.SETTLING
    # Tails outside the switch-out are ignored.
    core.tails_delivered("h0", GuildTails("h0", {1 << 22: (_seen(1.0),)}, {}))
    effects = core.step(_view(new=NEW, ready=4), 1.0)
    _answer(core, effects)
    effects = core.step(_view(new=NEW, ready=4), 1.1)
    _answer(core, effects)
    go_live = _commands(core.step(_view(new=NEW, ready=4), 1.2), CommandKind.GO_LIVE)
    assert all(c.tails is not None and not c.tails.tails for c in go_live)


def test_an_old_host_that_dies_during_identify_is_replaced_and_its_replacement_told_to_switch_out() -> None:
    core = _core()
    _answer(core, _to_switching(core))
    # h1 died and the old fleet replaced it with h1r3 (which registered recording): the switch-out reaches it.
    effects = core.step(_view(old=("h0", "h1r3"), new=NEW, ready=4), 3.0)
    assert [c.host_id for c in _commands(effects, CommandKind.SWITCH_OUT)] == ["h0", "h1r3"]


@pytest.mark.parametrize("state", [ReshardState.STARTING, ReshardState.IDENTIFYING, ReshardState.SWITCHING])
def test_a_restart_before_the_commit_point_rolls_back(state: ReshardState) -> None:
    progress = ReshardProgress(source=2, target=4, state=state, ready=1, started_at=5.0)
    core = rs.Reshard.restore(ReshardProgress.from_json(progress.to_json(), now=0.0))
    assert core.phase is rs.ReshardPhase.ROLLING_BACK and core.active
    assert core.progress.error == rs.RESTARTED
    effects = core.step(_view(), 0.0)
    unmute = _rolled_back(effects)
    assert core.progress.state is state  # still active in a checkpoint: a second crash rolls back again
    assert core.step(_view(), 0.1) == []
    for command in unmute:
        core.command_done(command.token, None)
    assert core.step(_view(), 0.2) == [rs.Ended(ReshardState.ROLLED_BACK, rs.RESTARTED), rs.Checkpoint()]
    assert core.progress.state is ReshardState.ROLLED_BACK


def test_a_restart_in_the_middle_of_a_rollback_finishes_it_with_its_own_error() -> None:
    core = _core()
    _to_identifying(core)
    core.start_done(0, "HostStartTimeoutError: no room")
    core.step(_view(), 0.5)
    # The rollback's checkpoint: still active, with the error. The Orchestrator dies before the old set is live.
    restored = rs.Reshard.restore(ReshardProgress.from_json(core.progress.to_json(), now=0.0))
    effects = restored.step(_view(), 0.0)
    unmute = _rolled_back(effects)
    for command in unmute:
        restored.command_done(command.token, None)
    assert restored.step(_view(), 0.1) == [rs.Ended(ReshardState.FAILED, "HostStartTimeoutError: no room"),
                                           rs.Checkpoint()]


def test_a_restart_at_the_commit_point_carries_on() -> None:
    progress = ReshardProgress(source=2, target=4, state=ReshardState.CLOSING, ready=4, started_at=5.0)
    core = rs.Reshard.restore(ReshardProgress.from_json(progress.to_json(), now=0.0))
    assert core.phase is rs.ReshardPhase.CLOSING and not core.old_set_records
    assert core.step(_view(old=tuple(NEW)), 0.0) == [rs.RetireOldSet()]
    core.old_set_retired()
    assert core.step(_view(old=tuple(NEW)), 0.1) == [rs.Ended(ReshardState.FINISHED, None), rs.Checkpoint()]
    assert core.progress.state is ReshardState.FINISHED and core.progress.error is None


def test_unmute_failures_are_asked_again_then_end_the_rollback_with_a_detail() -> None:
    core = rs.Reshard.restore(ReshardProgress(source=2, target=4, state=ReshardState.IDENTIFYING))
    unmute = _commands(core.step(_view(), 0.0))
    core.command_done(unmute[0].token, "CommandFailedError: nope")
    core.command_done(unmute[1].token, None)
    # A command (or its answer) can be lost with a sync reply: the host that did not confirm is asked again.
    for attempt in range(1, rs.UNMUTE_ATTEMPTS):
        effects = core.step(_view(), 0.1 * attempt)
        again = _commands(effects)
        assert effects == again and [(c.host_id, c.kind, c.stop_recording) for c in again] == [
            ("h0", CommandKind.GO_LIVE, True)
        ]
        core.command_done(again[0].token, "CommandFailedError: nope")
    effects = core.step(_view(), 1.0)
    assert effects == [rs.Ended(ReshardState.ROLLED_BACK, rs.RESTARTED,
                                "could not tell every old host to go live again: CommandFailedError: nope"),
                       rs.Checkpoint()]


def test_an_unmute_lost_once_is_asked_again_and_the_rollback_ends_cleanly() -> None:
    # Found by the simulator (seed 206): the sync reply carrying an old host's GO_LIVE was lost; the rollback ended
    # with a detail and the host recorded (or stayed muted) for good.
    core = rs.Reshard.restore(ReshardProgress(source=2, target=4, state=ReshardState.SWITCHING))
    unmute = _commands(core.step(_view(), 0.0))
    core.command_done(unmute[1].token, None)
    assert core.step(_view(), 10.0) == []
    again = _commands(core.step(_view(), 31.0))
    assert [(c.host_id, c.kind, c.stop_recording) for c in again] == [("h0", CommandKind.GO_LIVE, True)]
    core.command_done(again[0].token, None)
    assert core.step(_view(), 32.0) == [rs.Ended(ReshardState.ROLLED_BACK, rs.RESTARTED), rs.Checkpoint()]


def test_a_second_restart_during_a_restarts_rollback_still_ends_rolled_back() -> None:
    # Found by the simulator (seed 22): the second restore saw the first one's error and ended the rollback
    # "failed", which the auto-reshard policy takes as a reason never to try again.
    first = rs.Reshard.restore(ReshardProgress(source=2, target=4, state=ReshardState.IDENTIFYING))
    first.step(_view(), 0.0)
    second = rs.Reshard.restore(ReshardProgress.from_json(first.progress.to_json(), now=0.0))
    for command in _commands(second.step(_view(), 0.0)):
        second.command_done(command.token, None)
    assert second.step(_view(), 0.1) == [rs.Ended(ReshardState.ROLLED_BACK, rs.RESTARTED), rs.Checkpoint()]


def test_a_host_joining_the_old_set_during_a_rollback_does_not_record() -> None:
    # Found by the simulator (seed 1307): Registration.record after the rollback's GO_LIVE (stop_recording) had gone
    # out left the joining host recording for good.
    core = rs.Reshard.restore(ReshardProgress(source=2, target=4, state=ReshardState.IDENTIFYING))
    assert core.phase is rs.ReshardPhase.ROLLING_BACK and not core.old_set_records


def test_a_new_host_that_joins_after_go_live_goes_live_too_and_the_commit_waits_for_starting_ones() -> None:
    # Found by the simulator (seed 35): s4-h1 died during the switch; its replacement (started in shadow mode) joined
    # after GO_LIVE went out, and after the commit it held its shards' events for good.
    core = _core()
    _answer(core, _to_switching(core))
    _answer(core, _commands(core.step(_view(new=NEW, ready=4), 2.0)))
    alone = {"s4-h0": (0, 1, 2, 3)}
    go_live = core.step(_view(new=alone, ready=4), 3.0)
    assert [c.host_id for c in _commands(go_live, CommandKind.GO_LIVE)] == ["s4-h0"]
    _answer(core, go_live)
    # The replacement of s4-h1 is starting: no commit yet.
    starting = rs.ReshardView(old_hosts=OLD, new_shards=alone, new_ready=4, old_desired=2, new_starting=1)
    assert core.step(starting, 4.0) == []
    # It joined (and took its shards back): it goes live with its own tails, then the commit.
    joined = {"s4-h0": (0, 1), "s4-h2": (2, 3)}
    late = core.step(_view(new=joined, ready=4), 5.0)
    assert late == _commands(late) and [(c.host_id, c.kind) for c in _commands(late)] == [
        ("s4-h2", CommandKind.GO_LIVE)
    ]
    _answer(core, late)
    assert core.step(_view(new=joined, ready=4), 6.0) == [rs.Commit(4), rs.Checkpoint(), rs.RetireOldSet()]


def test_a_new_host_still_starting_at_the_switch_times_out_into_a_rollback() -> None:
    core = _core()
    _answer(core, _to_switching(core))
    _answer(core, _commands(core.step(_view(new=NEW, ready=4), 2.0)))
    _answer(core, core.step(_view(new=NEW, ready=4), 3.0))
    starting = rs.ReshardView(old_hosts=OLD, new_shards=NEW, new_ready=4, old_desired=2, new_starting=1)
    assert core.step(starting, 10.0) == []
    effects = core.step(starting, 3.0 + core.command_timeout + 1.0)
    _rolled_back(effects)
    assert "did not start" in str(core.progress.error)


# -- effects the shell could not carry out (issue #11) ------------------------------------------------------------


def test_a_command_that_cannot_be_sent_skips_the_rest_and_rolls_back() -> None:
    core = _core()
    effects = core.step(_view(), 0.0)
    record = _commands(effects)
    # Sending RECORD to h0 raised: RECORD to h1 is skipped, and the reshard rolls back at once.
    assert core.effect_failed(record[0], "RuntimeError: no loop", (record[1],)) == []
    effects = core.step(_view(), 0.1)
    unmute = _rolled_back(effects)
    assert core.progress.error == f"{record[0]!r} failed: RuntimeError: no loop" and core.progress.state.active
    for command in unmute:
        core.command_done(command.token, None)
    assert core.step(_view(), 0.2) == [rs.Ended(ReshardState.FAILED, core.progress.error), rs.Checkpoint()]


def test_a_new_set_that_cannot_be_created_rolls_back() -> None:
    core = _core()
    _answer(core, core.step(_view(), 0.0))
    effects = core.step(_view(), 0.1)
    assert effects == [rs.Checkpoint(), rs.StartNewSet(4, 2)]
    core.effect_failed(rs.StartNewSet(4, 2), "ValueError: cannot split", ())
    _rolled_back(core.step(_view(), 0.2))
    assert core.progress.error == "StartNewSet(shard_count=4, hosts=2) failed: ValueError: cannot split"


def _to_commit(core: rs.Reshard) -> list[rs.Effect]:
    _answer(core, _to_switching(core))
    _answer(core, core.step(_view(new=NEW, ready=4), 3.0))
    _answer(core, core.step(_view(new=NEW, ready=4), 3.1))
    effects = core.step(_view(new=NEW, ready=4), 3.2)
    assert effects == [rs.Commit(4), rs.Checkpoint(), rs.RetireOldSet()]
    return effects


def test_a_commit_that_raises_is_no_commit_point_and_rolls_back() -> None:
    core = _core()
    effects = _to_commit(core)
    # The shell did not swap the sets: the commit point's checkpoint and the retirement are skipped.
    assert core.effect_failed(effects[0], "AssertionError: ", tuple(effects[1:])) == []
    assert core.progress.state is ReshardState.SWITCHING and core.old_set_records
    _rolled_back(core.step(_view(new=NEW, ready=4), 3.3))
    assert core.progress.error == "Commit(shard_count=4) failed: AssertionError: "


def test_after_the_commit_point_a_failed_close_is_tried_again_from_its_checkpoint() -> None:
    core = _core()
    effects = _to_commit(core)
    # The commit point's checkpoint raised: no old host may go before it is on record.
    assert core.effect_failed(effects[1], "RuntimeError: kv", (effects[2],)) == []
    assert core.progress.state is ReshardState.CLOSING
    assert core.step(_view(old=tuple(NEW), ready=4), 3.3) == [rs.Checkpoint(), rs.RetireOldSet()]
    core.old_set_retired()
    assert core.step(_view(old=tuple(NEW), ready=4), 3.4) == [rs.Ended(ReshardState.FINISHED, None), rs.Checkpoint()]


def test_a_close_that_keeps_failing_is_given_up_and_the_reshard_finishes_saying_so() -> None:
    core = _core()
    _to_commit(core)
    for attempt in range(rs.CLOSE_ATTEMPTS):
        core.effect_failed(rs.RetireOldSet(), f"RuntimeError: attempt {attempt}", ())
        effects = core.step(_view(old=tuple(NEW), ready=4), 4.0 + attempt)
        if attempt + 1 < rs.CLOSE_ATTEMPTS:
            assert effects == [rs.Checkpoint(), rs.RetireOldSet()]
    assert effects == [rs.Ended(ReshardState.FINISHED, None, "gave up closing the old set (its hosts may still run): "
                                f"RetireOldSet() failed: RuntimeError: attempt {rs.CLOSE_ATTEMPTS - 1}"),
                       rs.Checkpoint()]
    core.old_set_retired()  # late: ignored
    assert not core.active and core.step(_view(old=tuple(NEW), ready=4), 9.0) == []


def test_a_rollback_carries_on_past_its_own_failures_and_names_them() -> None:
    core = _core()
    _to_identifying(core)
    core.start_done(0, "HostStartTimeoutError: no room")
    effects = core.step(_view(), 0.5)
    assert effects[0] == rs.KillNewSet()
    # Killing the new set raised: the old fleet still repairs again and the old hosts are still told to go live.
    assert core.effect_failed(effects[0], "RuntimeError: gcs", tuple(effects[1:])) == effects[1:]
    unmute = _commands(effects)
    # A GO_LIVE that could not be sent is that host's answer.
    assert core.effect_failed(unmute[0], "RuntimeError: no loop", tuple(effects[3:])) == effects[3:]
    core.command_done(unmute[1].token, None)
    # h0 is asked again (as after a lost answer); it goes live this time.
    again = _commands(core.step(_view(), 0.6))
    assert [(c.host_id, c.kind, c.stop_recording) for c in again] == [("h0", CommandKind.GO_LIVE, True)]
    core.command_done(again[0].token, None)
    assert core.step(_view(), 0.7) == [
        rs.Ended(ReshardState.FAILED, "HostStartTimeoutError: no room", "KillNewSet() failed: RuntimeError: gcs"),
        rs.Checkpoint(),
    ]


def test_once_the_reshard_has_ended_its_last_checkpoint_is_still_written() -> None:
    progress = ReshardProgress(source=2, target=4, state=ReshardState.CLOSING, ready=4)
    core = rs.Reshard.restore(progress)
    core.step(_view(old=tuple(NEW)), 0.0)
    core.old_set_retired()
    effects = core.step(_view(old=tuple(NEW)), 0.1)
    assert core.effect_failed(effects[0], "RuntimeError: log", (effects[1],)) == [rs.Checkpoint()]
