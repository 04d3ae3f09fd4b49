"""The distribution: metadata PyPI shows right, a wheel that passes `twine check` and runs in a fresh venv."""

from __future__ import annotations

import email.parser
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile

import pytest

from tests._ray_procs import MARKER_VAR, kill_marked, marked_processes, processes_using

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_project_metadata() -> None:
    project = PYPROJECT["project"]
    # An SPDX expression, not the deprecated `{text = ...}` table setuptools warns about.
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Typing :: Typed" in project["classifiers"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")], "SPDX license excludes these"
    assert (ROOT / "ray_shards" / "py.typed").exists()


def test_readme_has_no_relative_links() -> None:
    """PyPI renders the README away from the repository: a relative link there is a dead link."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    relative = re.findall(r"\]\((?![a-z]+://|#|mailto:)([^)]+)\)", readme)
    assert not relative, relative
    assert not re.findall(r"<(?:a|img)\s[^>]*(?:href|src)=\"(?![a-z]+://)", readme)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_wheel_passes_twine_and_runs_the_demo_in_a_fresh_venv(tmp_path: pathlib.Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    assert "SetuptoolsDeprecationWarning" not in build.stdout + build.stderr, "setuptools warns about the metadata"
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "ray_shards/py.typed" in names
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["License-Expression"] == "MIT"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    assert metadata["Description-Content-Type"] == "text/markdown"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=900, check=False)
    assert install.returncode == 0, install.stderr[-4000:]
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISCORD_TOKEN", "RAY_SHARDS_TOKEN", "RAY_ADDRESS", "RAY_SHARDS_ADDRESS", "PYTHONPATH")}
    version = subprocess.run([str(venv / "bin" / "ray-shards"), "--version"], capture_output=True, text=True,
                             env=env, timeout=120, check=False)
    assert version.returncode == 0 and version.stdout.startswith("ray-shards 0.1.0"), version.stderr

    ray_tmp = tempfile.mkdtemp(prefix="rs_wheel_", dir="/tmp")
    marker = f"wheel-{os.getpid()}-{time.monotonic_ns()}"
    env.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", **{MARKER_VAR: marker})
    try:
        demo = subprocess.run(
            [str(venv / "bin" / "ray-shards"), "demo", "--duration", "10", "--shards", "4", "--hosts", "2"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-4000:]
        assert "4/4 shards READY on 2 host(s)" in demo.stdout, output[-4000:]
        assert demo.stdout.rstrip().endswith("stopped")
        # It ran the installed copy, not this checkout.
        where = subprocess.run([str(venv / "bin" / "python"), "-c", "import ray_shards; print(ray_shards.__file__)"],
                               capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True)
        assert where.stdout.startswith(str(venv)), where.stdout
    finally:
        deadline = time.monotonic() + 30
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(1)
        kill_marked(marker)
        assert not processes_using(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
