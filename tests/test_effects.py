"""`ray_shards.effects.carry_out`: each effect under its own guard, a failure is the core's to answer."""

from __future__ import annotations

import asyncio

import pytest

from ray_shards.effects import EffectFailure, carry_out

pytestmark = pytest.mark.timeout(10)


class _Shell:
    """Carries out string effects, raising for those in ``failing``; records what ran and what the core heard."""

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.ran: list[str] = []
        self.heard: list[tuple[str, str, tuple[str, ...]]] = []

    async def run(self, effect: str) -> None:
        await asyncio.sleep(0)
        if effect in self.failing:
            msg = f"cannot {effect}"
            raise RuntimeError(msg)
        self.ran.append(effect)


def test_every_effect_runs_in_order_when_none_fails() -> None:
    shell = _Shell()
    failures = asyncio.run(carry_out(["a", "b", "c"], shell.run, lambda *_: pytest.fail("no failure"), what="t"))
    assert failures == [] and shell.ran == ["a", "b", "c"]


def test_a_failure_goes_to_the_core_which_decides_what_runs_instead_of_the_rest() -> None:
    shell = _Shell("b", "x")

    def failed(effect: str, error: str, remaining: tuple[str, ...]) -> list[str]:
        shell.heard.append((effect, error, remaining))
        # The core's answer: after b, skip c but do x and y (x fails too: it keeps the rest of its own answer).
        return ["x", "y"] if effect == "b" else list(remaining)

    failures = asyncio.run(carry_out(["a", "b", "c", "d"], shell.run, failed, what="t"))
    assert shell.ran == ["a", "y"]
    assert shell.heard == [("b", "RuntimeError: cannot b", ("c", "d")), ("x", "RuntimeError: cannot x", ("y",))]
    assert failures == [EffectFailure("b", "RuntimeError: cannot b"), EffectFailure("x", "RuntimeError: cannot x")]


def test_a_core_that_keeps_answering_with_failing_effects_is_bounded() -> None:
    shell = _Shell("a")
    failures = asyncio.run(carry_out(["a"], shell.run, lambda *_: ["a", "b"], what="t", max_failures=3))
    assert len(failures) == 3 and shell.ran == []


def test_a_cancellation_is_not_taken_for_a_failed_effect() -> None:
    async def run(effect: str) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(carry_out(["a"], run, lambda *_: pytest.fail("not a failure"), what="t"))


def test_a_roll_step_whose_start_raises_fails_the_roll_through_the_helper() -> None:
    """The dispatch as the Orchestrator wires it: the rolling core's effects, one failing, then the next step."""
    from ray_shards import rolling as roll
    from ray_shards.protocol import OperationState

    old = roll.HostView("h0", 0, want=2, live=True, owns=2)
    core = roll.RollingRestart.begin(roll.RollView(hosts=(old,)))
    ran: list[roll.Effect] = []

    async def run(effect: roll.Effect) -> None:
        if isinstance(effect, roll.StartHost):
            msg = "no running event loop"
            raise RuntimeError(msg)
        ran.append(effect)

    failures = asyncio.run(carry_out(core.step(roll.RollView(hosts=(old,)), 0.0), run, core.effect_failed, what="t"))
    assert [f.effect for f in failures] == [roll.StartHost(0, 2)]
    assert ran == [roll.Checkpoint(), roll.SetRetiring("h0", True)]
    retiring = roll.HostView("h0", 0, want=2, retiring=True, live=True, owns=2)
    asyncio.run(carry_out(core.step(roll.RollView(hosts=(retiring,)), 0.1), run, core.effect_failed, what="t"))
    assert ran[2:] == [roll.SetRetiring("h0", False), roll.Undrain("h0", 2),
                       roll.Ended(OperationState.FAILED, core.progress.error), roll.Checkpoint()]
    assert core.progress.error == "slot 0: StartHost(slot=0, want=2) failed: RuntimeError: no running event loop"
