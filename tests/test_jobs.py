"""The bot as a Ray job: `ray job submit ... -- python -m ray_shards run`, then `ray job stop` closes every shard.

The head is started with DISCORD_TOKEN in its environment (as cluster.yaml's start command does from the
secret store); the job driver inherits it, so the token is in no runtime_env and no job metadata.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import typing
import uuid

import pytest

from ray_shards.auth import bot_id_from_token
from tests._ray_procs import MARKER_VAR, RAY, start_head, wait_until

pytestmark = pytest.mark.timeout(300)

MYBOT = """\
import hikari


def setup(bot):
    @bot.listen(hikari.GuildAvailableEvent)
    async def announce(event):
        channel = next(iter(event.channels), None)
        if channel is not None:
            await bot.rest.create_message(channel, f"mybot from the working dir on {bot.host_id}")
"""


def _ray_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "RAY_SHARDS_TOKEN", "RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop(MARKER_VAR, None)
    result = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"ray {' '.join(args[:2])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result




def test_ray_job_runs_the_bot_and_job_stop_closes_every_shard(
    emulator_factory: typing.Any, token: str, tmp_path: pathlib.Path
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    bot_id = bot_id_from_token(token)
    working_dir = tmp_path / "job"
    working_dir.mkdir()
    (working_dir / "mybot.py").write_text(MYBOT)  # the user's code, shipped with --working-dir
    # As cluster.yaml's head start command: the token from the environment, and time for a graceful stop
    # (`ray job stop` sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S; 3 s by default).
    head = start_head(name="jobs", num_cpus=2, dashboard=True,
                      env={"DISCORD_TOKEN": token, "RAY_JOB_STOP_WAIT_TIME_S": "30"})
    try:
        address = typing.cast(str, head.dashboard_url)
        jobs = JobSubmissionClient(address)
        submission_id = f"ray-shards-{uuid.uuid4().hex[:8]}"
        _ray_cli(
            "job", "submit", "--address", address, "--submission-id", submission_id, "--no-wait",
            "--working-dir", str(working_dir),
            "--runtime-env-json", json.dumps({"env_vars": {"RAY_SHARDS_REST_URL": emu.rest_url}}),
            "--", "python", "-m", "ray_shards", "run", "--entrypoint", "mybot:setup", "--hosts", "2",
        )

        def logs() -> str:
            try:
                return jobs.get_job_logs(submission_id)[-4000:]
            except Exception as exc:  # the log is diagnostics only
                return f"(no job logs: {exc})"

        wait_until(
            lambda: emu.control.stats()["connected"] == {0: 1, 1: 1, 2: 1, 3: 1}
            or jobs.get_job_status(submission_id).is_terminal(),
            180, "4 shards READY on the emulator", logs,
        )
        assert jobs.get_job_status(submission_id) == JobStatus.RUNNING, logs()
        assert sorted(e["shard_id"] for e in emu.control.identify_log()) == [0, 1, 2, 3]
        # The entrypoint from the working dir runs in every host (the hosts import `mybot` there too).
        wait_until(lambda: {m["content"] for m in emu.control.messages()}
              == {"mybot from the working dir on h0", "mybot from the working dir on h1"},
              60, "a message from mybot on each host", lambda: str(emu.control.messages())[-2000:])

        def alive() -> list[tuple[str, str]]:
            found = list_actors(address=address, filters=[("state", "=", "ALIVE")])
            return sorted((a.class_name, a.name) for a in found if str(bot_id) in a.name)

        # A host start that timed out on a loaded machine is killed and replaced; Ray lists the killed actor
        # ALIVE until its process is gone, so wait (bounded) for the count to settle: a real leak still fails.
        wait_until(lambda: [c for c, _ in alive()] == ["Orchestrator", "ShardHost", "ShardHost"], 60,
                   "one Orchestrator and two ShardHosts alive", lambda: str(alive()))

        # The token is in no job record: not the entrypoint, runtime_env or metadata.
        info = jobs.get_job_info(submission_id)
        assert info.entrypoint.startswith("python -m ray_shards run")
        assert token not in repr(info) and token not in json.dumps(info.runtime_env or {})

        # `ray job stop`: SIGTERM to the driver, which stops the bot gracefully.
        stopped = time.monotonic()
        _ray_cli("job", "stop", "--address", address, submission_id)
        assert jobs.get_job_status(submission_id) == JobStatus.STOPPED
        wait_until(lambda: all(v == 0 for v in emu.control.stats()["connected"].values()), 30, "every shard closed")
        print(f"ray job stop to every shard closed: {time.monotonic() - stopped:.1f} s")

        def left() -> list[typing.Any]:
            alive = list_actors(address=address, filters=[("state", "=", "ALIVE")])
            return [a for a in alive if str(bot_id) in (a.name or "")]

        # No host and no (detached) Orchestrator outlives the job: the driver stopped the bot itself.
        wait_until(lambda: not left(), 30, "no actor of the bot left", lambda: str(left()))
    finally:
        head.stop()

