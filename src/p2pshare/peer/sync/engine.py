"""Folder sync at one peer: the versions of its shared files (published with every
change, served to ``Search`` with ``with_versions``), and the folders its
subscriptions keep in step (``FolderSync``: one per subscription).

A folder hears of other peers' versions from their changes (which carry the version),
from a look at a provider when a change came without one (the tracker's events), and
from each known publisher's whole listing when it starts. For each name the rules of
``core.sync.decide`` apply. A new version is built in ``.p2pshare/incoming/`` inside
the folder: the replaced file copied in, pieces found in other local files copied,
the rest downloaded (``DownloadManager``, which verifies every piece); then it takes
the name with one ``os.replace``, the replaced file going to ``.p2pshare/versions/``
(kept ``keep`` at most per name; 0: not kept) or, if it lost a conflict, beside it as
``NAME.sync-conflict-YYYYMMDD-HHMMSS.EXT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.manifest import Manifest
from p2pshare.core.names import Query
from p2pshare.core.paths import check_share_name
from p2pshare.core.sync import (
    Adopt,
    Decision,
    FileVersion,
    Ignore,
    PiecePlan,
    Remove,
    Replace,
    Vector,
    conflict_name,
    decide,
    kept_version_name,
    retry_delay,
    versions_to_prune,
)
from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.hashing import hash_file
from p2pshare.peer.sharing.share import Share, SharedFile
from p2pshare.peer.sync.pieces import Source, seed_partial
from p2pshare.peer.sync.store import VersionStore, stat_key
from p2pshare.peer.sync.wire import hit_version, version_from_pb, version_to_pb
from p2pshare.peer.transfer.downloads import DownloadManager
from p2pshare.peer.transfer.partial import load_record, partial_path, recorded_pieces
from p2pshare.peer.transfer.progress import Download

__all__ = [
    "STATE_DIR",
    "FolderSync",
    "SyncEvent",
    "SyncShare",
    "hit_version",
    "version_from_pb",
    "version_to_pb",
]

log = logging.getLogger(__name__)

STATE_DIR = ".p2pshare"  # inside a synced folder: incoming/ and versions/
MAX_LISTING = 100_000  # versions asked of one publisher at once
MAX_SOURCES = 64  # local files looked at for pieces of a new version (besides the old one)
EVENTS_KEPT = 50
MAX_READ_AHEAD = 4  # replaced files read ahead at once
MAX_FAILING = 10_000  # names whose failures in a row are counted (for the back-off)


@dataclass(frozen=True)
class SyncEvent:
    """Something a folder sync did, as ``subscriptions`` and the event stream show it."""

    action: str  # replaced, added, removed, conflict, failed
    name: str
    folder: str
    subscription: str
    detail: str = ""
    at: float = field(default_factory=time.time)
    fetched: int = 0  # bytes downloaded
    reused: int = 0  # bytes taken from local files
    steps: dict[str, float] = field(default_factory=dict)
    """Unix times of a new version's steps: heard, seeded (local pieces copied),
    downloaded (the rest fetched, all verified), landed (in place)."""

    def to_json(self) -> dict[str, object]:
        return {
            "event": "sync",
            "action": self.action,
            "name": self.name,
            "folder": self.folder,
            "subscription": self.subscription,
            "detail": self.detail,
            "at": self.at,
            "fetched": self.fetched,
            "reused": self.reused,
            "steps": self.steps,
        }


class SyncShare:
    """The versions of this peer's shared files, kept as the share changes."""

    def __init__(self, *, store: VersionStore, share: Share) -> None:
        self.store = store
        self.share = share

    @property
    def device(self) -> str:
        return self.store.device

    def reconcile(self) -> None:
        """After a scan: a version for every shared file, a tombstone for every file
        recorded below the share that is gone (changes made while the peer was down)."""
        root = self.share.root
        present = {f.path for f in self.share.files()}
        for f in self.share.files():
            self.store.local(f.path, f.content_id, f.size)
        for path, entry in list(self.store.under(root)):
            gone = path not in present and not os.path.lexists(path)
            if gone and not entry.version.deleted and not _hidden(root, path):
                self.store.local(path, None)

    def changed(
        self, removed: list[SharedFile], added: list[SharedFile]
    ) -> list[tuple[SharedFile, FileVersion]]:
        """Record the versions of a change of the share (per name, as the watcher
        reports it); the versions to publish, new or not."""
        out: list[tuple[SharedFile, FileVersion]] = []
        names = {f.name for f in added}
        for f in removed:
            if f.name not in names and not os.path.lexists(f.path):
                version, _ = self.store.local(f.path, None)
                out.append((f, version))
        for f in added:
            version, _ = self.store.local(f.path, f.content_id, f.size)
            out.append((f, version))
        return out

    def version_of(self, path: Path) -> FileVersion | None:
        entry = self.store.get(path)
        return entry.version if entry is not None else None

    def hits(self, query: Query | None, name: str, me: pb.PeerInfo) -> list[pb.SearchHit]:
        """Our files matching ``query`` (or just ``name``), removed ones too, each with
        its version: what a ``Search`` with ``with_versions`` gets."""
        root = self.share.root
        if name:
            one = root.joinpath(*name.split("/"))
            entry = self.store.get(one)
            entries = [(one, entry)] if entry is not None else []
            found = self.share.named(name)
            shared = {found.path: found.content_id} if found is not None else {}
        else:
            entries = list(self.store.under(root))
            shared = {f.path: f.content_id for f in self.share.files()}
        out: list[pb.SearchHit] = []
        for path, entry in entries:
            rel = "/".join(path.relative_to(root).parts)
            if not name and query is not None and not query.matches(rel):
                continue
            v = entry.version
            if _hidden(root, path) or (not v.deleted and shared.get(path) != v.content_id):
                continue  # not shared (yet): its change will come
            out.append(
                pb.SearchHit(
                    content_id=v.content_id,
                    name=rel,
                    size=v.size,
                    provider=me,
                    version=version_to_pb(v),
                    mtime_ns=v.mtime_ns,
                    origin=v.origin,
                    deleted=v.deleted,
                )
            )
            if len(out) >= MAX_LISTING:
                break
        return out


def _hidden(root: Path, path: Path) -> bool:
    try:
        return any(p.startswith(".") for p in path.relative_to(root).parts)
    except ValueError:
        return True


Lookup = Callable[[str, str], Awaitable[FileVersion | None]]  # (provider, name) -> version
Remember = Callable[[str, str, int, str], None]  # content id, name, size, provider


@dataclass
class _Pending:
    """The versions heard for one name and not yet decided on, by provider."""

    versions: dict[str, tuple[FileVersion | None, float]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Fetch:
    """A new version on its way: its download, and what to do once it is complete."""

    remote: FileVersion
    vector: Vector
    conflict: bool
    provider: str
    download: Download
    manifest: Manifest
    reused: int
    given_up: list[Download] = field(default_factory=list)
    """Downloads of versions this one superseded: their pieces were taken along."""
    steps: dict[str, float] = field(default_factory=dict)


class FolderSync:
    """Keeps one folder in step with the versions other peers publish of the names a
    subscription follows."""

    def __init__(
        self,
        *,
        sub_id: str,
        folder: Path,
        mirror: bool,
        keep: int,
        store: VersionStore,
        cache: HashCache,
        share: Share,
        downloads: DownloadManager,
        records: Path,
        manifest_of: Callable[[str, str], Awaitable[Manifest]],
        lookup: Lookup,
        remember: Remember,
        republish: Callable[[Path], None],
        on_event: Callable[[SyncEvent], None],
    ) -> None:
        self.sub_id = sub_id
        self.folder = folder
        self.mirror = mirror
        self.keep = keep
        self.two_way = folder == share.root
        self._store = store
        self._cache = cache
        self._share = share
        self._downloads = downloads
        self._records = records
        self._manifest_of = manifest_of
        self._lookup = lookup
        self._remember = remember
        self._republish = republish
        self._on_event = on_event
        self._pending: dict[str, _Pending] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.events: deque[SyncEvent] = deque(maxlen=EVENTS_KEPT)
        self.conflicts: list[str] = []
        self.fetched = 0
        self.reused = 0
        self._closed = False
        self._retries: list[asyncio.TimerHandle] = []
        self._failures: dict[str, int] = {}  # name: downloads failed in a row
        self._reading: set[asyncio.Task[None]] = set()  # read-ahead of replaced files

    @property
    def incoming(self) -> Path:
        return self.folder / STATE_DIR / "incoming"

    @property
    def versions_dir(self) -> Path:
        return self.folder / STATE_DIR / "versions"

    def busy(self) -> list[str]:
        return sorted(self._workers)

    def kept_versions(self) -> list[str]:
        root = self.versions_dir
        if not root.is_dir():
            return []
        return sorted("/".join(p.relative_to(root).parts) for p in root.rglob("*") if p.is_file())

    async def close(self) -> None:
        self._closed = True
        for retry in self._retries:
            retry.cancel()
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def offer(self, name: str, provider: str, version: FileVersion | None = None) -> None:
        """``provider`` has ``version`` of ``name`` (``None``: it has changed, ask it)."""
        if self._closed:
            return
        try:
            check_share_name(name)
        except errors.InvalidName:
            return
        pending = self._pending.setdefault(name, _Pending())
        pending.versions[provider] = (version, time.time())
        pending.wake.set()
        if name not in self._workers:
            self._workers[name] = asyncio.create_task(self._work(name), name=f"sync {name}")

    # -- one name at a time ------------------------------------------------------------

    async def _work(self, name: str) -> None:
        pending = self._pending[name]
        fetch: _Fetch | None = None
        try:
            while True:
                if pending.versions:
                    heard, pending.versions = pending.versions, {}
                    pending.wake.clear()
                    for provider, (version, at) in heard.items():
                        fetch = await self._consider(name, provider, version, fetch, at)
                elif fetch is not None:
                    download = fetch.download
                    if download.done:
                        await self._landed(name, fetch)
                        fetch = None
                    else:
                        seen = download.version
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                waits = [
                                    asyncio.ensure_future(download.wait_change(seen, 1.0, 0)),
                                    asyncio.ensure_future(pending.wake.wait()),
                                ]
                                try:
                                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                                finally:
                                    for w in waits:
                                        w.cancel()
                else:
                    return
        except Exception as exc:
            log.exception("sync of %r in %s failed", name, self.folder)
            self._event("failed", name, str(exc))
        finally:
            del self._workers[name]
            if self._pending.get(name) is pending and not pending.versions:
                del self._pending[name]
            elif pending.versions and not self._closed:  # heard more while ending: go on
                self._workers[name] = asyncio.create_task(self._work(name))

    async def _consider(
        self,
        name: str,
        provider: str,
        version: FileVersion | None,
        fetch: _Fetch | None,
        heard: float,
    ) -> _Fetch | None:
        if version is None:
            try:
                version = await self._lookup(provider, name)
            except errors.P2PShareError as exc:
                log.info("sync: cannot ask %s about %r: %s", provider, name, exc)
                return fetch
            if version is None:
                return fetch
        if fetch is not None:  # first against the version on its way
            coming = replace(fetch.remote, vector=fetch.vector)
            decision = decide(coming, version, mirror=self.mirror, two_way=self.two_way)
            if isinstance(decision, Ignore):
                return fetch
            if isinstance(decision, Adopt):
                fetch.vector = decision.vector
                return fetch
            await self._give_up(fetch)  # superseded before it landed
        path = self.folder.joinpath(*name.split("/"))
        if not self._inside(path):
            self._event("failed", name, "refused: it leads out of the folder through a symlink")
            return fetch
        local = await self._local(name, path)
        decision = decide(local, version, mirror=self.mirror, two_way=self.two_way)
        log.debug("sync %r from %s: %s", name, provider, decision)
        made = await self._apply(name, path, provider, version, decision)
        if made is not None:
            made.steps["heard"] = heard
        if fetch is not None:
            given_up = [*fetch.given_up, fetch.download]
            if made is not None:
                made.given_up = given_up  # the new one took their pieces
            else:
                await self._drop(given_up)
        return made

    async def _apply(
        self, name: str, path: Path, provider: str, remote: FileVersion, decision: Decision
    ) -> _Fetch | None:
        if isinstance(decision, Ignore):
            return None
        if isinstance(decision, Adopt):
            if self._store.adopt(path, decision.vector) is None:
                self._store.put(path, replace(remote, vector=decision.vector), None)
            if self.two_way:
                self._republish(path)
            return None
        if isinstance(decision, Remove):
            await self._remove(name, path, replace(remote, vector=decision.vector))
            return None
        return await self._start(name, path, provider, remote, decision)

    async def _local(self, name: str, path: Path) -> FileVersion | None:
        """This peer's version of ``name``, a local change recorded first."""
        entry = self._store.get(path)
        now = stat_key(path)
        if entry is not None and entry.file == now:
            return entry.version
        if now is None:
            if entry is None or entry.version.deleted:
                return entry.version if entry else None
            version, _ = self._store.local(path, None)
            return version
        manifest = await asyncio.to_thread(self._manifest_of_local, path, name, None)
        if manifest is None:
            return entry.version if entry else None
        version, _ = self._store.local(path, manifest.content_id, manifest.size)
        return version

    def _manifest_of_local(self, path: Path, name: str, piece_size: int | None) -> Manifest | None:
        """The manifest of the local file ``path`` (from the hash cache if it is current)."""
        try:
            st = os.stat(path, follow_symlinks=False)
            if not os.path.isfile(path) or os.path.islink(path):
                return None
            cached = self._cache.get(path, st, name=name)
            if cached is not None and piece_size in (None, cached.piece_size):
                return cached
            made = hash_file(path, name=name, piece_size=piece_size or self._share.piece_size)
            if piece_size in (None, self._share.piece_size):
                after = os.stat(path, follow_symlinks=False)
                if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                    self._cache.put(path, st, made)
            return made
        except (OSError, errors.P2PShareError) as exc:
            log.info("sync: cannot hash %s: %s", path, exc)
            return None

    # -- a new version -----------------------------------------------------------------

    async def _start(
        self, name: str, path: Path, provider: str, remote: FileVersion, decision: Replace
    ) -> _Fetch | None:
        self._read_ahead(path)
        try:
            manifest = await self._manifest_of(provider, remote.content_id)
        except errors.P2PShareError as exc:
            self._event("failed", name, f"no manifest from {provider}: {exc}")
            return None
        self._remember(remote.content_id, name, remote.size, provider)
        incoming = self.incoming.resolve()
        target = incoming.joinpath(*manifest.name.split("/"))
        reused = 0
        trusted: list[int] = []
        existing = self._downloads_of(remote.content_id)
        if existing is None or existing.done:
            target.parent.mkdir(parents=True, exist_ok=True)
            record = self._records / f"{remote.content_id}.json"
            if load_record(record) is None:
                others = self._candidates(remote.content_id, path)
                plan = await asyncio.to_thread(self._seed, manifest, target, record, path, others)
                if plan is not None:
                    piece = [manifest.piece_length(i) for i in range(manifest.piece_count)]
                    reused, trusted = plan[0].local_bytes(piece), plan[1]
        download = self._downloads.start(remote.content_id, incoming, verified=trusted)
        made = _Fetch(
            remote, decision.vector, decision.conflict, provider, download, manifest, reused
        )
        made.steps["seeded"] = time.time()
        return made

    def _read_ahead(self, path: Path) -> None:
        """Have the kernel start reading the file a new version replaces (its unchanged
        pieces are copied once the manifest is in): the copy then finds the pages in
        the cache or on their way, not all still on the disk."""
        if not hasattr(os, "posix_fadvise") or len(self._reading) >= MAX_READ_AHEAD:
            return

        def advise() -> None:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    if stat.S_ISREG(os.fstat(fd).st_mode):
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)

        task = asyncio.create_task(asyncio.to_thread(advise))  # it may block on the disk
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    def _downloads_of(self, content_id: str) -> Download | None:
        try:
            return self._downloads.get(content_id)
        except errors.NotFound:
            return None

    def _candidates(self, content_id: str, base: Path) -> list[Path]:
        """Local files that may hold pieces of a new version: those of this folder
        (the same content first: a rename) and the versions kept. Hashed ones only."""
        same: list[Path] = []
        other: list[Path] = []
        for path, entry in self._store.under(self.folder):
            v = entry.version
            if path != base and not v.deleted and entry.file is not None:
                (same if v.content_id == content_id else other).append(path)
        kept = [self.versions_dir.joinpath(*k.split("/")) for k in self.kept_versions()]
        return (same + other[:MAX_SOURCES] + kept[:MAX_SOURCES])[: 2 * MAX_SOURCES]

    def _seed(
        self, manifest: Manifest, target: Path, record: Path, base_path: Path, paths: list[Path]
    ) -> tuple[PiecePlan, list[int]] | None:
        size = manifest.piece_size
        base = self._source(base_path, size)
        others = [s for p in self._partials() if (s := self._partial_source(p, size))]
        for path in paths:  # only those hashed already: no reading of every file
            with contextlib.suppress(OSError):
                found = self._cache.get(path, os.stat(path, follow_symlinks=False), name="x")
                if found is not None and found.piece_size == size:
                    others.append(Source(path, found.piece_hashes, size, found.size))
        if base is None and not others:
            return None
        return seed_partial(manifest, target, record, base, others)

    def _source(self, path: Path, piece_size: int) -> Source | None:
        if not path.is_file() or path.is_symlink():
            return None
        before = stat_key(path)
        manifest = self._manifest_of_local(path, path.name, piece_size)
        if manifest is None:
            return None
        after = stat_key(path)
        return Source(
            path,
            manifest.piece_hashes,
            manifest.piece_size,
            manifest.size,
            verified_as=after if after == before else None,
        )

    def _partials(self) -> list[Path]:
        """Records of downloads into this folder's incoming/ (versions given up)."""
        incoming = str(self.incoming.resolve())
        out = []
        for record in self._records.glob("*.json"):
            loaded = load_record(record)
            if loaded is not None and str(loaded[1]).startswith(incoming + os.sep):
                out.append(record)
        return out

    def _partial_source(self, record: Path, piece_size: int) -> Source | None:
        loaded = load_record(record)
        if loaded is None or loaded[0].piece_size != piece_size:
            return None
        manifest, target = loaded
        have = recorded_pieces(record, manifest)
        hashes = [h if i in have else b"" for i, h in enumerate(manifest.piece_hashes)]
        part = partial_path(target)
        if not part.is_file():
            return None
        return Source(part, hashes, manifest.piece_size, manifest.size)

    async def _give_up(self, fetch: _Fetch) -> None:
        """Stop a download of a version that is no longer wanted; its verified pieces
        stay (paused) for the next version to take (``_drop`` then deletes them)."""
        with contextlib.suppress(errors.P2PShareError):
            await self._downloads.pause(fetch.remote.content_id)

    async def _drop(self, downloads: list[Download]) -> None:
        for d in downloads:
            with contextlib.suppress(errors.P2PShareError):
                await self._downloads.cancel(d.content_id)

    async def _landed(self, name: str, fetch: _Fetch) -> None:
        download = fetch.download
        fetch.steps["downloaded"] = time.time()
        await self._drop([d for d in fetch.given_up if d.content_id != download.content_id])
        if download.state != "complete" or download.path is None:
            if download.state == "failed":
                delay = self._retry(name, fetch.provider, fetch.remote)
                self._event("failed", name, f"{download.error}; again in {delay:.0f} s")
            else:  # cancelled by the user: until the next version
                self._event("failed", name, download.state)
            return
        staged = Path(download.path)
        path = self.folder.joinpath(*name.split("/"))
        remote = replace(fetch.remote, vector=fetch.vector)
        try:
            if not staged.is_relative_to(self.incoming.resolve()):
                # another folder's download of the same content: take a copy
                mine = self.incoming.resolve().joinpath(*name.split("/"))
                mine.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(shutil.copyfile, staged, mine)
                staged = mine
            os.utime(staged, ns=(remote.mtime_ns, remote.mtime_ns))
            st = os.stat(staged)
        except OSError as exc:
            self._event("failed", name, f"cannot finish: {exc}")
            return
        self._cache.put(path, st, replace(fetch.manifest, name=name))  # no hashing again
        existed = path.is_file()
        old_mtime = os.stat(path).st_mtime if existed else 0.0
        self._store.put(path, remote, (st.st_size, st.st_mtime_ns, st.st_ino))
        try:
            moved = await asyncio.to_thread(
                self._install, staged, path, name, fetch.conflict and existed, old_mtime
            )
        except OSError as exc:
            self._store.put(path, remote, stat_key(path))
            self._event("failed", name, f"cannot move the new version into place: {exc}")
            return
        self._failures.pop(name, None)
        fetched = download.received + sum(d.received for d in fetch.given_up)
        self.fetched += fetched
        self.reused += fetch.reused
        fetch.steps["landed"] = time.time()
        if fetch.conflict and existed:
            self.conflicts.append(moved)
            action, detail = "conflict", f"the local version is kept as {moved}"
        else:
            action, detail = ("replaced" if existed else "added"), f"from {fetch.provider}"
        self._event(action, name, detail, fetched, fetch.reused, fetch.steps)

    def _retry(self, name: str, provider: str, version: FileVersion) -> float:
        """Offer a version whose download failed again later (Syncthing retries too),
        later with each failure in a row (``core.sync.retry_delay``); the delay."""
        failures = self._failures.pop(name, 0) + 1
        self._failures[name] = failures  # the most recent last
        while len(self._failures) > MAX_FAILING:
            del self._failures[next(iter(self._failures))]
        delay = retry_delay(failures)
        loop = asyncio.get_running_loop()
        self._retries = [r for r in self._retries if not r.cancelled()][-100:]
        self._retries.append(loop.call_later(delay, self.offer, name, provider, version))
        return delay

    def _install(
        self, staged: Path, path: Path, name: str, conflict: bool, old_mtime: float
    ) -> str:
        """Give ``staged`` the name ``path``, the file there kept first (in a thread)."""
        if not self._inside(path):
            raise OSError(f"{name!r} leads out of the folder through a symlink")
        path.parent.mkdir(parents=True, exist_ok=True)
        moved = ""
        if conflict:
            taken = {p.name for p in path.parent.iterdir()}
            made = conflict_name(path.name, _moment(old_mtime), taken)
            _link_or_copy(path, path.with_name(made))
            moved = "/".join([*name.split("/")[:-1], made])
        elif path.is_file():
            self._keep(path, name)
        os.replace(staged, path)
        return moved

    def _keep(self, path: Path, name: str) -> None:
        """Keep the file at ``path`` among the versions (or nowhere, with keep 0)."""
        if self.keep <= 0:
            return
        when, n = _moment(time.time()), 1
        kept = self.versions_dir.joinpath(*kept_version_name(name, when).split("/"))
        kept.parent.mkdir(parents=True, exist_ok=True)
        while kept.exists():  # more than one version in a second: -2, -3...
            n += 1
            kept = self.versions_dir.joinpath(*kept_version_name(name, when, n).split("/"))
        _link_or_copy(path, kept)
        with contextlib.suppress(OSError):  # its pieces may serve a later version
            st = os.stat(path)
            known = self._cache.get(path, st, name=name)
            if known is not None:
                self._cache.put(kept, os.stat(kept), known)
        siblings = ["/".join(p.relative_to(self.versions_dir).parts) for p in kept.parent.iterdir()]
        for old in versions_to_prune(siblings, name, self.keep):
            gone = self.versions_dir.joinpath(*old.split("/"))
            gone.unlink(missing_ok=True)
            self._cache.remove(gone)

    async def _remove(self, name: str, path: Path, tombstone: FileVersion) -> None:
        self._store.put(path, tombstone, None)

        def move() -> bool:
            if not self._inside(path) or not path.is_file():
                return False
            self._keep(path, name)
            path.unlink()
            return True

        try:
            gone = await asyncio.to_thread(move)
        except OSError as exc:
            self._event("failed", name, f"cannot remove: {exc}")
            return
        if gone:
            where = "moved to the versions" if self.keep > 0 else "deleted"
            self._event("removed", name, where)

    def _inside(self, path: Path) -> bool:
        """Whether ``path`` stays in the folder: its nearest existing parent, symlinks
        resolved, is inside (a remote name never leads out through a symlink)."""
        parent = path.parent
        while not parent.exists() and parent != self.folder:
            parent = parent.parent
        if path.is_symlink():
            return False
        return parent.resolve().is_relative_to(self.folder.resolve())

    def _event(
        self,
        action: str,
        name: str,
        detail: str = "",
        fetched: int = 0,
        reused: int = 0,
        steps: dict[str, float] | None = None,
    ) -> None:
        event = SyncEvent(
            action,
            name,
            str(self.folder),
            self.sub_id,
            detail,
            fetched=fetched,
            reused=reused,
            steps=steps or {},
        )
        self.events.append(event)
        log.info("sync %s: %s %r %s", self.sub_id, action, name, detail)
        self._on_event(event)


def _moment(t: float) -> tuple[int, int, int, int, int, int]:
    y, mo, d, h, mi, sec = time.localtime(t)[:6]
    return (y, mo, d, h, mi, sec)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
