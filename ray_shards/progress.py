"""Boot progress: a bar with the identify schedule's ETA on a terminal, a log line elsewhere."""

from __future__ import annotations

import logging
import typing

from ray_shards.render import render_bar, render_progress

if typing.TYPE_CHECKING:
    from ray_shards.protocol import BotStatus

__all__ = ["BootProgress"]

_LOGGER = logging.getLogger("ray_shards.launch")


class BootProgress:
    """Reports a boot's progress from the Orchestrator's ``status``.

    Parameters
    ----------
    stream
        Where the bar is drawn, or None to log lines instead.
    """

    def __init__(self, stream: typing.TextIO | None) -> None:
        self._stream = stream
        self._drawn = False

    @classmethod
    def for_stream(cls, stream: typing.TextIO) -> BootProgress:
        """A bar on ``stream`` when it is a terminal, log lines otherwise."""
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(stream if tty else None)

    def interval(self, log_every: float) -> float:
        """Seconds between two updates: a bar moves every second, a log line every ``log_every``."""
        return 1.0 if self._stream is not None else log_every

    def update(self, status: BotStatus) -> None:
        """Show one status snapshot."""
        if self._stream is None:
            _LOGGER.info("boot: %s", render_progress(status))
            return
        bar = render_bar(status.ready, status.total, status.identify_eta)
        self._stream.write(f"\rboot {bar}\x1b[K")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line so later output starts on a fresh one."""
        if self._stream is not None and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
