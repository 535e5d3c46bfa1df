"""The share folder: scanning, the index, safe piece reading (peer.share)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from p2pshare.core.manifest import Manifest, content_id_of
from p2pshare.core.names import parse_query
from p2pshare.errors import InvalidContentId, InvalidName, NotFound, UsageError
from p2pshare.peer.sharing import share as share_module
from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.share import Share
from tests.hostile_names import HOSTILE

PS = 16384


def naive_content_id(data: bytes) -> str:
    hashes = [hashlib.sha256(data[i : i + PS]).digest() for i in range(0, len(data), PS)]
    return content_id_of(len(data), PS, hashes)


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "share"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path):
    """A secret file next to the share folder, which must never be served."""
    return Path(write(tmp_path / "secret.txt", b"SECRET" * 5000) and tmp_path / "secret.txt")


@pytest.fixture
def cache_path(tmp_path):
    return tmp_path / "data" / "hashes.db"


@pytest.fixture
def hash_calls(monkeypatch):
    """Counts the files the share hashes."""
    calls: list[str] = []
    real = share_module.hash_fd

    def counting(*args, **kwargs):
        calls.append(kwargs["name"])
        return real(*args, **kwargs)

    monkeypatch.setattr(share_module, "hash_fd", counting)
    return calls


_caches: list[HashCache] = []


@pytest.fixture(autouse=True)
def _close_caches():
    """Every hash cache a test opened is closed after it (Python 3.13 warns of an
    SQLite connection left to the collector, wherever the collection happens)."""
    yield
    while _caches:
        _caches.pop().close()


def cache_at(path: Path) -> HashCache:
    cache = HashCache(path)
    _caches.append(cache)
    return cache


def make_share(root: Path, cache_path: Path, **kw) -> Share:
    return Share(root, cache=cache_at(cache_path), piece_size=PS, **kw)


@pytest.fixture
def share(root, cache_path):
    return make_share(root, cache_path)


def names(share: Share) -> list[str]:
    return [f.name for f in share.files()]


# -- scanning -----------------------------------------------------------------


def test_scan_shares_every_regular_file_under_its_relative_name(share, root):
    a = write(root / "a.txt", os.urandom(3 * PS + 5))
    b = write(root / "music" / "band" / "song.mp3", os.urandom(PS))
    e = write(root / "empty.dat", b"")
    result = share.scan()
    assert (result.hashed, result.cached, result.removed, result.skipped) == (3, 0, 0, [])
    assert names(share) == ["a.txt", "empty.dat", "music/band/song.mp3"]
    for name, data in (("a.txt", a), ("music/band/song.mp3", b), ("empty.dat", e)):
        f = share.get(naive_content_id(data))
        assert f.name == name
        assert f.path == root / name
        assert f.size == len(data)
        assert f.content_id == f.manifest.content_id == naive_content_id(data)
        assert f.manifest.name == name


def test_a_restart_with_the_same_cache_hashes_nothing(root, cache_path, hash_calls):
    write(root / "a", os.urandom(2 * PS))
    write(root / "d" / "b", os.urandom(PS + 1))
    first = make_share(root, cache_path)
    assert first.scan().hashed == 2
    ids = {f.name: f.content_id for f in first.files()}
    assert len(hash_calls) == 2

    restarted = make_share(root, cache_path)
    result = restarted.scan()
    assert (result.hashed, result.cached) == (0, 2)
    assert len(hash_calls) == 2  # not one more
    assert {f.name: f.content_id for f in restarted.files()} == ids


def test_a_second_scan_of_an_unchanged_folder_hashes_nothing(share, root, hash_calls):
    write(root / "a", b"x" * 100)
    share.scan()
    assert share.scan().cached == 1
    assert hash_calls == ["a"]


def test_a_file_that_grew_is_hashed_again(share, root, hash_calls):
    write(root / "a", b"x" * 100)
    share.scan()
    with (root / "a").open("ab") as f:
        f.write(b"y")
    result = share.scan()
    assert (result.hashed, result.cached) == (1, 0)
    assert share.files()[0].content_id == naive_content_id(b"x" * 100 + b"y")


def test_a_file_with_a_new_mtime_is_hashed_again(share, root, hash_calls):
    path = root / "a"
    write(path, b"x" * 100)
    share.scan()
    st = path.stat()
    path.write_bytes(b"z" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert share.scan().hashed == 1
    assert hash_calls == ["a", "a"]
    assert share.files()[0].content_id == naive_content_id(b"z" * 100)


def test_a_renamed_file_keeps_its_content_id_under_its_new_name(share, root):
    data = write(root / "old.txt", os.urandom(PS))
    share.scan()
    (root / "old.txt").rename(root / "new.txt")
    result = share.scan()
    assert result.removed == 1
    assert share.get(naive_content_id(data)).name == "new.txt"
    assert share.get(naive_content_id(data)).manifest.name == "new.txt"


def test_a_deleted_file_is_removed_from_the_index_and_the_cache(share, root, cache_path):
    data = write(root / "a", b"gone soon")
    write(root / "b", b"stays")
    share.scan()
    (root / "a").unlink()
    result = share.scan()
    assert result.removed == 1
    assert names(share) == ["b"]
    with pytest.raises(NotFound):
        share.get(naive_content_id(data))
    assert len(cache_at(cache_path)) == 1


def test_hidden_files_partials_and_the_state_folder_are_skipped_silently(share, root):
    write(root / "visible.txt", b"v")
    write(root / ".hidden", b"h")
    write(root / ".git" / "config", b"g")
    write(root / ".p2pshare" / "state.json", b"s")
    write(root / ".movie.mkv.p2pshare-part", b"partial")
    write(root / "movie.mkv.p2pshare-part", b"partial")
    write(root / "d" / ".x" / "deep.txt", b"d")
    result = share.scan()
    assert names(share) == ["visible.txt"]
    assert result.skipped == []


@pytest.mark.parametrize("bad", ["con.txt", "a\\b", "trailing ", "x:y", "nul"])
def test_names_refused_by_check_share_name_are_skipped_and_reported(share, root, bad):
    write(root / bad, b"data")
    write(root / "ok", b"ok")
    result = share.scan()
    assert names(share) == ["ok"]
    assert [s for s, _ in result.skipped] == [bad]


def test_a_folder_with_a_refused_name_is_reported_once_and_not_entered(share, root):
    write(root / "aux" / "a", b"1")
    write(root / "aux" / "b", b"2")
    result = share.scan()
    assert names(share) == []
    assert [s for s, _ in result.skipped] == ["aux"]


def test_a_file_name_that_is_not_utf8_is_skipped(share, root):
    raw = os.path.join(os.fsencode(root), b"bad\xff.txt")
    with open(raw, "wb") as f:
        f.write(b"x")
    result = share.scan()
    assert names(share) == []
    assert len(result.skipped) == 1


def test_a_symlink_to_a_file_outside_is_skipped_and_never_readable(share, root, outside):
    (root / "innocent.txt").symlink_to(outside)
    result = share.scan()
    assert names(share) == []
    assert result.skipped[0][0] == "innocent.txt"
    assert "outside" in result.skipped[0][1]
    with pytest.raises(NotFound):
        share.get(naive_content_id(outside.read_bytes()))
    assert share.index_file(root / "innocent.txt") is None
    with pytest.raises(InvalidName):
        share.target_path("innocent.txt")


def test_a_relative_symlink_climbing_out_is_skipped(share, root, outside):
    (root / "d").mkdir()
    (root / "d" / "up").symlink_to(Path("..") / ".." / outside.name)
    result = share.scan()
    assert names(share) == []
    assert [s for s, _ in result.skipped] == ["d/up"]


def test_a_symlink_to_a_file_inside_is_shared_under_the_link_name(share, root):
    data = write(root / "real.bin", os.urandom(PS + 3))
    (root / "link.bin").symlink_to("real.bin")
    result = share.scan()
    assert result.skipped == []
    assert names(share) == ["link.bin", "real.bin"]
    with share.reader(naive_content_id(data)) as r:
        assert r.read(0) + r.read(1) == data


def test_a_symlink_to_a_hidden_partial_download_is_skipped(share, root):
    write(root / ".movie.mkv.p2pshare-part", b"half a movie")
    (root / "movie.mkv").symlink_to(".movie.mkv.p2pshare-part")
    result = share.scan()
    assert names(share) == []
    assert [s for s, _ in result.skipped] == ["movie.mkv"]


def test_a_directory_symlink_out_of_the_root_is_not_followed(share, root, tmp_path):
    write(tmp_path / "elsewhere" / "private.txt", b"private")
    (root / "docs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result = share.scan()
    assert names(share) == []
    assert [s for s, _ in result.skipped] == ["docs"]
    assert share.index_file(root / "docs" / "private.txt") is None


def test_a_directory_symlink_loop_ends_the_scan(share, root):
    write(root / "d" / "f", b"f")
    (root / "d" / "loop").symlink_to("..", target_is_directory=True)
    result = share.scan()
    assert names(share) == ["d/f"]
    assert [s for s, _ in result.skipped] == ["d/loop"]


def test_a_dangling_symlink_is_skipped(share, root):
    (root / "dangling").symlink_to("nowhere")
    result = share.scan()
    assert names(share) == []
    assert [s for s, _ in result.skipped] == ["dangling"]


def test_a_fifo_is_skipped_without_blocking(share, root):
    os.mkfifo(root / "pipe")
    result = share.scan()
    assert names(share) == []
    assert result.skipped == [("pipe", "not a regular file")]


def test_a_missing_share_folder_raises_not_found(tmp_path, cache_path):
    with pytest.raises(NotFound):
        make_share(tmp_path / "absent", cache_path)


def test_progress_gets_the_bytes_hashed(share, root):
    write(root / "a", os.urandom(3 * PS))
    write(root / "b", os.urandom(5))
    seen: list[int] = []
    share.scan(seen.append)
    assert sum(seen) == 3 * PS + 5
    seen.clear()
    share.scan(seen.append)
    assert seen == []  # all from the cache


def test_whole_file_sha256_is_computed_when_asked(root, cache_path):
    data = write(root / "a", os.urandom(2 * PS + 1))
    s = make_share(root, cache_path, whole_file_sha256=True, workers=2)
    s.scan()
    assert s.files()[0].manifest.file_sha256 == hashlib.sha256(data).digest()


def test_files_indexed_early_in_a_scan_are_searchable_before_it_ends(share, root):
    write(root / "a", b"a" * 10)
    write(root / "b", b"b" * 10)
    during: list[list[str]] = []
    share.scan(lambda n: during.append(names(share)))
    assert during == [[], ["a"]]


def test_a_file_removed_during_a_scan_stays_removed(share, root):
    write(root / "a", b"a")
    write(root / "b", b"b")

    def remove_a_while_scanning(n: int) -> None:
        if (root / "a").exists():  # "a" has been hashed, not yet indexed
            assert names(share) == []
            (root / "a").unlink()
            share.remove("a")

    result = share.scan(remove_a_while_scanning)
    assert names(share) == ["b"]
    assert result.removed == 0


def test_a_file_indexed_during_a_scan_is_kept(share, root):
    write(root / "a", b"a")

    def add_late_file(n: int) -> None:
        write(root / "z", b"z")
        share.index_file(root / "z")

    share.scan(add_late_file)
    assert names(share) == ["a", "z"]


# -- index_file, remove, get, search -------------------------------------------


def test_index_file_shares_a_new_file(share, root):
    share.scan()
    data = write(root / "dl" / "new.iso", os.urandom(PS * 2))
    f = share.index_file(root / "dl" / "new.iso")
    assert f is not None and f.name == "dl/new.iso"
    assert share.get(naive_content_id(data)) == f


def test_index_file_accepts_a_path_relative_to_the_root(share, root):
    write(root / "a" / "b.txt", b"b")
    f = share.index_file(Path("a/b.txt"))
    assert f is not None and f.name == "a/b.txt"


def test_index_file_drops_a_deleted_file(share, root):
    write(root / "a", b"a")
    share.scan()
    (root / "a").unlink()
    assert share.index_file(root / "a") is None
    assert names(share) == []


@pytest.mark.parametrize("name", [".hidden", "x.p2pshare-part", ".p2pshare/state", "con"])
def test_index_file_refuses_unshareable_names(share, root, name):
    write(root / name, b"x")
    assert share.index_file(root / name) is None
    assert names(share) == []


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.txt", "a/../../secret.txt"])
def test_index_file_refuses_a_path_outside_the_root(share, root, outside, path):
    with pytest.raises(InvalidName):
        share.index_file(Path(path))
    assert names(share) == []


def test_index_file_refuses_the_root_itself(share, root):
    with pytest.raises(InvalidName):
        share.index_file(root)


def test_remove_stops_sharing_a_name(share, root):
    data = write(root / "a", b"a")
    share.scan()
    share.remove("a")
    share.remove("a")  # no error the second time
    with pytest.raises(NotFound):
        share.get(naive_content_id(data))


def test_identical_files_share_one_content_id(share, root):
    data = write(root / "one", b"same bytes")
    write(root / "two", b"same bytes")
    share.scan()
    cid = naive_content_id(data)
    assert share.get(cid).name == "one"
    share.remove("one")
    assert share.get(cid).name == "two"


def test_get_refuses_a_malformed_content_id(share):
    with pytest.raises(InvalidContentId):
        share.get("not-an-id")


def test_search_matches_names_in_order_up_to_the_limit(share, root):
    for n in ("linux/debian-12.iso", "linux/ubuntu-24.iso", "notes.txt", "b-linux.iso"):
        write(root / n, n.encode())
    share.scan()
    found = share.files_matching(parse_query("linux iso"), 10)
    assert [f.name for f in found] == ["b-linux.iso", "linux/debian-12.iso", "linux/ubuntu-24.iso"]
    assert [f.name for f in share.files_matching(parse_query("*.iso"), 2)] == [
        "b-linux.iso",
        "linux/debian-12.iso",
    ]
    assert share.files_matching(parse_query("iso"), 0) == []
    assert share.files_matching(parse_query("windows"), 10) == []


# -- reading pieces -------------------------------------------------------------


def test_read_returns_exactly_each_piece(share, root):
    data = write(root / "f", os.urandom(4 * PS + 1234))
    share.scan()
    f = share.get(naive_content_id(data))
    with share.reader(f.content_id) as r:
        pieces = [r.read(i) for i in range(f.manifest.piece_count)]
        assert [len(p) for p in pieces] == [PS, PS, PS, PS, 1234]
        assert b"".join(pieces) == data
        for i, p in enumerate(pieces):
            f.manifest.verify_piece(i, p)
        assert r.read(2) == data[2 * PS : 3 * PS]


@pytest.mark.parametrize("index", [-1, 5, 10**9])
def test_read_refuses_a_piece_the_file_does_not_have(share, root, index):
    data = write(root / "f", os.urandom(4 * PS + 1))
    share.scan()
    with share.reader(naive_content_id(data)) as r, pytest.raises(UsageError):
        r.read(index)


def test_reader_of_an_unknown_content_id_raises_not_found(share):
    with pytest.raises(NotFound):
        share.reader("0" * 64)


def test_a_file_changed_after_indexing_is_not_served_and_is_dropped(share, root):
    path = root / "f"
    data = write(path, os.urandom(2 * PS))
    share.scan()
    cid = naive_content_id(data)
    st = path.stat()
    path.write_bytes(os.urandom(2 * PS))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(NotFound):
        share.reader(cid)
    assert names(share) == []
    again = share.index_file(path)
    assert again is not None and again.content_id == naive_content_id(path.read_bytes())


def test_a_file_truncated_while_open_is_not_served(share, root):
    path = root / "f"
    data = write(path, os.urandom(3 * PS))
    share.scan()
    with share.reader(naive_content_id(data)) as r:
        assert r.read(0) == data[:PS]
        os.truncate(path, PS + 10)
        with pytest.raises(NotFound):
            r.read(2)
    assert names(share) == []


def test_a_file_rewritten_in_place_while_open_is_not_served(share, root):
    path = root / "f"
    data = write(path, os.urandom(3 * PS))
    share.scan()
    with share.reader(naive_content_id(data)) as r:
        st = path.stat()
        with path.open("r+b") as f:
            f.write(b"\x00" * 10)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        with pytest.raises(NotFound):
            r.read(0)


def test_a_file_swapped_for_a_symlink_out_is_never_served(share, root, outside):
    path = root / "f"
    data = write(path, outside.read_bytes())  # same size and bytes as the secret
    st = path.stat()
    share.scan()
    path.unlink()
    path.symlink_to(outside)
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(NotFound):
        share.reader(naive_content_id(data))
    assert names(share) == []


def test_without_proc_fd_a_file_swapped_for_a_symlink_out_is_still_refused(
    share, root, outside, monkeypatch
):
    monkeypatch.setattr(Share, "_fd_path", staticmethod(lambda fd: None))
    path = root / "f"
    data = write(path, outside.read_bytes())
    share.scan()
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(NotFound):
        share.reader(naive_content_id(data))
    (root / "g").symlink_to(outside)
    assert share.index_file(root / "g") is None


def test_a_file_reached_through_a_folder_symlink_inside_is_not_indexed_twice(share, root):
    write(root / "real" / "f", b"f")
    (root / "alias").symlink_to("real", target_is_directory=True)
    share.scan()
    assert names(share) == ["real/f"]
    assert share.index_file(root / "alias" / "f") is None
    assert names(share) == ["real/f"]


def test_a_file_swapped_for_a_hard_copy_with_the_same_stat_is_not_served(share, root, tmp_path):
    path = root / "f"
    data = write(path, os.urandom(PS))
    st = path.stat()
    share.scan()
    other = write(tmp_path / "other", os.urandom(PS)) and tmp_path / "other"
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    keep_inode_busy = path.open("rb")
    try:
        other.replace(path)
        with pytest.raises(NotFound):
            share.reader(naive_content_id(data))
    finally:
        keep_inode_busy.close()


def test_a_folder_swapped_for_a_symlink_out_is_never_served(share, root, tmp_path):
    data = write(root / "d" / "f", os.urandom(PS))
    share.scan()
    write(tmp_path / "evil" / "f", data)
    (root / "d" / "f").unlink()
    (root / "d").rmdir()
    (root / "d").symlink_to(tmp_path / "evil", target_is_directory=True)
    with pytest.raises(NotFound):
        share.reader(naive_content_id(data))


def test_an_empty_file_has_a_reader_with_no_pieces(share, root):
    write(root / "empty", b"")
    share.scan()
    with share.reader(naive_content_id(b"")) as r:
        assert r.manifest.piece_count == 0
        with pytest.raises(UsageError):
            r.read(0)


def test_read_after_close_is_refused(share, root):
    data = write(root / "f", b"data")
    share.scan()
    r = share.reader(naive_content_id(data))
    r.close()
    with pytest.raises(ValueError):
        r.read(0)


# -- target_path ------------------------------------------------------------------


def test_target_path_is_inside_the_root(share, root):
    assert share.target_path("a/b.iso") == root / "a" / "b.iso"


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[why for _, why in HOSTILE])
def test_target_path_refuses_hostile_names(share, name, why):
    with pytest.raises(InvalidName):
        share.target_path(name)


def test_target_path_refuses_a_folder_symlinked_out(share, root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (root / "d").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InvalidName):
        share.target_path("d/new.iso")


def test_the_root_may_be_given_through_a_symlink(tmp_path, cache_path):
    real = tmp_path / "real"
    data = write(real / "f", b"x" * 10)
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    s = make_share(tmp_path / "alias", cache_path)
    s.scan()
    assert s.root == real
    with s.reader(naive_content_id(data)) as r:
        assert r.read(0) == data


def test_a_file_indexed_with_its_known_manifest_is_not_hashed_again(tmp_path, monkeypatch):
    """A completed download is shared under the manifest it was verified against."""
    root = tmp_path / "share"
    root.mkdir()
    data = os.urandom(40_000)
    (root / "got.bin").write_bytes(data)
    hashes = tuple(hashlib.sha256(data[i : i + 16384]).digest() for i in range(0, len(data), 16384))
    known = Manifest("elsewhere.bin", len(data), 16384, hashes)
    share = Share(root, cache=cache_at(tmp_path / "c.db"), piece_size=1 << 20)

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(share_module, "hash_fd", no_hashing)
    shared = share.index_file(root / "got.bin", known)
    assert shared is not None
    assert shared.content_id == known.content_id and shared.name == "got.bin"
    assert share.get(known.content_id).manifest.piece_size == 16384

    # a restart (a new Share on the same cache) keeps the download's content id
    restarted = Share(root, cache=cache_at(tmp_path / "c.db"), piece_size=1 << 20)
    restarted.scan()
    assert [f.content_id for f in restarted.files()] == [known.content_id]
