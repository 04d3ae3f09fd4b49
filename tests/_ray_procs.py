"""Ray clusters that one test starts with `ray start --head` and stops itself, never with `ray stop`.

`ray stop` kills every Ray process on the machine, other people's clusters included. Instead every
process of a cluster started here carries a marker in its environment (Ray passes its environment on
to the raylet, its workers, the job drivers and the nodes the fake autoscaler launches), and `stop`
ends exactly the processes carrying that marker, then checks none is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
import uuid

import psutil

MARKER_VAR = "RAY_SHARDS_TEST_OWNER"
VENV_BIN = os.path.dirname(sys.executable)
RAY = os.path.join(VENV_BIN, "ray")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports (held open together while picking, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def marked_processes(marker: str) -> list[psutil.Process]:
    """Every process whose environment carries ``marker``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(MARKER_VAR) == marker:
                found.append(proc)
    return found


def processes_using(path: str) -> list[str]:
    """`ps` lines of the processes whose command line mentions ``path`` (raylet, gcs_server, workers of a temp dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False).stdout
    return [line[:200] for line in out.splitlines() if path in line and "ps -eo" not in line]


def kill_marked(marker: str, *, grace: float = 10.0) -> list[int]:
    """SIGTERM every marked process, SIGKILL what is left after ``grace`` s; repeat until none remains."""
    killed: list[int] = []
    for _ in range(5):
        procs = marked_processes(marker)
        if not procs:
            return killed
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
                killed.append(proc.pid)
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
    left = marked_processes(marker)
    if left:
        msg = f"processes of the test cluster survived SIGKILL: {[p.pid for p in left]}"
        raise RuntimeError(msg)
    return killed


@dataclasses.dataclass
class RayHead:
    """A head node started by `start_head`; `stop` ends every process of its cluster."""

    temp_dir: str
    marker: str
    gcs_address: str
    dashboard_url: str | None
    env: dict[str, str]
    log: str
    metrics_port: int = 0
    """The head's Prometheus metrics port (``--metrics-export-port``)."""

    def stop(self) -> None:
        kill_marked(self.marker)
        left = processes_using(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if left:
            msg = "processes of the test cluster are still running:\n" + "\n".join(left)
            raise RuntimeError(msg)


def start_head(
    *,
    name: str,
    num_cpus: int = 1,
    dashboard: bool = False,
    resources: typing.Mapping[str, int] | None = None,
    env: typing.Mapping[str, str] | None = None,
    extra_args: typing.Sequence[str] = (),
    gcs_port: int | None = None,
    temp_dir: str | None = None,
    timeout: float = 180.0,
) -> RayHead:
    """``ray start --head`` on free ports with its own temp dir; token auth off unless ``env`` says otherwise.

    ``env`` is added to the environment the cluster's processes inherit (the way a real cluster gets
    ``DISCORD_TOKEN`` from its start commands).
    """
    temp_dir = temp_dir or tempfile.mkdtemp(prefix=f"rs_{name}_", dir="/tmp")
    marker = uuid.uuid4().hex
    gcs, dash, client, agent_http, agent_grpc, metrics, runtime_env = free_ports(7)
    gcs = gcs_port or gcs
    full_env = dict(os.environ)
    full_env.update(
        {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": VENV_BIN + os.pathsep + full_env.get("PATH", ""),
            MARKER_VAR: marker,
        }
    )
    full_env.pop("RAY_ADDRESS", None)
    full_env.update(env or {})
    cmd = [
        RAY, "start", "--head", "--disable-usage-stats",
        f"--port={gcs}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}",
        f"--include-dashboard={'true' if dashboard else 'false'}",
    ]
    if dashboard:
        cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
    if resources:
        cmd.append("--resources=" + json.dumps({k: int(v) for k, v in resources.items()}))
    cmd += list(extra_args)
    log_path = os.path.join(temp_dir, "ray_start.log")
    head = RayHead(temp_dir, marker, "", f"http://127.0.0.1:{dash}" if dashboard else None, full_env, log_path,
                   metrics_port=metrics)
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.run(
                cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, timeout=timeout,
                check=False,
            )
        if proc.returncode != 0:
            with open(log_path, encoding="utf-8") as log:
                msg = f"ray start failed ({proc.returncode}):\n{log.read()[-3000:]}"
            raise RuntimeError(msg)
        with open(os.path.join(temp_dir, "ray_current_cluster"), encoding="utf-8") as handle:
            head.gcs_address = handle.read().strip()
        if dashboard:
            _wait_http(f"{head.dashboard_url}/api/version", timeout=60)
    except BaseException:
        with contextlib.suppress(Exception):
            head.stop()
        raise
    return head


def _wait_http(url: str, *, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_until(predicate: typing.Callable[[], bool], timeout: float, what: str,
               details: typing.Callable[[], str] = str, interval: float = 0.5) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` s naming ``what`` and ``details()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{details()}")
        time.sleep(interval)
