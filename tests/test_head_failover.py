"""The head node dies and comes back: with GCS fault tolerance (an external Redis) the Orchestrator survives.

A head (GCS, Orchestrator) and a worker node (the shard hosts) started with ``RAY_REDIS_ADDRESS``; the
bot boots, the head's processes are SIGKILLed and a new head starts on the same GCS port and Redis.
The shards keep their sessions throughout, Ray restarts the Orchestrator on the new head, it restores
itself from its checkpoint (kept in Redis through the GCS), and the bot is controllable again: no
IDENTIFY spent, the same hosts, presence reaches every shard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing

import pytest

from tests._ray_procs import MARKER_VAR, RAY, RayHead, free_ports, kill_marked, start_head, wait_until

pytestmark = pytest.mark.timeout(900)

RAY_SHARDS = os.path.join(os.path.dirname(sys.executable), "ray-shards")
REDIS = shutil.which("redis-server")
SHARDS = 4


def _driver_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_SHARDS_ADDRESS", MARKER_VAR)}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


@pytest.mark.slow
@pytest.mark.skipif(REDIS is None, reason="no redis-server on PATH (apt-get install redis-server): "
                                          "the GCS fault-tolerance test needs an external Redis")
def test_orchestrator_survives_a_head_restart_with_gcs_fault_tolerance(emulator_factory: typing.Any,
                                                                       token: str) -> None:
    emu = emulator_factory(token, shards=SHARDS, max_concurrency=SHARDS, guilds=SHARDS * 2, identify_window_s=1.0)
    redis_port, gcs_port = free_ports(2)
    redis_dir = tempfile.mkdtemp(prefix="rs_redis_")
    redis = subprocess.Popen([typing.cast(str, REDIS), "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--dir", redis_dir, "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, start_new_session=True)
    ft_env = {
        "RAY_REDIS_ADDRESS": f"127.0.0.1:{redis_port}",
        "RAY_external_storage_namespace": f"ray-shards-test-{os.getpid()}",
        # Raylets wait this long for the GCS to come back instead of exiting.
        "RAY_gcs_rpc_server_reconnect_timeout_s": "180",
        "RAY_raylet_start_wait_time_s": "120",  # a loaded machine registers a restarted head slowly
    }
    heads: list[RayHead] = []
    worker_marker = f"ftw-{os.getpid()}-{time.monotonic_ns()}"
    worker_dir = tempfile.mkdtemp(prefix="rs_ftw_", dir="/tmp")
    try:
        heads.append(start_head(name="gcsft", num_cpus=1, env=ft_env, gcs_port=gcs_port))
        address = heads[0].gcs_address
        worker_env = {**heads[0].env, **ft_env, MARKER_VAR: worker_marker}
        subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=2", '--resources={"shard_host": 2}',
                        f"--temp-dir={worker_dir}", "--disable-usage-stats"],
                       env=worker_env, check=True, capture_output=True, timeout=180, start_new_session=True)
        # The bot, started by a driver that then exits: its actors are detached and outlive it.
        driver = (
            "import asyncio, sys\n"
            "from ray_shards.launch import BotDeployment\n"
            "asyncio.run(BotDeployment.start(sys.argv[1], shard_count=int(sys.argv[2]), subprocess_count=2,"
            " rest_url=sys.argv[3], address=sys.argv[4]))\n"
        )
        started = subprocess.run([sys.executable, "-c", driver, token, str(SHARDS), emu.rest_url, address],
                                 env=_driver_env(), capture_output=True, text=True, timeout=300, check=False)
        assert started.returncode == 0, started.stderr[-3000:]
        everyone = dict.fromkeys(range(SHARDS), 1)
        wait_until(lambda: emu.control.stats()["connected"] == everyone, 120, f"{SHARDS} shards READY")
        sessions = {s["shard_id"]: s["session_id"] for s in emu.control.sessions()}

        def status() -> dict[str, typing.Any] | None:
            result = subprocess.run([RAY_SHARDS, "status", "--format", "json", "--address", address],
                                    env={**_driver_env(), "DISCORD_TOKEN": token}, capture_output=True, text=True,
                                    timeout=120, check=False)
            return typing.cast(dict[str, typing.Any], json.loads(result.stdout)) if result.returncode == 0 else None

        wait_until(lambda: (status() or {}).get("ready") == SHARDS, 60, "the table shows every shard READY")
        before = typing.cast(dict[str, typing.Any], status())
        hosts_before = {s["shard_id"]: s["host_id"] for s in before["shards"]}

        # The head dies: GCS, Orchestrator, raylet, all at once.
        kill_marked(heads[0].marker)
        time.sleep(3)
        assert emu.control.stats()["connected"] == everyone, "the shards on the worker node keep their sessions"
        heads.append(start_head(name="gcsft2", num_cpus=1, env=ft_env, gcs_port=gcs_port))
        assert heads[1].gcs_address.rsplit(":", 1)[1] == str(gcs_port)

        # Ray restarts the detached Orchestrator on the new head; it restores itself from its checkpoint.
        wait_until(lambda: (status() or {}).get("ready") == SHARDS, 300, "the Orchestrator back, every shard READY",
                   interval=3.0)
        after = typing.cast(dict[str, typing.Any], status())
        assert {s["shard_id"]: s["host_id"] for s in after["shards"]} == hosts_before
        assert len(emu.control.identify_log()) == SHARDS, "no IDENTIFY spent: nothing restarted from scratch"
        assert emu.control.stats()["connected"] == everyone
        assert {s["shard_id"]: s["session_id"] for s in emu.control.sessions()} == sessions, "same sessions"

        # And it is controllable again.
        presence = subprocess.run([RAY_SHARDS, "presence", "--status", "idle", "--address", address],
                                  env={**_driver_env(), "DISCORD_TOKEN": token}, capture_output=True, text=True,
                                  timeout=120, check=False)
        assert presence.returncode == 0, presence.stderr[-2000:]
        wait_until(lambda: {m["shard_id"] for m in emu.control.received(op=3)
                            if m.get("d", {}).get("status") == "idle"} == set(range(SHARDS)),
                   60, "presence idle on every shard", lambda: str(emu.control.received(op=3))[-2000:])
        stop = subprocess.run([RAY_SHARDS, "stop", "--address", address],
                              env={**_driver_env(), "DISCORD_TOKEN": token}, capture_output=True, text=True,
                              timeout=120, check=False)
        assert stop.returncode == 0, stop.stderr[-2000:]
    finally:
        kill_marked(worker_marker)
        for head in reversed(heads):
            try:
                head.stop()
            except RuntimeError as exc:  # the first head's processes are already gone
                print(f"stopping a head: {exc}")
        shutil.rmtree(worker_dir, ignore_errors=True)
        redis.kill()
        redis.wait(timeout=30)
        shutil.rmtree(redis_dir, ignore_errors=True)
