"""Every JSON object the emulator builds deserializes with hikari's own entity/event factories."""

from __future__ import annotations

import base64
import pickle
import typing

import hikari
import pytest

from ray_shards.emulator import DEFAULT_BOT_ID, DEFAULT_TOKEN, EmulatorConfig, EmulatorControl, make_token, payloads
from ray_shards.emulator.commands import CommandStore
from ray_shards.emulator.config import bot_id_from_token
from ray_shards.emulator.ids import SnowflakeGenerator, text_channel_id, voice_channel_id
from ray_shards.emulator.limits import IdentifyLimiter, IdentifyVerdict
from ray_shards.emulator.protocol import ALL_INTENTS, PRIVILEGED_INTENTS
from ray_shards.emulator.sessions import SessionRegistry
from ray_shards.emulator.world import World


@pytest.fixture(scope="module")
def app() -> hikari.GatewayBot:
    return hikari.GatewayBot(DEFAULT_TOKEN, banner=None, logs=None, suppress_optimization_warning=True)


class _Shard:
    id = 0
    shard_count = 1

    def get_user_id(self) -> hikari.Snowflake:
        return hikari.Snowflake(DEFAULT_BOT_ID)


SHARD = typing.cast(typing.Any, _Shard())


def test_tokens_are_hikari_shaped() -> None:
    token = make_token(123456789012345678, "x" * 30)
    first, middle, secret = token.split(".")
    assert base64.b64decode(first + "=" * (-len(first) % 4)) == b"123456789012345678"
    assert len(middle) == 6 and secret == "x" * 30
    assert bot_id_from_token(token) == 123456789012345678
    assert bot_id_from_token(DEFAULT_TOKEN) == DEFAULT_BOT_ID
    assert make_token(5, "y" * 27) == make_token(5, "y" * 27)
    assert make_token(5) != make_token(5)
    with pytest.raises(ValueError, match="27"):
        make_token(5, "short")
    assert DEFAULT_TOKEN not in repr(EmulatorConfig())


def test_intent_constants_match_hikari() -> None:
    assert int(hikari.Intents.ALL) == ALL_INTENTS
    assert int(hikari.Intents.ALL_PRIVILEGED) == PRIVILEGED_INTENTS


def test_world_sharding() -> None:
    world = World(10, 3)
    ids = world.guild_ids()
    assert ids[0] == 1000 << 22 and len(set(ids)) == 10
    for count in (1, 3, 7):
        owned = [world.guilds_for_shard(s, count) for s in range(count)]
        assert sorted(g for part in owned for g in part) == sorted(ids)
        for shard_id, part in enumerate(owned):
            assert all((g >> 22) % count == shard_id for g in part)
    assert world.guilds_for_shard(5, 3) == []


def test_guild_create_deserializes(app: hikari.GatewayBot) -> None:
    world = World(2, 4)
    gid = world.guild_ids()[1]
    payload = world.guild_create(gid, DEFAULT_BOT_ID, presences=True, large_threshold=250)
    definition = app.entity_factory.deserialize_gateway_guild(payload, user_id=hikari.Snowflake(DEFAULT_BOT_ID))
    guild = definition.guild()
    assert guild.id == gid and guild.member_count == 5 and guild.is_large is False
    assert set(definition.channels()) == {text_channel_id(gid), voice_channel_id(gid)}
    assert set(definition.roles()) == {gid}
    members = definition.members()
    assert len(members) == 5 and DEFAULT_BOT_ID in members
    assert len(definition.presences()) == 5
    assert definition.voice_states() == {} and definition.threads() == {}
    assert definition.emojis() == {} and definition.stickers() == {}
    event = app.event_factory.deserialize_guild_available_event(SHARD, payload)
    assert event.guild_id == gid


def test_ready_user_application_deserialize(app: hikari.GatewayBot) -> None:
    world = World(3, 1)
    ready = payloads.ready(
        world=world, bot_id=DEFAULT_BOT_ID, session_id="abc", resume_gateway_url="ws://x/r", shard=(0, 1)
    )
    event = app.event_factory.deserialize_ready_event(SHARD, ready)
    assert event.my_user.id == DEFAULT_BOT_ID and event.my_user.is_bot
    assert len(event.unavailable_guilds) == 3 and event.application_id == DEFAULT_BOT_ID
    application = app.entity_factory.deserialize_application(payloads.application(DEFAULT_BOT_ID, 3))
    assert application.id == DEFAULT_BOT_ID


def test_message_interaction_command_deserialize(app: hikari.GatewayBot) -> None:
    world = World(1, 2)
    gid = world.guild_ids()[0]
    user = World.user(0)
    message = payloads.message(
        message_id=SnowflakeGenerator().next(),
        channel_id=text_channel_id(gid),
        author=user,
        content="hello",
        guild_id=gid,
        member=World.member(user),
    )
    event = app.event_factory.deserialize_message_create_event(SHARD, message)
    assert isinstance(event, hikari.GuildMessageCreateEvent) and event.content == "hello"

    store = CommandStore(SnowflakeGenerator())
    body = {"type": 1, "name": "ping", "description": "Ping!", "options": []}
    (stored,) = store.overwrite(DEFAULT_BOT_ID, gid, [body])
    command = app.entity_factory.deserialize_command(stored)
    assert isinstance(command, hikari.SlashCommand) and command.guild_id == gid
    (again,) = store.overwrite(DEFAULT_BOT_ID, gid, [body])
    assert again["id"] == stored["id"]

    interaction = payloads.slash_interaction(
        interaction_id=SnowflakeGenerator().next(),
        token="tok",
        bot_id=DEFAULT_BOT_ID,
        guild_id=gid,
        command_id=int(stored["id"]),
        command_name="ping",
        options=payloads.normalize_options({"text": "hi", "n": 3}),
        user=user,
        registered_guild_id=gid,
    )
    created = app.event_factory.deserialize_interaction_create_event(SHARD, interaction)
    assert isinstance(created.interaction, hikari.CommandInteraction)
    assert created.interaction.command_name == "ping"
    assert [o.value for o in created.interaction.options or ()] == ["hi", 3]

    response = payloads.interaction_callback_response(
        interaction_id=1, response_type=4, message_payload=message, ephemeral=False
    )
    parsed = app.entity_factory.deserialize_interaction_callback_response(response)
    assert parsed.interaction.id == 1


def test_member_chunks_and_voice(app: hikari.GatewayBot) -> None:
    world = World(1, 12)
    gid = world.guild_ids()[0]
    chunks = payloads.member_chunks(
        world=world, gid=gid, bot_id=DEFAULT_BOT_ID, request={"query": "USER1", "limit": 0, "nonce": "n"}
    )
    event = app.event_factory.deserialize_guild_member_chunk_event(SHARD, chunks[0])
    assert {m.username for m in event.members.values()} == {"user1", "user10", "user11"}
    assert event.nonce == "n" and event.chunk_count == 1
    unknown = 42 << 22
    chunks = payloads.member_chunks(
        world=world,
        gid=gid,
        bot_id=DEFAULT_BOT_ID,
        request={"user_ids": [str(DEFAULT_BOT_ID), str(unknown)], "presences": True},
    )
    event = app.event_factory.deserialize_guild_member_chunk_event(SHARD, chunks[0])
    assert list(event.members) == [DEFAULT_BOT_ID] and event.not_found == [unknown]
    assert list(event.presences) == [DEFAULT_BOT_ID]
    state = payloads.voice_state(
        gid=gid,
        channel_id=voice_channel_id(gid),
        bot_user=World.bot_user(1),
        session_id="s",
        self_mute=True,
        self_deaf=False,
    )
    voice = app.event_factory.deserialize_voice_state_update_event(SHARD, state)
    assert voice.state.channel_id == voice_channel_id(gid) and voice.state.is_self_muted


def test_identify_limiter() -> None:
    limiter = IdentifyLimiter(
        total=3, remaining=2, reset_after_ms=10_000_000, max_concurrency=2, window_s=5, enforce=True
    )
    assert limiter.check(0, now=100.0) is IdentifyVerdict.ACCEPTED
    assert limiter.check(1, now=100.0) is IdentifyVerdict.ACCEPTED
    assert limiter.check(2, now=101.0) is IdentifyVerdict.RATE_LIMITED
    assert limiter.check(2, now=106.0) is IdentifyVerdict.BUDGET_EXHAUSTED
    assert limiter.session_start_limit()["remaining"] == 0


def test_session_replay_buffer() -> None:
    registry = SessionRegistry(timeout_s=10, buffer_size=3)
    session = registry.create(shard_id=0, shard_count=1, bot_id=1, intents=0, large_threshold=50)
    for n in range(5):
        session.dispatch("X", str(n))
    assert session.seq == 5
    assert session.frames_after(5) == []
    assert [f for f in session.frames_after(3) or []] == [
        '{"op":0,"s":4,"t":"X","d":3}',
        '{"op":0,"s":5,"t":"X","d":4}',
    ]
    assert session.frames_after(1) is None
    assert registry.for_guild(7 << 22) == [session]


def test_control_client_pickles() -> None:
    control = EmulatorControl("http://127.0.0.1:1234/")
    clone = pickle.loads(pickle.dumps(control))
    assert clone == control and clone.base_url == "http://127.0.0.1:1234"
