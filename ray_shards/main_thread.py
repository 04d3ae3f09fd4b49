"""The timer slack of a `ShardHost` process's main thread, set by Ray's worker setup hook.

Why: Ray's main thread in a worker takes the GIL every 10 ms to check for signals. While the
shard loop holds the GIL, that thread waits with a timeout of ``sys.getswitchinterval()`` (10 us
in a host, `Timings.host_switch_interval`) and, on timeout, asks the loop to hand over. Linux
stretches every timed sleep by the thread's *timer slack*, 50 us by default. So the 10 us waits
last about 60 us, the loop releases the GIL (each socket read) several times in between, every
release wakes the waiter, and CPython restarts its wait after a release instead of asking for the
GIL: 2,000-3,000 wake-ups a second during a burst, and the loop thread pays for each. With a
slack of 1 ns the wait times out at 10 us, the main thread gets the GIL at once and sleeps for
10 ms (BENCHMARKS.md, "The host main thread's timer slack").

How: ``prctl(PR_SET_TIMERSLACK)`` changes only the calling thread, and no ray_shards code runs on
a worker's main thread: an async actor's ``__init__`` and methods run on its event loop thread.
Writing ``/proc/<pid>/timerslack_ns`` from another thread needs ``CAP_SYS_NICE``. Ray runs a
*worker process setup hook* on the main thread before its task loop starts; Ray exposes it only
job-wide (``runtime_env={"worker_process_setup_hook": ...}`` in ``ray.init``), through one
environment variable in the worker. A host actor's ``runtime_env`` sets that variable to
`set_main_thread_timer_slack` (environment variables merge with the job's), which also runs the
job's own hook, if it has one, after it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import typing

__all__ = ["SLACK_ENV", "host_env_vars", "read_timer_slack_ns", "set_main_thread_timer_slack"]

_LOGGER = logging.getLogger("ray_shards.main_thread")

SLACK_ENV = "RAY_SHARDS_MAIN_THREAD_TIMER_SLACK_NS"
"""The slack in ns the hook sets (`Timings.host_main_thread_timer_slack_ns`)."""

_CHAINED_ENV = "RAY_SHARDS_CHAINED_SETUP_HOOK"
"""The job's own setup hook, which ours replaced in the host's environment and runs after it."""

_HOOK = f"{__name__}.set_main_thread_timer_slack"
_PR_SET_TIMERSLACK = 29  # <linux/prctl.h>


def _setup_hook_env_name() -> str | None:
    """The environment variable Ray's workers read their setup hook from, or None if this Ray has none."""
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - Ray always ships it today
        return None
    name = getattr(ray_constants, "WORKER_PROCESS_SETUP_HOOK_ENV_VAR", None)
    return name if isinstance(name, str) else None


def host_env_vars(slack_ns: int | None, environ: typing.Mapping[str, str] = os.environ) -> dict[str, str]:
    """The ``env_vars`` of a host actor's ``runtime_env`` that set its main thread's slack (empty: leave it).

    ``environ`` is the creating process's environment: it holds the job's own setup hook, if any,
    which the host's environment would otherwise lose.
    """
    hook_env = _setup_hook_env_name()
    if slack_ns is None or hook_env is None or not sys.platform.startswith("linux"):
        return {}
    env = {hook_env: _HOOK, SLACK_ENV: str(slack_ns)}
    inherited = environ.get(hook_env)
    if inherited and inherited != _HOOK:
        env[_CHAINED_ENV] = inherited
    return env


def set_main_thread_timer_slack() -> None:
    """Ray's worker setup hook in a host: set this (the main) thread's timer slack, then run the job's hook.

    A failure to set the slack is logged, not raised: Ray would stop the worker, and the host works
    without it, only slower under a burst.
    """
    raw = os.environ.get(SLACK_ENV, "")
    try:
        slack_ns = int(raw)
        result = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(slack_ns), 0, 0, 0)
        if result != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (ValueError, OSError, AttributeError) as exc:
        _LOGGER.warning("could not set the main thread's timer slack to %r ns: %s", raw, exc)
    chained = os.environ.get(_CHAINED_ENV)
    if chained:
        from ray._private.runtime_env.setup_hook import load_and_execute_setup_hook

        error = load_and_execute_setup_hook(chained)
        if error is not None:
            # Ray stops a worker whose hook fails; the job's hook failing must do the same here.
            raise RuntimeError(error)


def read_timer_slack_ns() -> int | None:
    """The timer slack of this process's main thread in ns (from any thread), or None off Linux."""
    try:
        with open(f"/proc/{os.getpid()}/timerslack_ns") as file:
            return int(file.read())
    except (OSError, ValueError):
        return None
