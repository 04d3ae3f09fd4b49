"""What a ShardHost sets up in its own process (constructed here directly, without Ray)."""

from __future__ import annotations

import gc
import sys
import typing

import pytest

from ray_shards import main_thread
from ray_shards.host import ShardHost
from ray_shards.timings import Timings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def restore_switch_interval() -> typing.Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("restore_switch_interval")
def test_host_shortens_the_gil_switch_interval_by_default() -> None:
    sys.setswitchinterval(0.005)
    ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings())
    assert sys.getswitchinterval() == pytest.approx(1e-05)


@pytest.mark.usefixtures("restore_switch_interval")
def test_host_switch_interval_none_leaves_python_alone() -> None:
    sys.setswitchinterval(0.005)
    ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings(host_switch_interval=None))
    assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.parametrize("bad", [0.0, -1.0, 2.0])
def test_bad_switch_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="host_switch_interval"):
        Timings(host_switch_interval=bad)


@pytest.fixture
def restore_gc_threshold() -> typing.Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc_threshold", "restore_switch_interval")
def test_host_raises_the_young_gc_threshold_by_default_and_keeps_the_older_ones() -> None:
    gc.set_threshold(700, 11, 12)
    ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings())
    assert gc.get_threshold() == (7000, 11, 12)
    ShardHost(1, "h1", 1, "http://127.0.0.1:1", Timings(host_gc_threshold=1500))
    assert gc.get_threshold() == (1500, 11, 12)


@pytest.mark.usefixtures("restore_gc_threshold", "restore_switch_interval")
def test_host_gc_threshold_none_leaves_python_alone() -> None:
    gc.set_threshold(700, 10, 10)
    ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings(host_gc_threshold=None))
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "7000"])
def test_bad_gc_threshold_is_refused(bad: typing.Any) -> None:
    with pytest.raises(ValueError, match="host_gc_threshold"):
        Timings(host_gc_threshold=bad)


def test_malloc_trim_runs_where_there_is_glibc() -> None:
    from ray_shards import host

    # glibc on Linux (this machine); elsewhere it says so instead of raising.
    assert host.malloc_trim() is (host._libc_trim() is not None)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_memory_trim_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="host_memory_trim_interval"):
        Timings(host_memory_trim_interval=bad)


def test_host_trims_after_the_boot_and_then_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from ray_shards import host

    calls: list[float] = []

    def fake_trim() -> bool:
        calls.append(0.0)
        return True

    monkeypatch.setattr(host, "malloc_trim", fake_trim)
    shard_host = ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings(host_switch_interval=None))

    async def run() -> None:
        task = asyncio.create_task(shard_host._trim_forever(0.05))
        await asyncio.sleep(0.18)
        assert len(calls) >= 3  # one at once, then one per interval
        shard_host._closed.set()
        await asyncio.wait_for(task, 1.0)  # stops once the host closed

    asyncio.run(run())


def test_host_stops_trimming_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from ray_shards import host

    monkeypatch.setattr(host, "malloc_trim", lambda: False)
    shard_host = ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings(host_switch_interval=None))
    asyncio.run(asyncio.wait_for(shard_host._trim_forever(0.05), 1.0))


# -- the host main thread's timer slack (ray_shards.main_thread) ------------------------------------------------

_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"  # Ray's name; main_thread reads it from ray_constants
CHAINED_CALLS: list[str] = []


def record_chained_hook() -> None:
    """A job's own setup hook, by module path: the host's hook must still run it."""
    CHAINED_CALLS.append("ran")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_bad_timer_slack_is_refused(bad: typing.Any) -> None:
    with pytest.raises(ValueError, match="host_main_thread_timer_slack_ns"):
        Timings(host_main_thread_timer_slack_ns=bad)


def test_host_env_sets_the_hook_and_keeps_the_jobs_own() -> None:
    assert Timings().host_main_thread_timer_slack_ns == 1
    own = "ray_shards.main_thread.set_main_thread_timer_slack"
    assert main_thread.host_env_vars(1, {}) == {_HOOK_ENV: own, main_thread.SLACK_ENV: "1"}
    # The job's hook would be replaced by the host's env var: it is handed on and run after ours.
    env = main_thread.host_env_vars(5, {_HOOK_ENV: "mypkg.setup"})
    assert env == {_HOOK_ENV: own, main_thread.SLACK_ENV: "5", "RAY_SHARDS_CHAINED_SETUP_HOOK": "mypkg.setup"}
    # A host whose Orchestrator itself ran under our hook does not chain ours to itself.
    assert "RAY_SHARDS_CHAINED_SETUP_HOOK" not in main_thread.host_env_vars(1, {_HOOK_ENV: own})
    assert main_thread.host_env_vars(None, {}) == {}


@pytest.mark.skipif(main_thread.read_timer_slack_ns() is None, reason="no /proc/<pid>/timerslack_ns (not Linux)")
def test_hook_sets_the_calling_threads_slack_then_runs_the_jobs_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import threading

    monkeypatch.setenv(main_thread.SLACK_ENV, "7")
    monkeypatch.setenv("RAY_SHARDS_CHAINED_SETUP_HOOK", f"{__name__}.record_chained_hook")
    CHAINED_CALLS.clear()
    seen: list[int] = []

    def run() -> None:
        # prctl changes the calling thread only: read this thread's own value, not the process's main thread.
        main_thread.set_main_thread_timer_slack()
        seen.append(ctypes.CDLL(None).prctl(30, 0, 0, 0, 0))  # PR_GET_TIMERSLACK: /proc shows only the main thread

    before = main_thread.read_timer_slack_ns()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert seen == [7]
    assert CHAINED_CALLS == ["ran"]
    assert main_thread.read_timer_slack_ns() == before  # this process's main thread is untouched


def test_hook_logs_instead_of_failing_on_a_bad_value(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(main_thread.SLACK_ENV, "not a number")
    monkeypatch.delenv("RAY_SHARDS_CHAINED_SETUP_HOOK", raising=False)
    main_thread.set_main_thread_timer_slack()  # Ray would stop the worker on a raise: the host runs on without it
    assert "could not set the main thread's timer slack" in caplog.text


def test_a_failing_jobs_hook_still_fails_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(main_thread.SLACK_ENV, "")  # no prctl on pytest's own main thread
    monkeypatch.setenv("RAY_SHARDS_CHAINED_SETUP_HOOK", "no_such_module_here.setup")
    with pytest.raises(RuntimeError, match="no_such_module_here"):
        main_thread.set_main_thread_timer_slack()
