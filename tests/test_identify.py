"""The identify queue obeys Discord's rule: one IDENTIFY per bucket per window, budget respected."""

from __future__ import annotations

import itertools
import math

import pytest

from ray_shards.identify import MAX_WAIT, IdentifyBudgetExhaustedError, IdentifyGrant, IdentifyScheduler, window_start

pytestmark = pytest.mark.timeout(60)


def _boot(n: int, concurrency: int, window: float = 5.0, margin: float = 0.1) -> list[tuple[float, int]]:
    """Simulate hosts asking for every shard at once, each READY 10 ms after its grant."""
    scheduler = IdentifyScheduler(concurrency, remaining=10_000, window=window, margin=margin)
    now = 0.0
    pending = set(range(n))
    granted: list[tuple[float, int]] = []
    outstanding: dict[int, float] = {}
    while pending or outstanding:
        for shard_id, ready_at in list(outstanding.items()):
            if ready_at <= now:
                scheduler.release(shard_id, now, identified_at=ready_at - 0.01)
                del outstanding[shard_id]
        for shard_id in sorted(pending):
            outcome = scheduler.request(shard_id, now)
            if isinstance(outcome, IdentifyGrant):
                granted.append((now, shard_id))
                pending.discard(shard_id)
                outstanding[shard_id] = now + 0.01
        now = round(now + 0.01, 6)
        assert now < 10_000
    return granted


@pytest.mark.parametrize(("n", "concurrency"), [(16, 4), (16, 1), (64, 16), (7, 3)])
def test_no_bucket_identifies_twice_within_a_window(n: int, concurrency: int) -> None:
    granted = _boot(n, concurrency)
    assert sorted(s for _, s in granted) == list(range(n))
    last: dict[int, float] = {}
    for at, shard_id in granted:
        bucket = shard_id % concurrency
        if bucket in last:
            assert at - last[bucket] >= 5.0
        last[bucket] = at


@pytest.mark.parametrize(("n", "concurrency"), [(16, 4), (64, 16), (256, 64)])
def test_boot_is_close_to_discords_floor(n: int, concurrency: int) -> None:
    granted = _boot(n, concurrency)
    floor = (math.ceil(n / concurrency) - 1) * 5.0
    assert granted[-1][0] <= floor * 1.05 + 0.5


def test_buckets_start_in_shard_order() -> None:
    granted = _boot(12, 4)
    first_window = sorted(s for at, s in granted if at == 0.0)
    assert first_window == [0, 1, 2, 3]


def test_budget_is_counted_and_enforced() -> None:
    scheduler = IdentifyScheduler(2, remaining=1)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    assert scheduler.remaining == 0
    with pytest.raises(IdentifyBudgetExhaustedError, match="daily identify budget"):
        scheduler.request(1, 0.0)


def test_unreleased_grant_expires() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, grant_timeout=30.0)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    assert not isinstance(scheduler.request(1, 1.0), IdentifyGrant)
    # After the timeout the bucket counts as spent at expiry and opens a window later.
    assert not isinstance(scheduler.request(1, 31.0), IdentifyGrant)
    assert isinstance(scheduler.request(1, 36.2), IdentifyGrant)


def test_same_shard_asking_again_frees_its_failed_attempt() -> None:
    scheduler = IdentifyScheduler(1, remaining=10)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    wait = scheduler.request(0, 1.0)
    assert isinstance(wait, float) and wait > 0
    assert isinstance(scheduler.request(0, 6.2), IdentifyGrant)


def test_eta_matches_the_floor() -> None:
    scheduler = IdentifyScheduler(4, remaining=100, window=5.0, margin=0.0)
    assert scheduler.eta(16) == 15.0
    assert scheduler.eta(0) == 0.0
    with pytest.raises(ValueError, match="max_concurrency"):
        IdentifyScheduler(0, remaining=1)


def test_start_full_opens_every_bucket_a_window_later() -> None:
    scheduler = IdentifyScheduler(3, remaining=10, window=5.0, margin=0.1)
    scheduler.start_full(100.0)
    for shard_id in range(3):
        assert scheduler.request(shard_id, 100.0) == pytest.approx(5.1)
        assert not isinstance(scheduler.request(shard_id, 105.0), IdentifyGrant)
    assert all(isinstance(scheduler.request(s, 105.1), IdentifyGrant) for s in range(3))


def test_start_full_covers_grants_still_in_flight() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, window=5.0, margin=0.1)
    scheduler.start_full(0.0, in_flight=2.0)
    assert not isinstance(scheduler.request(0, 5.5), IdentifyGrant)
    assert isinstance(scheduler.request(0, 7.1), IdentifyGrant)


def test_exhausted_budget_waits_for_the_reset_and_resumes_after_a_refresh() -> None:
    scheduler = IdentifyScheduler(1, remaining=0)
    scheduler.set_budget(1, reset_after=1000.0, now=0.0)
    assert not scheduler.budget_stale(999.0)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    scheduler.release(0, 1.0)
    assert scheduler.remaining == 0
    assert scheduler.request(1, 10.0) == pytest.approx(990.0)
    assert scheduler.budget_stale(1000.0)
    # Due but not refreshed yet: poll, never raise.
    wait = scheduler.request(1, 1000.0)
    assert isinstance(wait, float) and 0 < wait <= 1.0
    scheduler.set_budget(1000, reset_after=86_400.0, now=1000.0)
    assert not scheduler.budget_stale(1000.0)
    assert scheduler.reset_at == pytest.approx(87_400.0)
    assert isinstance(scheduler.request(1, 1000.0), IdentifyGrant)


def test_refresh_subtracts_grants_discord_may_not_have_counted() -> None:
    scheduler = IdentifyScheduler(2, remaining=10, grant_timeout=30.0)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    assert isinstance(scheduler.request(1, 0.0), IdentifyGrant)
    scheduler.set_budget(8, reset_after=100.0, now=1.0, asked_at=0.5)
    assert scheduler.remaining == 6
    scheduler.set_budget(8, reset_after=100.0, now=40.0)
    assert scheduler.remaining == 8


def test_a_restart_counts_one_possible_identify_per_bucket_against_the_budget() -> None:
    scheduler = IdentifyScheduler(4, remaining=0)
    scheduler.start_full(0.0)
    scheduler.set_budget(100, reset_after=10.0, now=1.0)
    assert scheduler.remaining == 96


def test_set_remaining_still_replaces_the_budget() -> None:
    scheduler = IdentifyScheduler(1, remaining=0)
    scheduler.set_remaining(3)
    assert scheduler.remaining == 3
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)


def test_identify_done_from_a_stale_holder_does_not_free_the_bucket() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, window=5.0, margin=0.0)
    grant = scheduler.request(0, 0.0, holder=("b", 7))
    assert isinstance(grant, IdentifyGrant) and grant.holder == ("b", 7)
    assert not scheduler.release(0, 0.5, holder=("a", 3))
    assert not isinstance(scheduler.request(1, 6.0), IdentifyGrant)
    assert scheduler.release(0, 7.0, holder=("b", 7))
    assert not isinstance(scheduler.request(1, 11.9), IdentifyGrant)
    assert isinstance(scheduler.request(1, 12.0), IdentifyGrant)


def _boot_by_told_waits(n: int, concurrency: int, ready_after: float = 0.3) -> tuple[list[tuple[float, int]], int]:
    """Hosts that sleep exactly the wait they are told (event-driven, virtual time), each READY ``ready_after``
    after its grant: the grants, and how many times the shards asked in all."""
    import heapq

    scheduler = IdentifyScheduler(concurrency, remaining=100_000)
    asks = 0
    granted: list[tuple[float, int]] = []
    queue: list[tuple[float, int, str]] = [(0.0, shard_id, "ask") for shard_id in range(n)]
    heapq.heapify(queue)
    while queue:
        now, shard_id, what = heapq.heappop(queue)
        if what == "ready":
            scheduler.release(shard_id, now)
            continue
        asks += 1
        outcome = scheduler.request(shard_id, now)
        if isinstance(outcome, IdentifyGrant):
            granted.append((now, shard_id))
            heapq.heappush(queue, (now + ready_after, shard_id, "ready"))
        else:
            heapq.heappush(queue, (now + max(outcome, 0.05), shard_id, "ask"))
    return granted, asks


def test_a_big_boot_asks_a_few_times_per_shard_and_keeps_its_pace() -> None:
    """A shard far back in its bucket is told a lower bound of its turn (at most MAX_WAIT), not to ask every
    window: 512 shards at max_concurrency 4 (128 per bucket, 11 minutes) asked about N^2/2c = 33 k times when
    every shard asked once a window; now about 16 times each, and no window is lost."""
    granted, asks = _boot_by_told_waits(512, 4)
    assert len(granted) == 512
    assert asks < 512 * 20, asks
    grant_at = {shard_id: at for at, shard_id in granted}
    for bucket in range(4):
        times = sorted(at for shard_id, at in grant_at.items() if shard_id % 4 == bucket)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 5.0 + 0.3  # Discord's window, counted from READY
        assert max(gaps) < 5.1 + 0.3 + 0.1  # no shard slept past its turn
        # Lower shard ids first in every bucket.
        in_order = sorted((s for s in grant_at if s % 4 == bucket), key=grant_at.__getitem__)
        assert in_order == sorted(in_order)


def test_a_shard_far_back_is_told_a_lower_bound_of_its_turn() -> None:
    """The 10th shard of a bucket while the first holds it: nine ahead, so eight whole windows at least
    (capped at MAX_WAIT); the second is told to ask within a window."""
    scheduler = IdentifyScheduler(1, remaining=100)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    waits = [scheduler.request(shard_id, 0.0) for shard_id in range(1, 10)]
    assert waits[0] == pytest.approx(5.1)
    assert waits[2] == pytest.approx(5.1)  # two ahead: one whole window at least
    assert waits[3] == pytest.approx(2 * 5.1)
    assert waits[8] == pytest.approx(min(8 * 5.1, MAX_WAIT))


def test_a_shard_that_sleeps_its_told_wait_keeps_its_place() -> None:
    """Shard 5 is told to sleep longer than a window; while it sleeps, shard 6 must not pass it."""
    scheduler = IdentifyScheduler(1, remaining=100)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    for shard_id in range(1, 7):
        scheduler.request(shard_id, 0.0)
    wait_5 = scheduler.request(5, 0.0)
    assert isinstance(wait_5, float) and wait_5 > 5.1  # 4 ahead: 3 windows at least
    # Shards 1-4 identify one by one; 6 keeps asking at its own told times, never before 5.
    now, order = 0.0, []
    scheduler.release(0, 0.3)
    due = {s: 0.3 for s in range(1, 5)} | {5: wait_5, 6: 0.3}
    while len(order) < 6:
        shard_id = min(due, key=lambda s: (due[s], s))
        now = due.pop(shard_id)
        outcome = scheduler.request(shard_id, now)
        if isinstance(outcome, IdentifyGrant):
            order.append(shard_id)
            scheduler.release(shard_id, now + 0.3)
        else:
            due[shard_id] = now + max(outcome, 0.05)
    assert order == [1, 2, 3, 4, 5, 6]


def test_a_grant_its_holder_dropped_unused_frees_the_bucket_at_once() -> None:
    # A busy host starting many shards got its grant too late (past grant_use_limit) and never sent the IDENTIFY:
    # naming that ask frees the bucket as it was and gives the session start back, instead of closing the bucket
    # for a whole window from the latest moment the grant could have been used.
    scheduler = IdentifyScheduler(1, remaining=10, window=5.0, margin=0.0, grant_use_limit=1.0)
    holder = ("h0", 1)
    assert isinstance(scheduler.request(0, 0.0, holder=holder, ask=7), IdentifyGrant)
    assert scheduler.remaining == 9
    again = scheduler.request(0, 1.5, holder=holder, ask=8, dropped=7)
    assert isinstance(again, IdentifyGrant) and again.ask == 8
    assert scheduler.remaining == 9


@pytest.mark.parametrize(
    ("holder", "dropped", "why"),
    [
        (("h0", 1), None, "a retry or duplicate of the granted ask names no dropped grant"),
        (("h0", 1), 6, "an older ask's number: this grant may be in use"),
        (("h1", 2), 7, "another holder (a new lease) cannot speak for the old holder's grant"),
        (None, 7, "an asker that does not say who it is"),
    ],
)
def test_only_the_holder_naming_that_very_ask_frees_a_grant_early(
    holder: tuple[str, int] | None, dropped: int | None, why: str
) -> None:
    scheduler = IdentifyScheduler(1, remaining=10, window=5.0, margin=0.0, grant_use_limit=1.0)
    assert isinstance(scheduler.request(0, 0.0, holder=("h0", 1), ask=7), IdentifyGrant)
    # Counted as sent no earlier than this ask (the grant may still be on its way): the bucket opens at 6.5.
    wait = scheduler.request(0, 1.5, holder=holder, ask=8, dropped=dropped)
    assert wait == pytest.approx(5.0), why
    assert scheduler.remaining == 9, why


def test_a_dropped_grant_named_again_after_a_new_grant_frees_nothing() -> None:
    # The ask that named the dropped grant was delivered twice: its copy arrives after the new grant was made (and
    # may be in use), so it must not free that one.
    scheduler = IdentifyScheduler(1, remaining=10, window=5.0, margin=0.0, grant_use_limit=1.0)
    holder = ("h0", 1)
    assert isinstance(scheduler.request(0, 0.0, holder=holder, ask=7), IdentifyGrant)
    assert isinstance(scheduler.request(0, 1.5, holder=holder, ask=8, dropped=7), IdentifyGrant)
    wait = scheduler.request(0, 1.6, holder=holder, ask=8, dropped=7)
    assert isinstance(wait, float) and wait >= 5.0 - 0.1


# -- grants ahead of the opening (not-before) --------------------------------------------------------------------


def test_an_early_asker_is_granted_within_the_lead_with_the_opening_as_not_before() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    first = scheduler.request(0, 0.0, early=True)
    assert isinstance(first, IdentifyGrant) and first.not_before is None
    assert scheduler.release(0, 0.3)  # READY: the bucket opens at 5.4
    # Further than the lead from the opening: told to come back half the lead before it.
    assert scheduler.request(1, 1.0, early=True) == pytest.approx(5.4 - 0.25 - 1.0)
    grant = scheduler.request(1, 5.0, early=True)
    assert isinstance(grant, IdentifyGrant)
    assert grant.not_before == pytest.approx(5.4) and grant.opens == pytest.approx(5.4)


def test_only_early_askers_get_not_before_grants() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    assert isinstance(scheduler.request(0, 0.0), IdentifyGrant)
    scheduler.release(0, 0.3)
    # An asker that would identify as soon as the answer arrives (an older host, `Orchestrator.identify`).
    assert scheduler.request(1, 5.0) == pytest.approx(0.4)
    grant = scheduler.request(1, 5.4)
    assert isinstance(grant, IdentifyGrant) and grant.not_before is None


def test_a_not_before_grant_goes_only_to_the_first_in_line() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    assert isinstance(scheduler.request(0, 0.0, early=True), IdentifyGrant)
    assert not isinstance(scheduler.request(1, 0.1, early=True), IdentifyGrant)
    scheduler.release(0, 0.3)
    assert not isinstance(scheduler.request(2, 5.1, early=True), IdentifyGrant)  # shard 1 waits ahead of it
    assert isinstance(scheduler.request(1, 5.1, early=True), IdentifyGrant)


def test_a_reask_counts_a_not_before_grant_as_sent_at_its_latest() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5, grant_use_limit=1.0)
    scheduler.request(0, 0.0, early=True)
    scheduler.release(0, 0.3)
    assert isinstance(scheduler.request(1, 5.0, early=True), IdentifyGrant)  # not before 5.4
    # The same shard asks again (a duplicate): its IDENTIFY may leave up to 5.4 + 1.0, so the bucket opens a window
    # after that, not after the re-ask.
    assert not isinstance(scheduler.request(1, 5.1), IdentifyGrant)
    assert not isinstance(scheduler.request(1, 11.49), IdentifyGrant)
    assert isinstance(scheduler.request(1, 11.5), IdentifyGrant)


def test_a_shard_behind_a_held_grant_comes_back_at_the_earliest_opening() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    assert isinstance(scheduler.request(0, 0.0, early=True), IdentifyGrant)
    # Held until READY, but its IDENTIFY left no earlier than 0: the bucket opens no earlier than 5.1; half the lead
    # before that, READY is most likely in and the opening known.
    assert scheduler.request(1, 0.2, early=True) == pytest.approx(5.1 - 0.25 - 0.2)
    assert scheduler.request(1, 0.2) == pytest.approx(5.1 - 0.2)  # an asker that takes no not-before grant


def test_a_shard_behind_a_grant_held_past_its_earliest_opening_is_not_told_to_poll() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5, grant_timeout=30.0)
    assert isinstance(scheduler.request(0, 0.0, early=True), IdentifyGrant)
    # No READY yet at 6 s (a slow or dead shard holds the bucket up to grant_timeout): a window, not 50 ms.
    assert scheduler.request(1, 6.0, early=True) == pytest.approx(5.1)


def test_window_start_counts_from_the_departure_only_when_asked_and_the_age_is_usable() -> None:
    assert window_start(10.0, 0.25, from_sent=True) == pytest.approx(9.75)
    assert window_start(10.0, 0.0, from_sent=True) == pytest.approx(10.0)
    assert window_start(10.0, 0.25, from_sent=False) is None  # READY's arrival
    for unusable in (None, -0.1, math.nan, math.inf):
        assert window_start(10.0, unusable, from_sent=True) is None


def test_a_release_from_the_departure_opens_the_bucket_a_window_after_it() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    assert isinstance(scheduler.request(0, 0.0, early=True), IdentifyGrant)
    assert scheduler.release(0, 0.3, identified_at=0.02)  # left at 0.02, READY reported at 0.3
    grant = scheduler.request(1, 4.9, early=True)
    assert isinstance(grant, IdentifyGrant) and grant.opens == pytest.approx(5.12)


def test_a_reported_age_cannot_open_the_bucket_before_the_grants_opening() -> None:
    # A host reporting an absurd age (a bug, a clock jump) cannot make its IDENTIFY older than its grant allows.
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    scheduler.request(0, 0.0, early=True)
    scheduler.release(0, 0.3)
    grant = scheduler.request(1, 5.0, early=True)
    assert isinstance(grant, IdentifyGrant) and grant.opens == pytest.approx(5.4)
    assert scheduler.release(1, 5.7, identified_at=-100.0)
    later = scheduler.request(2, 10.0, early=True)
    assert isinstance(later, IdentifyGrant) and later.opens == pytest.approx(5.4 + 5.1)


def test_start_full_and_budget_refresh_count_the_lead() -> None:
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    scheduler.start_full(0.0, in_flight=1.0)
    assert not isinstance(scheduler.request(0, 6.59), IdentifyGrant)
    assert isinstance(scheduler.request(0, 6.6), IdentifyGrant)
    refreshed = IdentifyScheduler(1, remaining=10, lead=0.5)
    refreshed.request(0, 0.0, early=True)
    refreshed.release(0, 0.3)
    refreshed.request(1, 5.0, early=True)  # may leave as late as 6.4
    # Discord's answer to a request sent at 6.35 may not count it yet: subtracted (counted from the grant's time,
    # 5.0, it would not be).
    refreshed.set_budget(5, 100.0, 6.35)
    assert refreshed.remaining == 4


def test_lead_must_leave_the_grant_use_limit_within_the_timeout() -> None:
    from ray_shards.timings import Timings

    assert Timings().identify_lead == 0.5 and Timings(identify_lead=0.0).identify_lead == 0.0
    with pytest.raises(ValueError, match="identify_lead"):
        Timings(identify_lead=29.5)
    with pytest.raises(ValueError, match="identify_lead"):
        Timings(identify_lead=-1.0)
    with pytest.raises(ValueError, match="lead"):
        IdentifyScheduler(1, remaining=1, lead=29.5, grant_use_limit=1.0, grant_timeout=30.0)
    with pytest.raises(ValueError, match="lead"):
        IdentifyScheduler(1, remaining=1, lead=-0.1)


def _boot_with_delays(
    n: int, concurrency: int, seed: int, *, lead: float
) -> tuple[list[tuple[float, int]], float]:
    """Hosts that ask ``early`` over a lossy-timed network, as `Bot.before_identify` does: each ask and answer takes
    1-40 ms, 5 % of asks are delivered twice, 10 % of not-before sleeps overrun by up to 1.5 s (the host then names
    the grant unused), READY comes 0.05-0.5 s after the IDENTIFY and its release 1-40 ms later. Returns the
    IDENTIFYs as Discord received them (send time: the model's network to Discord is instant) and the last READY."""
    import heapq
    import random

    rng = random.Random(seed)
    limit = 1.0
    scheduler = IdentifyScheduler(concurrency, remaining=100_000, grant_use_limit=limit, lead=lead)
    ticket = itertools.count()
    queue: list[tuple[float, int, str, tuple[int, ...]]] = []

    def at(when: float, what: str, *args: int) -> None:
        heapq.heappush(queue, (when, next(ticket), what, args))

    current_ask: dict[int, int] = {}
    asked_at: dict[int, float] = {}
    ask_numbers = itertools.count(1)
    sent: list[tuple[float, int]] = []
    last_ready = 0.0

    def ask(now: float, shard_id: int, dropped: int = 0) -> None:
        number = next(ask_numbers)
        current_ask[shard_id], asked_at[shard_id] = number, now
        for copy in range(2 if rng.random() < 0.05 else 1):
            at(now + rng.uniform(0.001, 0.04) + copy * rng.uniform(0.0, 2.0), "arrive", shard_id, number, dropped)

    for shard_id in range(n):
        ask(0.0, shard_id)
    while queue:
        now, _, what, args = heapq.heappop(queue)
        assert now < 100_000
        if what == "arrive":
            shard_id, number, dropped = args
            outcome = scheduler.request(
                shard_id, now, holder=("h", 1), ask=number, dropped=dropped or None, early=lead > 0
            )
            wait_ms = -1 if not isinstance(outcome, IdentifyGrant) else round((outcome.opens - now) * 1e6)
            told_ms = round(outcome * 1e6) if not isinstance(outcome, IdentifyGrant) else 0
            at(now + rng.uniform(0.001, 0.04), "answer", shard_id, number, wait_ms, told_ms)
        elif what == "answer":
            shard_id, number, wait_us, told_us = args
            if current_ask.get(shard_id) != number:
                continue  # the second answer to a duplicated ask, or to an old one: the host is past it
            current_ask[shard_id] = 0
            if wait_us < 0:
                at(now + max(told_us / 1e6, 0.05), "ask", shard_id)
            elif now - asked_at[shard_id] > limit:
                ask(now, shard_id, dropped=number)
            else:
                overrun = rng.uniform(0.0, 1.5) if rng.random() < 0.1 else 0.0
                at(now + wait_us / 1e6 + overrun, "send", shard_id, number, wait_us)
        elif what == "ask":
            ask(now, args[0])
        elif what == "send":
            shard_id, number, wait_us = args
            if now - asked_at[shard_id] > limit + wait_us / 1e6:
                ask(now, shard_id, dropped=number)
                continue
            current_ask[shard_id] = -1
            sent.append((now, shard_id))
            ready = now + rng.uniform(0.05, 0.5)
            last_ready = max(last_ready, ready)
            at(ready + rng.uniform(0.001, 0.04), "ready", shard_id)
        elif what == "ready":
            scheduler.release(args[0], now, holder=("h", 1))
    return sent, last_ready


@pytest.mark.parametrize("seed", range(40))
def test_not_before_grants_keep_discords_window_under_delays_duplicates_and_overruns(seed: int) -> None:
    sent, _ = _boot_with_delays(48, 4, seed, lead=0.5)
    assert sorted(s for _, s in sent) == list(range(48))  # one IDENTIFY per shard
    last: dict[int, float] = {}
    for at, shard_id in sorted(sent):
        bucket = shard_id % 4
        if bucket in last:
            assert at - last[bucket] >= 5.0, (seed, shard_id, at, last[bucket])
        last[bucket] = at


def test_not_before_grants_take_the_ask_round_trip_out_of_each_round() -> None:
    # Over 40 seeds: since a shard behind a held grant comes back at the earliest opening (lead 0 too), the gain is
    # about 55 ms a round, and five seeds' overruns and duplicates can outweigh it.
    spans = {lead: sum(_boot_with_delays(64, 4, seed, lead=lead)[1] for seed in range(40)) for lead in (0.0, 0.5)}
    assert spans[0.5] < spans[0.0], spans


def test_a_late_report_of_the_holders_previous_identify_frees_nothing() -> None:
    """Simulator seed 38823: a READY report of a shard's first IDENTIFY, delivered again after the same host (same
    lease) was granted a second IDENTIFY of the shard, freed the new grant before its IDENTIFY left; the bucket then
    opened a window after the stale report, and the next IDENTIFY came 4.73 s after the second."""
    scheduler = IdentifyScheduler(1, remaining=10, lead=0.5)
    assert isinstance(scheduler.request(0, 0.0, holder=("h", 1), ask=1, early=True), IdentifyGrant)
    assert scheduler.release(0, 0.3, holder=("h", 1), ask=1)
    assert isinstance(scheduler.request(0, 5.0, holder=("h", 1), ask=2, early=True), IdentifyGrant)
    assert not scheduler.release(0, 5.1, holder=("h", 1), ask=1)  # the first report, again
    assert not isinstance(scheduler.request(1, 5.5, early=True), IdentifyGrant)  # still held by ask 2
    assert scheduler.release(0, 5.9, holder=("h", 1), ask=2)
    assert not isinstance(scheduler.request(1, 10.49, early=True), IdentifyGrant)
    assert isinstance(scheduler.request(1, 10.5, early=True), IdentifyGrant)
