"""Configuration of the Discord emulator and fake bot tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_BOT_ID",
    "DEFAULT_TOKEN",
    "EmulatorConfig",
    "bot_id_from_token",
    "make_token",
    "token_matches",
]

DEFAULT_BOT_ID: int = 1_234_567_890_123_456_789
"""Snowflake of the bot user that `DEFAULT_TOKEN` belongs to."""

_DEFAULT_SECRET = "ray-shards-emulator-fake-secret-not-real"


def make_token(bot_id: int, secret: str | None = None) -> str:
    """Build a bot token with the shape hikari and Discord expect.

    Parameters
    ----------
    bot_id
        Snowflake of the bot user; it becomes the token's first segment.
    secret
        Third segment (at least 27 characters). A random one is generated
        when omitted.

    Returns
    -------
    str
        ``base64(str(bot_id))`` without padding, a dot, six characters
        derived from the id and secret, a dot, and the secret.
    """
    if secret is None:
        secret = secrets.token_urlsafe(30)
    if len(secret) < 27:
        raise ValueError("the token secret must be at least 27 characters long")
    first = base64.b64encode(str(bot_id).encode()).decode().rstrip("=")
    digest = hashlib.sha256(f"{bot_id}:{secret}".encode()).digest()
    middle = base64.urlsafe_b64encode(digest).decode()[:6]
    return f"{first}.{middle}.{secret}"


def bot_id_from_token(token: str) -> int | None:
    """Decode the bot id from a token's first segment.

    Parameters
    ----------
    token
        A bot token, with or without a ``Bot `` prefix.

    Returns
    -------
    int | None
        The snowflake, or `None` when the first segment is not a base64 integer.
    """
    if token.startswith("Bot "):
        token = token[4:]
    first = token.split(".", 1)[0]
    try:
        raw = base64.b64decode(first + "=" * (-len(first) % 4), validate=True)
        return int(raw.decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def token_matches(candidate: object, accepted: list[str]) -> bool:
    """Compare a presented token to the accepted ones in constant time.

    Parameters
    ----------
    candidate
        Whatever the client sent (non-strings never match).
    accepted
        Tokens that are valid.

    Returns
    -------
    bool
        Whether ``candidate`` equals one of ``accepted``.
    """
    if not isinstance(candidate, str) or not candidate:
        return False
    presented = candidate.encode()
    found = False
    for token in accepted:
        found |= hmac.compare_digest(presented, token.encode())
    return found


DEFAULT_TOKEN: str = make_token(DEFAULT_BOT_ID, _DEFAULT_SECRET)
"""A valid fake token for `DEFAULT_BOT_ID`; the emulator accepts it by default."""


class EmulatorConfig(BaseModel):
    """Settings of one emulated Discord deployment.

    Attributes
    ----------
    host, port
        Where the server listens (port 0 picks a free port).
    public_host
        Host name written into URLs handed to clients (defaults to ``host``,
        or 127.0.0.1 when listening on a wildcard address).
    token, extra_tokens
        Bot tokens that are accepted (never shown in ``repr``).
    shards
        Recommended shard count returned by ``GET /gateway/bot``.
    max_concurrency, session_total, session_remaining, session_reset_after_ms
        The ``session_start_limit`` of the bot.
    identify_window_s, enforce_identify_rate_limit
        One IDENTIFY per ``shard_id % max_concurrency`` bucket per window.
    guilds, members_per_guild, max_guilds_per_shard
        Size of the fake world; close 4011 when a shard would hold too many guilds.
    heartbeat_interval_ms
        Sent in HELLO.
    session_timeout_s
        How long a disconnected session stays resumable.
    replay_buffer_size
        Dispatches kept per session for RESUME replay.
    allow_privileged_intents
        When false, privileged intents are refused with close 4014.
    resume_gateway_path, gateway_path
        Both serve the gateway; READY's ``resume_gateway_url`` uses the former.
    advertised_gateway_url
        Gateway URL returned by ``/gateway`` and ``/gateway/bot`` instead of
        this server's own (to put a proxy or another emulator in between).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    public_host: str | None = None
    token: str = Field(default=DEFAULT_TOKEN, repr=False, min_length=1)
    extra_tokens: list[str] = Field(default_factory=list, repr=False)
    shards: int = Field(default=1, ge=1)
    max_concurrency: int = Field(default=1, ge=1)
    session_total: int = Field(default=1000, ge=0)
    session_remaining: int = Field(default=1000, ge=0)
    session_reset_after_ms: int = Field(default=86_400_000, ge=0)
    identify_window_s: float = Field(default=5.0, ge=0.0)
    enforce_identify_rate_limit: bool = True
    guilds: int = Field(default=10, ge=0)
    members_per_guild: int = Field(default=5, ge=0)
    max_guilds_per_shard: int = Field(default=2500, ge=1)
    heartbeat_interval_ms: int = Field(default=41_250, ge=50)
    session_timeout_s: float = Field(default=120.0, ge=0.0)
    replay_buffer_size: int = Field(default=100_000, ge=1)
    allow_privileged_intents: bool = True
    gateway_path: str = "/gateway"
    resume_gateway_path: str = "/gateway-resume"
    advertised_gateway_url: str | None = None

    @model_validator(mode="after")
    def _check_paths(self) -> EmulatorConfig:
        for path in (self.gateway_path, self.resume_gateway_path):
            if not path.startswith("/") or path.startswith(("/api/", "/_emulator")):
                raise ValueError(f"invalid gateway path {path!r}")
        if self.gateway_path == self.resume_gateway_path:
            raise ValueError("resume_gateway_path must differ from gateway_path")
        return self

    def accepted_tokens(self) -> list[str]:
        """Return every token the emulator accepts.

        Returns
        -------
        list[str]
            ``token`` followed by ``extra_tokens``.
        """
        return [self.token, *self.extra_tokens]

    def url_host(self) -> str:
        """Return the host name to put into URLs handed to clients.

        Returns
        -------
        str
            ``public_host``, else ``host`` (127.0.0.1 for wildcard addresses).
        """
        if self.public_host:
            return self.public_host
        if self.host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host
