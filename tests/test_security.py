"""Security and bad input: the token leaks nowhere, control needs the token, bad input starts nothing.

The token-grep test runs a whole bot life (tests/security_scenario.py) in a subprocess on a
fresh Ray cluster of its own that has a dashboard (the shared test cluster has none, and a
process can only ``ray.init`` once), then greps that cluster's session directory, the
subprocess's output and everything the scenario collected.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing

import hikari
import psutil
import pytest
import ray
from ray.experimental import internal_kv

from ray_shards import Bot, BotDeployment, Client, ShardStatus, cli, run_server
from ray_shards.auth import TokenHash
from ray_shards.connection import NAMESPACE, OrchestratorNotFoundError, host_actor_name, orchestrator_name
from ray_shards.emulator import make_token
from ray_shards.host import HostCallbackError
from ray_shards.models import CommandKind
from ray_shards.timings import Timings
from tests.conftest import new_token

pytestmark = pytest.mark.timeout(300)

FAST = Timings(identify_window=1.0)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REDACTED = "<redacted>"


def _bot_id(token: str) -> int:
    first = token.split(".", 1)[0]
    return int(base64.b64decode(first + "=" * (-len(first) % 4)))


def _distinctive_token() -> str:
    bot_id = (secrets.randbelow(1 << 30) + (1 << 20)) << 22 | secrets.randbelow(1 << 22)
    return make_token(bot_id, "SECRETxxLEAKxxCHECKxx" + secrets.token_hex(8))


def _needles(token: str) -> dict[str, bytes]:
    """The token and its secret part as they could appear in a file: raw, hex, UTF-16, base64."""
    secret = token.rsplit(".", 1)[1]
    needles = {
        "token": token.encode(),
        "secret": secret.encode(),
        "secret as hex": secret.encode().hex().encode(),
        "secret as UTF-16": secret.encode("utf-16-le"),
    }
    for offset in range(3):  # base64 of a substring depends on its alignment: try all three
        needles[f"secret as base64 (offset {offset})"] = base64.b64encode(secret[offset:].encode())[4:-4]
    return needles


def _grep_tree(root: str, needles: dict[str, bytes]) -> tuple[list[str], int]:
    """Files under ``root`` holding a needle (as "what: path"), and how many files were read."""
    found, seen = [], set()
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.realpath(os.path.join(directory, name))
            if path in seen or not os.path.isfile(path):
                continue
            seen.add(path)
            with open(path, "rb") as f:
                data = f.read()
            found += [f"{what}: {path}" for what, needle in needles.items() if needle in data]
    return found, len(seen)


def _any_file_contains(root: str, text: bytes) -> bool:
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith((".out", ".err", ".log")) and os.path.isfile(path):
                with open(path, "rb") as f:
                    if text in f.read():
                        return True
    return False


def _named(bot_id: int) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and str(bot_id) in a["name"]
    ]


def _checkpoint(bot_id: int) -> bytes | None:
    raw = internal_kv._internal_kv_get(f"checkpoint/{bot_id}".encode(), namespace=NAMESPACE)
    return typing.cast(bytes | None, raw)


async def _assert_nothing_left(bot_id: int, timeout: float = 15.0) -> None:
    """No actor of the bot and no checkpoint (killed actors take a moment to drop their names)."""
    deadline = time.monotonic() + timeout
    while _named(bot_id) or _checkpoint(bot_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: actors {_named(bot_id)}, checkpoint {bool(_checkpoint(bot_id))}")
        await asyncio.sleep(0.2)


async def _wait(predicate: typing.Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def _kill_leftovers(marker: str) -> list[int]:
    """Kill (by pid) processes whose command line names ``marker`` (the scenario cluster's temp dir)."""
    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                proc.kill()
                killed.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


# -- 1. the token leaks nowhere ------------------------------------------------------------------


@pytest.mark.timeout(480)
def test_token_appears_nowhere_after_a_whole_bot_life() -> None:
    token = _distinctive_token()
    wrong_secret = "WRONGxxSECRETxxLEAKxxCHECKxx0123456789"  # the scenario's wrong token (same bot id)
    work = tempfile.mkdtemp(prefix="rs_sec_")  # short: Ray's socket paths live under it
    ray_dir = os.path.join(work, "ray")
    token_file, out_file = os.path.join(work, "token"), os.path.join(work, "out.json")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(token)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    env.pop("DISCORD_TOKEN", None)
    stdout_path, stderr_path = os.path.join(work, "stdout"), os.path.join(work, "stderr")
    try:
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, os.path.join(REPO, "tests", "security_scenario.py"), token_file, out_file, ray_dir],
                cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=400)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        with open(stderr_path, "rb") as f:
            tail = f.read()[-3000:].decode(errors="replace")
        assert rc == 0, f"the scenario failed (rc {rc}):\n{tail}"
        with open(out_file) as f:
            out_text = f.read()
        out = json.loads(out_text)
        assert out["ok"], out.get("failure")
        assert not os.path.exists(token_file)

        # The scenario did what the grep relies on.
        bot_id = out["bot_id"]
        assert out["host_kill"]["took"] < 60
        restart = out["orchestrator_restart"]
        assert restart["uptime_after"] < restart["uptime_before"], "the orchestrator did not restart"
        assert restart["presence"]["status"] == "idle"
        emulator = out["emulator"]
        assert len(emulator["identify_log"]) == 4, "failover or the restart spent identifies"
        assert emulator["resume_log"], "no shard resumed after the host kill"
        assert emulator["messages"], "the echo bot never answered through REST"
        assert any(e["op"] == 8 and e["d"].get("nonce") == "leakcheck" for e in emulator["received"])
        auth_payloads = [e for e in emulator["received"] if e["op"] in (2, 6)]
        assert auth_payloads and all(e["d"]["token"] == _REDACTED for e in auth_payloads)
        for key in ("state_running", "state_stopped"):
            state = out[key]
            assert all(isinstance(v, list) for v in state.values()), f"state API failed: {state}"
            assert len(state["tasks"]) > 20 and len(state["actors"]) >= 3 and state["jobs"]
        assert any(a["class_name"] == "ShardHost" for a in out["state_running"]["actors"])
        assert out["checkpoint_running"] and not out["checkpoint_stopped"]
        assert any(n["name"] == orchestrator_name(bot_id) for n in out["named_actors_running"])
        assert not [n for n in out["named_actors_stopped"] if str(bot_id) in n["name"]]

        errors = out["errors"]
        expected = {
            "client_wrong_secret": ("PermissionError", "does not control this bot"),
            "authenticate_wrong_secret": ("PermissionError", "does not control this bot"),
            "table_forged_capability": ("CapabilityExpiredError", "unknown capability"),
            "token_extra_char": ("ValueError", "malformed"),
            "token_space": ("ValueError", "malformed"),
            "token_bad_id": ("ValueError", "base64 of the bot's id"),
            "bot_ca_cert": ("ValueError", "RAY_USE_TLS"),
            "nonce_too_long": ("ValueError", "32 byte"),
            "unknown_status": ("ValueError", "unknown status"),
            "shard_count_zero": ("ValueError", "shard_count"),
            "ftp_rest_url": ("ValueError", "http://"),
            "callback_raises": ("HostCallbackError", "callback raised in host h"),
        }
        for name, (kind, fragment) in expected.items():
            assert kind in errors[name]["type"], (name, errors[name]["type"])
            assert fragment in errors[name]["str"], (name, errors[name]["str"][-500:])

        # The token hash in the checkpoint is a salted scrypt hash of this very token.
        stored = json.loads(out["checkpoint_running"])["token_hash"]
        assert re.fullmatch(r"[0-9a-f]{32}", stored["salt"]) and re.fullmatch(r"[0-9a-f]{64}", stored["digest"])
        hashed = TokenHash.from_json(stored)
        assert hashed.matches(token) and not hashed.matches(make_token(bot_id, wrong_secret))

        # The grep: the session directory (every Ray log), the scenario's output and what it collected.
        wrong_needles = _needles(make_token(bot_id, wrong_secret))
        needles = {**_needles(token), **{f"wrong {k}": v for k, v in wrong_needles.items()}}
        assert os.path.realpath(out["session_dir"]).startswith(os.path.realpath(ray_dir))
        found, files = _grep_tree(ray_dir, needles)
        assert files > 30, f"only {files} files in the session directory"
        assert _any_file_contains(ray_dir, b"granted by the orchestrator"), "no host log in the session directory"
        for label, path in (("scenario output", out_file), ("stdout", stdout_path), ("stderr", stderr_path)):
            with open(path, "rb") as f:
                data = f.read()
            found += [f"{what}: {label}" for what, needle in needles.items() if needle in data]
        assert not found, "the token leaked:\n" + "\n".join(found)
    finally:
        _kill_leftovers(work)
        shutil.rmtree(work, ignore_errors=True)


def test_the_grep_finds_every_encoding_of_the_secret(tmp_path: typing.Any) -> None:
    """The detector of the test above works: raw, hex, UTF-16 and base64 at any alignment are found."""
    token = _distinctive_token()
    secret = token.rsplit(".", 1)[1]
    encodings = {
        "raw": f"log line {secret} end".encode(),
        "hex": b"\x80\x05" + ("pickle" + secret).encode().hex().encode(),
        "utf16": ("x" + secret).encode("utf-16-le"),
        **{f"b64-{n}": base64.b64encode(("a" * n + secret + "z").encode()) for n in range(3)},
    }
    for name, data in encodings.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "clean").write_bytes(b"nothing here " + token.split(".")[0].encode())
    found, files = _grep_tree(str(tmp_path), _needles(token))
    assert files == len(encodings) + 1
    assert {line.rsplit("/", 1)[1] for line in found} == set(encodings)


# -- 2. control requires the token ----------------------------------------------------------------


async def test_control_requires_the_token_and_bad_requests_send_nothing(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)
    bot_id = _bot_id(token)
    deployment = await BotDeployment.start(token, subprocess_count=1, rest_url=emu.rest_url, timings=FAST)
    try:
        async with Client(token, None, refresh_interval=0.1) as client:
            def snapshot() -> list[tuple[int, str | None, int, ShardStatus]]:
                return [(i.shard_id, i.host_id, i.epoch, i.status) for i in (s.info for s in
                        client.remote_shards.values()) if i is not None]

            await _wait(lambda: [r[3] for r in snapshot()] == [ShardStatus.READY] * 2, 15, "2 READY shards")
            before = snapshot()
            presence_before = (await client.status()).presence
            presences_sent = len(emu.control.received(op=3))
            member_requests_sent = len(emu.control.received(op=8))

            # Same bot id, another secret: refused, with a clear message, for a Client and a Bot alike.
            other = make_token(bot_id, "another-secret-of-27-characters-at-least")
            with pytest.raises(PermissionError, match="permission denied: that token does not control this bot"):
                await Client(other, None).start()
            with pytest.raises(PermissionError, match="does not control this bot"):
                await Bot(None, other, rest_url=emu.rest_url).start()
            handle = ray.get_actor(orchestrator_name(bot_id), namespace=NAMESPACE)
            with pytest.raises(PermissionError, match="does not control this bot"):
                await handle.initialise.remote(other)
            # A caller that never authenticated cannot read or change anything.
            forged = [
                handle.table.remote("forged"),
                handle.status.remote("forged"),
                handle.update_presence.remote("forged", status=hikari.Status.DO_NOT_DISTURB),
                handle.command.remote("forged", CommandKind.RECONNECT, 0, {}),
                handle.register_host.remote("forged", "intruder", node_id=None, want=2),
                handle.claim.remote("forged", "intruder", 2),
                handle.host_handles.remote("forged"),
                handle.shutdown.remote("forged"),
            ]
            for call in forged:
                with pytest.raises(PermissionError, match="unknown capability"):
                    await call
            # A token of another bot finds no orchestrator.
            with pytest.raises(OrchestratorNotFoundError, match="no ray_shards orchestrator runs for bot"):
                await Client(new_token(), None).start()

            await asyncio.sleep(1.0)
            assert snapshot() == before
            assert (await client.status()).presence == presence_before
            assert len(emu.control.received(op=3)) == presences_sent
            hosts = await deployment.link.host_handles()
            assert sorted(_named(bot_id)) == sorted([orchestrator_name(bot_id),
                                                     *(host_actor_name(bot_id, h) for h in hosts)])

            # The checkpoint holds a salted hash of the token, never the token.
            raw = _checkpoint(bot_id)
            assert raw is not None
            for what, needle in _needles(token).items():
                assert needle not in raw, what
            stored = json.loads(raw)["token_hash"]
            assert set(stored) == {"salt", "digest"}
            assert TokenHash.from_json(stored).matches(token)
            assert not TokenHash.from_json(stored).matches(other)

            # Bad requests are refused before anything is sent (the shard gets no op 8 / op 3).
            guild = emu.control.guild_ids()[0]
            bad_requests: list[tuple[typing.Any, type[Exception], str]] = [
                (dict(query="a", users=[1]), ValueError, "limit/query with users"),
                (dict(limit=5, users=[1]), ValueError, "limit/query with users"),
                (dict(query="a", limit=101), ValueError, "between 0 and 100"),
                (dict(query="a", limit=-1), ValueError, "between 0 and 100"),
                (dict(users=[1]), hikari.MissingIntentError, "GUILD_MEMBERS"),  # as hikari: users need it too
                (dict(query="a", nonce="x" * 33), ValueError, "32 byte"),
                (dict(query="a", nonce="é" * 17), ValueError, "32 byte"),  # 17 characters, 34 bytes
                (dict(), hikari.MissingIntentError, "GUILD_MEMBERS"),  # the full list needs GUILD_MEMBERS
                (dict(query="a", include_presences=True), hikari.MissingIntentError, "GUILD_PRESENCES"),
                (dict(users="123"), TypeError, "users must be a sequence"),
                (dict(query="a", limit=True), TypeError, "limit must be an int"),
            ]
            for kwargs, error, message in bad_requests:
                with pytest.raises(error, match=re.escape(message)):
                    await client.request_guild_members(guild, **kwargs)
            for bad_guild in (-1, 0, 1.5, "not a snowflake", True, 1 << 64):
                with pytest.raises((TypeError, ValueError), match="guild must be a snowflake"):
                    await client.request_guild_members(bad_guild, query="a")
            with pytest.raises(ValueError, match="unknown status"):
                await client.update_presence(status=typing.cast(typing.Any, "bogus"))
            with pytest.raises(ValueError, match="unknown activity type"):
                await client.update_presence(activity=hikari.Activity(name="x", type=99))
            with pytest.raises(TypeError, match="self_mute must be a bool"):
                await client.update_voice_state(guild, None, self_mute=typing.cast(typing.Any, "yes"))
            await asyncio.sleep(0.5)
            assert len(emu.control.received(op=8)) == member_requests_sent
            assert emu.control.received(op=4) == []
            assert len(emu.control.received(op=3)) == presences_sent
            # ... while a valid request does reach the guild's shard.
            await client.request_guild_members(guild, query="a", limit=5, nonce="x" * 32)
            assert [p["d"]["nonce"] for p in emu.control.received(op=8)][member_requests_sent:] == ["x" * 32]
    finally:
        await deployment.stop()
    await _assert_nothing_left(bot_id)


# -- 3. bad input gets a clear error and starts nothing -------------------------------------------


def _token_with_first_segment(first: str) -> str:
    return first + "." + new_token().split(".", 1)[1]


def _deploy(**kwargs: typing.Any) -> typing.Callable[[str, str], typing.Any]:
    return lambda token, rest_url: BotDeployment.start(token, **{"rest_url": rest_url, **kwargs})


def _bot(**kwargs: typing.Any) -> typing.Callable[[str, str], typing.Any]:
    return lambda token, rest_url: Bot(None, token, **{"rest_url": rest_url, **kwargs})


_B64_HELLO = base64.b64encode(b"hello").decode().rstrip("=")
_B64_NEGATIVE = base64.b64encode(b"-42").decode().rstrip("=")
_B64_HUGE = base64.b64encode(str(1 << 64).encode()).decode().rstrip("=")

# (id, call(token, rest_url) -> awaitable or None, error, message)
BAD_STARTS: list[tuple[str, typing.Callable[[str, str], typing.Any], type[Exception], str]] = [
    ("malformed token", lambda t, u: BotDeployment.start("not-a-token", rest_url=u), ValueError,
     "the bot token is malformed: a Discord bot token has three dot-separated base64 parts"),
    ("empty token", lambda t, u: BotDeployment.start("   ", rest_url=u), ValueError, "no bot token given"),
    ("token not a str", lambda t, u: BotDeployment.start(t.encode(), rest_url=u), TypeError,
     "the bot token must be a str, not bytes"),
    ("first segment not a number", lambda t, u: BotDeployment.start(_token_with_first_segment(_B64_HELLO),
                                                                      rest_url=u),
     ValueError, "its first part must be the base64 of the bot's id"),
    ("first segment negative", lambda t, u: BotDeployment.start(_token_with_first_segment(_B64_NEGATIVE),
                                                                  rest_url=u),
     ValueError, "its first part must be the base64 of the bot's id"),
    ("first segment over 64 bits", lambda t, u: BotDeployment.start(_token_with_first_segment(_B64_HUGE),
                                                                      rest_url=u),
     ValueError, "its first part must be the base64 of the bot's id"),
    *[
        (f"shard_count {v!r}", _deploy(shard_count=v),
         ValueError, f"shard_count must be a whole number of at least 1, not {v!r}")
        for v in (0, -1, "4", True, 2.0)
    ],
    *[
        (f"subprocess_count {v!r}", _deploy(subprocess_count=v),
         ValueError, f"subprocess_count must be a whole number of at least 1, not {v!r}")
        for v in (0, -1, "2", True)
    ],
    ("intents with unknown bits", lambda t, u: BotDeployment.start(t, intents=1 << 40, rest_url=u), ValueError,
     "bits Discord does not define"),
    ("intents as names", lambda t, u: BotDeployment.start(t, intents="GUILDS", rest_url=u), TypeError,
     "intents must be a hikari.Intents or an int"),
    ("ftp rest_url", lambda t, u: BotDeployment.start(t, rest_url="ftp://x"), ValueError,
     "rest_url must be an http:// or https:// URL"),
    ("rest_url without scheme", lambda t, u: BotDeployment.start(t, rest_url="discord.com"), ValueError,
     "rest_url must be an http:// or https:// URL"),
    ("rest_url with credentials", lambda t, u: BotDeployment.start(t, rest_url="https://me:pw@discord.com/api"),
     ValueError, "rest_url must not contain credentials"),
    ("callback not callable", lambda t, u: BotDeployment.start(t, callback=42, rest_url=u), TypeError,
     "callback must be callable, not int"),
    ("run_server ca_cert", lambda t, u: run_server(t, None, ca_cert=b"pem", rest_url=u), ValueError,
     "TLS is Ray's own. Set RAY_USE_TLS=1"),
    ("run_server private_key", lambda t, u: run_server(t, None, private_key=b"pem", rest_url=u), ValueError,
     "TLS is Ray's own. Set RAY_USE_TLS=1"),
    ("Client ca_cert", lambda t, u: Client(t, None, ca_cert=b"pem"), ValueError, "TLS is Ray's. Set RAY_USE_TLS=1"),
    ("Bot ca_cert", lambda t, u: Bot(None, t, ca_cert=b"pem"), ValueError, "TLS is Ray's. Set RAY_USE_TLS=1"),
    ("Bot rest_url", lambda t, u: Bot(None, t, rest_url="ftp://x"), ValueError, "http:// or https://"),
    ("Bot malformed token", lambda t, u: Bot(None, "x.y"), ValueError, "malformed"),
    *[
        (f"Bot local_shard_count {v!r}", _bot(local_shard_count=v),
         ValueError, "local_shard_count must be a whole number of shards (0 or more)")
        for v in (-1, 1.5, "2", True, None)
    ],
    ("Bot global_shard_count 0", lambda t, u: Bot(None, t, global_shard_count=0, rest_url=u), ValueError,
     "global_shard_count must be at least 1"),
]


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in BAD_STARTS], ids=[c[0] for c in BAD_STARTS])
async def test_bad_input_is_refused_clearly_and_starts_nothing(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str, call: typing.Any, error: type[Exception],
    message: str,
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2)
    names_before = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    with pytest.raises(error, match=re.escape(message)) as info:
        result = call(token, emu.rest_url)
        if asyncio.iscoroutine(result):
            await result
    for what, needle in _needles(token).items():
        assert needle.decode("latin-1") not in str(info.value), f"the message echoes the {what}"
    new = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)} - names_before
    assert not [n for n in new if n.startswith(("orchestrator-", "host-"))], new
    assert _named(_bot_id(token)) == []
    assert _checkpoint(_bot_id(token)) is None
    assert emu.control.rest_log() == [], "Discord was asked for /gateway/bot"
    assert emu.control.identify_log() == []


async def test_bot_may_run_no_local_shard(token: str) -> None:
    """``local_shard_count=0`` is valid (an observer / command sender, as hikari-orchestrator's range(0))."""
    bot = Bot(None, token, local_shard_count=0, rest_url="http://127.0.0.1:9/api/v10")
    assert token not in repr(bot) and "local_shards=[]" in repr(bot)


async def test_sharding_required_fails_fast_without_a_retry_storm(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    """Discord closes 4011 when shards would hold too many guilds: the start fails once per shard, clearly."""
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=6, max_guilds_per_shard=2, identify_window_s=1.0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"4011 \(Sharding required") as info:
        await BotDeployment.start(token, shard_count=2, subprocess_count=1, rest_url=emu.rest_url, timings=FAST)
    print(f"4011: BotDeployment.start failed after {time.monotonic() - started:.1f} s: {str(info.value)[-200:]}")
    await _assert_nothing_left(_bot_id(token))
    attempts = emu.control.stats()["identify_attempts"]
    await asyncio.sleep(3.0)
    assert emu.control.stats()["identify_attempts"] == attempts, "shards kept identifying after 4011"
    assert 1 <= attempts <= 2, f"{attempts} IDENTIFY attempts for 2 shards"
    assert not [c for c in emu.control.stats()["closes"] if c["code"] not in (4011, 1000, 1001, 1006)]


async def test_callback_raising_in_every_host_starts_no_shard_and_leaves_nothing(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)

    def setup(bot: Bot) -> None:  # nested: cloudpickle ships it by value
        raise RuntimeError(f"broken setup on {bot.host_id}")

    with pytest.raises(HostCallbackError, match=r"the callback raised in host h[01]: RuntimeError: broken setup"):
        await BotDeployment.start(token, callback=setup, subprocess_count=2, rest_url=emu.rest_url, timings=FAST)
    await _assert_nothing_left(_bot_id(token))
    assert emu.control.identify_log() == []
    assert emu.control.stats()["connections"] == 0


async def test_callback_raising_in_one_host_stops_the_others(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)

    def setup(bot: Bot) -> None:
        if bot.host_id == "h1":
            raise RuntimeError("only h1 is broken")

    with pytest.raises(HostCallbackError, match="the callback raised in host h1: RuntimeError: only h1 is broken"):
        await BotDeployment.start(token, callback=setup, subprocess_count=2, rest_url=emu.rest_url, timings=FAST)
    await _assert_nothing_left(_bot_id(token))
    emu.control.wait_until(lambda c: all(v == 0 for v in c.stats()["connected"].values()), timeout=15)
    # h0 may have identified its shard before h1 failed (the hosts start in parallel): reported, not hidden.
    print(f"identifies spent by a deployment that failed to start: {len(emu.control.identify_log())}")
    assert len(emu.control.identify_log()) <= 1


# -- the command line ---------------------------------------------------------------------------------


def test_cli_refuses_unknown_intents_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], token: str
) -> None:
    import ray_shards.launch

    def never(*args: typing.Any, **kwargs: typing.Any) -> None:
        raise AssertionError("the bot was started")

    monkeypatch.setattr(ray_shards.launch, "run_subprocesses", never)
    monkeypatch.setattr(ray_shards.launch, "run_server", never)
    monkeypatch.setenv("DISCORD_TOKEN", token)
    monkeypatch.delenv("RAY_SHARDS_INTENTS", raising=False)
    assert cli.main(["run", "--intents", "GUILDS|bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown intent 'bogus'; valid names: ALL," in err and "GUILD_MESSAGES" in err
    assert cli.main(["server", "--intents", "-1"]) == 2
    assert "unknown intent '-1'" in capsys.readouterr().err
    monkeypatch.setenv("RAY_SHARDS_INTENTS", "GUILDS|nonsense")
    assert cli.main(["run"]) == 1  # a bad setting from the environment is a failure, not a command-line usage error
    assert "unknown intent 'nonsense'" in capsys.readouterr().err
    monkeypatch.delenv("RAY_SHARDS_INTENTS")
    # A malformed DISCORD_TOKEN is refused without echoing it.
    monkeypatch.setenv("DISCORD_TOKEN", "Bot " + token.replace(".", "!"))
    assert cli.main(["status"]) == 1  # from the environment, not the command line: a failure
    err = capsys.readouterr().err
    assert "the bot token is malformed" in err and token.rsplit(".", 1)[1] not in err


def test_cli_refuses_zero_counts(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    import ray_shards.launch

    calls: list[dict[str, typing.Any]] = []
    monkeypatch.setattr(ray_shards.launch, "run_subprocesses", lambda *a, **k: calls.append(k))
    monkeypatch.setenv("DISCORD_TOKEN", token)
    assert cli.main(["run", "--shard-count", "0"]) == 2
    assert cli.main(["run", "--hosts", "0"]) == 2
    assert calls == []


@pytest.mark.timeout(120)
def test_cli_with_an_unreachable_address_fails_fast_and_clearly(token: str) -> None:
    env = {**os.environ, "DISCORD_TOKEN": token, "RAY_AUTH_MODE": "disabled"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_shards", "status", "--address", "127.0.0.1:1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        took = time.monotonic() - started
        raise AssertionError(f"`ray-shards status --address 127.0.0.1:1` still runs after {took:.0f} s") from None
    assert proc.returncode == 1  # a failure, not a usage error (Ray CLI conventions)
    assert b"cannot reach a Ray cluster at '127.0.0.1:1'" in err
    assert token.rsplit(".", 1)[1].encode() not in err
