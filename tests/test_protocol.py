"""The typed protocol: the link's typed calls match the Orchestrator, and the JSON forms did not change."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from ray_shards.link import OrchestratorLink
from ray_shards.models import BotConfig
from ray_shards.orchestrator import Orchestrator
from ray_shards.presence import PresenceState
from ray_shards.protocol import (
    BotStatus,
    FleetSummary,
    HostSummary,
    OperationState,
    ReshardProgress,
    ReshardState,
    RollingRestartProgress,
)

_TYPED_CALLS = [
    "register_host", "sync", "release", "claim", "request_identify", "identify", "identify_done", "check_lease",
    "command_done", "command", "table", "status", "deploy", "deploy_status", "host_handles",
    "start_rolling_restart", "control_rolling_restart", "start_reshard", "deliver_tails", "shutdown",
]


@pytest.mark.parametrize("name", _TYPED_CALLS)
def test_typed_link_calls_match_the_orchestrator(name: str) -> None:
    # The link sends these by name, so nothing else checks that its signature is the Orchestrator's one.
    remote = inspect.signature(getattr(Orchestrator, name))
    local = inspect.signature(getattr(OrchestratorLink, name))
    # ray.remote(Orchestrator) (once another test started one in this process) adds Ray's tracing keyword.
    expected = [p for p in remote.parameters.values() if p.name not in ("self", "capability", "_ray_trace_ctx")]
    got = [p for p in local.parameters.values() if p.name not in ("self", "retry_for")]
    assert [(p.name, p.kind, p.default) for p in got] == [(p.name, p.kind, p.default) for p in expected]
    assert "retry_for" in local.parameters
    assert local.return_annotation == remote.return_annotation


def test_update_presence_and_ping_are_typed_too() -> None:
    assert inspect.signature(OrchestratorLink.update_presence).return_annotation == "int"
    assert inspect.signature(OrchestratorLink.ping).return_annotation == "PingInfo"
    assert inspect.signature(Orchestrator.ping).return_annotation == "PingInfo"


def test_progress_json_is_unchanged() -> None:
    rolling = RollingRestartProgress(total=2, pending_slots=[1], done=1, state=OperationState.PAUSED,
                                     replaced=["h0-a"], old_hosts=["h0-a", "h1-b"])
    data = rolling.to_json()
    assert data["state"] == "paused" and type(data["state"]) is str
    assert RollingRestartProgress.from_json(json.loads(json.dumps(data))) == rolling
    copy = rolling.snapshot()
    rolling.pending_slots.pop()
    assert copy.pending_slots == [1]

    reshard = ReshardProgress(source=2, target=4, state=ReshardState.CLOSING, ready=4, started_at=1.0)
    data = reshard.to_json()
    assert data == {"state": "closing old sessions", "from": 2, "to": 4, "ready": 4, "started_at": 1.0,
                    "finished_at": None, "error": None}
    assert type(data["state"]) is str
    assert ReshardProgress.from_json(json.loads(json.dumps(data)), now=0.0) == reshard
    assert [s for s in ReshardState if s.active] == [ReshardState.STARTING, ReshardState.IDENTIFYING,
                                                      ReshardState.SWITCHING, ReshardState.CLOSING]


def test_bot_status_dict_form() -> None:
    fleet = {"prefix": "h", "shard_count": 4, "desired": 2, "wants": [2, 2], "counter": 3, "callback": "00",
             "hosts": [{"host_id": "h0-x", "slot": 0, "want": 2, "retiring": False}]}
    status = BotStatus(
        bot_id=1, config=BotConfig(1, 4, 0, 1, "wss://g", "https://r"), ready=3, total=4, identify_eta=5.0,
        identifies_remaining=10, hosts={"h0-x": HostSummary(node_id=None, want=2, shards=[0, 1])},
        presence=PresenceState(), presence_version=2, stopping=False, uptime=1.5,
        fleet=FleetSummary.from_json(fleet),
    )
    data = status.to_dict()
    assert data["config"] == dataclasses.asdict(status.config)
    assert data["hosts"] == {"h0-x": {"node_id": None, "want": 2, "shards": [0, 1], "since_sync": None}}
    assert data["rolling_restart"] == {} and data["reshard"] == {}
    assert data["fleet"] == fleet | {"callback": None}
    assert list(data["fleet"]) == list(fleet)
    json.dumps(data)


def test_guild_tails_go_only_to_the_host_whose_shards_cover_the_guild() -> None:
    import pickle

    from ray_shards.protocol import GuildTails, Seen

    def tail(at: float) -> tuple[Seen, ...]:
        return (Seen(b"d", False, at),)

    first = GuildTails("h0", {0: tail(1.0), 5 << 22: tail(1.0), 6 << 22: tail(3.0)})
    moved = GuildTails("h1", {6 << 22: tail(2.0), 7 << 22: tail(2.0)})  # guild 6's shard moved from h0 to h1
    merged = GuildTails.merge([first, moved])
    assert merged.tails[6 << 22] == tail(3.0), "the later tail of a guild two hosts delivered wins"
    assert set(merged.tails) == {0, 5 << 22, 6 << 22, 7 << 22}
    # 4 new shards: guild 5 -> shard 1, 6 -> 2, 7 -> 3; events without a guild (key 0) -> shard 0.
    assert set(merged.for_shards({0, 1}, 4).tails) == {0, 5 << 22}
    assert set(merged.for_shards({2}, 4).tails) == {6 << 22}
    assert merged.for_shards(set(), 4).tails == {}
    assert pickle.loads(pickle.dumps(merged)) == merged


def test_guild_tails_carry_since_per_old_shard_to_the_new_hosts_whose_guilds_they_can_hold() -> None:
    import pickle

    from ray_shards.protocol import GuildTails

    # Old shard 1 failed over twice during the reshard (h0 then h1 adopted it): the last owner's since wins.
    first = GuildTails("h0", {}, {1: 10.0, 3: 12.0})
    second = GuildTails("h1", {}, {1: 11.0})
    merged = GuildTails.merge([first, second], old_count=4)
    assert merged.since == {1: 11.0, 3: 12.0} and merged.old_count == 4
    # 4 -> 8: a guild on new shard n is on old shard n % 4.
    assert merged.for_shards({1}, 8).since == {1: 11.0}
    assert merged.for_shards({5, 3}, 8).since == {1: 11.0, 3: 12.0}
    assert merged.for_shards({0, 2}, 8).since == {}
    # 4 -> 6 (gcd 2): new shard 1 holds guilds of old shards 1 and 3.
    assert merged.for_shards({1}, 6).since == {1: 11.0, 3: 12.0}
    assert merged.for_shards({1}, 6).old_count == 4
    assert pickle.loads(pickle.dumps(merged)) == merged
    assert GuildTails("h", {}).for_shards({0}, 8).since == {}, "no old count known: no since"
