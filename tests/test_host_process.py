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
def test_host_raises_the_gil_switch_interval_by_default() -> None:
    sys.setswitchinterval(0.005)
    ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings())
    assert sys.getswitchinterval() == pytest.approx(0.05)


@pytest.mark.usefixtures("restore_switch_interval")
def test_host_switch_interval_none_leaves_python_alone() -> None:
    sys.setswitchinterval(0.005)
    ShardHost(1, "h0", 1, "http://127.0.0.1:1", Timings(host_switch_interval=None))
    assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.parametrize("bad", [0.0, -1.0, 2.0])
def test_bad_switch_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="host_switch_interval"):
        Timings(host_switch_interval=bad)
