"""Log level and format for the ``ray-shards`` command and the Ray workers of the bot it starts.

``--log-format json`` writes one JSON object a line here and asks Ray for the same in its workers
(``ray.LoggingConfig(encoding="JSON")``), so log shippers parse both alike.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import typing

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "configure_logging",
    "hand_over_to_ray",
    "ray_logging_config",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_LEVEL_VAR = "RAY_SHARDS_LOG_LEVEL"
_FORMAT_VAR = "RAY_SHARDS_LOG_FORMAT"
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "ray_shards.cli"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        # Ray's own JSON log fields (ray.LoggingConfig(encoding="JSON")), plus the logger's name.
        document: dict[str, typing.Any] = {
            "asctime": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
            "process": record.process,
            "timestamp_ns": int(record.created * 1e9),
        }
        if record.exc_info:
            document["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(level: str | None, fmt: str = "text", *, bot_logs_at_info: bool = False) -> None:
    """Set up this process's logging and remember the choice for `ray_logging_config`.

    Parameters
    ----------
    level
        A name from `LOG_LEVELS`, or None for WARNING (and INFO for ``ray_shards`` loggers
        when ``bot_logs_at_info``: a running bot's boot progress and failovers are worth seeing).
    fmt
        ``text`` or ``json``.

    Raises
    ------
    ValueError
        For an unknown level or format (from the environment; flags are checked by argparse).
    """
    if level is not None and level.upper() not in LOG_LEVELS:
        msg = f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        raise ValueError(msg)
    if fmt not in LOG_FORMATS:
        msg = f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}"
        raise ValueError(msg)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if level else logging.WARNING)
    if level is None and bot_logs_at_info:
        logging.getLogger("ray_shards").setLevel(logging.INFO)
    elif level is not None:
        logging.getLogger("ray_shards").setLevel(level.upper())
    # The Ray workers of a bot this process starts follow the same choice (see ray_logging_config).
    os.environ[_FORMAT_VAR] = fmt
    if level is not None:
        os.environ[_LEVEL_VAR] = level.upper()


def ray_logging_config() -> typing.Any:
    """The ``ray.LoggingConfig`` for `ray.init` from ``RAY_SHARDS_LOG_FORMAT``/``_LEVEL``, or None (Ray's default)."""
    fmt = os.environ.get(_FORMAT_VAR, "text").lower()
    level = os.environ.get(_LEVEL_VAR, "").upper()
    if fmt != "json" and not level:
        return None
    import ray

    return ray.LoggingConfig(encoding="JSON" if fmt == "json" else "TEXT", log_level=level or "INFO")


def hand_over_to_ray() -> None:
    """After `ray.init` with `ray_logging_config`: Ray's handler now formats this process's logs; drop ours.

    Ray adds its handler to the root logger beside the one `configure_logging` installed, and every
    line would be written twice.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        if len(root.handlers) > 1:
            root.removeHandler(handler)
