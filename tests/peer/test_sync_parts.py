"""Folder sync's parts at one peer: the version store, seeding a new version's partial
file from local files, and names that would lead out of a folder."""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from p2pshare.core.sync import Vector
from p2pshare.peer.sharing.hashing import hash_file
from p2pshare.peer.sync.engine import FolderSync
from p2pshare.peer.sync.pieces import Source, seed_partial
from p2pshare.peer.sync.store import VersionStore, device_id, stat_key
from p2pshare.peer.transfer.partial import PartialDownload, load_record, recorded_pieces

PIECE = 16 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Any:
    made = VersionStore(tmp_path / "sync.db", device_id(tmp_path))
    yield made
    made.close()


def test_the_device_id_is_made_once(tmp_path: Path) -> None:
    first = device_id(tmp_path)
    assert len(first) == 12 and device_id(tmp_path) == first


def test_a_local_change_is_a_new_version_and_the_same_content_is_not(
    store: VersionStore, tmp_path: Path
) -> None:
    f = tmp_path / "f.txt"
    f.write_text("one")
    v1, new = store.local(f, "a" * 64, 3)
    assert new and v1.vector == Vector({store.device: 1}) and v1.origin == store.device
    assert store.local(f, "a" * 64, 3) == (v1, False)
    f.write_text("two")
    v2, new = store.local(f, "b" * 64, 3)
    assert new and v2.vector.compare(v1.vector).value == "newer"
    f.unlink()
    gone, new = store.local(f, None)
    assert new and gone.deleted and gone.content_id == ""
    assert store.local(f, None) == (gone, False)
    merged = gone.vector.merge(Vector({"other": 9}))
    assert store.adopt(f, merged) is not None
    entry = store.get(f)
    assert entry is not None and entry.version.vector == merged and entry.file is None


def test_under_lists_a_folder_and_not_its_namesakes(store: VersionStore, tmp_path: Path) -> None:
    for rel in ("a/x", "a/sub/y", "ab/z", "a.txt"):
        store.put(tmp_path / rel, store.local(tmp_path / rel, None)[0], None)
    assert [p.relative_to(tmp_path).as_posix() for p, _ in store.under(tmp_path / "a")] == [
        "a/sub/y",
        "a/x",
    ]


def write(path: Path, pieces: list[bytes]) -> Path:
    path.write_bytes(b"".join(pieces))
    return path


def source(path: Path, *, verified: bool = True) -> Source:
    m = hash_file(path, name=path.name, piece_size=PIECE)
    return Source(path, m.piece_hashes, PIECE, m.size, stat_key(path) if verified else None)


def test_seeding_copies_the_old_version_and_moved_pieces_and_claims_them(tmp_path: Path) -> None:
    blocks = [bytes([i]) * PIECE for i in range(6)]
    old = write(tmp_path / "old.bin", blocks)
    other = write(tmp_path / "other.bin", [b"z" * PIECE, blocks[5]])
    new_blocks = [blocks[0], b"N" * PIECE, blocks[2], blocks[4], blocks[5], b"tail"]
    new = write(tmp_path / "new.bin", new_blocks)
    manifest = hash_file(new, name="new.bin", piece_size=PIECE)
    target, record = tmp_path / "in" / "new.bin", tmp_path / "rec.json"
    target.parent.mkdir()
    plan, trusted = seed_partial(manifest, target, record, source(old), [source(other)])
    assert plan.same == [0, 2] and trusted == [0, 2]
    assert plan.copy == {3: (0, 4 * PIECE), 4: (0, 5 * PIECE)}  # from the old file, moved
    assert plan.fetch == [1, 5]
    loaded = load_record(record)
    assert loaded is not None and loaded[1] == target
    assert sorted(recorded_pieces(record, manifest)) == [0, 2, 3, 4]
    with ThreadPoolExecutor(2) as pool:
        partial = PartialDownload.open(manifest, target, record, pool=pool, verified=trusted)
    try:
        assert sorted(partial.have) == [0, 2, 3, 4]  # all claimed pieces check out
    finally:
        partial.close()


def test_an_old_version_changed_since_it_was_hashed_is_hashed_again(tmp_path: Path) -> None:
    blocks = [bytes([i]) * PIECE for i in range(3)]
    old = write(tmp_path / "old.bin", blocks)
    stale = source(old)
    with old.open("r+b") as f:  # changed after its hashes were taken
        f.write(b"X" * 10)
    new = write(tmp_path / "new.bin", [*blocks[:2], b"new"])
    manifest = hash_file(new, name="new.bin", piece_size=PIECE)
    target, record = tmp_path / "new-target.bin", tmp_path / "rec.json"
    plan, trusted = seed_partial(manifest, target, record, stale, [])
    assert plan.same == [0, 1] and trusted == []
    with ThreadPoolExecutor(2) as pool:
        partial = PartialDownload.open(manifest, target, record, pool=pool, verified=trusted)
    try:
        assert sorted(partial.have) == [1]  # piece 0 no longer matches: fetched
    finally:
        partial.close()


def test_nothing_local_means_no_partial_file(tmp_path: Path) -> None:
    new = write(tmp_path / "new.bin", [b"a" * PIECE])
    manifest = hash_file(new, name="new.bin", piece_size=PIECE)
    plan, trusted = seed_partial(manifest, tmp_path / "t.bin", tmp_path / "r.json", None, [])
    assert plan.fetch == [0] and trusted == [] and not (tmp_path / "r.json").exists()


def test_a_remote_name_never_leads_out_through_a_symlink(tmp_path: Path) -> None:
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "link").symlink_to(outside)
    (folder / "file-link").symlink_to(outside / "x")
    sync = FolderSync.__new__(FolderSync)
    sync.folder = folder
    assert sync._inside(folder / "a.txt")
    assert sync._inside(folder / "new" / "deep" / "a.txt")
    assert not sync._inside(folder / "link" / "a.txt")
    assert not sync._inside(folder / "link" / "new" / "a.txt")
    assert not sync._inside(folder / "file-link")
    os.rmdir(outside)


def test_versions_from_the_network_are_bounded() -> None:
    from p2pshare import errors
    from p2pshare._proto import peer_pb2 as pb
    from p2pshare.peer.sync.wire import MAX_COUNTER, version_from_pb

    def made(counters: list[pb.VersionCounter]) -> object:
        return version_from_pb(
            counters, content_id="a" * 64, size=1, mtime_ns=0, origin="x", deleted=False
        )

    ok = made([pb.VersionCounter(device="d", value=MAX_COUNTER)])
    assert ok is not None
    with pytest.raises(errors.UsageError):
        made([pb.VersionCounter(device="d", value=MAX_COUNTER + 1)])
    with pytest.raises(errors.UsageError):
        made([pb.VersionCounter(device=f"d{i}", value=1) for i in range(65)])
    with pytest.raises(errors.P2PShareError):
        version_from_pb([], content_id="nope", size=1, mtime_ns=0, origin="x", deleted=False)


def test_tombstones_expire_after_their_days_and_versions_of_files_stay(tmp_path: Path) -> None:
    day = 86400.0
    now = [1_000_000.0]
    store = VersionStore(tmp_path / "sync.db", "dev", tombstone_days=30, clock=lambda: now[0])
    gone, kept, live = tmp_path / "gone", tmp_path / "kept", tmp_path / "live"
    live.write_text("x")
    for path in (gone, kept, live):
        store.local(path, "a" * 64, 1)
    store.local(gone, None)  # removed at day 0
    now[0] += 10 * day
    store.local(kept, None)  # removed at day 10
    now[0] += 21 * day  # day 31: the first tombstone is past 30 days
    store.put(tmp_path / "other", store.local(live, "a" * 64, 1)[0], None)  # a write looks
    assert store.get(gone) is None
    kept_entry, live_entry = store.get(kept), store.get(live)
    assert kept_entry is not None and kept_entry.version.deleted
    assert live_entry is not None and not live_entry.version.deleted
    now[0] += 10 * day
    assert store.expire() == 1 and store.get(kept) is None
    assert store.get(live) is not None  # a file's version never expires
    store.close()


def test_a_sync_db_of_an_earlier_version_is_taken_and_its_tombstones_count_from_now(
    tmp_path: Path,
) -> None:
    db = sqlite3.connect(tmp_path / "sync.db")
    db.execute(
        "CREATE TABLE versions (path TEXT PRIMARY KEY, content_id TEXT NOT NULL, size INTEGER"
        " NOT NULL, vector TEXT NOT NULL, mtime_ns INTEGER NOT NULL, origin TEXT NOT NULL,"
        " deleted INTEGER NOT NULL, file_size INTEGER NOT NULL, file_mtime INTEGER NOT NULL,"
        " file_inode INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO versions VALUES ('/x/gone', '', 0, '{\"d\": 2}', 1, 'd', 1, -1, 0, 0)")
    db.commit()
    db.close()
    now = [5_000_000_000.0]
    store = VersionStore(tmp_path / "sync.db", "dev", clock=lambda: now[0])
    entry = store.get(Path("/x/gone"))
    assert entry is not None and entry.version.deleted and entry.version.vector == Vector({"d": 2})
    now[0] += 31 * 86400.0
    assert store.expire() == 1
    store.close()
