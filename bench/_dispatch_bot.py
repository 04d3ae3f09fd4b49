"""One consumer process of ``python -m bench.throughput --watermark``: a hikari.GatewayBot whose event manager is
hikari's own (``--manager plain``) or ray_shards' ``GatedEventManager`` (``--manager gated``).

Run it *by path* (``python bench/_dispatch_bot.py ...``), not with ``-m``: then ``sys.path[0]`` is this
directory, and ``ray_shards`` is imported from ``PYTHONPATH`` - the checkout under test (the current
one, or a temporary worktree of the baseline commit). That is why this file is self-contained (no
``bench`` imports): the baseline tree's own ``bench`` package must not be mixed in.

Measured path: emulator -> hikari ``GatewayShardImpl`` (receive, zlib, JSON, seq) -> event manager
``consume_raw_event`` (cache, event factory) -> ``dispatch`` -> one listener task. No Ray actor, no
``ray_shards.Bot`` / ``ManagedShard``: both sides are the same GatewayBot in the same kind of process
(every side imports ``ray_shards.delivery``, so the loaded modules are the same), only the event
manager differs. The first JSON line says which ``ray_shards`` was imported and which class runs.

``BENCH_TOKEN=... python bench/_dispatch_bot.py --rest-url URL --shards N --manager gated`` writes one
JSON line per ``--report-interval`` to stdout (``{"pid", "ready", "count", "last", "cpu", "t", ...}``)
and stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading

import hikari

# The very listener the other benchmarks run (run as a script, this file's folder is first on sys.path).
from _listener import on_message, snapshot


def _use_gated_manager(bot: hikari.GatewayBot) -> None:
    """Swap the bot's event manager for ray_shards' GatedEventManager, built like hikari builds its own."""
    from ray_shards.delivery import GatedEventManager

    bot._event_manager = GatedEventManager(  # type: ignore[misc]
        bot._entity_factory, bot._event_factory, bot._intents, auto_chunk_members=True, cache=bot._cache,
    )


async def _main(args: argparse.Namespace) -> None:
    import ray_shards.delivery  # every side loads the same modules; only the gated side uses the class

    bot = hikari.GatewayBot(os.environ["BENCH_TOKEN"], rest_url=args.rest_url, banner=None, logs="WARNING")
    if args.manager == "gated":
        _use_gated_manager(bot)
    bot.subscribe(hikari.MessageCreateEvent, on_message)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    await bot.start(check_for_updates=False, shard_count=args.shards, shard_ids=range(args.shards))
    manager = type(bot.event_manager)
    facts = {
        "ray_shards_file": ray_shards.delivery.__file__,
        "event_manager": f"{manager.__module__}.{manager.__qualname__}",
        "has_watermark": hasattr(bot.event_manager, "watermark"),
    }

    def report() -> None:
        sys.stdout.write(json.dumps({"pid": os.getpid(), "ready": True, **facts, **snapshot()}) + "\n")
        sys.stdout.flush()

    while not stop.is_set():
        report()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.report_interval)
    await bot.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/_dispatch_bot.py")
    parser.add_argument("--rest-url", required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--manager", choices=("plain", "gated"), required=True)
    parser.add_argument("--report-interval", type=float, default=0.25)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
