"""The ``ray-shards`` command (also ``python -m ray_shards``).

Subcommands: ``demo`` (a live bot on a local Ray cluster against the bundled
Discord emulator unless a token is given), ``server``, ``run``, ``status``,
``presence``, ``stop`` and ``emulator``. Configuration comes from flags, then
``RAY_SHARDS_*`` / ``DISCORD_TOKEN`` environment variables and a ``.env`` file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
import typing

import hikari

from ray_shards.protocol import OperationState, ReshardState
from ray_shards.settings import RayShardsSettings, parse_intents

if typing.TYPE_CHECKING:
    # Imported lazily at run time: `ray-shards --help` must not pay for Ray and hikari's gateway.
    from ray_shards.client import Client
    from ray_shards.protocol import ReshardProgress, RollingRestartProgress

__all__ = ["main"]

_LOGGER = logging.getLogger("ray_shards.cli")


EXIT_FAILURE = 1
"""Exit code of a command that was understood but failed (as Ray's CLI)."""
EXIT_USAGE = 2
"""Exit code of a command line that was not understood (argparse's and Ray's)."""


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 1."""


class UsageError(CliError):
    """A malformed command line (a flag's value); exit code 2."""


def _settings() -> RayShardsSettings:
    return RayShardsSettings()


def _token(args: argparse.Namespace, settings: RayShardsSettings, *, required: bool = True) -> str | None:
    token = getattr(args, "token", None) or (settings.token.get_secret_value() if settings.token else None)
    if token is None and required:
        msg = "no bot token: set DISCORD_TOKEN (or RAY_SHARDS_TOKEN, or a .env file) or pass --token"
        raise CliError(msg)
    return token


def _common(parser: argparse.ArgumentParser, *, token: bool = True) -> None:
    parser.add_argument("--address", help="Ray address: auto, ray://HOST:10001, HOST:6379 (env RAY_SHARDS_ADDRESS)")
    if token:
        parser.add_argument("--token", help="bot token (prefer the DISCORD_TOKEN environment variable)")


def _bot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rest-url", help="Discord REST base URL (env RAY_SHARDS_REST_URL)")
    parser.add_argument("--shard-count", type=_positive, help="number of shards (default: Discord's recommendation)")
    parser.add_argument("--intents", help="intent names joined by | or a number (default ALL_UNPRIVILEGED)")


def _positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be a whole number of at least 1, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _intents(text: str) -> int:
    try:
        return parse_intents(text)
    except ValueError as exc:
        raise UsageError(f"--intents: {exc}") from None


def _first(*values: typing.Any) -> typing.Any:
    """The first value that is not None (0 is a value, not 'not given')."""
    return next((v for v in values if v is not None), None)


def _load_callback(entrypoint: str, directory: str | None = None) -> typing.Callable[[typing.Any], typing.Any]:
    """Import ``package.module:function`` from ``directory`` (default: the current directory).

    A console script's ``sys.path[0]`` is its own ``bin/`` directory, not the current one, so the
    directory is put first on the import path, as ``python -m`` and Serve's ``--app-dir`` do.
    A module found there is pickled by value with the callback, so hosts on nodes that lack the
    directory still run it.
    """
    module_name, _, attribute = entrypoint.partition(":")
    if not module_name or not attribute:
        msg = f"--entrypoint must look like package.module:function, not {entrypoint!r}"
        raise UsageError(msg)
    root = os.path.abspath(directory if directory is not None else os.getcwd())
    if not os.path.isdir(root):
        msg = f"--entrypoint-dir {directory!r} is not a directory"
        raise UsageError(msg)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import {module_name!r} for --entrypoint (from {root}): {exc}"
        raise CliError(msg) from None
    module_file = os.path.abspath(getattr(module, "__file__", None) or "")
    top_name = module_name.partition(".")[0]
    if (
        module_file.startswith(root + os.sep)
        and "site-packages" not in module_file
        and not _is_installed_package(top_name)
    ):
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[top_name])  # type: ignore[no-untyped-call]
    callback = getattr(module, attribute, None)
    if not callable(callback):
        msg = f"{entrypoint!r} is not a callable in {module_name!r}"
        raise CliError(msg)
    return typing.cast(typing.Callable[[typing.Any], typing.Any], callback)


def _is_installed_package(top_name: str) -> bool:
    """Whether ``top_name`` belongs to an installed distribution (editable ones included).

    Such a package imports on every node by itself; pickling it by value would rebuild its
    classes on the hosts (ray_shards' own `Bot` among them, run from a checkout), and classes
    with ``__slots__`` do not survive that.
    """
    import importlib.metadata

    return top_name == "ray_shards" or top_name in importlib.metadata.packages_distributions()


# -- commands --------------------------------------------------------------------------------------


def _cmd_server(args: argparse.Namespace) -> int:
    from ray_shards.launch import run_server

    settings = _settings()
    run_server(
        typing.cast(str, _token(args, settings)),
        args.address or settings.address or "auto",
        intents=_intents(args.intents) if args.intents else settings.intents,
        shard_count=_first(args.shard_count, settings.shard_count),
        rest_url=args.rest_url or settings.rest_url,
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ray_shards.launch import DEFAULT_SUBPROCESS_COUNT, run_subprocesses

    settings = _settings()
    callback = _load_callback(args.entrypoint, args.entrypoint_dir) if args.entrypoint else None
    run_subprocesses(
        typing.cast(str, _token(args, settings)),
        callback=callback,
        shard_count=_first(args.shard_count, settings.shard_count),
        intents=_intents(args.intents) if args.intents else settings.intents,
        subprocess_count=_first(args.hosts, settings.hosts, DEFAULT_SUBPROCESS_COUNT),
        rest_url=args.rest_url or settings.rest_url,
        address=args.address or settings.address,
        auto_reshard=args.auto_reshard,
    )
    return 0


async def _with_client(args: argparse.Namespace, action: typing.Callable[[Client], typing.Awaitable[int]]) -> int:
    from ray_shards.client import Client

    settings = _settings()
    client = Client(typing.cast(str, _token(args, settings)), args.address or settings.address or "auto")
    await client.start()
    try:
        return await action(client)
    finally:
        await client.close()


def _cmd_status(args: argparse.Namespace) -> int:
    from ray_shards.status_view import StatusView

    view = StatusView(
        fmt=args.format, view=args.view, hosts=set(args.host or ()), states=set(args.state or ()),
        clear=args.watch and sys.stdout.isatty(),
    )

    async def show(client: Client) -> int:
        while True:
            rows = await client.refresh()
            status = await client.status()
            sys.stdout.write(view.render(status, rows))
            sys.stdout.flush()
            if not args.watch:
                return 0
            await asyncio.sleep(args.interval)

    return asyncio.run(_with_client(args, show))


def _cmd_presence(args: argparse.Namespace) -> int:
    async def apply(client: Client) -> int:
        activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED
        if args.clear_activity:
            activity = None
        elif args.activity:
            activity = hikari.Activity(name=args.activity, type=hikari.ActivityType[args.activity_type.upper()])
        status = hikari.Status(args.status) if args.status else hikari.UNDEFINED
        await client.update_presence(status=status, activity=activity)
        print("presence updated on every shard (and remembered for shards that start later)")
        return 0

    return asyncio.run(_with_client(args, apply))


def _cmd_stop(args: argparse.Namespace) -> int:
    async def stop(client: Client) -> int:
        await client.shutdown()
        print("bot stopped: every shard closed")
        return 0

    return asyncio.run(_with_client(args, stop))


def _cmd_restart(args: argparse.Namespace) -> int:
    def show(state: RollingRestartProgress) -> None:
        current = f", replacing {state.current}" if state.current else ""
        print(f"rolling restart {state.state.value}: {state.done}/{state.total} hosts replaced{current}", flush=True)

    async def restart(client: Client) -> int:
        if args.pause or args.resume or args.abort:
            action: typing.Literal["pause", "resume", "abort"] = (
                "pause" if args.pause else "resume" if args.resume else "abort"
            )
            show(await client.control_rolling_restart(action))
            return 0
        callback = _load_callback(args.entrypoint, args.entrypoint_dir) if args.entrypoint else None
        state = await client.rolling_restart(callback, wait=not args.no_wait, progress=show)
        if state.state is OperationState.FAILED:
            print(f"ray-shards: rolling restart failed: {state.error}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(_with_client(args, restart))


def _cmd_reshard(args: argparse.Namespace) -> int:
    def show(state: ReshardProgress) -> None:
        print(f"reshard {state.source} -> {state.target}: {state.state.value} ({state.ready}/{state.target} new "
              "shards READY)", flush=True)

    async def reshard(client: Client) -> int:
        state = await client.reshard(args.shard_count, wait=not args.no_wait, progress=show)
        if state.state is ReshardState.FAILED:
            print(f"ray-shards: reshard failed: {state.error}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(_with_client(args, reshard))


def _cmd_emulator(args: argparse.Namespace) -> int:
    from ray_shards.emulator import main as emulator_main

    return emulator_main(args.emulator_args)


def _cmd_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    """A live bot on a local Ray cluster; against the bundled emulator unless a real token is given."""
    import ray

    from ray_shards import examples
    from ray_shards.client import Client
    from ray_shards.connection import ensure_ray
    from ray_shards.launch import BotDeployment
    from ray_shards.render import render_progress, render_table

    settings = _settings()
    token = _token(args, settings, required=False)
    emulator = None
    rest_url = settings.rest_url
    if token is None:
        from ray_shards.emulator import DEFAULT_TOKEN, EmulatorConfig, EmulatorThread

        token = DEFAULT_TOKEN
        emulator = EmulatorThread(
            EmulatorConfig(
                token=token, shards=args.shards, max_concurrency=args.max_concurrency, guilds=args.shards * 4
            )
        ).start()
        rest_url = emulator.rest_url
        print(f"no DISCORD_TOKEN: using the bundled Discord emulator at {emulator.base_url}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    await asyncio.to_thread(ensure_ray, args.address or "local")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    deployment = None
    try:
        print(f"starting {args.shards} shards on {args.hosts} hosts ...")
        started = time.monotonic()
        deployment = await BotDeployment.start(
            token,
            callback=examples.echo_bot,
            shard_count=args.shards if emulator is not None else None,
            subprocess_count=args.hosts,
            rest_url=rest_url,
            address=args.address or "local",
        )
        print(f"bot running after {time.monotonic() - started:.1f} s; Ctrl-C stops it")
        if emulator is not None:
            emulator.control.start_stream(args.events_per_second)
        async with Client(token, None) as client:
            deadline = time.monotonic() + args.duration if args.duration else None
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                rows = await client.refresh()
                status = await client.status()
                print(f"\n{render_progress(status)}\n{render_table(rows)}", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)
        return 0
    finally:
        print("stopping the bot ...", flush=True)
        if deployment is not None:
            await deployment.stop()
        if emulator is not None:
            emulator.stop()
        ray.shutdown()
        print("stopped", flush=True)


# -- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``ray-shards`` argument parser."""
    from ray_shards.logs import LOG_FORMATS, LOG_LEVELS

    parser = argparse.ArgumentParser(prog="ray-shards", description="Run a hikari Discord bot's shards on Ray.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (same as --log-level INFO)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        help="log level of this command and of the bot's Ray workers (env RAY_SHARDS_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="text, or json: one JSON object a line, here and in Ray's worker logs "
                             "(env RAY_SHARDS_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a live bot on a local Ray cluster (bundled emulator without a token)")
    _common(demo)
    demo.add_argument("--shards", type=_positive, default=8)
    demo.add_argument("--hosts", type=_positive, default=3)
    demo.add_argument("--max-concurrency", type=_positive, default=4, help="the emulator's identify concurrency")
    demo.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    demo.add_argument("--interval", type=float, default=2.0, help="seconds between two table prints")
    demo.add_argument("--events-per-second", type=float, default=5.0, help="emulator event stream rate")
    demo.set_defaults(handler=_cmd_demo)

    server = sub.add_parser("server", help="run the bot's Orchestrator until Ctrl-C (run_server)")
    _common(server)
    _bot_options(server)
    server.set_defaults(handler=_cmd_server)

    run = sub.add_parser("run", help="run the bot on ShardHost actors across the cluster (run_subprocesses)")
    _common(run)
    _bot_options(run)
    run.add_argument("--entrypoint", help="package.module:function called with each host's bot before it starts")
    run.add_argument("--entrypoint-dir", metavar="DIR",
                     help="directory to import the entrypoint from (default: the current directory)")
    run.add_argument("--hosts", type=_positive, help="number of ShardHost actors (default: this machine's CPU count)")
    run.add_argument("--auto-reshard", action="store_true", help="reshard live when Discord recommends more shards")
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser("status", help="the live shard table")
    _common(status)
    from ray_shards.status_view import FORMATS, STATES, VIEWS

    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0)
    status.add_argument("--format", choices=FORMATS, default="text",
                        help="text, json (one document a line with --watch) or yaml")
    status.add_argument("--view", choices=VIEWS, default="auto",
                        help="text: one line per shard (table), per host with shards by state (summary), "
                             "or the table up to 64 shards and the summary above (auto)")
    status.add_argument("--host", action="append", metavar="HOST", help="only shards on this host (repeatable)")
    status.add_argument("--state", action="append", choices=STATES, help="only shards in this state (repeatable)")
    status.set_defaults(handler=_cmd_status)

    presence = sub.add_parser("presence", help="set the presence of the whole bot (remembered)")
    _common(presence)
    presence.add_argument("--status", choices=[str(s) for s in hikari.Status])
    presence.add_argument("--activity", help="activity name")
    presence.add_argument("--activity-type", default="playing", choices=[t.name.lower() for t in hikari.ActivityType])
    presence.add_argument("--clear-activity", action="store_true")
    presence.set_defaults(handler=_cmd_presence)

    restart = sub.add_parser("restart", help="rolling restart: replace every host, sessions moved by RESUME")
    _common(restart)
    restart.add_argument("--entrypoint", help="new package.module:function callback for the new hosts")
    restart.add_argument("--entrypoint-dir", metavar="DIR",
                         help="directory to import the entrypoint from (default: the current directory)")
    restart.add_argument("--no-wait", action="store_true", help="start it and return")
    group = restart.add_mutually_exclusive_group()
    group.add_argument("--pause", action="store_true", help="pause the restart in progress (between hosts)")
    group.add_argument("--resume", action="store_true", help="resume a paused restart")
    group.add_argument("--abort", action="store_true", help="stop after the host being replaced")
    restart.set_defaults(handler=_cmd_restart)

    reshard = sub.add_parser("reshard", help="live resharding to a new shard count, without downtime")
    _common(reshard)
    reshard.add_argument("shard_count", type=_positive)
    reshard.add_argument("--no-wait", action="store_true", help="start it and return")
    reshard.set_defaults(handler=_cmd_reshard)

    stop = sub.add_parser("stop", help="stop the whole bot (every shard closed)")
    _common(stop)
    stop.set_defaults(handler=_cmd_stop)

    emulator = sub.add_parser("emulator", help="the local Discord emulator (see ray-shards emulator --help)",
                              add_help=False)
    emulator.add_argument("emulator_args", nargs=argparse.REMAINDER)
    emulator.set_defaults(handler=_cmd_emulator)
    return parser


def _version() -> str:
    import platform
    from importlib import metadata

    def of(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return (f"ray-shards {of('ray_shards')} (ray {of('ray')}, hikari {of('hikari')}, "
            f"Python {platform.python_version()})")


def main(argv: list[str] | None = None) -> int:
    """Run the ``ray-shards`` command; returns the exit code.

    0 on success, 1 when the command failed (no token, no cluster, no bot, a failed operation),
    2 for a command line that was not understood, 130 after Ctrl-C: Ray's CLI conventions.
    """
    from ray_shards.connection import OrchestratorNotFoundError, RayUnreachableError
    from ray_shards.errors import CheckpointWriteError
    from ray_shards.logs import configure_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    if "emulator" in argv and set(argv[: argv.index("emulator")]) <= {"-v", "--verbose"}:
        # argparse.REMAINDER drops option-like arguments (``emulator --help``): hand them over untouched.
        from ray_shards.emulator import main as emulator_main

        return emulator_main(argv[argv.index("emulator") + 1 :])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (exit 2), or --help / --version (exit 0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    level = args.log_level or os.environ.get("RAY_SHARDS_LOG_LEVEL", "").upper() or (
        "INFO" if args.verbose else None)
    fmt = args.log_format or os.environ.get("RAY_SHARDS_LOG_FORMAT", "").lower() or "text"
    try:
        configure_logging(level, fmt, bot_logs_at_info=args.command in ("run", "server", "demo"))
    except ValueError as exc:
        print(f"ray-shards: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"ray-shards: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CliError, RayUnreachableError, OrchestratorNotFoundError, PermissionError, ValueError,
            CheckpointWriteError) as exc:
        print(f"ray-shards: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
