"""The wheel works on its own: built from the sdist, installed with the locked runtime
packages alone (no dev tools, no source tree), it runs the demo network."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT = Path(__file__).resolve().parent.parent
UV = str(ROOT / "scripts" / "uv")
PACKAGE_FILES = [
    "p2pshare/py.typed",
    "p2pshare/_proto/peer_pb2.py",
    "p2pshare/_proto/peer_pb2.pyi",
    "p2pshare/_proto/peer_pb2_grpc.py",
]


def run(*argv: str | Path, cwd: Path = ROOT, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_alone_runs_the_demo_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # sdist first, then the wheel built from the unpacked sdist: both must be complete
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT)
    (wheel,) = dist.glob("p2pshare-*.whl")
    (_sdist,) = dist.glob("p2pshare-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert [f for f in PACKAGE_FILES if f not in names] == []

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    requirements = tmp_path / "requirements.txt"
    run(UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--quiet", "-o", requirements)
    run(UV, "pip", "install", "--quiet", "--python", python, "--require-hashes", "-r", requirements)
    run(UV, "pip", "install", "--quiet", "--python", python, "--no-deps", wheel)

    where = run(
        python,
        "-c",
        "import importlib.util, p2pshare; print(p2pshare.__file__); "
        "print(importlib.util.find_spec('pytest') is None)",
        cwd=tmp_path,
    ).split()
    assert where[0].startswith(f"{venv}/lib/")  # the wheel's copy, not the source tree
    assert where[1] == "True"  # and no dev tool came along

    out = run(venv / "bin" / "p2pshare", "demo", "--workdir", tmp_path / "demo", cwd=tmp_path)
    assert re.search(r"sha256 equal to the original\s+yes", out), out
    assert "Traceback" not in out
