"""Shared fixtures: a real multi-node Ray cluster, the Discord emulator, and bot tokens."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import typing

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def ensure_default_ray_dir() -> None:
    """Create Ray's default temp dir: ``Cluster`` writes ``ray_current_cluster`` there whatever its own temp_dir.

    On a fresh machine (CI) nothing has created ``/tmp/ray`` yet, and the first ``Cluster`` fails with
    FileNotFoundError.
    """
    from ray._common.utils import get_default_ray_temp_dir

    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)


ensure_default_ray_dir()

if typing.TYPE_CHECKING:
    from ray.cluster_utils import Cluster

    from ray_shards.emulator import EmulatorThread


def new_token() -> str:
    """A fresh emulator-valid token for a bot of its own, so tests never share an Orchestrator."""
    from ray_shards.emulator import make_token

    bot_id = (random.randrange(1 << 20, 1 << 30) << 22) | random.randrange(1 << 22)
    return make_token(bot_id)


@pytest.fixture
def token() -> str:
    return new_token()


@pytest.fixture(scope="session")
def ray_cluster() -> typing.Iterator[Cluster]:
    """One head and two worker nodes, shared by the tests of a session and shut down at its end.

    Node-loss detection is tuned down (health check every 0.5 s) so failover tests are quick.
    """
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="ray_shards_test_")
    ensure_default_ray_dir()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            "temp_dir": temp_dir,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="ray_shards_tests", logging_level="WARNING", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        # Ray's session logs are the evidence when a cluster test fails: keep them when asked to.
        if os.environ.get("RAY_SHARDS_KEEP_TEST_LOGS"):
            print(f"ray_shards: the test cluster's logs are kept in {temp_dir}")
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def emulator_factory() -> typing.Iterator[typing.Callable[..., EmulatorThread]]:
    """Start emulators (in background threads) with given config overrides; all are stopped after the test."""
    from ray_shards.emulator import EmulatorConfig, EmulatorThread

    started: list[EmulatorThread] = []

    def start(token: str, **overrides: typing.Any) -> EmulatorThread:
        config = EmulatorConfig(token=token, **overrides)
        emulator = EmulatorThread(config).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
async def streaming(
    emulator_factory: typing.Any, token: str, ray_cluster: Cluster
) -> typing.AsyncIterator[typing.Callable[..., typing.Any]]:
    """Make bots under a steady event stream (see tests.helpers.StreamingBot); all stopped after the test."""
    from tests.helpers import StreamingBot

    bots: list[StreamingBot] = []

    async def make(
        shards: int, hosts: int, *, listener_delay: float = 0.0, guild_events: bool = False,
        timings: typing.Any = None, background: bool = False, **emulator: typing.Any,
    ) -> StreamingBot:
        from tests.helpers import FAST

        emu = emulator_factory(
            token, shards=shards, max_concurrency=shards, guilds=shards * 2, identify_window_s=1.0, **emulator
        )
        bot = StreamingBot(emu, token, listener_delay=listener_delay, guild_events=guild_events,
                           timings=timings or FAST, background=background)
        bots.append(bot)
        await bot.start(hosts)
        return bot

    yield make
    for bot in bots:
        await bot.stop()


