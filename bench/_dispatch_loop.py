"""One run of ``python -m bench.dispatch_instructions``: consume N MESSAGE_CREATEs into one listener, in-process.

Run by path (``python bench/_dispatch_loop.py plain|gated N``) with ``PYTHONPATH`` naming the
``ray_shards`` checkout under test, as ``bench/_dispatch_bot.py`` is (self-contained for the same
reason). Per event, as hikari's receive loop does after the socket: inflate one frame of a
zlib-stream (built beforehand, as Discord sends them), parse its JSON with hikari's loader, set the
shard's seq, and hand the payload to the event manager's ``consume_raw_event`` with a real hikari
``GatewayShardImpl`` object (not started); every listener task runs to completion. hikari's cache is
on, as in a bot. Not included: the socket read and aiohttp's websocket frame parsing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import zlib

import hikari
from hikari.impl import event_manager as event_manager_impl
from hikari.impl import shard as shard_impl
from hikari.internal import data_binding

import ray_shards.delivery as delivery
from ray_shards.emulator import payloads
from ray_shards.emulator.world import World

_TOKEN = "MzI2MjQyNjk3MjExNDA5Ng.y6FX9a.6pK8Wq74CUk30K57Z8XXoESzbz2Owr6urLZyITCT"  # the emulator's test format


async def _main(side: str, count: int) -> None:
    app = hikari.GatewayBot(_TOKEN, banner=None, intents=hikari.Intents.ALL_UNPRIVILEGED)
    cls = event_manager_impl.EventManagerImpl if side == "plain" else delivery.GatedEventManager
    manager = cls(app.entity_factory, app.event_factory, hikari.Intents.ALL_UNPRIVILEGED, cache=app._cache)
    shard = shard_impl.GatewayShardImpl.__new__(shard_impl.GatewayShardImpl)
    shard._shard_id, shard._session_id, shard._seq = 0, "session", 0
    message = payloads.message(message_id=1, channel_id=2, author=World.user(1), content="hi", guild_id=3)
    deflate = zlib.compressobj()
    frames = [
        deflate.compress(json.dumps({"op": 0, "t": "MESSAGE_CREATE", "s": i + 1, "d": message}).encode())
        + deflate.flush(zlib.Z_SYNC_FLUSH)
        for i in range(count)
    ]
    inflate = zlib.decompressobj()
    handled = 0

    async def on_message(event: hikari.MessageCreateEvent) -> None:
        nonlocal handled
        handled += 1

    manager.subscribe(hikari.MessageCreateEvent, on_message)
    # What was imported and built so far is left out of the garbage collector's passes: the checkouts
    # compared import different amounts of code (ray_shards grew), and full collections over a bigger
    # heap cost every side more per event (measured: 4 % of this path), which is not the watermark's cost.
    gc.freeze()
    for i, frame in enumerate(frames):
        payload = data_binding.default_json_loads(inflate.decompress(frame))
        shard._seq = payload["s"]
        manager.consume_raw_event(payload["t"], shard, payload["d"])
        if i % 50 == 0:  # let listener tasks run, as the receive loop yields between frames
            await asyncio.sleep(0)
    while handled < count:
        await asyncio.sleep(0)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
