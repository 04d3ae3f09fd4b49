"""Standalone emulator server: ``python -m ray_shards.emulator``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from ray_shards.emulator.config import DEFAULT_TOKEN, EmulatorConfig
from ray_shards.emulator.server import Emulator

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser of the standalone emulator."""
    parser = argparse.ArgumentParser(
        prog="python -m ray_shards.emulator",
        description="Run a local Discord emulator (REST + gateway) until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = a free port)")
    parser.add_argument("--shards", type=int, default=1, help="recommended shard count of /gateway/bot")
    parser.add_argument("--max-concurrency", type=int, default=1, help="session_start_limit.max_concurrency")
    parser.add_argument("--guilds", type=int, default=10, help="number of fake guilds")
    parser.add_argument("--members-per-guild", type=int, default=5, help="fake members per guild")
    parser.add_argument("--identify-window", type=float, default=5.0, help="identify rate limit window in seconds")
    parser.add_argument("--session-total", type=int, default=1000, help="daily session start budget")
    parser.add_argument("--heartbeat-interval-ms", type=int, default=41_250, help="HELLO heartbeat interval")
    parser.add_argument("--token", default=None, help="accepted bot token (else $DISCORD_TOKEN, else a fake one)")
    parser.add_argument("--port-file", default=None, help="write the chosen port to this file")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def _config_from(args: argparse.Namespace) -> EmulatorConfig:
    token = args.token or os.environ.get("DISCORD_TOKEN") or DEFAULT_TOKEN
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        token=token,
        shards=args.shards,
        max_concurrency=args.max_concurrency,
        guilds=args.guilds,
        members_per_guild=args.members_per_guild,
        identify_window_s=args.identify_window,
        session_total=args.session_total,
        session_remaining=args.session_total,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
    )


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


async def _serve(config: EmulatorConfig, port_file: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Emulator(config) as emulator:
        if port_file:
            _write_port_file(port_file, emulator.port)
        print(f"emulator listening on {emulator.base_url} (rest_url {emulator.rest_url})", flush=True)
        await stop.wait()
    print("emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the standalone emulator until SIGINT or SIGTERM.

    Parameters
    ----------
    argv
        Command line arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _config_from(args)
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(config, args.port_file))
    return 0
