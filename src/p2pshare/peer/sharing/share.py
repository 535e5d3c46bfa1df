"""The share folder of a peer: which files it shares, under which names, and reading them.

Security rules, each enforced here and tested:

- Only regular files under the share root are shared, under their ``/``-separated
  relative path (the share name), and only if ``check_share_name`` accepts it.
- Hidden files and folders are skipped, and so are the peer's own partial
  downloads (``*.p2pshare-part``) and state folder (``.p2pshare``).
- A file symlink is shared only if its target resolves inside the root to a name
  that is itself shareable (so no link can expose a hidden partial download).
  Directory symlinks are never followed: a target inside the root is shared
  under its own name anyway, and one outside must not be.
- ``reader`` re-checks all of this when it opens a file to serve it, then checks
  the opened file is the very one that was indexed (device, inode, size, mtime)
  and checks size and mtime again on every read. A file that changed is dropped
  from the index (``NotFound``) until it is indexed again.

A ``Share`` is used from the asyncio loop and from worker threads; its index is
guarded by a lock, and scans are serialised.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from p2pshare.core.manifest import Manifest, check_content_id, check_piece_size
from p2pshare.core.names import Query
from p2pshare.core.paths import PARTIAL_SUFFIX, check_share_name
from p2pshare.errors import InvalidName, NotFound, P2PShareError, UsageError
from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.hashing import FileChanged, hash_fd

__all__ = ["PieceReader", "ScanResult", "Share", "SharedFile"]

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
_PROC_FD = Path("/proc/self/fd")


@dataclass(frozen=True, slots=True)
class SharedFile:
    """One file of the share folder as it was indexed."""

    name: str
    """The share name: the ``/``-separated path relative to the share root."""
    path: Path
    """Where the file is: the share root joined with the name."""
    manifest: Manifest
    size: int
    mtime_ns: int
    inode: int
    device: int
    _content_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_content_id", self.manifest.content_id)

    @property
    def content_id(self) -> str:
        return self._content_id


@dataclass
class ScanResult:
    """What one scan of the share folder did."""

    hashed: int = 0
    """Files whose pieces were hashed (new or changed since they were last hashed)."""
    cached: int = 0
    """Files whose hashes came from the hash cache unread."""
    removed: int = 0
    """Files that were indexed before and are gone (or no longer shareable) now."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(relative path, why)`` of each entry that is not shared and is not hidden."""

    @property
    def shared(self) -> int:
        return self.hashed + self.cached


class _Skip(Exception):
    """This entry is not shared; the message says why."""


class PieceReader:
    """Reads pieces of one shared file, opened and checked by ``Share.reader``.

    A context manager; ``read`` may be called from several threads at once.
    """

    def __init__(
        self,
        fd: int,
        shared: SharedFile,
        on_stale: Callable[[SharedFile], None],
        on_read: Callable[[str, int], None] = lambda content_id, n: None,
    ) -> None:
        self._fd = fd
        self._shared = shared
        self._on_stale = on_stale
        self._on_read = on_read
        self._closed = False

    @property
    def shared_file(self) -> SharedFile:
        return self._shared

    @property
    def manifest(self) -> Manifest:
        return self._shared.manifest

    def read(self, index: int) -> bytes:
        """Exactly the bytes of piece ``index``.

        Raises ``UsageError`` for an index the file does not have, ``NotFound`` if
        the file changed since it was indexed (it is then dropped from the index).
        """
        if self._closed:
            raise ValueError("read from a closed PieceReader")
        manifest = self._shared.manifest
        if not 0 <= index < manifest.piece_count:
            raise UsageError(
                f"piece {index} out of range: {self._shared.name!r} has {manifest.piece_count}"
            )
        length = manifest.piece_length(index)
        try:
            st = os.fstat(self._fd)
            data = os.pread(self._fd, length, manifest.piece_offset(index))
        except OSError as exc:
            raise P2PShareError(f"cannot read {self._shared.name!r}: {exc.strerror}") from exc
        if (
            len(data) != length
            or st.st_size != self._shared.size
            or st.st_mtime_ns != self._shared.mtime_ns
        ):
            self._on_stale(self._shared)
            raise NotFound(f"{self._shared.name!r} changed on disk since it was indexed")
        self._on_read(self._shared.content_id, length)
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> PieceReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            os.close(self._fd)


class Share:
    """The files a peer shares: the indexed contents of one folder."""

    def __init__(
        self,
        root: Path,
        *,
        cache: HashCache,
        piece_size: int,
        workers: int = 0,
        whole_file_sha256: bool = False,
    ) -> None:
        check_piece_size(piece_size)
        if workers < 0:
            raise ValueError("workers must be >= 0")
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise NotFound(f"the share folder does not exist or is not a folder: {root}")
        self._root = real
        self._root_str = str(real)
        self._root_prefix = self._root_str.rstrip(os.sep) + os.sep
        self._cache = cache
        self._piece_size = piece_size
        self._workers = workers
        self._whole = whole_file_sha256
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._by_name: dict[str, SharedFile] = {}
        self._by_id: dict[str, dict[str, SharedFile]] = {}
        self._touched: set[str] | None = None
        self._served: dict[str, int] = {}  # bytes read for other peers, by content id

    @property
    def root(self) -> Path:
        """The share folder, with symlinks resolved."""
        return self._root

    @property
    def piece_size(self) -> int:
        return self._piece_size

    # -- the index -------------------------------------------------------------

    def files(self) -> list[SharedFile]:
        """Every shared file, by name."""
        with self._lock:
            return sorted(self._by_name.values(), key=lambda f: f.name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name)

    def named(self, name: str) -> SharedFile | None:
        """The shared file of this share name, if any."""
        with self._lock:
            return self._by_name.get(name)

    def get(self, content_id: str) -> SharedFile:
        """A shared file with this content id (any one of several identical ones)."""
        check_content_id(content_id)
        with self._lock:
            named = self._by_id.get(content_id)
            if named:
                return named[min(named)]
        raise NotFound(f"no shared file has content id {content_id[:16]}…")

    def files_matching(self, query: Query, limit: int) -> list[SharedFile]:
        """Up to ``limit`` shared files whose name matches ``query``, by name."""
        if limit <= 0:
            return []
        hits = [f for f in self.files() if query.matches(f.name)]
        return hits[:limit]

    def remove(self, name: str) -> None:
        """Stop sharing ``name`` and forget its cached hashes (nothing if not shared)."""
        with self._lock:
            if self._touched is not None:
                self._touched.add(name)
            shared = self._drop(name)
        if shared is not None:
            self._cache.remove(shared.path)

    def _put(self, shared: SharedFile) -> None:
        self._drop(shared.name)
        self._by_name[shared.name] = shared
        self._by_id.setdefault(shared.content_id, {})[shared.name] = shared

    def _drop(self, name: str) -> SharedFile | None:
        shared = self._by_name.pop(name, None)
        if shared is not None:
            named = self._by_id[shared.content_id]
            del named[name]
            if not named:
                del self._by_id[shared.content_id]
        return shared

    def _drop_stale(self, shared: SharedFile) -> None:
        with self._lock:
            if self._by_name.get(shared.name) is shared:
                self._drop(shared.name)
        log.info("%r changed on disk; dropped until it is indexed again", shared.name)

    # -- scanning --------------------------------------------------------------

    def scan(self, progress: Callable[[int], None] | None = None) -> ScanResult:
        """Walk the share folder, hash what is new or changed, drop what is gone.

        Synchronous (the peer runs it in a thread). ``progress`` is called with the
        number of bytes hashed since its last call. Files become searchable as
        they are indexed, before the scan ends.
        """
        with self._scan_lock:
            result = ScanResult()
            with self._lock:
                self._touched = set()
            found: set[str] = set()
            try:
                for name, path in self._walk(result.skipped):
                    try:
                        shared, hashed = self._index(name, path, progress)
                    except (_Skip, P2PShareError) as exc:
                        result.skipped.append((name, str(exc)))
                        continue
                    found.add(name)
                    if hashed:
                        result.hashed += 1
                    else:
                        result.cached += 1
                    with self._lock:
                        assert self._touched is not None
                        if name not in self._touched:
                            self._put(shared)
            finally:
                with self._lock:
                    touched, self._touched = self._touched or set(), None
                    for name in list(self._by_name):
                        if name not in found and name not in touched:
                            self._drop(name)
                            result.removed += 1
                    present = [f.path for f in self._by_name.values()]
            self._cache.prune(present, under=self._root)
            for name, why in result.skipped:
                log.debug("not shared: %r: %s", name, why)
            return result

    def _walk(self, skipped: list[tuple[str, str]]) -> Iterator[tuple[str, Path]]:
        """``(share name, path)`` of each candidate file, depth first, by name."""
        stack: list[tuple[str, str]] = [(self._root_str, "")]
        while stack:
            directory, prefix = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                if not prefix:
                    raise NotFound(f"cannot list the share folder {self._root}: {exc}") from exc
                skipped.append((prefix.rstrip("/"), f"cannot list: {exc.strerror}"))
                continue
            subdirs: list[tuple[str, str]] = []
            for entry in entries:
                if entry.name.startswith(".") or entry.name.endswith(PARTIAL_SUFFIX):
                    continue  # hidden, our state folder, our partial downloads
                rel = prefix + entry.name
                try:
                    check_share_name(rel)
                except InvalidName as exc:
                    skipped.append((rel, str(exc)))
                    continue
                try:
                    if entry.is_symlink():
                        if entry.is_dir(follow_symlinks=True):
                            skipped.append((rel, "directory symlinks are not followed"))
                        else:
                            # checked in full (target inside, regular) when it is opened
                            yield rel, Path(entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append((entry.path, rel + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        yield rel, Path(entry.path)
                    else:
                        skipped.append((rel, "not a regular file"))
                except OSError as exc:
                    skipped.append((rel, f"cannot stat: {exc.strerror}"))
            stack.extend(reversed(subdirs))

    def index_file(self, path: Path, known: Manifest | None = None) -> SharedFile | None:
        """(Re)index one file: after a download completes, or when a watcher saw it change.

        ``known``: the manifest the file was just verified against (a completed
        download), taken as it is instead of hashing the file again.

        ``path`` is absolute or relative to the share root. Returns the shared
        file, or ``None`` if it is gone or not shareable (hidden, a partial
        download, a symlink out, not a regular file, still changing); then it is
        dropped from the index. Raises ``InvalidName`` for a path outside the
        share folder, ``P2PShareError`` if the file cannot be read.
        """
        name = self._name_of(path)
        try:
            check_share_name(name)
        except InvalidName:
            shared = None
        else:
            try:
                shared, _ = self._index(name, self._root.joinpath(*name.split("/")), None, known)
            except (_Skip, NotFound, FileChanged) as exc:
                log.info("not shared: %r: %s", name, exc)
                shared = None
        with self._lock:
            if self._touched is not None:
                self._touched.add(name)
            if shared is None:
                self._drop(name)
            else:
                self._put(shared)
        return shared

    def _name_of(self, path: Path) -> str:
        path = Path(path)
        full = Path(os.path.normpath(path if path.is_absolute() else self._root / path))
        try:
            rel = full.relative_to(self._root)
        except ValueError:
            raise InvalidName(f"not inside the share folder {self._root}: {path}") from None
        if not rel.parts:
            raise InvalidName("the share folder itself is not a file")
        return "/".join(rel.parts)

    def _index(
        self,
        name: str,
        path: Path,
        progress: Callable[[int], None] | None,
        known: Manifest | None = None,
    ) -> tuple[SharedFile, bool]:
        """The shared file at ``path`` and whether it had to be hashed."""
        fd, st = self._open(name, path)
        try:
            manifest: Manifest | None
            if known is not None and known.size == st.st_size:
                manifest = replace(known, name=name)
                self._cache.put(path, st, manifest)
            else:
                manifest = self._cache.get(path, st, name=name, whole_file_sha256=self._whole)
            hashed = manifest is None
            if manifest is None:
                manifest = hash_fd(
                    fd,
                    st.st_size,
                    name=name,
                    piece_size=self._piece_size,
                    workers=self._workers,
                    whole_file_sha256=self._whole,
                    progress=progress,
                )
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    raise _Skip("it changed while it was hashed")
                self._cache.put(path, st, manifest)
        except OSError as exc:
            raise P2PShareError(f"cannot read {name!r}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        shared = SharedFile(name, path, manifest, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        return shared, hashed

    # -- safe opening ----------------------------------------------------------

    def _inside(self, real: str) -> bool:
        """Whether the symlink-free path ``real`` is a shareable name inside the root."""
        if not real.startswith(self._root_prefix):
            return False
        try:
            check_share_name(real[len(self._root_prefix) :].replace(os.sep, "/"))
        except InvalidName:
            return False
        return True

    def _open(self, name: str, path: Path) -> tuple[int, os.stat_result]:
        """Open ``path`` for reading if it is a regular file that really is inside the root.

        Raises ``_Skip`` (or ``NotFound`` if it is gone) otherwise.
        """
        parent = os.path.dirname(path)
        if os.path.realpath(parent) != parent:
            raise _Skip("a folder on its path is a symlink")
        real = os.path.realpath(path)
        if not self._inside(real):
            raise _Skip("symlink points outside the share folder or to a hidden file")
        try:
            if not stat.S_ISREG(os.stat(real, follow_symlinks=False).st_mode):
                raise _Skip("not a regular file")
            fd = os.open(real, _OPEN_FLAGS)
        except FileNotFoundError as exc:
            raise NotFound(f"{name!r} is gone") from exc
        except OSError as exc:
            # ELOOP: the last part became a symlink after realpath looked at it
            raise _Skip(f"cannot open: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Skip("not a regular file")
            opened = self._fd_path(fd)
            if opened is not None and not self._inside(opened):
                raise _Skip("it was moved outside the share folder while opened")
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    @staticmethod
    def _fd_path(fd: int) -> str | None:
        """The path the kernel has for the open ``fd`` (Linux), to close the check/open race."""
        try:
            return os.readlink(_PROC_FD / str(fd))
        except OSError:
            return None

    # -- serving ---------------------------------------------------------------

    def reader(self, content_id: str) -> PieceReader:
        """A reader of the file with this content id, opened and checked now.

        Raises ``NotFound`` if it is not shared, or if it is no longer the file
        that was indexed (then it is dropped from the index).
        """
        shared = self.get(content_id)
        try:
            fd, st = self._open(shared.name, shared.path)
        except (_Skip, NotFound) as exc:
            self._drop_stale(shared)
            raise NotFound(f"{shared.name!r} can no longer be shared: {exc}") from None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
            shared.device,
            shared.inode,
            shared.size,
            shared.mtime_ns,
        ):
            os.close(fd)
            self._drop_stale(shared)
            raise NotFound(f"{shared.name!r} changed on disk since it was indexed")
        return PieceReader(fd, shared, self._drop_stale, self._count_served)

    def _count_served(self, content_id: str, n: int) -> None:
        with self._lock:
            self._served[content_id] = self._served.get(content_id, 0) + n

    def served(self) -> dict[str, int]:
        """Bytes of each file (by content id) read for other peers since the start."""
        with self._lock:
            return dict(self._served)

    def target_path(self, name: str) -> Path:
        """Where the file shared as ``name`` lives, or would be saved.

        Raises ``InvalidName`` unless ``name`` is a valid share name whose path,
        with any existing symlinks resolved, stays inside the share folder.
        """
        check_share_name(name)
        path = self._root.joinpath(*name.split("/"))
        if not self._inside(os.path.realpath(path)):
            raise InvalidName(f"{name!r} would lead outside the share folder")
        return path
