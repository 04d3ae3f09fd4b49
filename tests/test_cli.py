"""The `ray-shards` command as a user runs it: the README's `demo`, clear errors, the emulator."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing

import pytest

from tests._ray_procs import MARKER_VAR, free_ports, kill_marked, marked_processes, processes_using

pytestmark = pytest.mark.timeout(300)

RAY_SHARDS = os.path.join(os.path.dirname(sys.executable), "ray-shards")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISCORD_TOKEN", "RAY_SHARDS_TOKEN", "RAY_ADDRESS", "RAY_SHARDS_ADDRESS")}
    env["RAY_AUTH_MODE"] = "disabled"
    env.update(extra)
    return env


def _run(args: list[str], cwd: pathlib.Path, timeout: float = 120.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAY_SHARDS, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _clean_error(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 1) -> None:
    """A failure (exit 1) or, with ``code=2``, a usage error: one line, no traceback (Ray's CLI conventions)."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "ray-shards: error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_demo_runs_a_live_bot_and_stops_everything(tmp_path: pathlib.Path) -> None:
    """`ray-shards demo --duration 15`: its own local Ray cluster, 8 shards READY, a clean exit."""
    ray_tmp = tempfile.mkdtemp(prefix="rs_demo_", dir="/tmp")
    marker = f"demo-{os.getpid()}-{time.monotonic_ns()}"
    try:
        result = _run(["demo", "--duration", "15"], tmp_path, timeout=240,
                      RAY_TMPDIR=ray_tmp, **{MARKER_VAR: marker})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert "Traceback" not in output, output[-4000:]
        assert "no DISCORD_TOKEN: using the bundled Discord emulator" in result.stdout
        assert "8/8 shards READY on 3 host(s)" in result.stdout, result.stdout[-3000:]
        # The last table printed: 8 rows, every shard ready, on 3 hosts.
        last = result.stdout[result.stdout.rindex("8/8 shards READY"):]
        rows = [line.split() for line in last.splitlines()[2:] if re.match(r"^\d+\s", line)][:8]
        assert [int(r[0]) for r in rows] == list(range(8)), last
        assert all(r[1] == "ready" for r in rows), last
        assert len({r[2] for r in rows}) == 3, last
        assert result.stdout.rstrip().endswith("stopped")
        # The demo shut its local cluster down itself.
        deadline = time.monotonic() + 30
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(1)
        assert not marked_processes(marker), "the demo left processes running"
    finally:
        kill_marked(marker)
        assert not processes_using(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("command", [["status"], ["presence", "--status", "idle"], ["stop"],
                                     ["run", "--entrypoint", "ray_shards.examples:echo_bot"]])
def test_missing_token_is_a_clear_error(command: list[str], tmp_path: pathlib.Path) -> None:
    _clean_error(_run(command, tmp_path), "no bot token", "DISCORD_TOKEN")


def test_unreachable_cluster_is_a_clear_error(tmp_path: pathlib.Path, token: str) -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    result = _run(["status", "--address", f"127.0.0.1:{port}"], tmp_path, DISCORD_TOKEN=token)
    _clean_error(result, "cannot reach a Ray cluster", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 60


def test_status_without_a_running_bot_is_a_clear_error(
    ray_cluster: typing.Any, tmp_path: pathlib.Path, token: str
) -> None:
    result = _run(["status", "--address", ray_cluster.address], tmp_path, DISCORD_TOKEN=token)
    from ray_shards.auth import bot_id_from_token

    _clean_error(result, str(bot_id_from_token(token)))
    assert "orchestrator" in result.stderr.lower()


def test_bad_entrypoint_is_a_clear_error(tmp_path: pathlib.Path, token: str) -> None:
    _clean_error(_run(["run", "--entrypoint", "no_such_module_xyz:setup"], tmp_path, DISCORD_TOKEN=token),
                 "cannot import 'no_such_module_xyz'")
    _clean_error(_run(["run", "--entrypoint", "ray_shards.examples"], tmp_path, DISCORD_TOKEN=token),
                 "package.module:function", code=2)


def test_emulator_help_and_standalone_server(tmp_path: pathlib.Path) -> None:
    result = _run(["emulator", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--port-file" in result.stdout and "--shards" in result.stdout

    from ray_shards.emulator import EmulatorControl

    port_file = tmp_path / "port"
    proc = subprocess.Popen([RAY_SHARDS, "emulator", "--port-file", str(port_file), "--shards", "3"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the emulator wrote no port file"
            time.sleep(0.2)
        port = int(port_file.read_text())
        control = EmulatorControl(f"http://127.0.0.1:{port}")
        assert control.health()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "emulator stopped" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
