"""Settings from flags, ``RAY_SHARDS_*`` environment variables, ``DISCORD_TOKEN`` and a ``.env`` file."""

from __future__ import annotations

import hikari
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["RayShardsSettings", "parse_intents"]


def parse_intents(value: str | int) -> int:
    """Parse intents given as a number or as ``|``/``,``-separated `hikari.Intents` names.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    total = 0
    for part in text.replace(",", "|").split("|"):
        name = part.strip().upper()
        if not name:
            continue
        try:
            total |= int(hikari.Intents[name])
        except KeyError:
            valid = ", ".join(sorted(i.name for i in hikari.Intents if i.name))
            msg = f"unknown intent {part.strip()!r}; valid names: {valid}"
            raise ValueError(msg) from None
    return total


class RayShardsSettings(BaseSettings):
    """Everything the ``ray-shards`` command reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="RAY_SHARDS_", env_file=".env", extra="ignore")

    token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DISCORD_TOKEN", "RAY_SHARDS_TOKEN"))
    address: str | None = None
    rest_url: str = hikari.urls.REST_API_URL
    shard_count: int | None = Field(default=None, ge=1)
    hosts: int | None = Field(default=None, ge=1)
    intents: int = int(hikari.Intents.ALL_UNPRIVILEGED)

    @field_validator("intents", mode="before")
    @classmethod
    def _intents(cls, value: object) -> int:
        if isinstance(value, str | int):
            return parse_intents(value)
        msg = "intents must be a number or hikari.Intents names"
        raise ValueError(msg)
