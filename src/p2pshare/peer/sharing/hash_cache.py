"""The hash cache: piece hashes of shared files, kept across restarts.

A row is keyed by the file's path and is valid only while the file's size,
mtime (ns) and inode are the ones it was hashed at. So a restart does not re-read
an unchanged folder, and any write, replacement or resize of a file makes its row
a miss. A row keeps the piece size the file was indexed with, which is not always
this peer's: a download is shared under the manifest it was verified against. So
a file keeps its content id across restarts and changes of ``piece_size`` (other
peers, swarms and subscriptions know it by that id); only new or changed files
take the configured piece size.

The share name is not stored: a file renamed in place keeps its bytes and the
caller passes its current name in. One SQLite file in WAL mode; one connection
guarded by a lock, so the cache can be used from any thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from p2pshare.core.manifest import HASH_SIZE, Manifest, content_id_of, piece_count
from p2pshare.errors import P2PShareError

__all__ = ["HashCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    path         BLOB PRIMARY KEY,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    inode        INTEGER NOT NULL,
    piece_size   INTEGER NOT NULL,
    piece_hashes BLOB NOT NULL,
    file_sha256  BLOB NOT NULL,
    content_id   TEXT NOT NULL
) WITHOUT ROWID
"""


def _key(path: Path | str) -> bytes:
    # Bytes, so that a file name that is not valid UTF-8 cannot break the cache.
    return os.fsencode(path)


class HashCache:
    """Piece hashes of files by (path, size, mtime_ns, inode), stored in SQLite."""

    def __init__(self, db_path: Path) -> None:
        self._path = db_path
        self._lock = threading.Lock()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise P2PShareError(f"cannot open the hash cache {db_path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise P2PShareError(
                f"the hash cache {db_path} is unreadable ({exc}); delete it, it is rebuilt"
            ) from exc

    @property
    def db_path(self) -> Path:
        return self._path

    def get(
        self,
        path: Path,
        st: os.stat_result,
        *,
        name: str,
        whole_file_sha256: bool = False,
    ) -> Manifest | None:
        """The cached manifest of ``path`` as ``name``, or ``None`` if it may be stale.

        A hit needs the same size, mtime_ns and inode as ``st``, and a whole-file
        SHA-256 if ``whole_file_sha256`` asks for one; its piece size is the row's.
        """
        with self._lock:
            row = self._query(
                "SELECT size, mtime_ns, inode, piece_size, piece_hashes, file_sha256, content_id"
                " FROM hashes WHERE path = ?",
                (_key(path),),
            ).fetchone()
        if row is None:
            return None
        size, mtime_ns, inode, piece_size, blob, file_sha256, content_id = row
        if (size, mtime_ns, inode) != (st.st_size, st.st_mtime_ns, st.st_ino):
            return None
        if whole_file_sha256 and not file_sha256:
            return None
        if len(blob) != HASH_SIZE * piece_count(size, piece_size):
            return None  # a damaged row: hash the file again
        hashes = tuple(blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE))
        if content_id_of(size, piece_size, hashes) != content_id:
            return None
        return Manifest(name, size, piece_size, hashes, bytes(file_sha256))

    def put(self, path: Path, st: os.stat_result, manifest: Manifest) -> None:
        """Remember ``manifest`` for ``path`` as it was when ``st`` was taken."""
        if manifest.size != st.st_size:
            raise ValueError("the manifest is not of a file of that size")
        with self._lock:
            self._query(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _key(path),
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ino,
                    manifest.piece_size,
                    b"".join(manifest.piece_hashes),
                    manifest.file_sha256,
                    manifest.content_id,
                ),
            )

    def remove(self, path: Path) -> None:
        """Forget ``path`` (no error if it is not cached)."""
        with self._lock:
            self._query("DELETE FROM hashes WHERE path = ?", (_key(path),))

    def prune(self, present: Iterable[Path], *, under: Path | None = None) -> int:
        """Forget every path not in ``present`` (only those inside folder ``under``, if given).

        Returns how many were forgotten.
        """
        keep = {_key(p) for p in present}
        prefix = None if under is None else _key(under).rstrip(os.sep.encode()) + os.sep.encode()
        with self._lock:
            stored = [r[0] for r in self._query("SELECT path FROM hashes").fetchall()]
            gone = [
                (k,) for k in stored if k not in keep and (prefix is None or k.startswith(prefix))
            ]
            if gone:
                try:
                    self._db.executemany("DELETE FROM hashes WHERE path = ?", gone)
                except sqlite3.Error as exc:
                    raise P2PShareError(f"hash cache {self._path}: {exc}") from exc
        return len(gone)

    def __len__(self) -> int:
        with self._lock:
            count: int = self._query("SELECT count(*) FROM hashes").fetchone()[0]
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise P2PShareError(f"hash cache {self._path}: {exc}") from exc
