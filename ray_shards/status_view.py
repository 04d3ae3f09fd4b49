"""What ``ray-shards status`` prints: text (a table or a per-host summary), JSON or YAML, filtered."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import typing

from ray_shards.models import ShardInfo
from ray_shards.render import render_progress, render_summary, render_table

if typing.TYPE_CHECKING:
    from ray_shards.protocol import BotStatus

__all__ = ["AUTO_SUMMARY_ABOVE", "FORMATS", "STATES", "VIEWS", "StatusView", "status_document"]

FORMATS = ("text", "json", "yaml")
VIEWS = ("auto", "table", "summary")
STATES = ("unassigned", "starting", "ready", "reconnecting", "failed", "stopped")
AUTO_SUMMARY_ABOVE = 64
"""``--view auto`` prints one line per shard up to this many shards, one line per host above."""

_CLEAR = "\x1b[2J\x1b[H"


def _plain(value: typing.Any) -> typing.Any:
    """A JSON/YAML-safe copy: enums as their values, NaN as None, tuples and sets as lists."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def status_document(status: BotStatus, rows: typing.Iterable[ShardInfo]) -> dict[str, typing.Any]:
    """The machine-readable status: boot progress, hosts, presence and the (filtered) shard rows."""
    shards = sorted(rows, key=lambda r: r.shard_id)
    # Projected from the dict form `status` always had, so the JSON/YAML documents stay the same.
    status_dict = status.to_dict()
    return {
        "bot_id": status_dict["bot_id"],
        "ready": status_dict["ready"],
        "total": status_dict["total"],
        "identify_eta": status_dict["identify_eta"],
        "identifies_remaining": status_dict["identifies_remaining"],
        "stopping": status_dict["stopping"],
        "hosts": _plain(status_dict["hosts"]),
        "presence": _plain(status_dict["presence"]),
        "rolling_restart": _plain(status_dict["rolling_restart"]),
        "reshard": _plain(status_dict["reshard"]),
        "shards": [_plain(dataclasses.asdict(r)) for r in shards],
    }


@dataclasses.dataclass(frozen=True)
class StatusView:
    """How to print one status snapshot.

    Parameters
    ----------
    fmt
        ``text``, ``json`` (one document a line, so ``--watch`` gives JSON lines) or ``yaml``
        (documents separated by ``---``).
    view
        For text: ``table`` (one line per shard), ``summary`` (one per host, shards counted by
        state) or ``auto`` (the table up to `AUTO_SUMMARY_ABOVE` shards, else the summary).
    hosts, states
        Show only shards on these hosts / in these states (empty: all).
    clear
        Clear the screen before each snapshot (only when writing to a terminal).
    """

    fmt: str = "text"
    view: str = "auto"
    hosts: set[str] = dataclasses.field(default_factory=set)
    states: set[str] = dataclasses.field(default_factory=set)
    clear: bool = False

    def select(self, rows: typing.Iterable[ShardInfo]) -> list[ShardInfo]:
        """The rows that pass the host and state filters."""
        return [
            r
            for r in rows
            if (not self.hosts or (r.host_id or "-") in self.hosts)
            and (not self.states or r.status.value in self.states)
        ]

    def render(self, status: BotStatus, rows: typing.Iterable[ShardInfo]) -> str:
        """The text to write for one snapshot, ending with a newline."""
        shown = self.select(rows)
        if self.fmt == "json":
            return json.dumps(status_document(status, shown), sort_keys=True) + "\n"
        if self.fmt == "yaml":
            import yaml

            return "---\n" + str(yaml.safe_dump(status_document(status, shown), sort_keys=True))
        summary = self.view == "summary" or (self.view == "auto" and len(shown) > AUTO_SUMMARY_ABOVE)
        body = render_summary(shown) if summary else render_table(shown)
        text = f"{render_progress(status)}\n{body}\n"
        # Off a terminal (a pipe, a log file) escape codes are garbage: separate snapshots by a blank line.
        return _CLEAR + text if self.clear else text + "\n"
