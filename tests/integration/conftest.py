"""Real processes on 127.0.0.1 (a tracker and peers started with port 0), and a network
lab of hosts (network namespaces) for tests across hosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pshare.localnet import LocalNetwork
from p2pshare.netlab import NetLab, unavailable


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path)
    try:
        yield network
    finally:
        network.stop_all()


@pytest.fixture
def lab() -> Iterator[NetLab]:
    """An empty network lab, removed after the test; skips (with why) without root."""
    if why := unavailable():
        pytest.skip(why)
    with NetLab() as made:
        yield made
