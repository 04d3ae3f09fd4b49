"""The bot's presence as a plain, picklable value, and its conversion to hikari's types.

The Orchestrator stores one `PresenceState` per bot and every shard that starts
or resumes later is given it, so presence survives restarts and hand-overs.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

import hikari

__all__ = ["ActivityState", "PresenceState", "merge_presence", "validate_activity"]


@dataclasses.dataclass(frozen=True, slots=True)
class ActivityState:
    """A picklable `hikari.Activity`."""

    name: str
    type: int = int(hikari.ActivityType.PLAYING)
    url: str | None = None
    state: str | None = None

    @classmethod
    def from_hikari(cls, activity: hikari.Activity) -> ActivityState:
        """Copy a hikari activity."""
        return cls(name=activity.name, type=int(activity.type), url=activity.url, state=activity.state)

    def to_hikari(self) -> hikari.Activity:
        """Build the hikari activity."""
        return hikari.Activity(name=self.name, type=hikari.ActivityType(self.type), url=self.url, state=self.state)


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceState:
    """The presence every shard of the bot shows."""

    status: str = str(hikari.Status.ONLINE)
    activity: ActivityState | None = None
    idle_since: float | None = None
    afk: bool = False

    def to_hikari_kwargs(self) -> dict[str, typing.Any]:
        """Keyword arguments for ``GatewayShard.update_presence``."""
        return {
            "status": hikari.Status(self.status),
            "activity": self.activity.to_hikari() if self.activity else None,
            "idle_since": (
                datetime.datetime.fromtimestamp(self.idle_since, tz=datetime.UTC)
                if self.idle_since is not None
                else None
            ),
            "afk": self.afk,
        }

    def to_initial_kwargs(self) -> dict[str, typing.Any]:
        """Keyword arguments for ``GatewayShardImpl(initial_...)``."""
        kwargs = self.to_hikari_kwargs()
        return {
            "initial_status": kwargs["status"],
            "initial_activity": kwargs["activity"],
            "initial_idle_since": kwargs["idle_since"],
            "initial_is_afk": kwargs["afk"],
        }


def validate_activity(activity: hikari.UndefinedNoneOr[hikari.Activity]) -> None:
    """Refuse activities Discord rejects, before anything is sent (as hikari does)."""
    if activity is hikari.UNDEFINED or activity is None:
        return
    if not isinstance(activity, hikari.Activity):
        msg = f"activity must be a hikari.Activity, not {type(activity).__name__}"
        raise TypeError(msg)
    if activity.type is hikari.ActivityType.CUSTOM and not activity.state and not activity.name:
        msg = "a custom activity needs a state or a name"
        raise ValueError(msg)


def merge_presence(
    current: PresenceState,
    *,
    idle_since: hikari.UndefinedNoneOr[datetime.datetime] = hikari.UNDEFINED,
    afk: hikari.UndefinedOr[bool] = hikari.UNDEFINED,
    activity: hikari.UndefinedNoneOr[hikari.Activity] = hikari.UNDEFINED,
    status: hikari.UndefinedOr[hikari.Status] = hikari.UNDEFINED,
) -> PresenceState:
    """Return ``current`` with every defined field replaced; undefined fields stay as they are.

    Raises
    ------
    TypeError, ValueError
        For a value of the wrong type or one Discord would reject.
    """
    from ray_shards.validation import presence_update  # validation imports this module

    checked = presence_update(idle_since=idle_since, afk=afk, activity=activity, status=status)
    idle_since, afk, activity, status = checked["idle_since"], checked["afk"], checked["activity"], checked["status"]
    changes: dict[str, typing.Any] = {}
    if status is not hikari.UNDEFINED:
        try:
            changes["status"] = str(hikari.Status(status))
        except ValueError:
            msg = f"unknown status {status!r}; use a hikari.Status"
            raise ValueError(msg) from None
    if activity is not hikari.UNDEFINED:
        changes["activity"] = ActivityState.from_hikari(activity) if activity is not None else None
    if idle_since is not hikari.UNDEFINED:
        if idle_since is not None and not isinstance(idle_since, datetime.datetime):
            msg = f"idle_since must be a datetime or None, not {type(idle_since).__name__}"
            raise TypeError(msg)
        changes["idle_since"] = idle_since.timestamp() if idle_since is not None else None
    if afk is not hikari.UNDEFINED:
        if not isinstance(afk, bool):
            msg = f"afk must be a bool, not {type(afk).__name__}"
            raise TypeError(msg)
        changes["afk"] = afk
    return dataclasses.replace(current, **changes)
