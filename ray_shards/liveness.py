"""Which silent hosts the Orchestrator checks, looks up or gives up on: pure decisions, no Ray, no clock of its own.

Silence is measured on the Orchestrator's monotonic clock from a host's last sync. What to do about
it depends on what the Orchestrator can reach:

- a host actor it holds a handle to, silent past ``host_timeout``, gets a health check in the host's
  own concurrency group (`CheckHealth`); only a failed check or a shard loop stuck past
  ``host_timeout`` fences it (`fence_reason`). A host merely busy with a burst answers and is left
  alone: its sync runs on the shard loop, its health check does not;
- a host actor it has no handle to (after an Orchestrator restart, before the host re-registered)
  is looked up by name (`FindHandle`) once it missed two sync intervals;
- a standalone bot (no actor) cannot be killed: it closes its own shards (resumably) at half of
  ``standalone_lease_ttl`` without an answered sync, so only past the whole TTL, and after the same
  quarantine as a dead actor's, may its shards move (`Quarantine`).
"""

from __future__ import annotations

import dataclasses
import typing

__all__ = ["CheckHealth", "FindHandle", "HostSilence", "Quarantine", "fence_reason", "silent_host_actions"]


@dataclasses.dataclass(frozen=True, slots=True)
class HostSilence:
    """One live host as the liveness pass reads it."""

    host_id: str
    silent: float
    """Seconds since its last sync (Orchestrator's monotonic clock)."""
    watched: bool
    """The Orchestrator holds its actor handle (and watches it for death)."""
    has_handle: bool
    """It is an actor at all (registered with a handle); False for a standalone bot or a Client's shards."""
    fenced: bool = False
    """Already being killed."""
    checking: bool = False
    """A health check of it is in flight."""


@dataclasses.dataclass(frozen=True, slots=True)
class CheckHealth:
    """Ask the host's health loop (its own concurrency group); fence it by `fence_reason`."""

    host_id: str
    silent: float


@dataclasses.dataclass(frozen=True, slots=True)
class FindHandle:
    """Look the host's actor up by name and watch it, or declare it gone when there is none."""

    host_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Quarantine:
    """Declare a standalone host gone after the death quarantine (it stopped its shards by itself)."""

    host_id: str
    reason: str


LivenessAction: typing.TypeAlias = CheckHealth | FindHandle | Quarantine


def silent_host_actions(
    hosts: typing.Iterable[HostSilence], *, host_timeout: float, sync_interval: float, standalone_lease_ttl: float
) -> list[LivenessAction]:
    """What to do about each silent host this pass (nothing for hosts that synced recently)."""
    actions: list[LivenessAction] = []
    for host in hosts:
        if not host.watched:
            if host.has_handle and host.silent > sync_interval * 2:
                actions.append(FindHandle(host.host_id))
            elif not host.has_handle and host.silent > standalone_lease_ttl:
                actions.append(Quarantine(host.host_id, f"stopped syncing for {host.silent:.1f} s"))
        elif host.silent > host_timeout and not host.fenced and not host.checking:
            actions.append(CheckHealth(host.host_id, host.silent))
    return actions


def fence_reason(*, answered: bool, failure: str = "", loop_lag: float = 0.0, host_timeout: float) -> str | None:
    """Why a silent host must be fenced after its health check, or None to leave it running.

    ``answered`` is False when the check failed (``failure`` names the error); ``loop_lag`` is how
    long the host's shard loop has not run, as the host measured it.
    """
    if not answered:
        return f"its health check failed ({failure})"
    if loop_lag > host_timeout:
        return f"its shard loop has been stuck for {loop_lag:.1f} s"
    return None
