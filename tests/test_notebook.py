"""notebooks/control_live_bot.ipynb runs headless (nbclient) against a live bot and does what it says."""

from __future__ import annotations

import pathlib
import sys
import time
import typing

import pytest

from ray_shards import BotDeployment, ShardStatus
from ray_shards.timings import Timings

pytestmark = pytest.mark.timeout(300)

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "control_live_bot.ipynb"


def _text(cell: typing.Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output and "text/plain" in output["data"]:
            parts.append(output["data"]["text/plain"] + "\n")
    return "".join(parts)


async def test_notebook_controls_a_live_bot(
    ray_cluster: typing.Any, emulator_factory: typing.Any, token: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    import nbformat
    from nbclient import NotebookClient

    emu = emulator_factory(token, shards=4, max_concurrency=4, guilds=8, identify_window_s=1.0,
                           heartbeat_interval_ms=1000)
    deployment = await BotDeployment.start(
        token, subprocess_count=2, rest_url=emu.rest_url, timings=Timings(identify_window=1.0)
    )
    try:
        # The kernel is another process: it reaches the test's cluster by its GCS address.
        monkeypatch.setenv("RAY_SHARDS_ADDRESS", ray_cluster.address)
        monkeypatch.setenv("DISCORD_TOKEN", token)
        monkeypatch.setenv("RAY_SHARDS_EMULATOR_URL", emu.base_url)
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        monkeypatch.delenv("RAY_SHARDS_GUILD_ID", raising=False)
        emu.control.reset_logs()
        resumes_before = len([e for e in emu.control.resume_log() if e["shard_id"] == 0])
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print('KERNEL', sys.executable)"))
        client = NotebookClient(
            nb, kernel_name="python3", timeout=180, startup_timeout=120,
            resources={"metadata": {"path": str(tmp_path)}},
        )
        started = time.monotonic()
        await client.async_execute()
        print(f"notebook ran in {time.monotonic() - started:.1f} s")
        nbformat.write(nb, tmp_path / "executed.ipynb")

        texts = [_text(cell) for cell in nb.cells if cell.cell_type == "code"]
        everything = "\n".join(texts)
        print(everything)  # shown by pytest when an assertion below fails
        # The kernel is this venv's python ("python3" resolves to sys.executable of the process that launches it).
        assert f"KERNEL {sys.executable}" in texts[0]
        assert f"connected to bot {deployment.link.bot_id}" in everything

        # Shard table: header and 4 READY rows on the 2 hosts.
        tables = [t for t in texts if "shard  status" in t]
        assert tables, "no shard table printed"
        table = tables[0]
        assert "4/4 shards READY on 2 host(s)" in table
        lines = table.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("shard  status"))
        rows = [line.split() for line in lines[header + 1 :] if line.strip()]
        assert [r[0] for r in rows] == ["0", "1", "2", "3"], table
        assert all(r[1] == ShardStatus.READY.value for r in rows), table
        assert {r[2] for r in rows} == {"h0", "h1"}

        # Presence reached every shard (op 3).
        for shard_id in range(4):
            sent = emu.control.received(shard_id, op=3)
            assert sent and sent[-1]["d"]["status"] == "idle", f"shard {shard_id} got no presence"

        # The member request went out on the guild owner's connection (op 8).
        guild_id = emu.control.guild_ids()[0]
        owner = (guild_id >> 22) % 4
        assert f"member request for guild {guild_id} sent by shard {owner}" in everything
        requests = emu.control.received(owner, op=8)
        assert any(int(p["d"]["guild_id"]) == guild_id and p["d"]["query"] == "user" for p in requests)

        # Shard 0 was restarted by RESUME, and is READY again.
        assert f"shard 0: {ShardStatus.READY.value} on host" in everything
        resumes = [e for e in emu.control.resume_log() if e["shard_id"] == 0]
        assert len(resumes) > resumes_before, "shard 0 did not resume"

        # The latency plot is there as an inline PNG, with a latency for every shard.
        pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "image/png" in o.get("data", {})]
        assert len(pngs) == 1
        latency_lines = [line for line in everything.splitlines() if line.startswith("latency (ms):")]
        assert latency_lines, "no latencies printed"
        latency_line = latency_lines[0]
        assert "0.0," not in latency_line and "0.0}" not in latency_line, latency_line
        assert "client closed" in everything
    finally:
        await deployment.stop()
    emu.control.wait_until(lambda c: all(v == 0 for v in c.stats()["connected"].values()), timeout=30)
