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
# the clock, the OS, threads and hidden randomness: a core takes ``now`` and an ``rng``
UNTESTABLE_MODULES = {"time", "os", "threading", "random"}


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


def _imports(tree: ast.AST) -> list[str]:
    """What ``tree`` imports at run time (not under ``if TYPE_CHECKING:``): ``module``
    for ``import module``, ``module.name`` for ``from module import name``."""
    names: list[str] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            names += [n for child in node.orelse for n in _imports(ast.Module([child], []))]
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            names += _imports(node)
    return names


def test_the_core_imports_no_io() -> None:
    for path in CORE.glob("*.py"):
        for name in _imports(ast.parse(path.read_text())):
            assert name.split(".")[0] not in IO_MODULES, f"{path.name} imports {name}"


def test_the_core_reads_no_clock_os_threads_or_hidden_randomness() -> None:
    """A core takes the time and its random choices as arguments, so a test can set them."""
    for path in CORE.glob("*.py"):
        for name in _imports(ast.parse(path.read_text())):
            top = name.split(".")[0]
            assert top not in UNTESTABLE_MODULES, f"{path.name} imports {name}"


def test_the_purity_check_sees_nested_imports_and_skips_type_checking_only_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from random import Random\n"
        "def f():\n    import time\n"
    )
    assert _imports(tree) == ["typing.TYPE_CHECKING", "time"]


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


def _module_imports(path: Path) -> list[str]:
    return [name for name in _imports(ast.parse(path.read_text())) if name.startswith("p2pshare")]


def test_the_core_depends_on_nothing_but_itself_and_the_errors() -> None:
    for path in CORE.glob("*.py"):
        for name in _module_imports(path):
            assert name.startswith(("p2pshare.core", "p2pshare.errors")), f"{path.name}: {name}"


def test_the_peer_parts_only_lean_inward() -> None:
    """``sharing`` needs no other part of the peer; no part reaches up into the
    composition root (``node``, ``run``) or the control API."""
    peer = ROOT / "src" / "p2pshare" / "peer"
    for path in (peer / "sharing").glob("*.py"):
        for name in _module_imports(path):
            assert not name.startswith("p2pshare.peer.") or name.startswith(
                "p2pshare.peer.sharing"
            ), f"sharing/{path.name} imports {name}"
    for part in ("sharing", "transfer", "overlay", "rpc", "discovery"):
        for path in (peer / part).glob("*.py"):
            for name in _module_imports(path):
                assert not name.startswith(
                    ("p2pshare.peer.node", "p2pshare.peer.run", "p2pshare.peer.api")
                ), f"{part}/{path.name} imports {name}"


MAX_FUNCTION_LINES = 60
# route tables: one decorated handler per route, each short, inside the function that
# builds the app (they share its state through the closure)
LONG_FUNCTIONS_ALLOWED = {
    "peer/api/control.py:create_app",
    "tracker/app.py:create_app",
}


def test_no_function_is_longer_than_60_lines_but_the_route_tables() -> None:
    """A function says one idea: past ~60 lines it says several (issue 17)."""
    package = ROOT / "src" / "p2pshare"
    long = []
    for path in package.rglob("*.py"):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(package).as_posix()}:{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{where} ({lines} lines)")
    assert not long, "split by idea: " + ", ".join(sorted(long))


def test_the_package_map_of_the_architecture_names_every_module() -> None:
    """docs/architecture.md is where a newcomer finds where a thing lives (issue 17): a
    module it does not name is one nobody finds."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    package_map = doc.split("## The package map", 1)[1].split("\n## ", 1)[0]
    sections = {
        m[1]: m[2]
        for m in re.finditer(
            r"^### `([a-z0-9_/]+)`[^\n]*\n(.*?)(?=^### |\Z)", package_map, re.M | re.S
        )
    }
    package = ROOT / "src" / "p2pshare"
    missing = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if "_proto" in relative.parts or path.name in ("__init__.py", "__main__.py"):
            continue
        top = relative.parts[0] + "/" if len(relative.parts) > 1 else "p2pshare/"
        name = "/".join(relative.parts[1:]) if len(relative.parts) > 1 else path.name
        if f"`{name}`" not in sections.get(top, ""):
            missing.append(relative.as_posix())
    assert not missing, "not in the package map of docs/architecture.md: " + ", ".join(
        sorted(missing)
    )
