"""Settings from flags, ``RAY_SHARDS_*`` environment variables, ``DISCORD_TOKEN`` and a ``.env`` file."""

from __future__ import annotations

import hikari
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ray_shards.auth import mask_tokens

__all__ = ["RayShardsSettings", "parse_intents"]


_INTENT_NAMES: dict[str, int] = {name: int(flag) for name, flag in hikari.Intents.__members__.items()}
_ALL_INTENTS = int(hikari.Intents.ALL)


def _check_intent_bits(value: int) -> int:
    if value < 0 or value & ~_ALL_INTENTS:
        msg = f"intents {value} has bits Discord does not define; use hikari.Intents names or their sum"
        raise ValueError(msg)
    return value


def parse_intents(value: str | int) -> int:
    """Parse intents given as a number or as ``|``/``,``-separated `hikari.Intents` names.

    Raises
    ------
    TypeError
        For anything but a str or an int.
    ValueError
        For an unknown name (listing the valid ones), no name at all, or a number with bits
        Discord does not define.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = f"intents must be hikari.Intents names or a number, not {type(value).__name__}"
        raise TypeError(msg)
    if isinstance(value, int):
        return _check_intent_bits(int(value))
    text = value.strip()
    if text.isascii() and text.isdigit():
        return _check_intent_bits(int(text))
    total = 0
    names = [part.strip() for part in text.replace(",", "|").split("|") if part.strip()]
    if not names:
        msg = "no intents given: use hikari.Intents names joined by | (NONE for none) or a number"
        raise ValueError(msg)
    for name in names:
        flag = _INTENT_NAMES.get(name.upper())
        if flag is None:
            valid = ", ".join(sorted(_INTENT_NAMES))
            msg = f"unknown intent {mask_tokens(name)[:40]!r}; valid names: {valid}"
            raise ValueError(msg)
        total |= flag
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
