"""Bot identity from its token, salted token hashes and capabilities.

The token itself is never stored: the Orchestrator keeps a salted scrypt hash,
checks a presented token against it, and hands out random capabilities that
stand for "this caller proved it holds the token" in later calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

__all__ = ["TokenHash", "bot_id_from_token", "command_key", "mask_tokens", "new_capability", "redact", "validate_token"]

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


_MAX_TOKEN_LENGTH = 512
_SNOWFLAKE_LIMIT = 1 << 64


def _strip_token(token: object) -> str:
    if not isinstance(token, str):
        msg = f"the bot token must be a str, not {type(token).__name__}"
        raise TypeError(msg)
    token = token.strip()
    if token[:4].lower() == "bot ":
        token = token[4:].strip()
    return token


def validate_token(token: object) -> str:
    """Return the stripped token (without a ``Bot `` prefix), or raise saying what is wrong.

    Messages never echo the token.

    Raises
    ------
    TypeError
        When ``token`` is not a str.
    ValueError
        When it is empty, too long, not three dot-separated base64url parts, or its first
        part is not the base64 of a snowflake.
    """
    token = _strip_token(token)
    if not token:
        msg = "no bot token given: pass one or set DISCORD_TOKEN"
        raise ValueError(msg)
    if len(token) > _MAX_TOKEN_LENGTH:
        msg = f"the bot token is malformed: it is over {_MAX_TOKEN_LENGTH} characters long"
        raise ValueError(msg)
    if not _TOKEN_RE.match(token):
        msg = "the bot token is malformed: a Discord bot token has three dot-separated base64 parts"
        raise ValueError(msg)
    bot_id_from_token(token)
    return token


def bot_id_from_token(token: object) -> int:
    """Return the bot's user id, which Discord encodes in the token's first segment.

    Raises
    ------
    TypeError
        When ``token`` is not a str.
    ValueError
        When the first segment is not the base64 of a snowflake (a decimal number from 1
        to 2**64 - 1). Messages never echo the token.
    """
    first = _strip_token(token).split(".", 1)[0]
    msg = "the bot token is malformed: its first part must be the base64 of the bot's id"
    if not first or len(first) > 32 or not re.fullmatch(r"[A-Za-z0-9_\-]+", first):
        raise ValueError(msg)
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(msg) from None
    # Only plain ASCII digits: int() would also take signs, spaces and underscores.
    if not decoded.isascii() or not decoded.isdigit():
        raise ValueError(msg)
    value = int(decoded)
    if not 0 < value < _SNOWFLAKE_LIMIT:
        raise ValueError(msg)
    return value


_TOKEN_LIKE_RE = re.compile(r"[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{8,}")


def mask_tokens(text: str) -> str:
    """Return ``text`` with anything shaped like a bot token replaced by ``<token?>``.

    For error messages that show a value the caller passed: a token passed in the wrong
    argument is then not echoed.
    """
    return _TOKEN_LIKE_RE.sub("<token?>", text)


def command_key(token: str) -> str:
    """The key that proves a direct shard command comes from a holder of the bot's token.

    Hosts and Clients both hold the token, so both derive it; it travels as a method
    argument (never recorded by Ray), and it cannot be turned back into the token.
    """
    return hashlib.blake2b(token.encode(), person=b"ray_shards.cmd", digest_size=32).hexdigest()


def new_capability() -> str:
    """Return a fresh unguessable capability."""
    return secrets.token_urlsafe(32)


def redact(text: str, token: str) -> str:
    """Return ``text`` with every occurrence of ``token`` (and of its secret part) replaced."""
    if not token:
        return text
    text = text.replace(token, "<token>")
    secret = token.rsplit(".", 1)[-1]
    if len(secret) >= 8:
        text = text.replace(secret, "<token>")
    return text


class TokenHash:
    """A salted scrypt hash of the bot token, safe to checkpoint."""

    __slots__ = ("digest", "salt")

    def __init__(self, salt: bytes, digest: bytes) -> None:
        self.salt = salt
        self.digest = digest

    @classmethod
    def of(cls, token: str) -> TokenHash:
        """Hash ``token`` with a new random salt."""
        salt = secrets.token_bytes(16)
        return cls(salt, cls._derive(token, salt))

    @staticmethod
    def _derive(token: str, salt: bytes) -> bytes:
        return hashlib.scrypt(token.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)

    def matches(self, token: str) -> bool:
        """Whether ``token`` is the hashed token (constant time)."""
        return hmac.compare_digest(self._derive(token, self.salt), self.digest)

    def to_json(self) -> dict[str, str]:
        """Serialise for a checkpoint."""
        return {"salt": self.salt.hex(), "digest": self.digest.hex()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> TokenHash:
        """Load from a checkpoint."""
        return cls(bytes.fromhex(data["salt"]), bytes.fromhex(data["digest"]))

    def __repr__(self) -> str:
        return "TokenHash(<salted scrypt>)"
