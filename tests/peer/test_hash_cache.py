"""The hash cache (peer.hash_cache)."""

from __future__ import annotations

import os

import pytest

from p2pshare.errors import P2PShareError
from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.hashing import hash_file
from tests.sqlite_raw import raw_db

PS = 16384


@pytest.fixture
def cache(tmp_path):
    with HashCache(tmp_path / "state" / "hashes.db") as c:
        yield c


@pytest.fixture
def file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3 * PS + 1))
    return path


def test_a_put_manifest_comes_back_under_the_name_asked_for(cache, file):
    m = hash_file(file, name="old.bin", piece_size=PS, whole_file_sha256=True)
    cache.put(file, file.stat(), m)
    got = cache.get(file, file.stat(), name="renamed.bin")
    assert got is not None
    assert got.name == "renamed.bin"
    assert (got.size, got.piece_size, got.piece_hashes, got.file_sha256) == (
        m.size,
        m.piece_size,
        m.piece_hashes,
        m.file_sha256,
    )
    assert got.content_id == m.content_id


def test_an_unknown_path_is_a_miss(cache, file):
    assert cache.get(file, file.stat(), name="f") is None


def test_the_cache_survives_reopening(tmp_path, file):
    m = hash_file(file, name="f", piece_size=PS)
    with HashCache(tmp_path / "c.db") as c:
        c.put(file, file.stat(), m)
    with HashCache(tmp_path / "c.db") as c:
        assert c.get(file, file.stat(), name="f") == m


def test_the_database_is_in_wal_mode(tmp_path):
    HashCache(tmp_path / "c.db").close()
    with raw_db(tmp_path / "c.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_changed_size_is_a_miss(cache, file):
    cache.put(file, file.stat(), hash_file(file, name="f", piece_size=PS))
    with file.open("ab") as f:
        f.write(b"more")
    assert cache.get(file, file.stat(), name="f") is None


def test_a_changed_mtime_is_a_miss(cache, file):
    st = file.stat()
    cache.put(file, st, hash_file(file, name="f", piece_size=PS))
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.get(file, file.stat(), name="f") is None


def test_a_replaced_file_with_the_same_size_and_mtime_is_a_miss(cache, file, tmp_path):
    st = file.stat()
    cache.put(file, st, hash_file(file, name="f", piece_size=PS))
    other = tmp_path / "other"
    other.write_bytes(os.urandom(st.st_size))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    keep_inode_busy = file.open("rb")  # so the new file cannot reuse the inode
    try:
        other.replace(file)
        assert file.stat().st_ino != st.st_ino
        assert cache.get(file, file.stat(), name="f") is None
    finally:
        keep_inode_busy.close()


def test_a_row_keeps_the_piece_size_the_file_was_indexed_with(cache, file):
    """A file's content id does not change with the piece size a peer is configured with."""
    m = hash_file(file, name="f", piece_size=2 * PS)
    cache.put(file, file.stat(), m)
    got = cache.get(file, file.stat(), name="f")
    assert got is not None and got.piece_size == 2 * PS and got.content_id == m.content_id


def test_a_row_without_whole_file_hash_is_a_miss_when_one_is_wanted(cache, file):
    cache.put(file, file.stat(), hash_file(file, name="f", piece_size=PS))
    assert cache.get(file, file.stat(), name="f") is not None
    assert cache.get(file, file.stat(), name="f", whole_file_sha256=True) is None


def test_a_damaged_row_is_a_miss(tmp_path, file):
    db = tmp_path / "c.db"
    with HashCache(db) as c:
        c.put(file, file.stat(), hash_file(file, name="f", piece_size=PS))
    with raw_db(db) as raw:
        raw.execute("UPDATE hashes SET piece_hashes = zeroblob(length(piece_hashes))")
    with HashCache(db) as c:
        assert c.get(file, file.stat(), name="f") is None


def test_put_replaces_the_row_of_a_path(cache, file):
    cache.put(file, file.stat(), hash_file(file, name="f", piece_size=PS))
    file.write_bytes(b"new contents")
    m2 = hash_file(file, name="f", piece_size=PS)
    cache.put(file, file.stat(), m2)
    assert len(cache) == 1
    assert cache.get(file, file.stat(), name="f") == m2


def test_remove_forgets_a_path(cache, file):
    cache.put(file, file.stat(), hash_file(file, name="f", piece_size=PS))
    cache.remove(file)
    cache.remove(file)  # no error the second time
    assert cache.get(file, file.stat(), name="f") is None


def test_prune_forgets_paths_not_present(cache, tmp_path):
    paths = []
    for n in "abc":
        p = tmp_path / n
        p.write_bytes(n.encode())
        cache.put(p, p.stat(), hash_file(p, name=n, piece_size=PS))
        paths.append(p)
    assert cache.prune([paths[1]]) == 2
    assert len(cache) == 1
    assert cache.get(paths[1], paths[1].stat(), name="b") is not None


def test_prune_under_a_folder_keeps_rows_elsewhere(cache, tmp_path):
    (tmp_path / "share").mkdir()
    inside, outside = tmp_path / "share" / "a", tmp_path / "share-other"
    for p in (inside, outside):
        p.write_bytes(b"x")
        cache.put(p, p.stat(), hash_file(p, name="x", piece_size=PS))
    assert cache.prune([], under=tmp_path / "share") == 1
    assert cache.get(outside, outside.stat(), name="x") is not None


def test_paths_that_are_not_utf8_are_cached(cache, tmp_path):
    path = tmp_path / os.fsdecode(b"bad\xffname")
    path.write_bytes(b"data")
    cache.put(path, path.stat(), hash_file(path, name="n", piece_size=PS))
    assert cache.get(path, path.stat(), name="n") is not None


def test_a_file_that_is_not_a_database_raises_a_clear_error(tmp_path):
    bad = tmp_path / "c.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(P2PShareError, match="delete it"):
        HashCache(bad)
