"""Control latency: `Client.update_presence` to every shard, and `Client.request_guild_members` to the chunk.

One bot (default 64 shards on 4 hosts) runs on a private local Ray cluster against the emulator.

* Presence: each call sets a unique activity name; the emulator records the wall-clock receive time of
  every op 3 it gets. Latency of a call = the latest op 3 receive time among all shards (carrying that
  call's activity name) - the time just before the call. Calls are paced (``--presence-interval``) to
  stay under Discord's 120 payloads / 60 s per connection, which every op 3 counts against.
* Member request: each call carries a unique nonce; a listener in the host records when the
  GUILD_MEMBERS_CHUNK with that nonce reached it (``chunk_at_listener``). The emulator's receive time of
  the op 8 (``op8_at_emulator``) and the time the call returned (``call_return``) are reported too.

Member requests alternate, call by call, between the direct path (Client → the owning host's actor,
issue #13) and the path every command took before it (Client → Orchestrator mailbox → host long poll),
so both are measured side by side in one run under the same load (``member_request_*`` vs
``via_orchestrator_*``).

All clocks are this machine's wall clock, so the differences are exact up to clock resolution.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import typing
import uuid

import hikari
import ray

from bench import _common
from bench._callbacks import chunk_recorder
from ray_shards import BotDeployment, Client


class _ThroughOrchestrator:
    """Stands in for a Client's `DirectCommands`: every command goes the old way, through the Orchestrator."""

    sent = 0
    fallbacks = 0

    async def send(self, *_: typing.Any) -> bool:
        return False


async def main(args: argparse.Namespace) -> dict[str, typing.Any]:
    sampler = _common.LoadSampler()
    sampler.start()
    token = _common.new_token()
    with _common.local_ray(), _common.emulator(
        token, shards=args.shards, max_concurrency=args.shards, guilds=args.shards * 2
    ) as emu:
        notes_name = f"notes-{uuid.uuid4().hex[:8]}"
        notes = _common.start_notes(notes_name)
        deployment = await BotDeployment.start(
            token, shard_count=args.shards, subprocess_count=args.hosts, rest_url=emu.rest_url,
            callback=chunk_recorder(notes_name), intents=hikari.Intents.ALL,
        )
        client = Client(token, None)
        await client.start()
        try:
            await asyncio.sleep(1.0)
            # -- presence ------------------------------------------------------------------------------
            presence_calls: list[tuple[str, float, float]] = []
            for i in range(args.calls):
                name = f"bench-{i}"
                started = time.time()
                await client.update_presence(status=hikari.Status.ONLINE, activity=hikari.Activity(name=name))
                presence_calls.append((name, started, time.time()))
                await asyncio.sleep(max(0.0, args.presence_interval - (time.time() - started)))
            await asyncio.sleep(1.0)
            by_name: dict[str, list[tuple[int, float]]] = {}
            for entry in await asyncio.to_thread(emu.control.received, None, 3):
                data = entry.get("d") or {}
                game = data.get("game") or next(iter(data.get("activities") or []), None)  # hikari sends "game"
                if game:
                    by_name.setdefault(game["name"], []).append((entry["shard_id"], entry["time"]))
            presence_latency, presence_return, incomplete = [], [], 0
            for name, started, returned in presence_calls:
                got = by_name.get(name, [])
                if len({s for s, _ in got}) < args.shards:
                    incomplete += 1
                    continue
                presence_latency.append(max(t for _, t in got) - started)
                presence_return.append(returned - started)
            # -- member requests -----------------------------------------------------------------------
            guilds = emu.control.guild_ids()
            direct = client._direct
            member_calls: dict[str, list[tuple[str, float, float]]] = {"direct": [], "orchestrator": []}
            for i in range(2 * args.calls):
                route = "direct" if i % 2 == 0 else "orchestrator"
                client._direct = direct if route == "direct" else typing.cast(typing.Any, _ThroughOrchestrator())
                nonce = f"n{i}"
                started = time.time()
                await client.request_guild_members(guilds[i % len(guilds)], query="u", limit=1, nonce=nonce)
                member_calls[route].append((nonce, started, time.time()))
                await asyncio.sleep(args.member_interval)
            client._direct = direct
            await asyncio.sleep(1.0)
            chunks = {nonce: at for nonce, at, _ in ray.get(notes.get.remote("chunk"))}
            op8_entries = await asyncio.to_thread(emu.control.received, None, 8)
            op8 = {(e.get("d") or {}).get("nonce"): e["time"] for e in op8_entries}
            member: dict[str, dict[str, typing.Any]] = {}
            for route, calls in member_calls.items():
                member[route] = {
                    "to_chunk": [chunks[n] - s for n, s, _ in calls if n in chunks],
                    "to_op8": [op8[n] - s for n, s, _ in calls if n in op8],
                    "returned": [r - s for _, s, r in calls],
                    "missing": len(calls) - sum(1 for n, _, _ in calls if n in chunks),
                }
            went_direct = direct.sent
            stats = emu.control.stats()
        finally:
            await client.close()
            await deployment.stop()
            ray.kill(notes)
    presence = _common.summary(presence_latency, 1000, 1)
    op8_direct = _common.summary(member["direct"]["to_op8"], 1000, 1)
    op8_old = _common.summary(member["orchestrator"]["to_op8"], 1000, 1)
    return {
        "load": await sampler.stop(),
        "settings": {"shards": args.shards, "hosts": args.hosts, "calls": args.calls,
                     "presence_interval_s": args.presence_interval, "member_interval_s": args.member_interval},
        "presence_all_shards_ms": presence,
        "presence_call_return_ms": _common.summary(presence_return, 1000, 1),
        "presence_calls_incomplete": incomplete,
        "member_request_op8_at_emulator_ms": op8_direct,
        "member_request_chunk_at_listener_ms": _common.summary(member["direct"]["to_chunk"], 1000, 1),
        "member_request_call_return_ms": _common.summary(member["direct"]["returned"], 1000, 1),
        "member_requests_sent_direct": went_direct,
        "via_orchestrator_op8_at_emulator_ms": op8_old,
        "via_orchestrator_chunk_at_listener_ms": _common.summary(member["orchestrator"]["to_chunk"], 1000, 1),
        "via_orchestrator_call_return_ms": _common.summary(member["orchestrator"]["returned"], 1000, 1),
        "op8_median_ratio_direct_to_orchestrator": round(op8_direct["median"] / op8_old["median"], 3)
        if op8_old["median"] else None,
        "member_chunks_missing": member["direct"]["missing"] + member["orchestrator"]["missing"],
        "send_limit_violations": stats["send_limit_violations"],
        "targets": {
            "presence_median_lt_20ms": presence["median"] < 20,
            "member_request_op8_median_lt_5ms": op8_direct["median"] < 5,
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.control_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--calls", type=int, default=200,
                        help="presence calls, and member requests per route (default 200)")
    parser.add_argument("--presence-interval", type=float, default=0.6,
                        help="seconds between presence calls (Discord: 120 payloads/60 s per shard; default 0.6)")
    parser.add_argument("--member-interval", type=float, default=0.02, help="pause between member requests")
    _common.run("control_latency", parser, main)


if __name__ == "__main__":
    cli()
