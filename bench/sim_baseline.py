"""Run the control-plane simulator against an older table.py/identify.py, the way that version's Orchestrator used them.

    python -m bench.sim_baseline --commit 4ec4858 --seeds 2000

The two modules are taken from ``git show <commit>:ray_shards/...`` into a temporary package that
shadows this checkout's, and the calls the simulator makes are mapped onto what ``orchestrator.py``
did at that commit: placed leases appended to ``pending_adopt`` and read destructively in ``sync``,
reports without ``report_seq``, stale shards appended to ``pending_revoke``, retiring a host by
setting its want to 0 and revoking its shards, ``_restore`` calling
``release`` on every bucket, the budget set with ``set_remaining``, no identify fencing. It prints how
many seeds break an invariant, grouped by the invariant.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing


def _defines(node: ast.stmt) -> list[str]:
    """The names a top-level statement defines (classes, functions, plain assignments)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _missing_names(old: str, current: str, package: pathlib.Path, name: str) -> str:
    """Top-level definitions of ``current`` that the rest of the package imports from ``name`` and ``old`` lacks.

    The rest of the package is this checkout's, so it may import names the old module did not have yet
    (``CheckpointSchemaError`` from table.py, say); the simulator never uses them, but the imports must work.
    They are appended to the old module as this checkout defines them, and named on stderr.
    """
    module = f"ray_shards.{name.removesuffix('.py')}"
    wanted: set[str] = set()
    for path in package.rglob("*.py"):
        if path.name == name and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == module:
                wanted.update(alias.name for alias in node.names)
    defined = {n for node in ast.parse(old).body for n in _defines(node)}
    missing = sorted(wanted - defined)
    chunks = []
    for node in ast.parse(current).body:
        names = _defines(node)
        if any(n in missing for n in names):
            segment = ast.get_source_segment(current, node)
            if segment is not None:
                chunks.append(segment)
    if missing:
        print(f"{name}: the old module lacks {', '.join(missing)}; taken from this checkout", file=sys.stderr)
    return "".join(f"\n\n# Added by bench.sim_baseline (imported by this checkout's package):\n{c}\n" for c in chunks)


def _install(commit: str, into: pathlib.Path) -> None:
    repo = pathlib.Path(__file__).resolve().parent.parent
    package = into / "ray_shards"
    shutil.copytree(repo / "ray_shards", package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("table.py", "identify.py"):
        source = subprocess.run(
            ["git", "-C", str(repo), "show", f"{commit}:ray_shards/{name}"], check=True, capture_output=True, text=True
        ).stdout
        current = (repo / "ray_shards" / name).read_text()
        (package / name).write_text(source + _missing_names(source, current, package, name))
    # The editable install's finder would still find this checkout: take it out, put the copy first.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, str(into))
    for module in [m for m in sys.modules if m == "ray_shards" or m.startswith("ray_shards.")]:
        del sys.modules[module]


def _adapt() -> None:
    """Give the old classes the new calls, with the old Orchestrator's behaviour behind them."""
    from ray_shards import identify, table

    shard_table: typing.Any = table.ShardTable
    place, apply_reports = shard_table.place, shard_table.apply_reports

    def new_place(self: typing.Any) -> typing.Any:
        placed = place(self)
        for host_id, leases in placed.items():
            self.hosts[host_id].pending_adopt.extend(leases)  # Orchestrator._deliver
        return placed

    def new_apply_reports(
        self: typing.Any, host_id: str, reports: typing.Any, now: float, **_: typing.Any
    ) -> typing.Any:
        stale = apply_reports(self, host_id, reports, now)
        host = self.hosts.get(host_id)
        if host is not None:  # Orchestrator.sync
            host.pending_revoke.extend(s for s in stale if s not in host.pending_revoke)
        return stale

    def directives_for(self: typing.Any, host_id: str) -> tuple[list[typing.Any], list[int]]:
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return [], []
        adopt, revoke = host.pending_adopt[:], host.pending_revoke[:]
        host.pending_adopt.clear()  # the destructive read of Orchestrator.sync
        return adopt, revoke

    def revoke(self: typing.Any, host_id: str, shard_id: int) -> bool:
        if self.shards[shard_id].host_id != host_id:
            return False
        self.hosts[host_id].pending_revoke.append(shard_id)
        return True

    def silent_hosts(self: typing.Any, now: float, timeout: float) -> list[str]:
        return [h.host_id for h in self.hosts.values() if h.alive and now - h.last_sync > timeout]

    @dataclasses.dataclass(slots=True)
    class HostRecord(table.HostRecord):  # type: ignore[misc,name-defined]
        draining: bool = False

    def drain(self: typing.Any, host_id: str) -> list[int]:
        # No draining at 4ec4858: the fleet set want to 0 and handed the host's shards over.
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return []
        host.draining, host.want = True, 0
        owned: list[int] = self.owned_by(host_id)
        for shard_id in owned:
            revoke(self, host_id, shard_id)
        return owned

    def undrain(self: typing.Any, host_id: str, want: int) -> None:
        # A failed rolling restart gave the old host its share back (its fleet record stopped retiring).
        host = self.hosts.get(host_id)
        if host is not None and host.alive:
            host.draining, host.want = False, want

    table.HostRecord = HostRecord  # type: ignore[misc]
    shard_table.drain = drain
    shard_table.undrain = undrain
    shard_table.place = new_place
    shard_table.apply_reports = new_apply_reports
    shard_table.directives_for = directives_for
    shard_table.revoke = revoke
    shard_table.silent_hosts = silent_hosts
    shard_table.incarnation = property(lambda self: 0)

    scheduler: typing.Any = identify.IdentifyScheduler
    init, request, release = scheduler.__init__, scheduler.request, scheduler.release

    def new_init(self: typing.Any, max_concurrency: int, *, grant_use_limit: float = 1.0, **kwargs: typing.Any) -> None:
        init(self, max_concurrency, **kwargs)

    def start_full(self: typing.Any, now: float, **_: typing.Any) -> None:
        for shard_id in range(self.max_concurrency):  # Orchestrator._restore
            release(self, shard_id, now)

    def new_release(self: typing.Any, shard_id: int, now: float, *, identified_at: float | None = None,
                    **_: typing.Any) -> bool:
        release(self, shard_id, now, identified_at=identified_at)
        return True

    scheduler.__init__ = new_init
    scheduler.start_full = start_full
    scheduler.set_budget = lambda self, remaining, reset_after, now, **_: self.set_remaining(remaining)
    scheduler.budget_stale = lambda self, now: False
    scheduler.reset_at = property(lambda self: None)
    scheduler.request = lambda self, shard_id, now, **_: request(self, shard_id, now)
    scheduler.release = new_release


def main() -> None:
    """Run the seeds and print the failures by invariant."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="4ec4858")
    parser.add_argument("--seeds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _install(args.commit, pathlib.Path(tmp))
        _adapt()
        from ray_shards.sim import Violation, run_seed

        kinds: collections.Counter[str] = collections.Counter()
        first: dict[str, int] = {}
        started = time.perf_counter()
        for seed in range(args.seeds):
            try:
                run_seed(seed)
            except Violation as exc:
                kind = re.sub(r"[\d.]+", "N", str(exc).split(": ", 1)[1].split(" (")[0].split(":")[0])[:70]
                kinds[kind] += 1
                first.setdefault(kind, seed)
        elapsed = time.perf_counter() - started
    print(f"{args.commit}: {sum(kinds.values())} of {args.seeds} seeds break an invariant ({elapsed:.0f} s)")
    for kind, count in kinds.most_common():
        print(f"  {count:5d}  (first: seed {first[kind]:5d})  {kind}")


if __name__ == "__main__":
    main()
