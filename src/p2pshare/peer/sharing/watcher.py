"""Watching the share folder (watchfiles): each added, changed, moved or removed file
is indexed again, alone, once it has settled, and reported as ``removed``/``added``
shared files to ``on_change``.

Hidden entries and partial downloads are ignored. A burst of events on one path
costs one look (``p2pshare.core.pubsub.Debouncer``); a file whose size or mtime
still changes is looked at again after another quiet period. A folder that appears
is walked; one that vanishes takes its files with it. If too many paths wait at
once, the whole folder is scanned again instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

from p2pshare import errors
from p2pshare.core.paths import PARTIAL_SUFFIX
from p2pshare.core.pubsub import Debouncer
from p2pshare.peer.sharing.share import Share, SharedFile

__all__ = ["QUIET_SECONDS", "ShareWatcher"]

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.15  # a path is looked at once untouched (and unchanged) this long
MAX_WAITING = 10_000  # paths waiting at once; more: rescan the folder
MAX_WALK = 10_000  # files of a folder that appeared, looked at one by one

Signature = tuple[int, int] | None  # (size, mtime_ns) as lstat sees it; None: gone
OnChange = Callable[[list[SharedFile], list[SharedFile]], None]


def _signature(path: str) -> Signature:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class ShareWatcher:
    """Keeps a ``Share``'s index current; ``on_change(removed, added)`` after each look."""

    def __init__(self, share: Share, on_change: OnChange, *, quiet: float = QUIET_SECONDS) -> None:
        self._share = share
        self._root = str(share.root)
        self._on_change = on_change
        self._debouncer: Debouncer[str, Signature] = Debouncer(quiet=quiet, capacity=MAX_WAITING)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.changes_seen = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(), name="watch share"),
            asyncio.create_task(self._settle(), name="settle share"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _shareable(self, change: watchfiles.Change, path: str) -> bool:
        rel = os.path.relpath(path, self._root)
        if rel.startswith(".."):
            return False
        return not any(p.startswith(".") or p.endswith(PARTIAL_SUFFIX) for p in rel.split(os.sep))

    async def _watch(self) -> None:
        async for batch in watchfiles.awatch(
            self._root,
            watch_filter=self._shareable,
            debounce=100,
            step=20,
            stop_event=self._stop,
            yield_on_timeout=False,
            recursive=True,
        ):
            now = time.monotonic()
            for _, path in batch:
                self.changes_seen += 1
                self._debouncer.touch(path, _signature(path), now)
            self._wake.set()

    async def _settle(self) -> None:
        while True:
            next_due = self._debouncer.next_due()
            timeout = None if next_due is None else max(next_due - time.monotonic(), 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._debouncer.overflowed:
                self._debouncer = Debouncer(quiet=self._debouncer.quiet, capacity=MAX_WAITING)
                await self._rescan()
                continue
            now = time.monotonic()
            looks: list[str] = []
            for path, signature in self._debouncer.due(now):
                current = _signature(path)
                if current != signature:
                    self._debouncer.touch(path, current, now)  # still being written
                else:
                    looks.append(path)
            if looks:
                try:
                    removed, added = await asyncio.to_thread(self._look, looks)
                except Exception:
                    log.exception("re-indexing %d changed paths failed", len(looks))
                    continue
                if removed or added:
                    self._on_change(removed, added)

    def _look(self, paths: list[str]) -> tuple[list[SharedFile], list[SharedFile]]:
        """Index ``paths`` again (in a thread); the shared files gone and new."""
        before = {f.name: f for f in self._share.files()}
        for path in paths:
            if os.path.isdir(path) and not os.path.islink(path):
                for file in _walk(path):
                    self._index(file)
            elif os.path.lexists(path):
                self._index(path)
            else:
                name = os.path.relpath(path, self._root).replace(os.sep, "/")
                for gone in [n for n in before if n == name or n.startswith(name + "/")]:
                    self._share.remove(gone)
        return _diff(before, self._share)

    def _index(self, path: str) -> None:
        try:
            self._share.index_file(Path(path))
        except errors.P2PShareError as exc:
            log.info("not shared: %s: %s", path, exc)

    async def _rescan(self) -> None:
        def scan() -> tuple[list[SharedFile], list[SharedFile]]:
            before = {f.name: f for f in self._share.files()}
            self._share.scan()
            return _diff(before, self._share)

        removed, added = await asyncio.to_thread(scan)
        if removed or added:
            self._on_change(removed, added)


def _diff(before: dict[str, SharedFile], share: Share) -> tuple[list[SharedFile], list[SharedFile]]:
    """Per name: the shared files gone or changed since ``before`` (as they were), and
    those new or changed (as they are). A rename is the old name removed and the new
    one added, even with the same content (folder sync follows names)."""
    after = {f.name: f for f in share.files()}
    removed = [
        f
        for name, f in before.items()
        if name not in after or after[name].content_id != f.content_id
    ]
    added = [
        f
        for name, f in after.items()
        if name not in before or before[name].content_id != f.content_id
    ]
    return removed, added


def _walk(folder: str) -> list[str]:
    out: list[str] = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [
            os.path.join(parent, f)
            for f in files
            if not f.startswith(".") and not f.endswith(PARTIAL_SUFFIX)
        ]
        if len(out) >= MAX_WALK:
            break
    return out[:MAX_WALK]
