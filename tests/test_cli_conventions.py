"""The `ray-shards` console script follows Ray's CLI conventions; no cluster needed.

Exit codes (0 ok, 1 failure, 2 usage), `--version`, log level and JSON logs, `--entrypoint` from the
current directory or `--entrypoint-dir`, and the status views (text table / summary, JSON, YAML, filters).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from ray_shards.models import BotConfig, ShardInfo, ShardStatus
from ray_shards.presence import PresenceState
from ray_shards.protocol import BotStatus, HostSummary
from tests._ray_procs import free_ports

pytestmark = pytest.mark.timeout(120)

RAY_SHARDS = os.path.join(os.path.dirname(sys.executable), "ray-shards")
MYBOT = '''
import ray_shards

def setup(bot: ray_shards.Bot) -> None:
    bot.mybot_was_here = True
'''


def _run(args: list[str], cwd: pathlib.Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "RAY_SHARDS_TOKEN", "RAY_ADDRESS")}
    full.update(RAY_AUTH_MODE="disabled", **env)
    return subprocess.run([RAY_SHARDS, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=90,
                          check=False)


def test_version(tmp_path: pathlib.Path) -> None:
    result = _run(["--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ray-shards 0.1.0 (ray 2.60"), result.stdout
    assert "hikari 2." in result.stdout


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["status", "--bogus"], 2, "unrecognized arguments"),
    (["status", "--format", "xml"], 2, "invalid choice"),
    (["run", "--hosts", "0"], 2, "at least 1"),
    (["run", "--intents", "NOT_AN_INTENT"], 2, "unknown intent"),
    (["run", "--entrypoint", "mybot"], 2, "package.module:function"),
    (["--log-level", "LOUD", "status"], 2, "invalid choice"),
    (["status"], 1, "no bot token"),
])
def test_usage_errors_exit_2_and_failures_exit_1(
    args: list[str], code: int, fragment: str, tmp_path: pathlib.Path, token: str
) -> None:
    env = {} if args == ["status"] else {"DISCORD_TOKEN": token}
    result = _run(args, tmp_path, **env)
    assert result.returncode == code, (result.stdout + result.stderr)[-2000:]
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_cluster_is_a_failure_not_a_usage_error(tmp_path: pathlib.Path, token: str) -> None:
    (port,) = free_ports(1)
    result = _run(["status", "--address", f"127.0.0.1:{port}"], tmp_path, DISCORD_TOKEN=token)
    assert result.returncode == 1, result.stderr
    assert "cannot reach a Ray cluster" in result.stderr


def test_entrypoint_is_imported_from_the_current_directory(tmp_path: pathlib.Path, token: str) -> None:
    """The README's `ray-shards run --entrypoint mybot:setup`, from the directory holding mybot.py.

    The cluster address is unreachable on purpose: the entrypoint is imported first, so getting as
    far as "cannot reach a Ray cluster" proves the import worked (it used to fail: "No module named 'mybot'").
    """
    (tmp_path / "mybot.py").write_text(MYBOT)
    (port,) = free_ports(1)
    result = _run(["run", "--entrypoint", "mybot:setup", "--address", f"127.0.0.1:{port}"], tmp_path,
                  DISCORD_TOKEN=token)
    assert "cannot import" not in result.stderr, result.stderr
    assert "cannot reach a Ray cluster" in result.stderr, result.stderr
    assert result.returncode == 1


def test_entrypoint_dir(tmp_path: pathlib.Path, token: str) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "mybot.py").write_text(MYBOT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (port,) = free_ports(1)
    args = ["run", "--entrypoint", "mybot:setup", "--address", f"127.0.0.1:{port}"]
    without = _run(args, elsewhere, DISCORD_TOKEN=token)
    assert without.returncode == 1 and "cannot import 'mybot'" in without.stderr, without.stderr
    with_dir = _run([*args, "--entrypoint-dir", str(code)], elsewhere, DISCORD_TOKEN=token)
    assert "cannot reach a Ray cluster" in with_dir.stderr, with_dir.stderr
    missing = _run([*args, "--entrypoint-dir", str(tmp_path / "nope")], elsewhere, DISCORD_TOKEN=token)
    assert missing.returncode == 2 and "is not a directory" in missing.stderr, missing.stderr


def test_entrypoint_module_is_pickled_by_value(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts on nodes without the directory still get the callback's code."""
    import ray.cloudpickle

    from ray_shards.cli import _load_callback

    package = tmp_path / "botpkg_by_value"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text(MYBOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    callback = _load_callback("botpkg_by_value.entry:setup", str(tmp_path))
    try:
        pickled = ray.cloudpickle.dumps(callback)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules["botpkg_by_value"])
        for name in [n for n in sys.modules if n.startswith("botpkg_by_value")]:
            del sys.modules[name]
    assert b"mybot_was_here" in pickled  # the code itself, not a reference to an importable module


def test_json_logs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ray_shards.logs import configure_logging, ray_logging_config

    monkeypatch.delenv("RAY_SHARDS_LOG_FORMAT", raising=False)
    monkeypatch.delenv("RAY_SHARDS_LOG_LEVEL", raising=False)
    assert ray_logging_config() is None
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("ray_shards").level)
    try:
        configure_logging("INFO", "json")
        handler = root.handlers[0]
        stream = io.StringIO()
        handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("ray_shards.test").info("shard %s ready", 3)
        logging.getLogger("ray_shards.test").debug("not shown at INFO")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1, lines
        record = json.loads(lines[0])
        assert record["message"] == "shard 3 ready" and record["levelname"] == "INFO"
        assert record["name"] == "ray_shards.test"
        config = ray_logging_config()
        assert config.encoding == "JSON" and config.log_level == "INFO"
        with pytest.raises(ValueError, match="log format"):
            configure_logging(None, "xml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("ray_shards").setLevel(saved[2])
        os.environ.pop("RAY_SHARDS_LOG_FORMAT", None)
        os.environ.pop("RAY_SHARDS_LOG_LEVEL", None)


def _rows(count: int, hosts: int) -> list[ShardInfo]:
    states = [ShardStatus.READY, ShardStatus.READY, ShardStatus.STARTING, ShardStatus.RECONNECTING]
    return [
        ShardInfo(shard_id=i, shard_count=count, status=states[i % 4], host_id=f"h{i % hosts}", node_id="abcdef0123",
                  epoch=1, latency=0.001 * (i + 1) if i % 4 != 2 else math.nan, seq=i, guilds=2, events=i,
                  last_seen=0.0, identifies=1, resumes=0)
        for i in range(count)
    ]


STATUS = BotStatus(
    bot_id=42, config=BotConfig(42, 2000, 0, 1, "wss://gateway.invalid", "https://rest.invalid"), ready=1000,
    total=2000, identify_eta=125.0, identifies_remaining=900,
    hosts={"h0": HostSummary(node_id="n", want=1000, shards=[0, 2])}, presence=PresenceState(), presence_version=0,
    stopping=False, uptime=0.0,
)


def test_status_views() -> None:
    from ray_shards.status_view import StatusView

    rows = _rows(2000, 16)
    summary = StatusView().render(STATUS, rows)  # auto: 2000 shards -> one line per host
    lines = summary.splitlines()
    assert lines[0].startswith("1000/2000 shards READY")
    assert lines[1].split()[:9] == ["host", "node", "shards", "ready", "starting", "reconnecting", "unassigned",
                                    "failed", "stopped"]
    assert len([line for line in lines[2:] if line.startswith("h")]) == 16
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[1:8] == ["2000", "1000", "500", "500", "0", "0", "0"]
    assert "\x1b" not in summary  # not a terminal: no escape codes, snapshots separated by a blank line
    assert summary.endswith("\n\n")
    assert StatusView(clear=True).render(STATUS, rows).startswith("\x1b[2J")

    table = StatusView(view="table", hosts={"h1"}, states={"ready"}).render(STATUS, rows)
    shard_lines = [line.split() for line in table.splitlines()[2:] if line.strip()]
    assert shard_lines and all(line[1] == "ready" and line[2] == "h1" for line in shard_lines)
    assert len(shard_lines) == sum(1 for r in rows if r.host_id == "h1" and r.status is ShardStatus.READY)

    document = json.loads(StatusView(fmt="json", states={"starting"}).render(STATUS, rows))
    assert document["ready"] == 1000 and document["total"] == 2000 and document["identify_eta"] == 125.0
    assert len(document["shards"]) == 500
    assert {s["status"] for s in document["shards"]} == {"starting"}
    assert all(s["latency"] is None for s in document["shards"])  # NaN is not JSON
    loaded = yaml.safe_load(StatusView(fmt="yaml", hosts={"h0"}).render(STATUS, rows))
    assert {s["host_id"] for s in loaded["shards"]} == {"h0"}
    assert loaded["hosts"]["h0"]["shards"] == [0, 2]
    assert document["rolling_restart"] == {} and document["reshard"] == {}  # the dict form status always had


def test_progress_bar() -> None:
    from ray_shards.render import render_bar

    assert render_bar(0, 10, 125.0, width=10) == "[..........] 0/10 READY, ETA 2m05s"
    assert render_bar(5, 10, 60.0, width=10) == "[#####.....] 5/10 READY, ETA 1m00s"
    assert render_bar(10, 10, 0.0, width=10) == "[##########] 10/10 READY"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_boot_progress_bar_on_a_terminal_log_line_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    from ray_shards.progress import BootProgress

    terminal = _Terminal()
    bar = BootProgress.for_stream(terminal)
    assert bar.interval(2.0) == 1.0
    bar.update(dataclasses.replace(STATUS, ready=40, total=128, identify_eta=140.0, hosts={}))
    bar.update(dataclasses.replace(STATUS, ready=64, total=128, identify_eta=90.0, hosts={}))
    bar.close()
    text = terminal.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "boot [#########" in text and "40/128 READY, ETA 2m20s" in text and "64/128 READY, ETA 1m30s" in text

    piped = io.StringIO()
    lines = BootProgress.for_stream(piped)
    assert lines.interval(2.0) == 2.0
    with caplog.at_level(logging.INFO, logger="ray_shards.launch"):
        lines.update(dataclasses.replace(STATUS, ready=40, total=128, identify_eta=140.0))
        lines.close()
    assert piped.getvalue() == ""  # nothing drawn off a terminal
    assert "boot: 40/128 shards READY on 1 host(s), about 140 s left by the identify schedule" in caplog.text
