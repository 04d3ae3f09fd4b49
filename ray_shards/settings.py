"""Settings from flags, ``RAY_SHARDS_*`` environment variables, ``DISCORD_TOKEN`` and a ``.env`` file."""

from __future__ import annotations

import dataclasses
import ssl
import typing

import attrs
import hikari
from hikari.impl import config as config_impl
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ray_shards.auth import mask_tokens

__all__ = ["HostSetup", "RayShardsSettings", "parse_intents"]


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


# Bot arguments a ShardHost sets itself: the bot's, or the host's own.
_CHOSEN_BY_THE_HOST = frozenset(
    {"intents", "rest_url", "local_shard_count", "host_id", "timings", "actor_handle", "global_shard_count", "shadow"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class HostSetup:
    """How the launchers' ShardHosts build and set up their `ray_shards.Bot`.

    `run_subprocesses`, `spawn_subprocesses` and `BotDeployment.start` build one from
    their ``cache_settings``, ``http_settings``, ``proxy_settings``, ``large_threshold``
    and ``settings_factory`` arguments. For ``ray-shards run --entrypoint mod:name``
    (and so ``cluster.yaml`` jobs), make ``mod.name`` a `HostSetup`: it is callable like
    the plain callback it wraps. It is pickled, sent to every host and kept in the
    Orchestrator's checkpoint, so it must not hold secrets: read those in
    ``settings_factory``, which runs on the host.

    Parameters
    ----------
    callback
        Called with each host's bot before it starts (set listeners and frameworks up here).
    cache_settings, http_settings, proxy_settings
        hikari's settings objects, passed to each host's `Bot` as in `hikari.GatewayBot`.
    large_threshold
        Members in a guild before Discord treats it as large (50 to 250), for every host's shards.
    settings_factory
        Called on each host (in its process, before its bot is built) with no arguments;
        returns more keyword arguments for `ray_shards.Bot`, such as ``executor=`` (which
        cannot be pickled) or ``auto_chunk_members=``. Configure logging here too: it runs
        in the host's process.
    """

    callback: typing.Callable[[typing.Any], typing.Any] | None = None
    cache_settings: config_impl.CacheSettings | None = None
    http_settings: config_impl.HTTPSettings | None = None
    proxy_settings: config_impl.ProxySettings | None = None
    large_threshold: int | None = None
    settings_factory: typing.Callable[[], typing.Mapping[str, typing.Any] | None] | None = None

    def __post_init__(self) -> None:
        if self.callback is not None and not callable(self.callback):
            msg = f"callback must be callable, not {type(self.callback).__name__}"
            raise TypeError(msg)
        if self.settings_factory is not None and not callable(self.settings_factory):
            msg = f"settings_factory must be callable, not {type(self.settings_factory).__name__}"
            raise TypeError(msg)
        for name, kind in (
            ("cache_settings", config_impl.CacheSettings),
            ("http_settings", config_impl.HTTPSettings),
            ("proxy_settings", config_impl.ProxySettings),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                msg = f"{name} must be a hikari.impl.{kind.__name__}, not {type(value).__name__}"
                raise TypeError(msg)
        threshold = self.large_threshold
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int)
                                      or not 50 <= threshold <= 250):
            msg = f"large_threshold must be a whole number from 50 to 250 (Discord's range), not {threshold!r}"
            raise ValueError(msg)

    def __reduce__(self) -> tuple[typing.Any, ...]:
        # hikari's HTTPSettings holds an ssl.SSLContext, which cannot be pickled: send its fields instead.
        http = _http_settings_fields(self.http_settings) if self.http_settings is not None else None
        fields = (self.callback, self.cache_settings, http, self.proxy_settings, self.large_threshold)
        return (_rebuild_host_setup, (*fields, self.settings_factory))

    def __call__(self, bot: typing.Any) -> typing.Any:
        """Run the wrapped callback (if any) on ``bot``."""
        return self.callback(bot) if self.callback is not None else None

    def bot_options(self) -> dict[str, typing.Any]:
        """Keyword arguments for the host's `ray_shards.Bot`: the settings objects, then the factory's (run here).

        Raises
        ------
        TypeError
            When the factory returns something other than a mapping of names to values.
        """
        options: dict[str, typing.Any] = {
            name: getattr(self, name)
            for name in ("cache_settings", "http_settings", "proxy_settings")
            if getattr(self, name) is not None
        }
        if self.settings_factory is not None:
            extra = self.settings_factory()
            if extra is not None:
                if not isinstance(extra, typing.Mapping) or not all(isinstance(k, str) for k in extra):
                    msg = f"settings_factory must return a mapping of Bot keyword arguments, not {type(extra).__name__}"
                    raise TypeError(msg)
                chosen = sorted(set(extra) & _CHOSEN_BY_THE_HOST)
                if chosen:
                    msg = f"settings_factory cannot set {', '.join(chosen)}: the launcher sets them for every host"
                    raise TypeError(msg)
                options.update(extra)
        return options


def _http_settings_fields(settings: config_impl.HTTPSettings) -> dict[str, typing.Any]:
    """``settings`` as picklable fields: its SSLContext becomes hikari's ``ssl=True``/``False`` it was built from.

    Raises
    ------
    TypeError
        For a custom SSLContext (own CA or options): it cannot be pickled, so build it in ``settings_factory``.
    """
    fields = {field.name: getattr(settings, field.name) for field in attrs.fields(type(settings))}
    context = fields["ssl"]
    plain = ssl.create_default_context()
    custom = context.cert_store_stats() != plain.cert_store_stats() or context.options != plain.options
    if context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname and not custom:
        fields["ssl"] = True
    elif context.verify_mode == ssl.CERT_NONE and not context.check_hostname and not custom:
        fields["ssl"] = False
    else:
        msg = (
            "http_settings.ssl is a custom ssl.SSLContext, which cannot be sent to the hosts; return "
            "http_settings from HostSetup.settings_factory instead (it runs on each host)"
        )
        raise TypeError(msg)
    return fields


def _rebuild_host_setup(
    callback: typing.Callable[[typing.Any], typing.Any] | None,
    cache_settings: config_impl.CacheSettings | None,
    http_fields: dict[str, typing.Any] | None,
    proxy_settings: config_impl.ProxySettings | None,
    large_threshold: int | None,
    settings_factory: typing.Callable[[], typing.Mapping[str, typing.Any] | None] | None,
) -> HostSetup:
    return HostSetup(
        callback=callback,
        cache_settings=cache_settings,
        http_settings=config_impl.HTTPSettings(**http_fields) if http_fields is not None else None,
        proxy_settings=proxy_settings,
        large_threshold=large_threshold,
        settings_factory=settings_factory,
    )
