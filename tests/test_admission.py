"""`ray_shards.admission`: when a rolling restart or a reshard may begin, and what the auto-reshard policy asks for.

Pure code: the Orchestrator and the simulator's shell both call it, so these rules are tested once, here.
"""

from __future__ import annotations

import dataclasses

import hypothesis
import hypothesis.strategies as st
import pytest

from ray_shards import admission

pytestmark = pytest.mark.timeout(60)

IDLE = admission.BotShape(shard_count=4, identifies_left=1000, launched=True)

shapes = st.builds(
    admission.BotShape,
    shard_count=st.integers(1, 1 << 16),
    identifies_left=st.integers(0, 1 << 17),
    launched=st.booleans(),
    rolling=st.booleans(),
    resharding=st.booleans(),
    last_reshard_failed=st.booleans(),
    stopping=st.booleans(),
)


def test_an_idle_launched_bot_may_roll_and_reshard() -> None:
    admission.check_roll(IDLE)
    assert admission.check_reshard(IDLE, 8) == 8
    assert admission.check_reshard(IDLE, 1) == 1


@pytest.mark.parametrize("count", [0, -1, True, False, 2.0, "8", None])
def test_a_reshard_to_a_count_that_is_not_a_whole_number_of_at_least_one_is_a_value_error(count: object) -> None:
    with pytest.raises(ValueError, match="whole number of at least 1"):
        admission.check_reshard(IDLE, count)


def test_a_reshard_to_the_current_count_is_refused() -> None:
    with pytest.raises(ValueError, match="already runs 4 shards"):
        admission.check_reshard(IDLE, 4)


def test_a_reshard_the_daily_budget_cannot_identify_says_how_many_are_left() -> None:
    shape = dataclasses.replace(IDLE, identifies_left=7)
    with pytest.raises(ValueError, match=r"needs 8 identifies .* only 7 left"):
        admission.check_reshard(shape, 8)
    assert admission.check_reshard(shape, 7) == 7


@pytest.mark.parametrize(
    ("busy", "roll_error", "reshard_error"),
    [
        ({"launched": False}, "only a bot launched by ray_shards", "only a bot launched by ray_shards"),
        ({"rolling": True}, "rolling restart is already in progress", "already in progress"),
        ({"resharding": True}, "a reshard is in progress", "already in progress"),
    ],
)
def test_one_long_operation_at_a_time_and_only_for_a_launched_bot(
    busy: dict[str, bool], roll_error: str, reshard_error: str
) -> None:
    shape = dataclasses.replace(IDLE, **busy)
    with pytest.raises(RuntimeError, match=roll_error):
        admission.check_roll(shape)
    with pytest.raises(RuntimeError, match=reshard_error):
        admission.check_reshard(shape, 8)


@hypothesis.given(shape=shapes, count=st.integers(-4, 1 << 17))
def test_a_reshard_is_admitted_exactly_when_every_rule_allows_it(shape: admission.BotShape, count: int) -> None:
    allowed = (
        count >= 1
        and count != shape.shard_count
        and count <= shape.identifies_left
        and shape.launched
        and not shape.rolling
        and not shape.resharding
    )
    try:
        assert admission.check_reshard(shape, count) == count
    except (ValueError, RuntimeError):
        assert not allowed
    else:
        assert allowed


@hypothesis.given(shape=shapes)
def test_a_roll_is_admitted_exactly_when_nothing_else_runs(shape: admission.BotShape) -> None:
    allowed = shape.launched and not shape.rolling and not shape.resharding
    try:
        admission.check_roll(shape)
    except RuntimeError:
        assert not allowed
    else:
        assert allowed


def test_the_policy_does_not_look_while_busy_stopping_or_after_a_failed_reshard() -> None:
    assert admission.auto_reshard_may_look(IDLE)
    for field in ("rolling", "resharding", "last_reshard_failed", "stopping"):
        assert not admission.auto_reshard_may_look(dataclasses.replace(IDLE, **{field: True}))
    assert not admission.auto_reshard_may_look(dataclasses.replace(IDLE, launched=False))


def test_a_crowded_shard_doubles_the_count() -> None:
    want = admission.auto_reshard_target(IDLE, busiest_guilds=2001, guild_threshold=2000, recommended=None)
    assert want == admission.AutoReshard(target=8, reason="busiest shard has 2001 guilds")
    assert admission.auto_reshard_target(IDLE, busiest_guilds=2000, guild_threshold=2000, recommended=4) is None


def test_discords_recommendation_is_a_floor_and_never_shrinks_the_bot() -> None:
    want = admission.auto_reshard_target(IDLE, busiest_guilds=10, guild_threshold=2000, recommended=6)
    assert want == admission.AutoReshard(target=6, reason="Discord recommends more shards")
    assert admission.auto_reshard_target(IDLE, busiest_guilds=10, guild_threshold=2000, recommended=2) is None
    # Crowded and a recommendation above the doubling: the larger wins, and the reason names the crowding.
    want = admission.auto_reshard_target(IDLE, busiest_guilds=3000, guild_threshold=2000, recommended=16)
    assert want is not None and want.target == 16 and "3000 guilds" in want.reason


@hypothesis.given(
    shape=shapes,
    busiest=st.integers(0, 10_000),
    threshold=st.integers(1, 10_000),
    recommended=st.none() | st.integers(1, 1 << 17),
)
def test_the_policy_only_ever_grows_the_bot(
    shape: admission.BotShape, busiest: int, threshold: int, recommended: int | None
) -> None:
    want = admission.auto_reshard_target(
        shape, busiest_guilds=busiest, guild_threshold=threshold, recommended=recommended
    )
    floor = max(shape.shard_count * 2 if busiest > threshold else shape.shard_count, recommended or 0)
    if want is None:
        assert floor <= shape.shard_count
    else:
        assert want.target == floor > shape.shard_count
