"""The version of every file this peer shares or syncs (``core.sync.FileVersion``),
by absolute path, in ``<data>/sync.db``; removed files stay as tombstones so a
removal can be told from a file never seen, for ``tombstone_days`` (30) after they
were recorded: then they expire, so the file stays bounded (a peer down for longer
may bring a removed name back, as a new file). The device id of this peer is in
``<data>/sync-id``.

Used from the asyncio loop only (one connection, no lock).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from p2pshare import errors
from p2pshare.core.sync import FileVersion, Vector

__all__ = ["TOMBSTONE_DAYS", "Entry", "VersionStore", "device_id"]

TOMBSTONE_DAYS = 30.0  # a removed name's version is kept this long after it was recorded
EXPIRE_EVERY = 3600.0  # seconds between looks for expired tombstones

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    path       TEXT PRIMARY KEY,
    content_id TEXT NOT NULL,
    size       INTEGER NOT NULL,
    vector     TEXT NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    origin     TEXT NOT NULL,
    deleted    INTEGER NOT NULL,
    file_size  INTEGER NOT NULL,  -- the local file as last seen (-1: none)
    file_mtime INTEGER NOT NULL,
    file_inode INTEGER NOT NULL,
    recorded   REAL NOT NULL DEFAULT 0  -- unix time it was written: tombstones expire by it
)
"""
_COLUMNS = (
    "path, content_id, size, vector, mtime_ns, origin, deleted, file_size, file_mtime, file_inode"
)


def device_id(data_dir: Path) -> str:
    """This peer's device id for version vectors: 12 hex characters, made once."""
    path = data_dir / "sync-id"
    try:
        made = path.read_text().strip()
        if len(made) == 12 and all(c in "0123456789abcdef" for c in made):
            return made
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc}") from exc
    made = secrets.token_hex(6)
    path.write_text(made + "\n")
    return made


@dataclass(frozen=True, slots=True)
class Entry:
    """A path's version, and the local file as it was when the version was recorded
    (a different size, mtime or inode now: it may have changed locally)."""

    version: FileVersion
    file: tuple[int, int, int] | None  # (size, mtime_ns, inode)


def stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class VersionStore:
    def __init__(
        self,
        db_path: Path,
        device: str,
        *,
        tombstone_days: float = TOMBSTONE_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self._keep = tombstone_days * 86400.0
        self._clock = clock
        self._expired_at = 0.0
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
        if "recorded" not in columns:  # a sync.db of an earlier version: its rows count from now
            self._db.execute("ALTER TABLE versions ADD COLUMN recorded REAL NOT NULL DEFAULT 0")
        self._db.execute("UPDATE versions SET recorded = ? WHERE recorded = 0", (clock(),))
        self.expire()

    def close(self) -> None:
        self._db.close()

    def get(self, path: Path) -> Entry | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM versions WHERE path = ?", (str(path),)
        ).fetchone()
        return None if row is None else _entry(row)

    def put(self, path: Path, version: FileVersion, file: tuple[int, int, int] | None) -> None:
        size, mtime, inode = file if file is not None else (-1, 0, 0)
        now = self._clock()
        self._db.execute(
            f"INSERT OR REPLACE INTO versions ({_COLUMNS}, recorded)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(path),
                version.content_id,
                version.size,
                json.dumps(version.vector.to_json()),
                version.mtime_ns,
                version.origin,
                int(version.deleted),
                size,
                mtime,
                inode,
                now,
            ),
        )
        if now - self._expired_at >= EXPIRE_EVERY:
            self.expire()

    def expire(self) -> int:
        """Forget the tombstones recorded more than ``tombstone_days`` ago; how many."""
        now = self._clock()
        self._expired_at = now
        gone = self._db.execute(
            "DELETE FROM versions WHERE deleted = 1 AND recorded < ?", (now - self._keep,)
        )
        return gone.rowcount

    def under(self, folder: Path) -> Iterator[tuple[Path, Entry]]:
        """Every path recorded below ``folder``."""
        prefix = str(folder).rstrip(os.sep) + os.sep
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM versions WHERE path >= ? AND path < ? ORDER BY path",
            (prefix, prefix[:-1] + chr(ord(os.sep) + 1)),
        ).fetchall()
        for row in rows:
            yield Path(row[0]), _entry(row)

    def local(
        self, path: Path, content_id: str | None, size: int = 0, *, now: float | None = None
    ) -> tuple[FileVersion, bool]:
        """Record what is at ``path`` now (``content_id`` ``None``: nothing); a content
        other than the recorded one is a local change: a new version of this device.
        Returns the version and whether it is new."""
        entry = self.get(path)
        file = stat_key(path) if content_id is not None else None
        if entry is not None:
            old = entry.version
            if (content_id is None and old.deleted) or (
                content_id is not None and not old.deleted and old.content_id == content_id
            ):
                if entry.file != file:
                    self.put(path, old, file)
                return old, False
        before = entry.version.vector if entry is not None else Vector()
        mtime_ns = file[1] if file is not None else int((now or time.time()) * 1e9)
        made = FileVersion(
            content_id=content_id or "",
            size=size if content_id is not None else 0,
            vector=before.bump(self.device),
            mtime_ns=mtime_ns,
            origin=self.device,
            deleted=content_id is None,
        )
        self.put(path, made, file)
        return made, True

    def adopt(self, path: Path, vector: Vector) -> FileVersion | None:
        """Record ``vector`` for the version at ``path`` (same content elsewhere)."""
        entry = self.get(path)
        if entry is None:
            return None
        made = replace(entry.version, vector=vector)
        self.put(path, made, entry.file)
        return made


def _entry(row: tuple[object, ...]) -> Entry:
    _, cid, size, vector, mtime, origin, deleted, fsize, fmtime, finode = row
    version = FileVersion(
        content_id=str(cid),
        size=int(size),  # type: ignore[call-overload]
        vector=Vector(json.loads(str(vector))),
        mtime_ns=int(mtime),  # type: ignore[call-overload]
        origin=str(origin),
        deleted=bool(deleted),
    )
    file = None if fsize == -1 else (int(fsize), int(fmtime), int(finode))  # type: ignore[call-overload]
    return Entry(version, file)
