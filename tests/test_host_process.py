"""What a ShardHost sets up in its own process (constructed here directly, without Ray)."""

from __future__ import annotations

import sys
import typing

import pytest

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
