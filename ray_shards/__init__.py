"""ray_shards: run the shards of a hikari Discord bot across a Ray cluster.

The public API follows hikari-orchestrator's: `Bot`, `Client`, `run_server`,
`run_subprocesses` and `spawn_subprocesses`, on Ray actors instead of gRPC.
"""

from __future__ import annotations

from ray_shards.bot import Bot
from ray_shards.client import Client, RecommendedShard
from ray_shards.launch import (
    DEFAULT_SUBPROCESS_COUNT,
    BotDeployment,
    run_server,
    run_subprocesses,
    spawn_subprocesses,
)
from ray_shards.listener_context import EventHold, EventPosition, event_position, hold_event
from ray_shards.models import ShardInfo, ShardStatus
from ray_shards.remote import RemoteShard
from ray_shards.settings import HostSetup
from ray_shards.timings import Timings

__all__ = [
    "DEFAULT_SUBPROCESS_COUNT",
    "Bot",
    "BotDeployment",
    "Client",
    "EventHold",
    "EventPosition",
    "HostSetup",
    "RecommendedShard",
    "RemoteShard",
    "ShardInfo",
    "ShardStatus",
    "Timings",
    "event_position",
    "hold_event",
    "run_server",
    "run_subprocesses",
    "spawn_subprocesses",
]

__version__ = "0.1.0"
