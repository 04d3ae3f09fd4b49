"""The user listener both sides of `bench.throughput` run: identical code in a ShardHost and in plain hikari.

It counts MESSAGE_CREATE events and notes the monotonic clock (system-wide CLOCK_MONOTONIC, so it
compares with the benchmark process's) of the latest delivery. Nothing here imports Ray, so plain
hikari loads exactly what it needs.
"""

from __future__ import annotations

import resource
import time
import typing

import hikari

STATE: dict[str, typing.Any] = {"count": 0, "last": 0.0}


async def on_message(event: hikari.MessageCreateEvent) -> None:
    """Count one event (the whole user-side cost: an increment and a clock read)."""
    state = STATE
    state["count"] += 1
    state["last"] = time.monotonic()


def snapshot() -> dict[str, typing.Any]:
    """Counters, CPU time (the process's and the calling loop thread's), the monotonic clock, faults and switches."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    loop = resource.getrusage(resource.RUSAGE_THREAD)  # the calling thread: the event loop's
    return {
        "count": STATE["count"],
        "last": STATE["last"],
        "cpu": time.process_time(),
        "loop_cpu": time.thread_time(),
        "t": time.monotonic(),
        "minflt": usage.ru_minflt,
        "nvcsw": usage.ru_nvcsw,
        "nivcsw": usage.ru_nivcsw,
        "loop_nvcsw": loop.ru_nvcsw,
        "loop_nivcsw": loop.ru_nivcsw,
    }
