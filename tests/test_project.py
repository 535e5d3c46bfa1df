"""Project-wide guarantees: generated code is current, the core is pure, the surface stable."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import p2pshare

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "src" / "p2pshare" / "core"
IO_MODULES = {"asyncio", "grpc", "fastapi", "socket", "sqlite3", "httpx", "uvicorn", "subprocess"}


def test_generated_protobuf_code_matches_the_proto_files(tmp_path: Path) -> None:
    """Generated with the grpcio-tools of uv.lock, so only a change of the .proto (or a
    deliberate refresh of the lock) can make it differ."""
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto")],
        env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable},
        check=True,
        cwd=ROOT,
    )
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == ["peer_pb2.py", "peer_pb2.pyi", "peer_pb2_grpc.py"]
    for name in generated:
        committed = (ROOT / "src" / "p2pshare" / "_proto" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run scripts/gen-proto"


def _lowest_admitted(package: str) -> tuple[Version, SpecifierSet]:
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == package:
            lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
            return max(lows), requirement.specifier
    raise AssertionError(f"{package} is not a dependency")


def test_pyproject_admits_only_runtimes_that_the_generated_code_accepts() -> None:
    """A library user gets what pyproject.toml's ranges allow, not what uv.lock pins: the
    generated code raises at import on a grpcio older than it, or a protobuf of another
    major version or older than it."""
    grpc_code = (ROOT / "src" / "p2pshare" / "_proto" / "peer_pb2_grpc.py").read_text()
    grpc_needs = Version(re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_code)[1])  # type: ignore[index]
    low, _ = _lowest_admitted("grpcio")
    assert low >= grpc_needs

    pb_code = (ROOT / "src" / "p2pshare" / "_proto" / "peer_pb2.py").read_text()
    pb_needs = Version(re.search(r"Protobuf Python Version: ([\d.]+)", pb_code)[1])  # type: ignore[index]
    low, specifier = _lowest_admitted("protobuf")
    assert low >= pb_needs
    assert Version(f"{pb_needs.major + 1}") not in specifier


def test_the_core_imports_no_io() -> None:
    for path in CORE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in IO_MODULES, f"{path.name} imports {name}"


def test_public_surface() -> None:
    assert sorted(p2pshare.__all__) == ["P2PShareError", "__version__"]


def test_a_command_to_a_running_peer_loads_no_heavy_library() -> None:
    """Every CLI command is a process of its own: ``p2pshare get`` pays its imports each
    time (a typer that parsed options with pydantic, or httpx, cost 0.2 s a command)."""
    probe = (
        "import sys\n"
        "from p2pshare.cli.main import main\n"
        "sys.argv = ['p2pshare', 'status', '--api', 'http://127.0.0.1:9']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 3, exc.code  # no peer answers there\n"
        "heavy = {'pydantic', 'httpx', 'rich.progress', 'grpc', 'fastapi'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
