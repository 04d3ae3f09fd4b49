"""Orchestrator checkpoints in Ray's GCS internal key-value store.

A checkpoint holds the bot's config, the shard table with leases and sessions,
the presence and the salted token hash: never the token. It lets a restarted
Orchestrator carry on where the old one stopped.
"""

from __future__ import annotations

import json
import logging
import typing

__all__ = ["CHECKPOINT_SCHEMA", "delete_checkpoint", "load_checkpoint", "save_checkpoint"]

_LOGGER = logging.getLogger("ray_shards.checkpoint")
_KV_NAMESPACE = "ray_shards"
CHECKPOINT_SCHEMA = 2
"""Version of the checkpoint's top-level layout (1: before it was versioned)."""


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
    if not isinstance(data, dict):
        return None
    from ray_shards.table import CheckpointSchemaError

    schema = data.get("schema", 1)
    if schema != CHECKPOINT_SCHEMA:
        msg = (
            f"the checkpoint of bot {bot_id} has layout version {schema} but this ray_shards reads version "
            f"{CHECKPOINT_SCHEMA}: run the ray_shards version that wrote it, or delete the checkpoint to start "
            f"the bot afresh (`ray-shards stop`, or internal_kv key checkpoint/{bot_id} in namespace ray_shards)"
        )
        raise CheckpointSchemaError(msg)
    return data


def delete_checkpoint(bot_id: int) -> None:
    """Remove the checkpoint of bot ``bot_id`` (the bot was shut down on purpose)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_key(bot_id), namespace=_KV_NAMESPACE)
