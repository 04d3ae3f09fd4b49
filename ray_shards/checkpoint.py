"""Orchestrator checkpoints in Ray's GCS internal key-value store.

A checkpoint holds the bot's config, the shard table with leases and sessions,
the presence and the salted token hash: never the token. It lets a restarted
Orchestrator carry on where the old one stopped.
"""

from __future__ import annotations

import json
import logging
import typing

__all__ = ["delete_checkpoint", "load_checkpoint", "save_checkpoint"]

_LOGGER = logging.getLogger("ray_shards.checkpoint")
_KV_NAMESPACE = "ray_shards"


def _key(bot_id: int) -> bytes:
    return f"checkpoint/{bot_id}".encode()


def save_checkpoint(bot_id: int, data: dict[str, typing.Any]) -> int:
    """Write the checkpoint of bot ``bot_id`` (overwriting the previous one); return its size in bytes."""
    from ray.experimental import internal_kv

    raw = json.dumps(data).encode()
    internal_kv._internal_kv_put(_key(bot_id), raw, overwrite=True, namespace=_KV_NAMESPACE)
    return len(raw)


def load_checkpoint(bot_id: int) -> dict[str, typing.Any] | None:
    """Read the checkpoint of bot ``bot_id``, or None when there is none (or it is unreadable)."""
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(_key(bot_id), namespace=_KV_NAMESPACE)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        _LOGGER.exception("checkpoint of bot %s is unreadable; starting afresh", bot_id)
        return None
    return data if isinstance(data, dict) else None


def delete_checkpoint(bot_id: int) -> None:
    """Remove the checkpoint of bot ``bot_id`` (the bot was shut down on purpose)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_key(bot_id), namespace=_KV_NAMESPACE)
