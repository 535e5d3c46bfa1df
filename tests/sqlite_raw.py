"""A test's own connections to the SQLite files of the code under test."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

opened: list[sqlite3.Connection] = []


def raw_db(path: str | Path, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect``, closed after the test (``tests/conftest.py``): from Python
    3.13 on a connection left to the collector warns wherever collection happens, and
    ``with sqlite3.connect(...)`` commits but does not close."""
    db = sqlite3.connect(path, **kwargs)
    opened.append(db)
    return db
