"""The web page's own logic (formatting, the state built from events), tested without a
browser by Node's built-in test runner (no npm packages)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from p2pshare.peer.api.web_page import asset

HERE = Path(__file__).resolve().parent


def test_the_page_logic_passes_its_node_tests(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's logic tests need Node.js 20 or later")
    logic = tmp_path / "logic.mjs"
    logic.write_bytes(asset("logic.js"))  # as the wheel ships it
    done = subprocess.run(
        [node, "--test", str(HERE / "logic.test.mjs")],
        env={"P2PSHARE_LOGIC": str(logic), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
