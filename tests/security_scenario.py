"""A whole bot life with a distinctive token on a fresh Ray cluster that has a dashboard.

Run by ``tests/test_security.py`` (not collected by pytest) as::

    python tests/security_scenario.py TOKEN_FILE OUT_JSON TEMP_DIR

The token is read from TOKEN_FILE, which is deleted at once, so it is on no command
line and in no environment. The scenario starts a bot (with a callback), controls it
with a Client, kills a host and the Orchestrator, provokes bad-input errors, starts a
deployment whose callback raises, stops everything, and writes to OUT_JSON what a
leak could hide in: reprs, exception messages and tracebacks, the GCS KV checkpoint,
actor names, Ray's state API (actors, tasks, jobs, workers, nodes) and the emulator's
records. The test then greps that JSON, this process's output and TEMP_DIR (the Ray
session directory with every log file) for the token and its secret part.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import socket
import sys
import time
import traceback
import typing

import hikari
import ray
from ray._common.utils import get_default_ray_temp_dir
from ray.cluster_utils import Cluster
from ray.experimental import internal_kv

from ray_shards import BotDeployment, Client, ShardStatus, examples
from ray_shards.auth import TokenHash, validate_token
from ray_shards.bot import Bot
from ray_shards.connection import NAMESPACE, host_actor_name, orchestrator_name
from ray_shards.emulator import EmulatorConfig, EmulatorThread, make_token, payloads
from ray_shards.host import ShardHost
from ray_shards.timings import Timings

TIMINGS = Timings(identify_window=1.0, recovery_grace=2.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plain(items: typing.Iterable[typing.Any]) -> list[typing.Any]:
    result = []
    for item in items:
        result.append(dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item)
    return typing.cast(list[typing.Any], json.loads(json.dumps(result, default=str)))


def _error(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "str": str(exc),
        "repr": repr(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


async def _expect_error(out: dict[str, typing.Any], name: str, awaitable: typing.Awaitable[typing.Any]) -> None:
    try:
        await awaitable
    except Exception as exc:
        out["errors"][name] = _error(exc)
    else:
        out["errors"][name] = {"type": "no error", "str": "", "repr": "", "traceback": ""}


def _expect_sync_error(out: dict[str, typing.Any], name: str, function: typing.Callable[[], typing.Any]) -> None:
    try:
        function()
    except Exception as exc:
        out["errors"][name] = _error(exc)
    else:
        out["errors"][name] = {"type": "no error", "str": "", "repr": "", "traceback": ""}


async def _wait(predicate: typing.Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


DASHBOARD: list[str] = []  # "http://host:port" of this cluster's dashboard (not whatever runs on 8265)


def _state_api(out: dict[str, typing.Any], key: str) -> None:
    from ray.util import state

    address = DASHBOARD[0]
    snapshot: dict[str, typing.Any] = {}
    calls: dict[str, typing.Callable[[], typing.Any]] = {
        "actors": lambda: state.list_actors(address, detail=True, limit=10_000, raise_on_missing_output=False),
        "tasks": lambda: state.list_tasks(address, detail=True, limit=10_000, raise_on_missing_output=False),
        "jobs": lambda: state.list_jobs(address, detail=True, raise_on_missing_output=False),
        "workers": lambda: state.list_workers(address, detail=True, limit=10_000, raise_on_missing_output=False),
        "nodes": lambda: state.list_nodes(address, detail=True, raise_on_missing_output=False),
        "placement_groups": lambda: state.list_placement_groups(address, detail=True,
                                                                raise_on_missing_output=False),
    }
    for name, call in calls.items():
        deadline = time.monotonic() + 30.0  # the dashboard may still be starting on a loaded machine
        while True:
            try:
                snapshot[name] = _plain(call())
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    snapshot[name] = {"state_api_error": _error(exc)}
                    break
                time.sleep(1.0)
    out[key] = snapshot


def _kv_dump() -> dict[str, dict[str, str]]:
    """Every key and value of the GCS KV namespaces Ray and ray_shards use (values as latin-1 text)."""
    dump: dict[str, dict[str, str]] = {}
    for namespace in (None, NAMESPACE, "fun", "session", "cluster", "dashboard", "job", "jobs", "runtime_env"):
        try:
            keys = internal_kv._internal_kv_list(b"", namespace=namespace)
        except Exception as exc:
            dump[str(namespace)] = {"error": repr(exc)}
            continue
        entries = {}
        for key in keys:
            value = internal_kv._internal_kv_get(key, namespace=namespace) or b""
            entries[key.decode("latin-1")] = value.decode("latin-1")
        dump[str(namespace)] = entries
    return dump


async def scenario(token: str, out: dict[str, typing.Any]) -> None:
    bot_id = int(base64.b64decode(token.split(".")[0] + "==").decode())
    out["bot_id"] = bot_id
    out["errors"] = {}
    emulator = EmulatorThread(
        EmulatorConfig(token=token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0)
    ).start()
    deployment: BotDeployment | None = None
    client: Client | None = None
    try:
        control = emulator.control
        deployment = await BotDeployment.start(
            token,
            callback=examples.echo_bot,
            subprocess_count=2,
            rest_url=emulator.rest_url,
            intents=hikari.Intents.ALL,
            timings=TIMINGS,
        )
        client = Client(token, None, refresh_interval=0.2)
        await client.start()

        def all_ready(exclude: typing.Collection[str] = ()) -> bool:
            assert client is not None
            infos = [s.info for s in client.remote_shards.values()]
            return len(infos) == 4 and all(
                i is not None and i.status is ShardStatus.READY and i.host_id not in exclude for i in infos
            )

        await _wait(all_ready, 30, "4 READY shards")
        local_bot = Bot(None, token, local_shard_count=0, rest_url=emulator.rest_url)
        local_host = ShardHost(bot_id, "hx", 1, emulator.rest_url, TIMINGS)
        out["reprs"] = {
            "deployment": repr(deployment),
            "client": repr(client),
            "link": repr(deployment.link),
            "bot": repr(local_bot),
            "host": repr(local_host),
            "host_handles": [repr(h) for h in deployment.hosts.values()],
            "token_hash": repr(TokenHash.of(token)),
            "remote_shard": repr(client.remote_shards[0]),
            "shard_infos": [repr(s.info) for s in client.remote_shards.values()],
            "str_deployment": str(deployment),
            "str_client": str(client),
        }

        # Control: presence, member request, voice state, a message answered through REST.
        await client.update_presence(status=hikari.Status.IDLE, activity=hikari.Activity(name="leak check"))
        guild = control.guild_ids()[0]
        await client.request_guild_members(guild, query="a", limit=5, nonce="leakcheck")
        await client.update_voice_state(guild, None, self_mute=True)
        author = {"id": "5555", "username": "tester", "discriminator": "0", "avatar": None, "global_name": None}
        message = payloads.message(
            message_id=901 << 22, channel_id=guild + 1, author=author, content="!ping", guild_id=guild
        )
        control.dispatch_to_guild(guild, "MESSAGE_CREATE", message)
        control.wait_until(lambda c: len(c.messages()) >= 1, timeout=30)
        out["status_running"] = json.loads(json.dumps((await client.status()).to_dict(), default=str))
        out["checkpoint_running"] = (
            internal_kv._internal_kv_get(f"checkpoint/{bot_id}".encode(), namespace=NAMESPACE) or b""
        ).decode("latin-1")
        out["kv_running"] = _kv_dump()
        out["named_actors_running"] = ray.util.list_named_actors(all_namespaces=True)

        # A host dies: its shards resume elsewhere.
        victim_id, victim = next(iter(deployment.hosts.items()))
        ray.kill(victim, no_restart=True)
        out["host_kill"] = {"victim": victim_id, "took": await _wait(lambda: all_ready({victim_id}), 60, "failover")}

        # The Orchestrator dies and Ray restarts it from its checkpoint.
        uptime_before = (await client.status()).uptime
        ray.kill(ray.get_actor(orchestrator_name(bot_id), namespace=NAMESPACE), no_restart=False)
        await asyncio.sleep(1.0)
        status = await client.status()
        await _wait(all_ready, 60, "every shard READY after the orchestrator restart")
        out["orchestrator_restart"] = {"uptime_before": uptime_before, "uptime_after": status.uptime,
                                       "presence": dataclasses.asdict(status.presence)}

        # Bad input and a wrong token, while the bot runs.
        other = make_token(bot_id, "WRONGxxSECRETxxLEAKxxCHECKxx0123456789")
        await _expect_error(out, "client_wrong_secret", Client(other, None).start())
        orchestrator = ray.get_actor(orchestrator_name(bot_id), namespace=NAMESPACE)
        await _expect_error(out, "authenticate_wrong_secret", orchestrator.authenticate.remote(other))
        await _expect_error(out, "table_forged_capability", orchestrator.table.remote("forged"))
        _expect_sync_error(out, "token_extra_char", lambda: validate_token(token + "$"))
        _expect_sync_error(out, "token_space", lambda: validate_token(token[:12] + " " + token[12:]))
        _expect_sync_error(out, "token_bad_id", lambda: validate_token("aGVsbG8." + token.split(".", 1)[1]))
        _expect_sync_error(out, "bot_ca_cert", lambda: Bot(None, token, ca_cert=b"x"))
        await _expect_error(out, "nonce_too_long", client.request_guild_members(guild, query="a", nonce="x" * 33))
        await _expect_error(out, "unknown_status", client.update_presence(status=typing.cast(typing.Any, "bogus")))
        await _expect_error(out, "shard_count_zero", BotDeployment.start(token, shard_count=0,
                                                                          rest_url=emulator.rest_url))
        await _expect_error(out, "ftp_rest_url", BotDeployment.start(token, rest_url="ftp://x"))
        await asyncio.sleep(2.5)  # task events reach the GCS about every second
        _state_api(out, "state_running")
        out["named_actors_after_faults"] = ray.util.list_named_actors(all_namespaces=True)
    finally:
        if client is not None:
            await client.close()
        if deployment is not None:
            await deployment.stop()

    # A callback that raises in every host: the deployment must not half-start.
    def failing_setup(bot: Bot) -> None:
        raise RuntimeError(f"setup failed on {bot.host_id}")

    await _expect_error(
        out, "callback_raises",
        BotDeployment.start(token, callback=failing_setup, subprocess_count=2, rest_url=emulator.rest_url,
                            timings=TIMINGS),
    )
    await asyncio.sleep(2.5)
    _state_api(out, "state_stopped")
    out["named_actors_stopped"] = ray.util.list_named_actors(all_namespaces=True)
    out["checkpoint_stopped"] = (
        internal_kv._internal_kv_get(f"checkpoint/{bot_id}".encode(), namespace=NAMESPACE) or b""
    ).decode("latin-1")
    out["kv_stopped"] = _kv_dump()
    out["host_names"] = [host_actor_name(bot_id, h) for h in ("h0", "h1")]
    control = emulator.control
    out["emulator"] = {
        "identify_log": control.identify_log(),
        "resume_log": control.resume_log(),
        "received": control.received(),
        "rest_log": control.rest_log(),
        "messages": control.messages(),
        "sessions": control.sessions(),
        "stats": control.stats(),
    }
    emulator.stop()


def main() -> int:
    token_file, out_file, temp_dir = sys.argv[1:4]
    with open(token_file) as f:
        token = f.read().strip()
    os.unlink(token_file)
    out: dict[str, typing.Any] = {"ok": False}
    # Cluster writes ray_current_cluster into Ray's default temp dir whatever temp_dir says; a fresh machine has none.
    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": True,
            "dashboard_port": _free_port(),
            "dashboard_agent_listen_port": _free_port(),
            "temp_dir": temp_dir,
        },
    )
    try:
        context = ray.init(address=cluster.address, namespace="security_scenario", logging_level="WARNING")
        if not context.dashboard_url:
            raise RuntimeError("the scenario cluster has no dashboard")
        DASHBOARD.append(f"http://{context.dashboard_url}")
        out["dashboard"] = DASHBOARD[0]
        out["session_dir"] = ray._private.worker._global_node.get_session_dir_path()
        asyncio.run(asyncio.wait_for(scenario(token, out), 240))
        out["ok"] = True
    except BaseException as exc:
        out["failure"] = _error(exc)
        raise
    finally:
        ray.shutdown()
        cluster.shutdown()
        with open(out_file, "w") as f:
            json.dump(out, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
