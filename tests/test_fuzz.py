"""Fuzzing the argument checks of every public entry point, and the emulator's gateway decoding.

Random input must either give a valid result or raise TypeError / ValueError /
hikari.MissingIntentError with a message that never echoes the token; the emulator must
answer garbage with the right close code (4002 decode error, 4001 unknown opcode) and
never crash.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import typing
import urllib.parse

import aiohttp
import hikari
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_shards import validation
from ray_shards.auth import bot_id_from_token, validate_token
from ray_shards.emulator import DEFAULT_TOKEN, Emulator, EmulatorConfig, EmulatorThread, make_token
from ray_shards.emulator.connection import Connection
from ray_shards.emulator.protocol import CLIENT_OPS
from ray_shards.fleet import split_shards
from ray_shards.gateway_info import validate_rest_url
from ray_shards.presence import PresenceState, merge_presence
from ray_shards.settings import parse_intents

pytestmark = pytest.mark.timeout(180)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWED = (TypeError, ValueError, hikari.MissingIntentError)
SECRET = "FUZZxxSECRETxxNEVERxxECHOED0123456789"
TOKEN = make_token(1_234_567_890_123_456_789, SECRET)
SNOWFLAKE_LIMIT = 1 << 64
ALL_INTENTS = int(hikari.Intents.ALL)
UNDEFINED = hikari.UNDEFINED


class WithId:
    """An object with an ``id``, like a hikari entity."""

    def __init__(self, id: object) -> None:
        self.id = id

    def __repr__(self) -> str:
        return f"WithId({self.id!r})"


def _no_echo(exc: BaseException) -> None:
    text = str(exc)
    assert SECRET not in text and TOKEN not in text, f"the message echoes the token: {text!r}"


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(UNDEFINED),
    st.just(TOKEN),
    st.just(object()),
)
hashable = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
snowflake_int = st.one_of(st.integers(min_value=-3, max_value=SNOWFLAKE_LIMIT + 3), st.integers(1, 2**63))
snowflakeish = st.one_of(
    snowflake_int,
    snowflake_int.map(str),
    snowflake_int.map(lambda i: f" {i} "),
    st.integers(0, SNOWFLAKE_LIMIT - 1).map(hikari.Snowflake),
    st.builds(WithId, st.one_of(snowflake_int, anything)),
)
undefined_or = lambda strategy: st.one_of(st.just(UNDEFINED), strategy)  # noqa: E731


def _valid_snowflake(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < SNOWFLAKE_LIMIT


# -- validation ---------------------------------------------------------------------------------------


@FUZZ
@given(
    intents=st.integers(0, ALL_INTENTS).map(hikari.Intents),
    guild=st.one_of(snowflakeish, anything),
    include_presences=undefined_or(st.one_of(st.booleans(), anything)),
    query=st.one_of(st.text(max_size=10), st.just(""), anything),
    limit=st.one_of(st.integers(-3, 103), st.just(0), anything),
    users=undefined_or(st.one_of(st.lists(snowflakeish, max_size=103), st.iterables(snowflake_int, max_size=5),
                                 anything)),
    nonce=undefined_or(st.one_of(st.text(max_size=40), anything)),
)
def test_member_request(intents: hikari.Intents, guild: object, include_presences: typing.Any, query: typing.Any,
                        limit: typing.Any, users: typing.Any, nonce: typing.Any) -> None:
    try:
        result = validation.member_request(
            intents, guild, include_presences=include_presences, query=query, limit=limit, users=users, nonce=nonce
        )
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert _valid_snowflake(result["guild"])
    assert isinstance(result["query"], str)
    assert type(result["limit"]) is int and 0 <= result["limit"] <= 100
    assert result["include_presences"] is UNDEFINED or type(result["include_presences"]) is bool
    if result["include_presences"] is True:
        assert intents & hikari.Intents.GUILD_PRESENCES
    if not result["query"] and not result["limit"]:
        assert intents & hikari.Intents.GUILD_MEMBERS
    if result["users"] is not UNDEFINED:
        assert len(result["users"]) <= 100 and all(_valid_snowflake(u) for u in result["users"])
        assert not result["query"] and not result["limit"]
    if result["nonce"] is not UNDEFINED:
        assert isinstance(result["nonce"], str) and len(result["nonce"].encode()) <= 32


@FUZZ
@given(
    guild=st.one_of(snowflakeish, anything),
    channel=st.one_of(st.none(), snowflakeish, anything),
    self_mute=undefined_or(st.one_of(st.booleans(), anything)),
    self_deaf=undefined_or(st.one_of(st.booleans(), anything)),
)
def test_voice_state(guild: object, channel: object, self_mute: typing.Any, self_deaf: typing.Any) -> None:
    try:
        result = validation.voice_state(guild, channel, self_mute=self_mute, self_deaf=self_deaf)
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert _valid_snowflake(result["guild"])
    assert result["channel"] is None or _valid_snowflake(result["channel"])
    for key in ("self_mute", "self_deaf"):
        assert result[key] is UNDEFINED or type(result[key]) is bool


@FUZZ
@given(guild=st.one_of(snowflakeish, anything), shard_count=st.one_of(st.integers(-3, 10**6), anything))
def test_shard_for_guild(guild: object, shard_count: typing.Any) -> None:
    try:
        shard = validation.shard_for_guild(guild, shard_count)
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert type(shard_count) is int and 0 <= shard < shard_count
    guild_id = validation._snowflake(guild, "guild")
    assert shard == (guild_id >> 22) % shard_count


activities = st.builds(
    hikari.Activity,
    name=st.one_of(st.text(max_size=10), anything),
    type=st.one_of(st.sampled_from(list(hikari.ActivityType)), st.integers(-2, 8), hashable),
    url=st.one_of(st.none(), st.text(max_size=10), anything),
    state=st.one_of(st.none(), st.text(max_size=10), anything),
)
presence_arguments = st.fixed_dictionaries(
    {
        "idle_since": undefined_or(st.one_of(st.none(), st.datetimes(timezones=st.one_of(
            st.none(), st.just(datetime.UTC), st.timezones())), anything)),
        "afk": undefined_or(st.one_of(st.booleans(), anything)),
        "activity": undefined_or(st.one_of(st.none(), activities, anything)),
        "status": undefined_or(st.one_of(st.sampled_from(list(hikari.Status)), st.sampled_from(
            [str(s) for s in hikari.Status]), st.text(max_size=8), anything)),
    }
)


@FUZZ
@given(arguments=presence_arguments)
def test_presence_update_and_merge(arguments: dict[str, typing.Any]) -> None:
    """What `presence_update` accepts always merges into a presence every host can apply and identify with."""
    try:
        checked = validation.presence_update(**arguments)
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert checked["status"] is UNDEFINED or isinstance(checked["status"], hikari.Status)
    merged = merge_presence(PresenceState(), **checked)
    kwargs = merged.to_hikari_kwargs()
    assert isinstance(kwargs["status"], hikari.Status)
    activity = kwargs["activity"]
    assert activity is None or isinstance(activity.type, hikari.ActivityType)
    assert kwargs["idle_since"] is None or kwargs["idle_since"].timestamp() >= 0
    assert merged.to_initial_kwargs()["initial_status"] == kwargs["status"]


@FUZZ
@given(arguments=presence_arguments)
def test_merge_presence_on_raw_input(arguments: dict[str, typing.Any]) -> None:
    try:
        merged = merge_presence(PresenceState(), **arguments)
        kwargs = merged.to_hikari_kwargs()
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert isinstance(kwargs["status"], hikari.Status)
    assert kwargs["activity"] is None or isinstance(kwargs["activity"].type, hikari.ActivityType)


# -- tokens ---------------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode().rstrip("=")


segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=0, max_size=40)
first_segments = st.one_of(
    segment,
    st.integers(min_value=-(2**66), max_value=2**66).map(lambda i: _b64(str(i))),
    st.text(max_size=12).map(_b64),
    st.sampled_from([_b64(" 12"), _b64("1_2"), _b64("+12"), _b64("0"), _b64("٣"), _b64(str(2**64)), "MTIz="]),
)
tokens = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", first_segments, segment, segment),
    st.builds(lambda a, b, c, sep: f"{a}{sep}{b}{sep}{c}", first_segments, segment, segment,
              st.sampled_from([".", "..", " ", ":"])),
    st.builds(lambda prefix, pad: f"{prefix}{TOKEN}{pad}", st.sampled_from(["", "Bot ", "bot ", "Bearer "]),
              st.sampled_from(["", " ", "\n", "$", ".", "=", ".x"])),
    st.builds(lambda i, c: TOKEN[:i] + c + TOKEN[i + 1:], st.integers(0, len(TOKEN) - 1),
              st.sampled_from(["!", " ", ".", "é", "\x00", "+", "/"])),
    anything,
)


@FUZZ
@given(token=tokens)
def test_validate_token(token: object) -> None:
    try:
        result = validate_token(token)
    except ALLOWED as exc:
        _no_echo(exc)
        if isinstance(token, str) and len(token.strip()) >= 8:
            assert token.strip() not in str(exc)
        return
    assert isinstance(token, str)
    assert result == token.strip().removeprefix("Bot ").removeprefix("bot ").strip()
    assert result.count(".") == 2 and all(result.split("."))
    assert 0 < bot_id_from_token(result) < SNOWFLAKE_LIMIT


@FUZZ
@given(token=tokens)
def test_bot_id_from_token(token: object) -> None:
    try:
        bot_id = bot_id_from_token(token)
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert type(bot_id) is int and 0 < bot_id < SNOWFLAKE_LIMIT


@FUZZ
@given(bot_id=st.integers(1, SNOWFLAKE_LIMIT - 1), secret=st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=27, max_size=60))
def test_every_well_formed_token_is_accepted(bot_id: int, secret: str) -> None:
    token = make_token(bot_id, secret)
    assert validate_token(token) == token
    assert validate_token(f"Bot {token}\n") == token
    assert bot_id_from_token(token) == bot_id


# -- settings, launch, REST URL ----------------------------------------------------------------------------

intent_names = sorted(hikari.Intents.__members__)


@FUZZ
@given(value=st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(0, ALL_INTENTS),
    st.text(max_size=30),
    st.integers(0, 2**40).map(str),
    st.lists(st.tuples(st.sampled_from(intent_names), st.booleans()), min_size=1, max_size=5).map(
        lambda names: "|".join(n.lower() if lower else n for n, lower in names)
    ),
    st.lists(st.sampled_from([*intent_names, "bogus", "__class__", "ALL_THE_THINGS", ""]), max_size=4).map(
        ", ".join
    ),
    anything,
))
def test_parse_intents(value: typing.Any) -> None:
    try:
        result = parse_intents(value)
    except ALLOWED as exc:
        _no_echo(exc)
        return
    assert type(result) is int and result >= 0 and not result & ~ALL_INTENTS
    if isinstance(value, str) and not value.strip().isdigit():
        names = [p.strip().upper() for p in value.replace(",", "|").split("|") if p.strip()]
        expected = 0
        for name in names:
            expected |= int(hikari.Intents[name])
        assert result == expected


@FUZZ
@given(shard_count=st.integers(1, 10_000), hosts=st.integers(1, 500))
def test_split_shards(shard_count: int, hosts: int) -> None:
    if hosts > shard_count:
        with pytest.raises(ValueError, match="at most"):
            split_shards(shard_count, hosts)
        return
    shares = split_shards(shard_count, hosts)
    assert len(shares) == hosts and sum(shares) == shard_count
    assert shares == sorted(shares, reverse=True) and shares[0] - shares[-1] <= 1


@FUZZ
@given(shard_count=st.one_of(st.integers(-5, 50), anything), hosts=st.one_of(st.integers(-5, 50), anything))
def test_split_shards_on_any_input(shard_count: typing.Any, hosts: typing.Any) -> None:
    try:
        shares = split_shards(shard_count, hosts)
    except ALLOWED:
        return
    assert type(hosts) is int and 1 <= hosts <= shard_count and type(shard_count) is int
    assert len(shares) == hosts and sum(shares) == shard_count


urls = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda scheme, userinfo, host, port, path: f"{scheme}{userinfo}{host}{port}{path}",
        st.sampled_from(["http://", "https://", "ftp://", "ws://", "", "http:/", "HTTP://", "https:///"]),
        st.sampled_from(["", f"user:{SECRET}@", f"{SECRET}@", "@"]),
        st.one_of(st.sampled_from(["discord.com", "127.0.0.1", "[::1]", "[::1", "", "exa mple.com", "h\x00st"]),
                  st.text(max_size=10)),
        st.one_of(st.just(""), st.integers(-5, 70_000).map(lambda p: f":{p}"), st.text(max_size=4).map(
            lambda p: f":{p}")),
        st.sampled_from(["", "/", "/api/v10", "/api/v10/", "/api/v10//", "?q=1", "#x", "/a b", "/\n"]),
    ),
    anything,
)


@FUZZ
@given(rest_url=urls)
def test_validate_rest_url(rest_url: typing.Any) -> None:
    try:
        result = validate_rest_url(rest_url)
    except ALLOWED as exc:
        _no_echo(exc)
        return
    parsed = urllib.parse.urlsplit(result)
    assert parsed.scheme in ("http", "https") and parsed.hostname
    assert "@" not in parsed.netloc and not result.endswith("/")
    assert not any(c.isspace() for c in result)
    assert parsed.port is None or 0 < parsed.port < 65536


# -- the emulator's gateway decoding ------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=12)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children,
                                                                                max_size=4)),
    max_leaves=12,
)
ops = st.one_of(st.sampled_from(sorted(CLIENT_OPS)), st.sampled_from([0, 5, 7, 9, 10, 11, 12, 42, 44, -1]),
                st.integers(-(2**40), 2**40), json_values)
identify_like = st.fixed_dictionaries(
    {"token": st.one_of(st.just(DEFAULT_TOKEN), st.just(TOKEN), json_values),
     "intents": st.one_of(st.integers(-2, 2**26), json_values),
     "shard": st.one_of(st.lists(st.integers(-3, 2**70), max_size=3), json_values)},
    optional={"properties": json_values, "large_threshold": json_values, "presence": json_values,
              "session_id": json_values, "seq": json_values},
)
frames = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"op": ops}, optional={"d": st.one_of(json_values, identify_like), "s": json_values,
                                                  "t": json_values}).map(json.dumps),
    st.fixed_dictionaries({"op": st.sampled_from(sorted(CLIENT_OPS)), "d": identify_like}).map(json.dumps),
    st.fixed_dictionaries({"op": ops, "d": identify_like}).map(lambda p: json.dumps(p).encode("utf-16")),
)
# What a server may answer to one frame on a fresh, unauthenticated connection (4000 means a handler crashed).
AFTER_VALID_OP = {None, 4002, 4003, 4004, 4005, 4010, 4011, 4013, 4014}


def _expected(raw: str | bytes) -> set[int | None]:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {4002}
    op = payload.get("op") if isinstance(payload, dict) else None
    if not isinstance(op, int) or isinstance(op, bool):
        return {4002}
    if op not in CLIENT_OPS:
        return {4001}
    return AFTER_VALID_OP


_EMULATOR: list[Emulator] = []


def _gateway() -> typing.Any:
    if not _EMULATOR:
        _EMULATOR.append(Emulator(EmulatorConfig(guilds=4, identify_window_s=0.0)))
    return _EMULATOR[0]._gateway


def _connection() -> Connection:
    return Connection(typing.cast(typing.Any, None), transport=None, compression=None, path="/gateway", conn_id=1)


@FUZZ
@given(raw=frames)
def test_emulator_decodes_any_frame_without_crashing(raw: str | bytes) -> None:
    gateway, conn = _gateway(), _connection()
    gateway._on_frame(conn, raw)
    assert conn.close_code in _expected(raw), (raw[:200], conn.close_code)
    for entry in gateway.recorder.received:
        if entry["op"] in (2, 6) and isinstance(entry["d"], dict) and "token" in entry["d"]:
            assert entry["d"]["token"] == "<redacted>"


def test_emulator_answers_deeply_nested_json_with_4002() -> None:
    conn = _connection()
    _gateway()._on_frame(conn, "[" * 100_000)
    assert conn.close_code == 4002


@pytest.fixture(scope="module")
def live_emulator() -> typing.Iterator[EmulatorThread]:
    emulator = EmulatorThread(EmulatorConfig(guilds=4, identify_window_s=0.0)).start()
    yield emulator
    emulator.stop()


async def _send_one(url: str, raw: str | bytes) -> int | None:
    async with aiohttp.ClientSession() as session, session.ws_connect(
        url + "?v=10&encoding=json", autoclose=False, max_msg_size=0
    ) as ws:
        hello = await ws.receive(timeout=10)
        assert hello.type == aiohttp.WSMsgType.TEXT and json.loads(hello.data)["op"] == 10
        if isinstance(raw, bytes):
            await ws.send_bytes(raw)
        else:
            await ws.send_str(raw)
        deadline = asyncio.get_running_loop().time() + 0.5
        while True:
            try:
                msg = await ws.receive(timeout=max(0.01, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                await ws.close(code=1000)
                return None
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data)
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(raw=frames)
def test_emulator_over_a_real_websocket(live_emulator: EmulatorThread, raw: str | bytes) -> None:
    code = asyncio.run(_send_one(live_emulator.gateway_url, raw))
    assert code in _expected(raw), (raw[:200], code)
    assert live_emulator.control.health()["ok"]


def test_fuzz_helpers_are_sound() -> None:
    """The oracle itself: garbage is 4002, an unknown op 4001, a heartbeat nothing."""
    assert _expected(b"\xff\xfe\x00") == {4002}
    assert _expected("{not json") == {4002}
    assert _expected('{"op": true}') == {4002}
    assert _expected('{"op": 99}') == {4001}
    assert _expected('{"op": 1}') == AFTER_VALID_OP
    conn = _connection()
    _gateway()._on_frame(conn, '{"op": 1, "d": null}')
    assert conn.close_code is None
