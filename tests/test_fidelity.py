"""A ray_shards `Bot` behaves as hikari and hikari-orchestrator users expect (issue 14).

Each test drives real parts: a real Ray cluster, real hikari, and the bundled Discord
emulator over real sockets. Where ray_shards differs from hikari on purpose, the test
pins the chosen behaviour down (the README's comparison section explains each one).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing
import warnings

import hikari
import pytest
import ray

from ray_shards import Bot, BotDeployment, Client, HostSetup
from ray_shards.errors import ShardFailedError
from ray_shards.launch import start_orchestrator
from ray_shards.models import ShardStatus
from ray_shards.timings import Timings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)

FAST = Timings(identify_window=1.0)
MEMBERS = hikari.Intents.ALL_UNPRIVILEGED | hikari.Intents.GUILD_MEMBERS


def _identify_payload(emu: typing.Any, shard_id: int) -> dict[str, typing.Any]:
    """The last IDENTIFY the emulator received for ``shard_id``."""
    identifies = [e["d"] for e in emu.control.received(op=2) if e["d"]["shard"][0] == shard_id]
    assert identifies, f"no IDENTIFY for shard {shard_id}"
    return typing.cast(dict[str, typing.Any], identifies[-1])


async def _stop_orchestrator(link: typing.Any) -> None:
    try:
        await asyncio.wait_for(link.shutdown(retry_for=3.0), 20)
    finally:
        ray.kill(link.handle, no_restart=True)


# -- options of hikari.GatewayBot.run / start ------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"shard_ids": [0]}, TypeError, "must be passed with 'shard_count'"),
        ({"shard_ids": [0], "shard_count": 2}, ValueError, "Orchestrator chooses which shards"),
        ({"ignore_session_start_limit": True}, ValueError, "daily session_start_limit"),
        ({"startup_window_delay": 3}, ValueError, "at least 5 seconds"),
        ({"startup_window_delay": 10}, ValueError, "Timings\\(identify_window"),
        ({"large_threshold": 10}, ValueError, "from 50 to 250"),
        ({"shard_count": 0}, ValueError, "at least 1"),
    ],
)
async def test_start_refuses_what_it_cannot_honour_and_says_why(
    token: str, options: dict[str, typing.Any], error: type[Exception], match: str
) -> None:
    bot = Bot(None, token)
    with pytest.raises(error, match=match):
        await bot.start(**options)
    with pytest.raises(error, match=match):
        bot.run(**options)
    assert not bot.is_alive


def test_run_and_start_take_every_gatewaybot_option() -> None:
    """No hikari.GatewayBot.run/start option raises TypeError: each is honoured or refused with a reason."""
    import inspect

    for name in ("run", "start"):
        ours = set(inspect.signature(getattr(Bot, name)).parameters) - {"self"}
        theirs = set(inspect.signature(getattr(hikari.GatewayBot, name)).parameters) - {"self"}
        assert theirs <= ours, f"Bot.{name} lacks {sorted(theirs - ours)}"


async def test_start_options_reach_discord(ray_cluster: typing.Any, emulator_factory: typing.Any, token: str) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST, shard_count=2)
    bot = Bot(None, token, rest_url=emu.rest_url, local_shard_count=2)
    try:
        with pytest.raises(ValueError, match="runs 2 shards"):
            await bot.start(shard_count=3)
        assert not bot.is_alive
        await bot.start(
            status=hikari.Status.IDLE,
            activity=hikari.Activity(name="fidelity", type=hikari.ActivityType.WATCHING),
            afk=True,
            large_threshold=100,
            shard_count=2,
        )
        for shard_id in (0, 1):
            identify = _identify_payload(emu, shard_id)
            assert identify["large_threshold"] == 100
            presence = identify["presence"]
            assert presence["status"] == "idle" and presence["afk"] is True
            assert presence["game"]["name"] == "fidelity"  # hikari sends the activity as "game"
    finally:
        if bot.is_alive:
            await bot.close(hand_over=False)
        await _stop_orchestrator(link)


async def test_run_options_close_loop_executor_debug_and_tracking(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=1, max_concurrency=1, guilds=2, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    bot = Bot(None, token, rest_url=emu.rest_url, executor=executor)
    seen: dict[str, typing.Any] = {}

    @bot.listen(hikari.StartedEvent)
    async def on_started(event: hikari.StartedEvent) -> None:
        loop = asyncio.get_running_loop()
        seen["loop"] = loop
        seen["debug"] = loop.get_debug()
        seen["depth"] = sys.get_coroutine_origin_tracking_depth()
        loop.call_later(0.2, lambda: asyncio.ensure_future(bot.close()))

    def run(**options: typing.Any) -> None:
        bot.run(**options)
        try:
            seen["after"] = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # close_loop=True unset the thread's loop
            seen["after"] = None

    async def run_in_thread(**options: typing.Any) -> None:
        # enable_signal_handlers=True off the main thread: skipped without error, as in hikari.
        thread = threading.Thread(target=run, kwargs={"enable_signal_handlers": True, **options}, daemon=True)
        thread.start()
        await asyncio.to_thread(thread.join, 90)
        assert not thread.is_alive(), "run() did not return after close()"

    try:
        await run_in_thread(close_loop=False, close_passed_executor=True, coroutine_tracking_depth=3)
        assert seen["debug"] is False and seen["depth"] == 3
        assert seen["after"] is seen["loop"] and not seen["loop"].is_closed(), "close_loop=False closed the loop"
        with pytest.raises(RuntimeError):
            executor.submit(print)  # close_passed_executor=True shut it down
        seen["loop"].close()
        # Run again: asyncio_debug=True, and the default close_loop=True closes the loop it ran on.
        await run_in_thread(asyncio_debug=True)
        assert seen["debug"] is True
        assert seen["loop"].is_closed() and seen["after"] is None
    finally:
        if "loop" in seen and not seen["loop"].is_closed():
            seen["loop"].close()
        executor.shutdown(wait=False)
        await _stop_orchestrator(link)


# -- Bot(address, token, intents=None) ---------------------------------------------------------------


async def test_standalone_bot_takes_the_orchestrators_intents_for_its_event_manager(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=1, max_concurrency=1, guilds=3, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST, intents=MEMBERS)
    bot = Bot(None, token, rest_url=emu.rest_url)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            @bot.listen(hikari.MemberCreateEvent)
            async def on_member(event: hikari.MemberCreateEvent) -> None:
                pass

            @bot.listen(hikari.PresenceUpdateEvent)
            async def on_presence(event: hikari.PresenceUpdateEvent) -> None:
                pass

        assert not [w for w in caught if issubclass(w.category, hikari.errors.MissingIntentWarning)], (
            "listen() warned before the bot knew its intents"
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await bot.start()
        missing = [str(w.message) for w in caught if issubclass(w.category, hikari.errors.MissingIntentWarning)]
        assert len(missing) == 1 and "PresenceUpdateEvent" in missing[0], missing
        assert bot.intents == MEMBERS
        assert bot.event_manager._intents == MEMBERS  # what hikari's member chunking reads
        # GUILD_MEMBERS without GUILD_PRESENCES: hikari chunks every guild on GUILD_CREATE (op 8).
        await wait_for(lambda: len(emu.control.received(0, op=8)) >= 3, 30, "member chunk requests")
    finally:
        if bot.is_alive:
            await bot.close(hand_over=False)
        await _stop_orchestrator(link)


# -- the undocumented differences, decided ---------------------------------------------------------


async def test_latency_user_id_and_close_codes_across_two_bots(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0,
                           heartbeat_interval_ms=500)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST, shard_count=2)
    bots = [Bot(None, token, rest_url=emu.rest_url, local_shard_count=1) for _ in range(2)]
    try:
        await asyncio.gather(*(bot.start() for bot in bots))
        first = bots[0]
        (local_id,) = first.local_shards
        remote_id = 1 - local_id
        await wait_for(
            lambda: remote_id in first.shards
            and not math.isnan(first.shards[remote_id].heartbeat_latency)
            and not math.isnan(first.shards[local_id].heartbeat_latency),
            30,
            "both shards' latencies",
        )
        # heartbeat_latency: the mean over the whole bot, as hikari's is over all its shards.
        latencies = first.heartbeat_latencies
        assert set(latencies) == {0, 1}
        assert first.heartbeat_latency == pytest.approx(sum(latencies.values()) / 2)
        # RemoteShard.get_user_id: the bot's user id, as on a local shard.
        assert first.shards[remote_id].get_user_id() == first.shards[local_id].get_user_id() == first.bot_id
        # close(): hands over with 3000 (resumable), so the other bot RESUMEs; close(hand_over=False) sends 1001.
        await bots[1].close()
        await wait_for(
            lambda: len(first.local_shards) == 2 and all(s.is_connected for s in first.local_shards.values()),
            60,
            "the other bot to take the shard over and RESUME it",
        )
        await first.close(hand_over=False)
        closes = [(c["shard_id"], c["code"]) for c in emu.control.stats()["closes"] if c["by"] == "client"]
        assert (remote_id, 3000) in closes, closes
        assert {(0, 1001), (1, 1001)} <= set(closes), closes
        assert len(emu.control.identify_log()) == 2, "the hand-over re-identified"
    finally:
        for bot in bots:
            if bot.is_alive:
                await bot.close(hand_over=False)
        await _stop_orchestrator(link)


async def test_join_raises_when_a_shard_fails_for_good(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST, shard_count=2)
    bot = Bot(None, token, rest_url=emu.rest_url, local_shard_count=2)
    try:
        await bot.start()
        emu.control.close(1, code=4014)  # disallowed intents: Discord says never retry
        with pytest.raises(ShardFailedError, match="shard 1 failed for good") as info:
            await asyncio.wait_for(bot.join(), 30)
        assert info.value.shard_id == 1
        # The bot keeps its other shard (the Orchestrator records the failure); join waits on.
        assert bot.is_alive and list(bot.local_shards) == [0]
        joined = asyncio.ensure_future(bot.join())
        await asyncio.sleep(1.0)
        assert not joined.done()
        await bot.close(hand_over=False)
        await asyncio.wait_for(joined, 10)
        async with Client(token, None) as client:
            info_1 = client.remote_shards[1].info
            assert info_1 is not None and info_1.status is ShardStatus.FAILED
    finally:
        if bot.is_alive:
            await bot.close(hand_over=False)
        await _stop_orchestrator(link)


# -- Ctrl-C ------------------------------------------------------------------------------------------

_RUN_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import ray
    from ray_shards import Bot
    logging.basicConfig(level=logging.INFO)
    address, token, rest_url, shards, propagate = sys.argv[1:6]
    ray.init(address=address, namespace="ray_shards_tests", logging_level="WARNING", log_to_driver=False)
    bot = Bot(None, token, rest_url=rest_url, local_shard_count=int(shards))
    print("READY", flush=True)
    bot.run(propagate_interrupts=propagate == "1")
    print("RUN RETURNED", flush=True)
    """
)


class _BotProcess:
    def __init__(self, address: str, token: str, rest_url: str, shards: int, *, propagate: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_SCRIPT, address, token, rest_url, str(shards), "1" if propagate else "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded by the test's timeout
        assert line.strip() == "READY", line

    def interrupt_and_wait(self, limit: float) -> tuple[int, float, str, str]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"Ctrl-C did not stop the bot within {limit} s:\n{err[-3000:]}") from None
        return self.proc.returncode, time.monotonic() - started, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


async def test_ctrl_c_while_registering_stops_promptly(ray_cluster: typing.Any, token: str) -> None:
    # No Orchestrator runs for this token: the bot waits for one to appear (up to 30 s) while it registers.
    bot = _BotProcess(ray_cluster.address, token, "http://127.0.0.1:9/api/v10", 1)
    try:
        await asyncio.sleep(2.0)
        code, took, out, err = await asyncio.to_thread(bot.interrupt_and_wait, 15.0)
        assert code == 0, err[-3000:]
        assert "RUN RETURNED" in out and "Traceback" not in err, err[-3000:]
        print(f"stopped {took:.1f} s after Ctrl-C while registering")
    finally:
        bot.kill()


async def test_ctrl_c_during_boot_stops_cleanly_and_gives_the_shards_back(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    # One IDENTIFY every 60 s: the second shard is still waiting for its turn when Ctrl-C comes.
    emu = emulator_factory(token, shards=2, max_concurrency=1, guilds=4, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=Timings(identify_window=60.0))
    bot = _BotProcess(ray_cluster.address, token, emu.rest_url, 2)
    try:
        await wait_for(lambda: len(emu.control.identify_log()) == 1, 60, "the first IDENTIFY")
        code, took, out, err = await asyncio.to_thread(bot.interrupt_and_wait, 30.0)
        assert code == 0, err[-3000:]
        assert "RUN RETURNED" in out and "Traceback" not in err, err[-3000:]
        assert "ComponentStateConflictError" not in err
        print(f"stopped {took:.1f} s after Ctrl-C during boot")
        async with Client(token, None) as client:
            await wait_for(
                lambda: len(client.remote_shards) == 2
                and all(s.info is not None and s.info.host_id is None for s in client.remote_shards.values()),
                30,
                "both shards given back to the Orchestrator",
            )
    finally:
        bot.kill()
        await _stop_orchestrator(link)


async def test_ctrl_c_while_running_closes_and_can_propagate(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=1, max_concurrency=1, guilds=2, identify_window_s=1.0)
    link = await start_orchestrator(token, None, rest_url=emu.rest_url, timings=FAST)
    bot = _BotProcess(ray_cluster.address, token, emu.rest_url, 1, propagate=True)
    try:
        await wait_for(lambda: emu.control.stats()["connected"].get(0, 0) == 1, 60, "the shard to connect")
        code, _, out, err = await asyncio.to_thread(bot.interrupt_and_wait, 30.0)
        # propagate_interrupts=True: hikari.errors.HikariInterrupt is raised once the bot has closed.
        assert code != 0 and "HikariInterrupt" in err, err[-3000:]
        assert "RUN RETURNED" not in out
        assert "host" in err and "closed" in err, err[-3000:]
    finally:
        bot.kill()
        await _stop_orchestrator(link)


# -- launcher settings reach the hosts' bots ---------------------------------------------------------


def test_host_setup_checks_and_builds_bot_options() -> None:
    calls: list[str] = []
    setup = HostSetup(
        callback=lambda bot: calls.append("callback"),
        cache_settings=hikari.impl.CacheSettings(components=hikari.api.CacheComponents.NONE),
        large_threshold=100,
        settings_factory=lambda: calls.append("factory") or {"auto_chunk_members": False},
    )
    # What the launchers send to the hosts (and what `ray-shards run --entrypoint mod:setup` loads).
    restored = ray.cloudpickle.loads(ray.cloudpickle.dumps(setup))
    options = restored.bot_options()
    assert options["auto_chunk_members"] is False
    assert options["cache_settings"].components == hikari.api.CacheComponents.NONE
    assert restored.large_threshold == 100
    # hikari's HTTPSettings holds an SSLContext (not picklable): it travels as the ssl=True/False it came from.
    unverified = HostSetup(http_settings=hikari.impl.HTTPSettings(ssl=False))
    import ssl

    assert ray.cloudpickle.loads(ray.cloudpickle.dumps(unverified)).http_settings.ssl.verify_mode == ssl.CERT_NONE
    setup.bot_options()
    setup(object())
    assert calls == ["factory", "callback"]
    with pytest.raises(ValueError, match="from 50 to 250"):
        HostSetup(large_threshold=7)
    with pytest.raises(TypeError, match=r"hikari\.impl\.HTTPSettings"):
        HostSetup(http_settings=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot set intents"):
        HostSetup(settings_factory=lambda: {"intents": 1}).bot_options()


async def test_launcher_settings_reach_every_hosts_bot(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str
) -> None:
    emu = emulator_factory(token, shards=2, max_concurrency=2, guilds=4, identify_window_s=1.0)

    def settings_factory() -> dict[str, typing.Any]:
        # Runs in each host: an executor cannot be pickled, and logging is configured per process.
        import concurrent.futures
        import logging

        logging.getLogger("fidelity").setLevel(logging.DEBUG)
        return {"executor": concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="fidelity")}

    channel = emu.control.guild_ids()[0] + 1  # a channel the emulator knows

    def callback(bot: typing.Any) -> None:
        import logging

        import hikari

        @bot.listen(hikari.StartedEvent)
        async def report(event: hikari.StartedEvent) -> None:
            await bot.rest.create_message(
                channel,
                f"executor={type(bot.executor).__name__} cache={int(bot.cache.settings.components)} "
                f"timeout={bot.http_settings.timeouts.total} proxy={bot.proxy_settings.headers.get('X-Fidelity')} "
                f"log={logging.getLogger('fidelity').level}",
            )

    deployment = await BotDeployment.start(
        token,
        subprocess_count=2,
        rest_url=emu.rest_url,
        callback=callback,
        timings=FAST,
        cache_settings=hikari.impl.CacheSettings(components=hikari.api.CacheComponents.GUILDS),
        http_settings=hikari.impl.HTTPSettings(timeouts=hikari.impl.HTTPTimeoutSettings(total=77.0)),
        proxy_settings=hikari.impl.ProxySettings(headers={"X-Fidelity": "yes"}),
        large_threshold=120,
        settings_factory=settings_factory,
    )
    try:
        emu.control.wait_until(lambda c: len(c.messages()) >= 2, timeout=30)
        reports = {m["content"] for m in emu.control.messages()}
        expected = (
            f"executor=ThreadPoolExecutor cache={int(hikari.api.CacheComponents.GUILDS)} timeout=77.0 proxy=yes log=10"
        )
        assert reports == {expected}, reports
        for shard_id in (0, 1):
            assert _identify_payload(emu, shard_id)["large_threshold"] == 120
    finally:
        await deployment.stop()
    with pytest.raises(TypeError, match="not both"):
        await BotDeployment.start(token, callback=HostSetup(), large_threshold=100, subprocess_count=1)


def test_ray_shards_run_entrypoint_can_be_a_host_setup(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ray-shards run --entrypoint mod:setup`` (and so cluster.yaml jobs) takes the hosts' settings as a HostSetup."""
    from ray_shards import cli

    (tmp_path / "fidelity_entry.py").write_text(
        "import hikari\n"
        "import ray_shards\n"
        "def configure(bot):\n"
        "    bot.configured = True\n"
        "setup = ray_shards.HostSetup(callback=configure, large_threshold=75,\n"
        "    cache_settings=hikari.impl.CacheSettings(components=hikari.api.CacheComponents.GUILDS))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = cli._load_callback("fidelity_entry:setup")
    assert isinstance(loaded, HostSetup) and loaded.large_threshold == 75
    assert loaded.bot_options()["cache_settings"].components == hikari.api.CacheComponents.GUILDS
