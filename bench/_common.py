"""Shared helpers of the benchmarks: a private local Ray cluster, the emulator, machine facts, JSON output.

Every benchmark prints exactly one JSON object on stdout. While it runs, file
descriptor 1 is pointed at stderr, so Ray, hikari and subprocess chatter can
never corrupt that object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import typing

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import hikari
import ray

from ray_shards.connection import NAMESPACE
from ray_shards.identify import WINDOW_FROM_MODES, WindowFrom

if typing.TYPE_CHECKING:
    from ray_shards.emulator import EmulatorThread

LOGGER = logging.getLogger("bench")


# -- machine and load ------------------------------------------------------------------------------


def machine() -> dict[str, typing.Any]:
    """nproc, RAM, versions and the load right now."""
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(total_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "hikari": hikari.__version__,
        "kernel": platform.release(),
    }


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """Samples the 1-minute load average every few seconds while a benchmark runs."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, typing.Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        samples = self.samples or [round(os.getloadavg()[0], 2)]
        return {"load1_min": min(samples), "load1_max": max(samples), "load1_mean": round(statistics.mean(samples), 2)}


# -- statistics ------------------------------------------------------------------------------------


def percentile(values: typing.Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: typing.Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, float]:
    """n, median, p90, p99, max, min of ``values`` multiplied by ``scale``."""
    scaled = [v * scale for v in values]
    return {
        "n": len(scaled),
        "median": round(percentile(scaled, 0.5), digits),
        "p90": round(percentile(scaled, 0.9), digits),
        "p99": round(percentile(scaled, 0.99), digits),
        "max": round(max(scaled), digits) if scaled else float("nan"),
        "min": round(min(scaled), digits) if scaled else float("nan"),
    }


# -- tokens, emulator, Ray -------------------------------------------------------------------------


def new_token() -> str:
    """A fresh emulator-valid token for a bot of its own (so runs never share an Orchestrator)."""
    from ray_shards.emulator import make_token

    bot_id = (random.randrange(1 << 20, 1 << 30) << 22) | random.randrange(1 << 22)
    return make_token(bot_id)


@contextlib.contextmanager
def emulator(token: str, **overrides: typing.Any) -> typing.Iterator[EmulatorThread]:
    """An in-process emulator thread, stopped on exit."""
    from ray_shards.emulator import EmulatorConfig, EmulatorThread

    emu = EmulatorThread(EmulatorConfig(token=token, **overrides)).start()
    try:
        yield emu
    finally:
        emu.stop()


@contextlib.contextmanager
def local_ray(**system_config: typing.Any) -> typing.Iterator[str]:
    """A new local Ray cluster of this process only (own temp dir, no dashboard), shut down on exit.

    Never ``ray stop``: other people's clusters run on this machine.
    """
    temp_dir = tempfile.mkdtemp(prefix="rsbench_")
    kwargs: dict[str, typing.Any] = {
        "address": "local",
        "include_dashboard": False,
        "_temp_dir": temp_dir,
        "logging_level": logging.WARNING,
        "log_to_driver": bool(os.environ.get("BENCH_VERBOSE")),
        "namespace": "ray_shards_bench",
    }
    if system_config:
        kwargs["_system_config"] = system_config
    started = time.monotonic()
    ray.init(**kwargs)
    LOGGER.info("local Ray cluster up in %.1f s (temp dir %s)", time.monotonic() - started, temp_dir)
    try:
        yield temp_dir
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def own_ray_processes(title: str) -> list[typing.Any]:
    """Processes of *this* benchmark's Ray cluster whose title starts with ``title`` (e.g. ``ray::Orchestrator``)."""
    import psutil

    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.cmdline())
            if cmdline.startswith(title):
                found.append(proc)
    return found


def uss_of(pid: int) -> dict[str, int]:
    """Unique (Private_Clean + Private_Dirty) and resident memory of ``pid`` from /proc/<pid>/smaps_rollup."""
    result = {"rss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as smaps:
        for line in smaps:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if not fields or not fields[0].isdigit():
                continue
            value = int(fields[0]) * 1024
            if key == "Rss":
                result["rss"] = value
            elif key in ("Private_Clean", "Private_Dirty"):
                result["uss"] += value
    return result


# -- a tiny recorder actor -------------------------------------------------------------------------


class Notes:
    """A Ray actor keeping lists of values under keys (listeners in hosts push timestamps here)."""

    def __init__(self) -> None:
        self._data: dict[str, list[typing.Any]] = {}

    def add(self, key: str, values: list[typing.Any]) -> None:
        self._data.setdefault(key, []).extend(values)

    def get(self, key: str) -> list[typing.Any]:
        return list(self._data.get(key, []))

    def all(self) -> dict[str, list[typing.Any]]:
        return {k: list(v) for k, v in self._data.items()}

    def clear(self) -> None:
        self._data.clear()


def start_notes(name: str) -> typing.Any:
    """Start a named `Notes` actor on this node (killed with the cluster)."""
    return ray.remote(Notes).options(name=name, namespace=NAMESPACE, num_cpus=0).remote()  # type: ignore[attr-defined]


# -- waiting ---------------------------------------------------------------------------------------


async def wait_for(predicate: typing.Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; return the seconds it took (TimeoutError after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


# -- entry point -----------------------------------------------------------------------------------


def run(
    name: str,
    parser: argparse.ArgumentParser,
    body: typing.Callable[[argparse.Namespace], typing.Coroutine[typing.Any, typing.Any, dict[str, typing.Any]]],
) -> None:
    """Parse arguments, run ``body(args)`` with stdout pointed at stderr, print its result as one JSON object."""
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG and forward Ray worker logs")
    args = parser.parse_args()
    if args.verbose:
        os.environ["BENCH_VERBOSE"] = "1"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("ray_shards", "hikari", "aiohttp", "ray"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    started = time.monotonic()
    load_start = loadavg()
    try:
        result = asyncio.run(body(args))
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    output = {
        "benchmark": name,
        "command": "python -m bench." + name + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - (time.monotonic() - started))),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "load": {"at_start": load_start, "at_end": loadavg(), **result.pop("load", {})},
        **result,
    }
    print(json.dumps(_clean(output), default=str), flush=True)


def _clean(value: typing.Any) -> typing.Any:
    """NaN/inf become null (JSON has no NaN); containers are cleaned recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# -- plain hikari in a subprocess ------------------------------------------------------------------


class PlainBot:
    """`bench._plain_bot` (a plain hikari.GatewayBot) in a subprocess; the latest JSON line it wrote is `latest`."""

    def __init__(self, token: str, rest_url: str, shards: int, *, listen: bool = True,
                 command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """``command`` replaces ``python -m bench._plain_bot`` (it gets ``--rest-url URL --shards N`` appended);
        ``env`` adds to the environment (e.g. ``PYTHONPATH``)."""
        import subprocess
        import threading

        command = [*(command or [sys.executable, "-m", "bench._plain_bot"]), "--rest-url", rest_url,
                   "--shards", str(shards)]
        if not listen:
            command.append("--no-listen")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {}), "BENCH_TOKEN": token},
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.latest: dict[str, typing.Any] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.latest = json.loads(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await wait_for(lambda: self.latest is not None or self.process.poll() is not None, timeout, "plain hikari")
        if self.latest is None:
            raise RuntimeError(f"the plain hikari bot exited with {self.process.returncode}")

    def stop(self) -> None:
        import subprocess

        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def window_froms(text: str) -> list[WindowFrom]:
    """Parse a ``--window-from`` option: `Timings.identify_window_from` values, comma-separated."""
    modes: list[WindowFrom] = []
    for mode in text.split(","):
        if mode not in WINDOW_FROM_MODES:
            msg = f"--window-from takes {' and/or '.join(WINDOW_FROM_MODES)}, not {mode!r}"
            raise argparse.ArgumentTypeError(msg)
        modes.append(typing.cast("WindowFrom", mode))
    return modes
