"""Shared test configuration; real-process helpers live in ``tests/integration/helpers.py``."""

from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests import sqlite_raw

# Property tests check behaviour, not speed (speed is measured in bench/): on a
# shared 2-core machine an example can take longer than hypothesis' default 200 ms
# deadline without anything being wrong, so no deadline. Examples stay bounded by
# each test's max_examples and the suite's pytest-timeout.
settings.register_profile("p2pshare", deadline=None)
settings.load_profile("p2pshare")


@pytest.fixture(autouse=True)
def _close_raw_dbs() -> Iterator[None]:
    yield
    while sqlite_raw.opened:
        sqlite_raw.opened.pop().close()
