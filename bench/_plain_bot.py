"""A plain `hikari.GatewayBot` in its own process: the reference of `bench.throughput` and `bench.memory`.

``BENCH_TOKEN=... python -m bench._plain_bot --rest-url URL --shards N`` starts every shard on the
emulator, runs the same listener as the ShardHost side (`bench._listener`), and writes one JSON line
per ``--report-interval`` to stdout: ``{"pid", "ready", ...listener snapshot}``. It stops when its
stdin closes. It imports hikari and the standard library only (no Ray).
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

from bench import _listener


async def _main(args: argparse.Namespace) -> None:
    bot = hikari.GatewayBot(os.environ["BENCH_TOKEN"], rest_url=args.rest_url, banner=None, logs="WARNING")
    if args.listen:
        bot.subscribe(hikari.MessageCreateEvent, _listener.on_message)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    await bot.start(check_for_updates=False, shard_count=args.shards, shard_ids=range(args.shards))

    def report() -> None:
        line = json.dumps({"pid": os.getpid(), "ready": True, **_listener.snapshot()})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    while not stop.is_set():
        report()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.report_interval)
    await bot.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._plain_bot")
    parser.add_argument("--rest-url", required=True)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--report-interval", type=float, default=0.25)
    parser.add_argument("--no-listen", dest="listen", action="store_false")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
