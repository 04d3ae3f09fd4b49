"""Work waiting for each host, and the parked syncs it wakes (the Orchestrator's side of the host long poll).

Hosts only ever call the Orchestrator: a host's ``sync`` parks until there is work for it (or its
interval passes), and a command for it waits in its mailbox until that sync takes it. The caller of
`Mailboxes.run` waits for the host's ``command_done``. asyncio only, no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import typing

from ray_shards.errors import CommandFailedError, ShardUnavailableError
from ray_shards.models import Command, CommandKind

__all__ = ["Mailboxes"]


@dataclasses.dataclass(slots=True)
class _Mailbox:
    """Work waiting for one host, and the event that wakes its parked sync."""

    commands: list[Command] = dataclasses.field(default_factory=list)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    stop: bool = False


class Mailboxes:
    """Every host's mailbox, and the commands in flight (by id) whose callers wait for the host's answer."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Mailbox] = {}
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._ids = itertools.count(1)

    def _box(self, host_id: str) -> _Mailbox:
        return self._boxes.setdefault(host_id, _Mailbox())

    def open(self, host_id: str) -> None:
        """Give ``host_id`` a mailbox (a registered or restored host), keeping one it has."""
        self._box(host_id)

    def wake(self, host_id: str) -> None:
        """Wake the host's parked sync: its answer (new leases, a revocation, a drain) is ready."""
        self._box(host_id).wake.set()

    def post(self, host_id: str, kind: CommandKind, shard_id: int | None = None,
             arguments: dict[str, typing.Any] | None = None) -> Command:
        """Leave a command for the host's next sync, without waiting for it to run."""
        command = Command(next(self._ids), kind, shard_id, arguments or {})
        self._box(host_id).commands.append(command)
        return command

    async def run(self, host_id: str, kind: CommandKind, shard_id: int | None, arguments: dict[str, typing.Any],
                  timeout: float) -> None:
        """Send a command to the host and wait until it ran.

        Raises
        ------
        ShardUnavailableError
            When the host did not run it within ``timeout`` (it may still run it later).
        CommandFailedError
            When the host reports an error (the message is the host's).
        """
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        command = self.post(host_id, kind, shard_id, arguments)
        self._pending[command.command_id] = future
        self.wake(host_id)
        try:
            error = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(command.command_id, None)
            msg = f"host {host_id} did not run {command.kind.value} within {timeout:.0f} s"
            raise ShardUnavailableError(msg) from None
        if error is not None:
            raise CommandFailedError(error)

    def finish(self, command_id: int, error: str | None) -> None:
        """The host ran command ``command_id`` (``error`` is None on success): its caller returns."""
        future = self._pending.pop(command_id, None)
        if future is not None and not future.done():
            future.set_result(error)

    def close(self, host_id: str, why: str) -> None:
        """The host is gone: its commands that never ran fail with ``why``."""
        box = self._boxes.pop(host_id, None)
        for command in box.commands if box is not None else ():
            self.finish(command.command_id, f"host {host_id} {why} before running the command")

    def stop_all(self) -> None:
        """Tell every host (at its next sync, woken now) to stop its shards and leave."""
        for box in self._boxes.values():
            box.stop = True
            box.wake.set()

    def fail_all(self, error: BaseException) -> None:
        """Every caller still waiting for a command gets ``error`` (the bot is shutting down)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def has_work(self, host_id: str) -> bool:
        """Whether the host's next sync has commands or a stop to take."""
        box = self._box(host_id)
        return bool(box.commands) or box.stop

    async def wait(self, host_id: str, timeout: float) -> None:
        """Park the host's sync until it is woken or ``timeout`` passes."""
        box = self._box(host_id)
        box.wake.clear()
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, and every host parks here
        # once per sync (a parked sync cost the actor about twice one answered at once: BENCHMARKS F2).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await box.wake.wait()

    def take(self, host_id: str) -> tuple[list[Command], bool]:
        """The host's commands (now taken out of its mailbox), and whether it must stop."""
        box = self._box(host_id)
        commands, box.commands = box.commands, []
        return commands, box.stop
