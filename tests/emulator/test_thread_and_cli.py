"""EmulatorThread + EmulatorControl from other threads, and the standalone server process."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from ray_shards.emulator import (
    DEFAULT_TOKEN,
    EmulatorConfig,
    EmulatorControl,
    EmulatorControlError,
    EmulatorThread,
    make_token,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _get_json(url: str, token: str) -> tuple[int, typing.Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bot {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_emulator_thread_with_control_from_other_threads(hk: typing.Any) -> None:
    config = EmulatorConfig(guilds=3, identify_window_s=0.5)
    with EmulatorThread(config) as emu:
        assert emu.port > 0 and emu.rest_url == emu.base_url + "/api/v10"
        assert emu.gateway_url == f"ws://127.0.0.1:{emu.port}/gateway"
        control = pickle.loads(pickle.dumps(emu.control))
        assert control == EmulatorControl(emu.base_url) and control.health()["ok"] is True
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: control.stats()["identifies"], range(8))) == [0] * 8
        assert control.guild_ids() == emu.call(lambda e: e.guild_ids())
        assert control.guilds_for_shard(1, 2) == emu.call(lambda e: e.guilds_for_shard(1, 2))

        async def run_shard() -> None:
            shard, events = hk.make_shard(typing.cast(typing.Any, emu))
            async with hk.running_shard(shard):
                await asyncio.to_thread(control.wait_until, lambda c: c.stats()["connected"] == {0: 1}, 10)
                gid = control.guild_ids()[0]
                assert await asyncio.to_thread(control.dispatch_to_guild, gid, "CUSTOM", {"x": 1}) == 1
                assert await asyncio.to_thread(control.reconnect, 0) == 1
                await asyncio.to_thread(control.wait_until, lambda c: len(c.resume_log()) == 1, 30)
                await asyncio.to_thread(control.start_stream, 50.0)
                await asyncio.sleep(0.3)
                sent = await asyncio.to_thread(control.stop_stream)
                await hk.wait_for(lambda: events.names().count("MESSAGE_CREATE") == sent)
                assert "CUSTOM" in events.names()

        asyncio.run(run_shard())
        stats = control.stats()
        assert stats["identifies"] == 1 and stats["resumes"] == 1 and stats["connected"] == {0: 0}
        assert control.identify_log()[0]["shard_id"] == 0
        assert len(control.received(shard_id=0, op=2)) == 1 and control.received(op=8) == []
        assert len(control.stream_sent()) >= 10
        limits = control.set_limits(remaining=7, max_concurrency=4, shards=3)
        assert limits["session_start_limit"]["remaining"] == 7 and limits["shards"] == 3
        status, body = _get_json(emu.rest_url + "/gateway/bot", DEFAULT_TOKEN)
        assert status == 200 and body["shards"] == 3 and body["session_start_limit"]["max_concurrency"] == 4
        assert control.sessions() == []  # 1001 on close ended it
        control.reset_logs()
        assert control.stats()["identifies"] == 0 and control.rest_log() == []
        with pytest.raises(EmulatorControlError, match="unknown guild"):
            control.interaction(1, "ping")
        with pytest.raises(TimeoutError, match="not met within"):
            control.wait_until(lambda c: False, timeout=0.2)
    with pytest.raises(OSError):
        control.health()


def test_standalone_server_process(tmp_path: pathlib.Path) -> None:
    token = make_token(987654321 << 22, "standalone-secret-value-for-the-test")
    port_file = tmp_path / "port"
    env = dict(os.environ, DISCORD_TOKEN=token, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "ray_shards.emulator", "--port", "0", "--port-file", str(port_file)]
    command += ["--guilds", "3", "--shards", "2", "--identify-window", "0.5"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the emulator did not write its port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}"
        assert EmulatorControl(base).health()["ok"] is True
        status, body = _get_json(base + "/api/v10/gateway/bot", token)
        assert status == 200 and body["url"] == f"ws://127.0.0.1:{port}/gateway" and body["shards"] == 2
        assert _get_json(base + "/api/v10/gateway/bot", DEFAULT_TOKEN)[0] == 401
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"emulator listening on {base} (rest_url {base}/api/v10)" in out
    assert token not in out + err
