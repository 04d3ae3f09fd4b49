"""Everything the emulator observed, kept for tests (bounded, token-free)."""

from __future__ import annotations

import collections
import typing

__all__ = ["Entry", "Recorder"]

Entry: typing.TypeAlias = dict[str, typing.Any]

_REDACTED = "<redacted>"


def redact(data: object) -> object:
    """Return ``data`` with a top-level ``token`` replaced by ``"<redacted>"``.

    Parameters
    ----------
    data
        An op ``d`` object.

    Returns
    -------
    object
        A redacted shallow copy when there was a token, else ``data`` itself.
    """
    if isinstance(data, dict) and "token" in data:
        return {**data, "token": _REDACTED}
    return data


class Recorder:
    """Logs and counters of one emulator.

    Parameters
    ----------
    max_entries
        Upper bound of each log (the oldest entries are dropped first).
    """

    __slots__ = (
        "budget_exhausted",
        "closes",
        "identifies",
        "identify_attempts",
        "identify_log",
        "interaction_responses",
        "messages",
        "rate_limit_violations",
        "received",
        "rest_log",
        "resume_log",
        "resumes",
        "script_sent",
        "send_limit_violations",
        "stream_sent",
        "streamed",
        "takeovers",
    )

    def __init__(self, max_entries: int = 200_000) -> None:
        self.identify_log: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.resume_log: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.received: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.rest_log: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.messages: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.interaction_responses: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.closes: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.stream_sent: collections.deque[Entry] = collections.deque(maxlen=max_entries * 5)
        # The stream's events since the last reset. Not len(stream_sent): that log stops growing at its cap
        # (1 M), and a benchmark that streamed more then read "0 sent" for every later burst.
        self.streamed = 0
        self.script_sent: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.identifies = 0
        self.identify_attempts = 0
        self.resumes = 0
        self.rate_limit_violations = 0
        self.budget_exhausted = 0
        self.send_limit_violations = 0
        self.takeovers = 0

    def reset(self) -> None:
        """Clear every log and counter."""
        for log in (
            self.identify_log,
            self.resume_log,
            self.received,
            self.rest_log,
            self.messages,
            self.interaction_responses,
            self.closes,
            self.stream_sent,
            self.script_sent,
        ):
            log.clear()
        self.identifies = 0
        self.identify_attempts = 0
        self.resumes = 0
        self.rate_limit_violations = 0
        self.budget_exhausted = 0
        self.send_limit_violations = 0
        self.takeovers = 0
        self.streamed = 0

    def counters(self) -> dict[str, int]:
        """Return the counters as a dict."""
        return {
            "identifies": self.identifies,
            "identify_attempts": self.identify_attempts,
            "resumes": self.resumes,
            "takeovers": self.takeovers,
            "rate_limit_violations": self.rate_limit_violations,
            "budget_exhausted": self.budget_exhausted,
            "send_limit_violations": self.send_limit_violations,
        }

    def received_entries(self, shard_id: int | None = None, op: int | None = None) -> list[Entry]:
        """Return received payloads, optionally filtered by shard id and opcode."""
        return [
            dict(e)
            for e in self.received
            if (shard_id is None or e["shard_id"] == shard_id) and (op is None or e["op"] == op)
        ]
