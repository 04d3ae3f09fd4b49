"""Fetching ``GET /gateway/bot``: the shard count Discord recommends and the identify limits."""

from __future__ import annotations

import dataclasses
import urllib.parse

import aiohttp

from ray_shards.auth import mask_tokens

__all__ = ["GatewayBotInfo", "TokenRejectedError", "fetch_gateway_bot", "validate_rest_url"]


class TokenRejectedError(PermissionError):
    """Discord (or the emulator) answered 401: the bot token is wrong or was reset."""


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayBotInfo:
    """What ``GET /gateway/bot`` says."""

    url: str
    shards: int
    total: int
    remaining: int
    reset_after: float
    max_concurrency: int


def validate_rest_url(rest_url: str) -> str:
    """Return ``rest_url`` without a trailing slash, or raise `ValueError` if it is not a plain http(s) URL.

    Raises
    ------
    TypeError
        When ``rest_url`` is not a str.
    ValueError
        When it is not ``http://`` or ``https://`` with a host, has an invalid port, holds an
        ``@`` (credentials, never echoed) or contains whitespace or control characters. Messages
        mask anything shaped like a bot token.
    """
    if not isinstance(rest_url, str):
        msg = f"rest_url must be a str, not {type(rest_url).__name__}"
        raise TypeError(msg)
    example = "such as https://discord.com/api/v10"
    if any(c.isspace() or not c.isprintable() for c in rest_url):
        msg = f"rest_url must be an http:// or https:// URL {example}, without whitespace or control characters"
        raise ValueError(msg)
    if "@" in rest_url:  # checked first: an error must not echo credentials
        msg = "rest_url must not contain credentials (user:password@); the bot token authenticates REST calls"
        raise ValueError(msg)
    shown = mask_tokens(rest_url)
    shown = shown if len(shown) <= 100 else shown[:100] + "..."
    try:
        parsed = urllib.parse.urlsplit(rest_url)
        port = parsed.port
        host = parsed.hostname
    except ValueError as exc:
        msg = f"rest_url must be an http:// or https:// URL {example}, not {shown!r} ({exc})"
        raise ValueError(msg) from None
    if parsed.scheme not in ("http", "https") or not host:
        msg = f"rest_url must be an http:// or https:// URL {example}, not {shown!r}"
        raise ValueError(msg)
    if port == 0:
        msg = f"rest_url has port 0, which is not a port to connect to: {shown!r}"
        raise ValueError(msg)
    return rest_url.rstrip("/")


async def fetch_gateway_bot(rest_url: str, token: str, *, timeout: float = 15.0) -> GatewayBotInfo:
    """Ask Discord for the gateway URL, recommended shard count and session start limit.

    Raises
    ------
    TokenRejectedError
        On 401.
    ConnectionError
        When the REST API cannot be reached or answers something else.
    """
    url = validate_rest_url(rest_url) + "/gateway/bot"
    headers = {"Authorization": f"Bot {token}", "User-Agent": "DiscordBot (ray_shards, 0.1)"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status == 401:
                msg = "Discord rejected the bot token (401 Unauthorized); check DISCORD_TOKEN"
                raise TokenRejectedError(msg)
            if response.status != 200:
                msg = f"GET {url} answered HTTP {response.status}"
                raise ConnectionError(msg)
            data = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        msg = f"cannot reach the Discord REST API at {rest_url}: {type(exc).__name__}"
        raise ConnectionError(msg) from None
    try:
        limit = data["session_start_limit"]
        info = GatewayBotInfo(
            url=str(data["url"]),
            shards=int(data["shards"]),
            total=int(limit["total"]),
            remaining=int(limit["remaining"]),
            reset_after=float(limit["reset_after"]) / 1000.0,
            max_concurrency=int(limit.get("max_concurrency", 1)),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        msg = f"GET {url} answered a body that is not Discord's /gateway/bot object"
        raise ConnectionError(msg) from None
    if info.shards < 1 or info.max_concurrency < 1:
        msg = f"GET {url} answered shards={info.shards}, max_concurrency={info.max_concurrency}; both must be >= 1"
        raise ConnectionError(msg)
    return info
