"""The share watcher in process: a growing file is indexed once it settles, a removed
folder takes its files with it, hidden and partial files are ignored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.share import Share, SharedFile
from p2pshare.peer.sharing.watcher import ShareWatcher

Changes = list[tuple[list[str], list[tuple[str, int]]]]


@pytest.fixture
def share(tmp_path: Path):
    root = tmp_path / "share"
    root.mkdir()
    cache = HashCache(tmp_path / "hashes.db")
    yield Share(root, cache=cache, piece_size=1 << 16)
    cache.close()


async def settled(changes: Changes, count: int, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while len(changes) < count:
            await asyncio.sleep(0.02)


async def watching(watcher: ShareWatcher, root: Path, timeout: float = 10) -> None:
    """Return once the watch is set up: an empty folder (which shares nothing) is made
    and removed until the watcher hears of it."""
    probe = root / "probe"
    async with asyncio.timeout(timeout):
        while watcher.changes_seen == 0:
            if probe.exists():
                probe.rmdir()
            else:
                probe.mkdir()
            await asyncio.sleep(0.05)
    if probe.exists():
        probe.rmdir()


def removed_names(changes: Changes) -> list[str]:
    return sorted(name for r, _ in changes for name in r)


def recorder(changes: Changes):
    def on_change(removed: list[SharedFile], added: list[SharedFile]) -> None:
        changes.append(([f.name for f in removed], [(f.name, f.size) for f in added]))

    return on_change


async def test_a_file_still_being_written_is_indexed_once_it_settles(share: Share) -> None:
    changes: Changes = []
    watcher = ShareWatcher(share, recorder(changes), quiet=0.4)
    watcher.start()
    try:
        await watching(watcher, share.root)
        path = share.root / "growing.bin"
        with path.open("wb") as f:
            for _ in range(5):
                f.write(os.urandom(10_000))
                f.flush()
                await asyncio.sleep(0.05)
        (share.root / ".hidden").write_bytes(b"x")
        (share.root / "x.p2pshare-part").write_bytes(b"x")
        await settled(changes, 1)
        await asyncio.sleep(0.6)  # nothing more comes
        assert changes == [([], [("growing.bin", 50_000)])]
    finally:
        await watcher.stop()


async def test_a_removed_folder_takes_its_files_with_it(share: Share) -> None:
    folder = share.root / "album"
    folder.mkdir()
    (folder / "one.flac").write_bytes(b"1")
    (folder / "two.flac").write_bytes(b"2")
    share.scan()
    changes: Changes = []
    watcher = ShareWatcher(share, recorder(changes), quiet=0.05)
    watcher.start()
    try:
        await watching(watcher, share.root)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        async with asyncio.timeout(10):  # the two may come in one change or two
            while removed_names(changes) != ["album/one.flac", "album/two.flac"]:
                await asyncio.sleep(0.02)
        assert share.files() == []
    finally:
        await watcher.stop()
