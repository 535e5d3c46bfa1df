"""The scheduling core takes time and chance as arguments: it imports no clock, no
randomness, no threads, no I/O (so the swarm simulation can drive it exactly)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "p2pshare" / "core"
SCHEDULING = [
    "availability.py",
    "piece_picker.py",
    "block_picker.py",
    "upload_queue.py",
    "super_seed.py",
]
FORBIDDEN = {"time", "os", "threading", "asyncio", "random", "socket", "grpc", "datetime"}


@pytest.mark.parametrize("name", SCHEDULING)
def test_a_scheduling_module_imports_no_clock_chance_thread_or_io(name: str) -> None:
    tree = ast.parse((CORE / name).read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for module in names:
            assert module.split(".")[0] not in FORBIDDEN, f"{name} imports {module}"
