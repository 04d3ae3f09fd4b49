"""An operator's view of a real cluster: the README's `ray-shards run` from a user's directory, `status` in
every format, JSON logs, and every metric the README lists scraped from the node's Prometheus endpoint,
including the shard-state gauge after shards move between two live hosts.

One `ray start --head` cluster, the bundled emulator and one bot started by the console script are shared
by the tests of this module (they build on each other in file order; each stands alone if run alone).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import typing
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ray_shards.auth import bot_id_from_token
from ray_shards.metric_names import EXPORTED
from ray_shards.metrics import SHARD_METRICS_VAR
from tests._ray_procs import MARKER_VAR, RayHead, start_head, wait_until
from tests.conftest import new_token

pytestmark = pytest.mark.timeout(600)

RAY_SHARDS = os.path.join(os.path.dirname(sys.executable), "ray-shards")
SHARDS = 4
MYBOT = """\
import hikari


def setup(bot):
    @bot.listen(hikari.GuildAvailableEvent)
    async def announce(event):
        channel = next(iter(event.channels), None)
        if channel is not None:
            await bot.rest.create_message(channel, f"mybot from the current directory on {bot.host_id}")
"""


class Bot(typing.NamedTuple):
    head: RayHead
    emu: typing.Any
    token: str
    proc: subprocess.Popen[str]
    log: pathlib.Path
    cwd: pathlib.Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_SHARDS_ADDRESS", MARKER_VAR)}
        env.update(DISCORD_TOKEN=self.token, RAY_AUTH_MODE="disabled", RAY_SHARDS_ADDRESS=self.head.gcs_address)
        return env

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RAY_SHARDS, *args], cwd=self.cwd, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def status(self) -> dict[str, typing.Any]:
        result = self.cli("status", "--format", "json")
        assert result.returncode == 0, result.stderr[-3000:]
        return typing.cast(dict[str, typing.Any], json.loads(result.stdout))

    def scrape(self) -> dict[str, list[typing.Any]]:
        """Every sample on the head's Prometheus endpoint, by sample name."""
        url = f"http://127.0.0.1:{self.head.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, list[typing.Any]] = collections.defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name].append(sample)
        return samples


@pytest.fixture(scope="module")
def bot() -> typing.Iterator[Bot]:
    from ray_shards.emulator import EmulatorConfig, EmulatorThread

    token = new_token()
    emu = EmulatorThread(EmulatorConfig(token=token, shards=SHARDS, max_concurrency=SHARDS, guilds=SHARDS * 2,
                                        identify_window_s=1.0, heartbeat_interval_ms=1000)).start()
    # The nodes' environment switches the hosts' per-shard series on (the way a cluster.yaml would), so every
    # metric the README lists is served; the per-host ones are exported either way.
    head = start_head(name="ops", num_cpus=4, env={SHARD_METRICS_VAR: "1"})
    cwd = pathlib.Path(tempfile.mkdtemp(prefix="rs_ops_user_"))
    (cwd / "mybot.py").write_text(MYBOT)
    log = cwd / "run.log"
    proc: subprocess.Popen[str] | None = None
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_SHARDS_ADDRESS")}
        env.update(DISCORD_TOKEN=token, RAY_AUTH_MODE="disabled")
        env[MARKER_VAR] = head.marker  # so head.stop() also ends anything the driver left behind
        with open(log, "w", encoding="utf-8") as out:
            # The README's command, from the directory holding mybot.py, with the installed console script.
            proc = subprocess.Popen(
                [RAY_SHARDS, "--log-format", "json", "run", "--entrypoint", "mybot:setup", "--hosts", "2",
                 "--shard-count", str(SHARDS), "--address", head.gcs_address, "--rest-url", emu.rest_url],
                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )
        running = Bot(head, emu, token, proc, log, cwd)

        def ready() -> bool:
            assert proc is not None and proc.poll() is None, log.read_text()[-4000:]
            return bool(emu.control.stats()["connected"] == dict.fromkeys(range(SHARDS), 1))

        wait_until(ready, 240, f"{SHARDS} shards READY", lambda: log.read_text()[-4000:])
        yield running
    finally:
        if proc is not None and proc.poll() is None:
            subprocess.run([RAY_SHARDS, "stop"], cwd=cwd, env={**os.environ, "DISCORD_TOKEN": token,
                           "RAY_AUTH_MODE": "disabled", "RAY_SHARDS_ADDRESS": head.gcs_address},
                           capture_output=True, timeout=120, check=False)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        head.stop()
        emu.stop()


def test_run_imports_the_entrypoint_from_the_current_directory(bot: Bot) -> None:
    """`ray-shards run --entrypoint mybot:setup` from mybot.py's directory: every host runs it."""
    wait_until(lambda: {m["content"] for m in bot.emu.control.messages()}
               == {"mybot from the current directory on h0", "mybot from the current directory on h1"},
               60, "a message from mybot on each host", lambda: str(bot.emu.control.messages())[-2000:])
    assert "No module named" not in bot.log.read_text()


def test_json_logs_from_the_cli(bot: Bot) -> None:
    """`--log-format json`: the driver's and the Ray workers' log lines are JSON objects, each line once."""
    # The driver logs "running on hosts" when its boot poll sees every shard READY, a moment after the fixture does.
    wait_until(lambda: "running on hosts" in bot.log.read_text(), 60, "the driver's 'running on hosts' line")
    lines = [line for line in bot.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line: no plain-text line in between
    driver = [r for r in records if "running on hosts" in r["message"]]
    assert len(driver) == 1, driver  # written once, not by both our handler and Ray's
    assert any(r.get("actor_name", "").startswith("host-") and "identifies" in r["message"] for r in records)
    assert any(r.get("actor_name", "").startswith("orchestrator-") for r in records)
    assert bot.token not in bot.log.read_text()


def test_status_formats_and_filters(bot: Bot) -> None:
    document = bot.status()
    assert document["ready"] == SHARDS == document["total"]
    assert sorted(document["hosts"]) == ["h0", "h1"]
    assert [s["shard_id"] for s in document["shards"]] == list(range(SHARDS))
    assert {s["status"] for s in document["shards"]} == {"ready"}

    loaded = yaml.safe_load(bot.cli("status", "--format", "yaml", "--host", "h0").stdout)
    assert loaded["shards"] and {s["host_id"] for s in loaded["shards"]} == {"h0"}

    summary = bot.cli("status", "--view", "summary").stdout.splitlines()
    assert summary[0].startswith(f"{SHARDS}/{SHARDS} shards READY on 2 host(s)")
    per_host = {line.split()[0]: line.split() for line in summary[2:] if line.strip()}
    assert set(per_host) == {"h0", "h1", "total"}
    assert per_host["total"][1:3] == [str(SHARDS), str(SHARDS)]  # shards, ready

    none = bot.cli("status", "--state", "failed")
    assert none.returncode == 0 and len([line for line in none.stdout.splitlines() if line.strip()]) == 2

    # --watch off a terminal: no escape codes, snapshots one after another.
    watch = subprocess.Popen([RAY_SHARDS, "status", "--watch", "--interval", "0.5"], cwd=bot.cwd, env=bot.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert "\x1b" not in out
    assert out.count(f"{SHARDS}/{SHARDS} shards READY") >= 2, (out[-2000:], err[-2000:])


def _by_tags(samples: list[typing.Any], **tags: str) -> list[typing.Any]:
    return [s for s in samples if all(s.labels.get(k) == v for k, v in tags.items())]


def _exported_sample_names(name: str) -> list[str]:
    kind = EXPORTED[name].kind
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
    return [name]


def test_every_documented_metric_is_served_with_its_tags(bot: Bot) -> None:
    bot_id = str(bot_id_from_token(bot.token))
    bot.emu.control.start_stream(20.0)
    bot.emu.control.reconnect(0)  # a reconnect and a RESUME, so those counters have a sample
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(ray_shards_[a-z_]+)` \|", readme, re.MULTILINE))
    assert documented == set(EXPORTED), documented ^ set(EXPORTED)

    # A Ray counter has no series until its first increment (it refuses inc(0)); no shard has moved yet,
    # so ray_shards_leases_moved_total is checked by the next test, after moves.
    expected = [name for name in EXPORTED if name != "ray_shards_leases_moved_total"]

    # Ray's agent drops a gauge series that misses two export rounds (a late export on a loaded machine),
    # so each check polls until it holds instead of trusting one scrape.
    seen: set[str] = set()

    def missing() -> list[str]:
        samples = bot.scrape()
        for name in expected:
            for sample_name in _exported_sample_names(name):
                for sample in _by_tags(samples.get(sample_name, []), bot=bot_id):
                    assert set(EXPORTED[name].tags) <= set(sample.labels), (name, sample.labels)
                    seen.add(sample_name)
        assert not [n for n in samples if n.startswith("ray_ray_shards")], "double ray_ prefix"
        return [n for name in expected for n in _exported_sample_names(name) if n not in seen]

    wait_until(lambda: not missing(), 180, "every metric on the Prometheus endpoint",
               lambda: f"missing {missing()}; served: {sorted(n for n in bot.scrape() if 'shards' in n)}",
               interval=2.0)

    def eventually(what: str, check: typing.Callable[[], bool], *names: str) -> None:
        # On failure, say what the endpoint served for the metrics the check reads.
        wait_until(check, 120, what, lambda: str({n: [(x.labels, x.value) for x in bot.scrape().get(n, [])]
                                                  for n in names}), interval=2.0)

    def shard_values(name: str) -> dict[int, float]:
        return {int(s.labels["shard"]): s.value for s in _by_tags(bot.scrape().get(name, []), bot=bot_id)}

    def bot_value(name: str, **tags: str) -> float | None:
        found = _by_tags(bot.scrape().get(name, []), bot=bot_id, **tags)
        return float(found[0].value) if len(found) == 1 else None

    def host_values(name: str, **tags: str) -> dict[str, float]:
        return {s.labels["host"]: s.value for s in _by_tags(bot.scrape().get(name, []), bot=bot_id, **tags)}

    # Per shard: every shard ready once, a heartbeat latency, events counted.
    eventually("every shard ready once", lambda: sorted(shard_values("ray_shards_shard_state").items())
               == [(i, 2.0) for i in range(SHARDS)])
    eventually("latencies", lambda: len(latencies := shard_values("ray_shards_heartbeat_latency_seconds")) == SHARDS
               and all(0 < v < 5 for v in latencies.values()))
    eventually("events counted per shard", lambda: sum(shard_values("ray_shards_shard_events_total").values()) > 0)
    # Per host: shards by state, latency quantiles, and the counters (one IDENTIFY per shard across the hosts).
    eventually("ready shards per host", lambda: sorted(host_values("ray_shards_host_shards", state="ready").values())
               == [SHARDS / 2, SHARDS / 2] and not any(host_values("ray_shards_host_shards", state="failed").values()))
    for q in ("0.5", "0.99", "1"):
        eventually(f"latency quantile {q} per host", lambda q=q: len(
            latencies := host_values("ray_shards_host_heartbeat_latency_seconds", quantile=q)) == 2
            and all(0 < v < 5 for v in latencies.values()), "ray_shards_host_heartbeat_latency_seconds")
    eventually("events counted per host", lambda: sum(host_values("ray_shards_events_total").values()) > 0)
    eventually("one IDENTIFY per shard", lambda: sum(host_values("ray_shards_identifies_total").values()) == SHARDS)
    eventually("shard 0's RESUME", lambda: sum(host_values("ray_shards_resumes_total").values()) >= 1)
    eventually("shard 0's reconnect", lambda: sum(host_values("ray_shards_reconnects_total").values()) >= 1)
    eventually("shards by state", lambda: bot_value("ray_shards_shards", state="ready") == SHARDS
               and bot_value("ray_shards_shards", state="unassigned") == 0)
    eventually("hosts by state", lambda: bot_value("ray_shards_hosts", state="live") == 2
               and bot_value("ray_shards_hosts", state="dead") == 0)
    # The emulator's daily budget is 1000 (EmulatorConfig.session_remaining); the boot spent one per shard.
    eventually("budget", lambda: bot_value("ray_shards_identify_budget_remaining") == 1000 - SHARDS)
    eventually("empty queue", lambda: bot_value("ray_shards_identify_queue_length") == 0
               and bot_value("ray_shards_identify_queue_eta_seconds") == 0)
    eventually("identify waits", lambda: bot_value("ray_shards_identify_wait_seconds_count") == SHARDS)
    def bot_values(name: str) -> list[float]:
        return [float(x.value) for x in _by_tags(bot.scrape().get(name, []), bot=bot_id)]

    # Any series of the bot will do: an age of exactly 0.0 (just checkpointed) is a value, not a missing one.
    eventually("checkpoint size", lambda: any(0 < v < 1_000_000 for v in bot_values("ray_shards_checkpoint_bytes")),
               "ray_shards_checkpoint_bytes")
    eventually("checkpoint age",
               lambda: any(0 <= v < 120 for v in bot_values("ray_shards_checkpoint_age_seconds")),
               "ray_shards_checkpoint_age_seconds")
    eventually("sync on time", lambda: len(lateness := _by_tags(bot.scrape().get(
        "ray_shards_sync_lateness_seconds", []), bot=bot_id)) >= 2 and all(s.value < 10 for s in lateness))


def test_shard_state_gauge_after_shards_move_between_live_hosts(bot: Bot) -> None:
    """A host killed: its shards fail over to the survivor, then rebalance moves some to the replacement.

    Shards that left the survivor (a live host) must not still be `ready` there: across the live hosts
    each shard has exactly one `ready` series, and the Orchestrator counts the moves.
    """
    bot_id = str(bot_id_from_token(bot.token))
    before = {s["shard_id"]: s["host_id"] for s in bot.status()["shards"]}
    moved_before = sum(s.value for s in _by_tags(bot.scrape().get("ray_shards_leases_moved_total", []), bot=bot_id))
    victim = "h0"
    kill = subprocess.run(
        [sys.executable, "-c",
         "import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR');"
         "ray.kill(ray.get_actor(sys.argv[2], namespace='ray_shards'), no_restart=True)",
         bot.head.gcs_address, f"host-{bot_id}-{victim}"],
        env={**bot.env(), "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert kill.returncode == 0, kill.stderr[-2000:]

    def settled() -> bool:
        document = bot.status()
        hosts = {s["host_id"] for s in document["shards"]}
        return document["ready"] == SHARDS and victim not in hosts and len(hosts) == 2

    wait_until(settled, 180, "failover and rebalance onto a replacement host", lambda: str(bot.status())[-2000:],
               interval=1.0)
    after = {s["shard_id"]: s["host_id"] for s in bot.status()["shards"]}
    live = set(after.values())
    survivor = next(h for h in live if h in before.values())
    assert len(live) == 2 and survivor in live

    def ready_series() -> dict[int, list[str]]:
        ready: dict[int, list[str]] = collections.defaultdict(list)
        for s in _by_tags(bot.scrape().get("ray_shards_shard_state", []), bot=bot_id):
            if s.labels["host"] in live and s.value == 2:
                ready[int(s.labels["shard"])].append(s.labels["host"])
        return dict(ready)

    expected = {i: [after[i]] for i in range(SHARDS)}
    wait_until(lambda: ready_series() == expected, 90, "one ready series per shard, on its host",
               lambda: f"{ready_series()} != {expected}", interval=2.0)

    # The per-host counts agree: a live host counts only the shards it runs now.
    def ready_per_host() -> dict[str, float]:
        samples = _by_tags(bot.scrape().get("ray_shards_host_shards", []), bot=bot_id, state="ready")
        return {s.labels["host"]: s.value for s in samples if s.labels["host"] in live}

    runs = {host: float(list(after.values()).count(host)) for host in live}
    wait_until(lambda: ready_per_host() == runs, 90, "each live host counts the shards it runs",
               lambda: f"{ready_per_host()} != {runs}", interval=2.0)
    # Shards that passed through the survivor and left it read -1 there, not 2.
    def through_survivor() -> list[typing.Any]:
        samples = _by_tags(bot.scrape().get("ray_shards_shard_state", []), bot=bot_id, host=survivor)
        return [s for s in samples if after[int(s.labels["shard"])] != survivor]

    wait_until(lambda: bool(through_survivor()), 60,
               "a series on the survivor for a shard that moved on (the scenario happened)")
    wait_until(lambda: all(s.value == -1 for s in through_survivor()), 60, "-1 on the host the shard left",
               lambda: str([(s.labels, s.value) for s in through_survivor()]))

    def moved() -> list[typing.Any]:
        return _by_tags(bot.scrape().get("ray_shards_leases_moved_total", []), bot=bot_id)

    wait_until(lambda: sum(s.value for s in moved()) >= moved_before + SHARDS // 2, 60, "moves counted")
    assert all(set(EXPORTED["ray_shards_leases_moved_total"].tags) <= set(s.labels) for s in moved())
    # Hosts by state: the replacement is live, the dead host is dropped from the table once it owns nothing.
    wait_until(lambda: [s.value for s in _by_tags(bot.scrape().get("ray_shards_hosts", []), bot=bot_id,
                                                  state="live")] == [2.0], 60, "two live hosts again")
