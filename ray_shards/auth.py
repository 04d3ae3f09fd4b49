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

__all__ = ["TokenHash", "bot_id_from_token", "new_capability", "redact", "validate_token"]

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


def validate_token(token: object) -> str:
    """Return the stripped token, or raise `ValueError` saying what is wrong (without echoing it)."""
    if not isinstance(token, str):
        msg = f"the bot token must be a str, not {type(token).__name__}"
        raise TypeError(msg)
    token = token.strip()
    if token.lower().startswith("bot "):
        token = token[4:].strip()
    if not token:
        msg = "no bot token given: pass one or set DISCORD_TOKEN"
        raise ValueError(msg)
    if not _TOKEN_RE.match(token):
        msg = "the bot token is malformed: a Discord bot token has three dot-separated base64 parts"
        raise ValueError(msg)
    bot_id_from_token(token)
    return token


def bot_id_from_token(token: str) -> int:
    """Return the bot's user id, which Discord encodes in the token's first segment."""
    first = token.strip().split(".", 1)[0]
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), altchars=b"-_", validate=False).decode("ascii")
        value = int(decoded)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        msg = "the bot token is malformed: its first part must be the base64 of the bot's id"
        raise ValueError(msg) from None
    if value <= 0:
        msg = "the bot token is malformed: its first part must be the base64 of the bot's id"
        raise ValueError(msg)
    return value


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
