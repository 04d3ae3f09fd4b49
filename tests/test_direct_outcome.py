"""A direct command whose host does not answer is not sent twice unless sending it twice is harmless.

No cluster: `DirectCommands` is driven with a host handle whose call never answers (or whose actor
is briefly unavailable), the way a busy or partitioned host looks to the caller.
"""

from __future__ import annotations

import asyncio
import typing

import pytest
import ray.exceptions

from ray_shards.direct_commands import IDEMPOTENT_KINDS, DirectCommands
from ray_shards.errors import CommandOutcomeUnknownError
from ray_shards.models import CommandKind, ShardInfo, ShardStatus

pytestmark = pytest.mark.timeout(30)


class _Method:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0

    def remote(self, *args: typing.Any) -> typing.Awaitable[None]:
        self.calls += 1
        return self._answer()

    async def _answer(self) -> None:
        if self.behaviour == "silent":
            await asyncio.sleep(3600)  # the host runs it, or not, but never answers in time
        elif self.behaviour == "unavailable":
            raise ray.exceptions.ActorUnavailableError("connection lost", b"\x00" * 16)
        elif self.behaviour == "died":
            raise ray.exceptions.ActorDiedError()


class _Handle:
    def __init__(self, behaviour: str) -> None:
        self.command = _Method(behaviour)


class _Link:
    def __init__(self, handle: _Handle) -> None:
        self.handle = handle

    async def host_handles(self, retry_for: float) -> dict[str, typing.Any]:
        return {"h1": self.handle}


def _direct(behaviour: str) -> tuple[DirectCommands, _Handle, list[int]]:
    handle = _Handle(behaviour)
    refreshes: list[int] = []
    info = ShardInfo(
        shard_id=0, shard_count=1, status=ShardStatus.READY, host_id="h1", node_id=None, epoch=7, latency=0.0,
        seq=None, guilds=0, events=0, last_seen=0.0, identifies=1, resumes=0,
    )

    async def refresh() -> None:
        refreshes.append(1)

    direct = DirectCommands(
        typing.cast(typing.Any, _Link(handle)), lambda _: info, refresh, key="k" * 64, timeout=0.05
    )
    return direct, handle, refreshes


@pytest.mark.parametrize("behaviour", ["silent", "unavailable"])
@pytest.mark.parametrize("kind", [CommandKind.REQUEST_MEMBERS, CommandKind.REQUEST_CHANNEL_INFO, CommandKind.RECONNECT])
async def test_an_unanswered_request_is_not_sent_again(behaviour: str, kind: CommandKind) -> None:
    direct, handle, refreshes = _direct(behaviour)
    with pytest.raises(CommandOutcomeUnknownError, match="may or may not have reached Discord"):
        await direct.send(kind, 0, {"nonce": "n"})
    # One call, no retry on a refreshed table, no fallback through the Orchestrator (the caller would
    # send it again there): a second op 8 is exactly what must not happen.
    assert handle.command.calls == 1
    assert refreshes == []
    assert (direct.sent, direct.fallbacks) == (0, 0)


@pytest.mark.parametrize("behaviour", ["silent", "unavailable"])
@pytest.mark.parametrize("kind", sorted(IDEMPOTENT_KINDS))
async def test_an_unanswered_state_update_is_sent_again(behaviour: str, kind: CommandKind) -> None:
    direct, handle, refreshes = _direct(behaviour)
    # Setting the same presence or voice state twice changes nothing: it goes on through the Orchestrator
    # (False tells the caller to send it there), which waits out a hand-over in progress.
    assert await direct.send(kind, 0, {}) is False
    assert handle.command.calls == 1
    assert refreshes == [1]
    assert direct.fallbacks == 1


async def test_a_dead_host_sends_the_command_on() -> None:
    direct, _, refreshes = _direct("died")
    assert await direct.send(CommandKind.REQUEST_MEMBERS, 0, {"nonce": "n"}) is False
    assert refreshes == [1]
    assert direct.fallbacks == 1
