"""Interactions the emulator created, and whether they were acknowledged."""

from __future__ import annotations

import enum
import secrets

__all__ = ["AckResult", "InteractionStore"]


class AckResult(enum.Enum):
    """Outcome of an interaction callback."""

    OK = "ok"
    UNKNOWN = "unknown"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"


class _Interaction:
    __slots__ = ("acknowledged", "application_id", "guild_id", "token")

    def __init__(self, token: str, guild_id: int, application_id: int) -> None:
        self.token = token
        self.guild_id = guild_id
        self.application_id = application_id
        self.acknowledged = False


class InteractionStore:
    """Tracks created interactions by id and token (bounded)."""

    __slots__ = ("_by_id", "_by_token", "_limit")

    def __init__(self, limit: int = 100_000) -> None:
        self._by_id: dict[int, _Interaction] = {}
        self._by_token: dict[str, _Interaction] = {}
        self._limit = limit

    def create(self, interaction_id: int, guild_id: int, application_id: int) -> str:
        """Register a new interaction and return its token."""
        if len(self._by_id) >= self._limit:
            oldest = next(iter(self._by_id))
            self._by_token.pop(self._by_id.pop(oldest).token, None)
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48)
        record = _Interaction(token, guild_id, application_id)
        self._by_id[interaction_id] = record
        self._by_token[token] = record
        return token

    def acknowledge(self, interaction_id: int, token: str) -> AckResult:
        """Record the initial response of an interaction."""
        record = self._by_id.get(interaction_id)
        if record is None or not secrets.compare_digest(record.token, token):
            return AckResult.UNKNOWN
        if record.acknowledged:
            return AckResult.ALREADY_ACKNOWLEDGED
        record.acknowledged = True
        return AckResult.OK

    def lookup(self, token: str) -> tuple[int, int] | None:
        """Return ``(guild_id, application_id)`` of the interaction with that token, if known."""
        record = self._by_token.get(token)
        return None if record is None else (record.guild_id, record.application_id)
