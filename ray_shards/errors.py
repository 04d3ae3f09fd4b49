"""Errors ray_shards raises, each saying what to do about it."""

from __future__ import annotations

__all__ = [
    "BotStoppedError",
    "CapabilityExpiredError",
    "CheckpointWriteError",
    "CommandFailedError",
    "CommandOutcomeUnknownError",
    "HostNotRegisteredError",
    "LeaseLostError",
    "NotInitialisedError",
    "ShardFailedError",
    "ShardUnavailableError",
    "StaleLeaseError",
]


class CapabilityExpiredError(PermissionError):
    """The Orchestrator no longer knows this caller's capability (it restarted): authenticate again."""


class CheckpointWriteError(RuntimeError):
    """The Orchestrator could not write its checkpoint (Ray's GCS did not take it) where it must not act without one.

    Raised by ``Client.reshard`` and ``Client.rolling_restart`` when the operation could not be put on
    record: it was not started and nothing changed, so try again. Inside a long operation it is a step's
    failure, which the operation's core answers (rolls back, or tries again). If it persists, check the
    cluster's GCS (``ray status``).
    """


class LeaseLostError(RuntimeError):
    """This host no longer holds the lease of a shard; it must stop running it."""


class NotInitialisedError(RuntimeError):
    """The Orchestrator actor exists but was never given its bot (``run_server`` or a launcher does that)."""


class ShardUnavailableError(RuntimeError):
    """No host runs the shard a command was for, and none took it over in time."""


class StaleLeaseError(RuntimeError):
    """A host does not run the shard under the lease epoch a direct command named: the caller's view of
    the shard table is out of date. Refresh it and send again (`ray_shards` does this once by itself)."""


class CommandFailedError(RuntimeError):
    """A host could not carry out a command on its shard; the message says why."""


class CommandOutcomeUnknownError(CommandFailedError):
    """A host did not answer a command in time (or was briefly unreachable): it may or may not have reached Discord.

    Raised for commands that are not harmless to send twice (a member request, a channel-info
    request, a reconnect); ray_shards does not send them again by itself. Presence and voice
    state are sent again, since setting the same state twice changes nothing. Retry if your
    code needs the command to have happened (a member request with the same nonce lets you
    tell the answers apart).
    """


class HostNotRegisteredError(RuntimeError):
    """The Orchestrator does not know this host (it restarted from an older checkpoint, or took the host for
    gone): the host registers again, handing over (never ending) the sessions it may no longer run."""


class BotStoppedError(RuntimeError):
    """The bot is shutting down or has stopped."""


class ShardFailedError(RuntimeError):
    """A shard of this bot stopped for good (a close code Discord says not to retry, such as 4004 or 4014).

    `ray_shards.Bot.join` raises it, as `hikari.GatewayBot.join` raises a shard's fatal error.
    The Orchestrator marks the shard FAILED and does not retry it; the bot's other shards keep running.
    """

    def __init__(self, shard_id: int, reason: str) -> None:
        super().__init__(f"shard {shard_id} failed for good: {reason}")
        self.shard_id = shard_id
        self.reason = reason
