"""Real processes on 127.0.0.1: a tracker and peers started with port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pshare.localnet import LocalNetwork


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path)
    try:
        yield network
    finally:
        network.stop_all()
