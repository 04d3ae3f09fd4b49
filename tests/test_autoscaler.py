"""cluster-local.yaml under Ray's fake multi-node autoscaler: asking for more shard hosts launches nodes.

`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=<copy of cluster-local.yaml with the GCS address>`
on free ports with its own temp dir; the bot runs as `python -m ray_shards run` (the README's command).
Every process started here, the nodes the autoscaler launched included, carries a marker in its
environment and is killed by it at the end (never `ray stop`).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import typing

import pytest
import yaml

from ray_shards.auth import bot_id_from_token
from tests._ray_procs import free_ports, marked_processes, processes_using, start_head, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LOCAL = pathlib.Path(__file__).resolve().parent.parent / "cluster-local.yaml"
HOSTS = 3




def test_more_hosts_than_nodes_makes_the_autoscaler_launch_nodes(
    emulator_factory: typing.Any, token: str, tmp_path: pathlib.Path
) -> None:
    import ray
    from ray.util.state import list_actors, list_nodes

    emu = emulator_factory(token, shards=6, max_concurrency=6, guilds=12, identify_window_s=1.0)
    bot_id = bot_id_from_token(token)
    temp_dir = tempfile.mkdtemp(prefix="rs_autoscale_", dir="/tmp")
    (gcs_port,) = free_ports(1)
    config = yaml.safe_load(LOCAL.read_text(encoding="utf-8"))
    config["provider"]["gcs_address"] = f"{ray.util.get_node_ip_address()}:{gcs_port}"
    config_path = os.path.join(temp_dir, "autoscaler.yaml")
    with open(config_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    head = start_head(
        name="autoscale", temp_dir=temp_dir, gcs_port=gcs_port, num_cpus=1, dashboard=True,
        env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "DISCORD_TOKEN": token},
        extra_args=[f"--autoscaling-config={config_path}"],
    )
    driver: subprocess.Popen[bytes] | None = None
    driver_log = tmp_path / "driver.log"  # outlives the cluster's temp dir
    try:
        address = typing.cast(str, head.dashboard_url)

        def nodes() -> list[typing.Any]:
            return [n for n in list_nodes(address=address) if n.state == "ALIVE"]

        def shard_host_nodes() -> list[typing.Any]:
            return [n for n in nodes() if n.resources_total.get("shard_host")]

        # min_workers: 1 -> one shard_host node comes up before the bot starts.
        wait_until(lambda: len(shard_host_nodes()) >= 1, 120, "the first shard_host node", lambda: str(nodes()))
        assert len(shard_host_nodes()) == 1
        head_ids = {n.node_id for n in nodes() if n.is_head_node}
        assert len(head_ids) == 1

        env = dict(head.env)
        env["RAY_SHARDS_REST_URL"] = emu.rest_url
        with open(driver_log, "wb") as log:
            driver = subprocess.Popen(
                [sys.executable, "-m", "ray_shards", "run", "--entrypoint", "ray_shards.examples:echo_bot",
                 "--hosts", str(HOSTS), "--address", head.gcs_address],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

        def driver_output() -> str:
            with open(driver_log, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-3000:]

        started = time.monotonic()
        wait_until(lambda: emu.control.stats()["connected"] == dict.fromkeys(range(6), 1) or driver.poll() is not None,
              200, "6 shards READY", driver_output)
        assert driver.poll() is None, driver_output()
        print(f"6 shards READY on {HOSTS} hosts {time.monotonic() - started:.1f} s after the driver started")

        # The autoscaler launched nodes for the hosts; each host runs on its own shard_host node.
        assert len(shard_host_nodes()) == HOSTS, [(n.node_id, n.resources_total) for n in nodes()]
        hosts = [a for a in list_actors(address=address, filters=[("state", "=", "ALIVE")])
                 if a.class_name == "ShardHost" and str(bot_id) in a.name]
        assert len(hosts) == HOSTS
        host_nodes = {a.node_id for a in hosts}
        assert len(host_nodes) == HOSTS, "hosts share a node"
        assert not host_nodes & head_ids, "a host runs on the head"
        assert host_nodes <= {n.node_id for n in shard_host_nodes()}

        # SIGTERM (Ctrl-C) stops the bot: every shard closed, the driver exits.
        driver.terminate()
        code = driver.wait(timeout=60)
        wait_until(lambda: all(v == 0 for v in emu.control.stats()["connected"].values()), 30, "every shard closed")

        def bot_actors() -> list[typing.Any]:
            alive = list_actors(address=address, filters=[("state", "=", "ALIVE")])
            return [a for a in alive if str(bot_id) in (a.name or "")]

        wait_until(lambda: not bot_actors(), 30, "no actor of the bot left", lambda: str(bot_actors()))
        # Known issue (reported): now and then the driver aborts (SIGABRT) in Ray's teardown *after* the bot
        # stopped; the bot's shutdown is complete by then, which is what this test is about.
        assert code in (0, -signal.SIGABRT), driver_output()
        if code:
            print(f"driver exited with {code} after stopping the bot")
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
        marker = head.marker
        head.stop()
        # Nothing of this cluster is left: no raylet/gcs_server mentioning its temp dir, no marked process.
        assert not processes_using(temp_dir)
        assert not marked_processes(marker)
