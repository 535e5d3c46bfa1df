"""Piece hashing of files (peer.hashing)."""

from __future__ import annotations

import hashlib
import os

import pytest

from p2pshare.core.manifest import content_id_of
from p2pshare.errors import NotFound, P2PShareError
from p2pshare.peer.sharing import hashing
from p2pshare.peer.sharing.hashing import FileChanged, hash_fd, hash_file, iter_piece_hashes

PS = 16384


def naive_hashes(data: bytes, piece_size: int = PS) -> tuple[bytes, ...]:
    return tuple(
        hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size)
    )


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of two pieces, so that small files still spread over many threads."""
    monkeypatch.setattr(hashing, "WINDOW_BYTES", 2 * PS)


@pytest.mark.parametrize("size", [0, 1, PS - 1, PS, PS + 1, 7 * PS + 123, 16 * PS])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_piece_hashes_are_the_sha256_of_each_piece(tmp_path, small_windows, size, workers):
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    m = hash_file(path, name="f.bin", piece_size=PS, workers=workers)
    assert m.name == "f.bin"
    assert m.size == size
    assert m.piece_size == PS
    assert m.piece_hashes == naive_hashes(data)
    assert m.file_sha256 == b""
    assert m.content_id == content_id_of(size, PS, naive_hashes(data))


def test_an_empty_file_has_no_pieces(tmp_path):
    path = tmp_path / "empty"
    path.touch()
    m = hash_file(path, name="empty", piece_size=PS, whole_file_sha256=True)
    assert m.piece_hashes == ()
    assert m.file_sha256 == hashlib.sha256(b"").digest()
    assert m.content_id == content_id_of(0, PS, [])


@pytest.mark.parametrize("workers", [1, 3])
def test_whole_file_sha256_is_the_sha256sum_of_the_file(tmp_path, small_windows, workers):
    data = os.urandom(20 * PS + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    m = hash_file(path, name="f", piece_size=PS, workers=workers, whole_file_sha256=True)
    assert m.file_sha256 == hashlib.sha256(data).digest()
    assert m.piece_hashes == naive_hashes(data)


def test_workers_zero_means_one_per_cpu_and_gives_the_same_hashes(tmp_path, small_windows):
    data = os.urandom(9 * PS)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path, name="f", piece_size=PS, workers=0).piece_hashes == naive_hashes(data)


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_reports_every_byte_once_in_the_calling_thread(tmp_path, small_windows, workers):
    import threading

    data = os.urandom(11 * PS + 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    calls: list[tuple[int, threading.Thread]] = []
    hash_file(
        path,
        name="f",
        piece_size=PS,
        workers=workers,
        progress=lambda n: calls.append((n, threading.current_thread())),
    )
    assert sum(n for n, _ in calls) == len(data)
    assert {t for _, t in calls} == {threading.current_thread()}


def test_an_error_in_progress_stops_hashing_and_propagates(tmp_path, small_windows):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(10 * PS))

    def boom(n: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        hash_file(path, name="f", piece_size=PS, workers=2, progress=boom)


def test_a_missing_file_raises_not_found(tmp_path):
    with pytest.raises(NotFound):
        hash_file(tmp_path / "nope", name="nope", piece_size=PS)


def test_a_directory_is_not_hashed(tmp_path):
    with pytest.raises(P2PShareError, match="not a regular file"):
        hash_file(tmp_path, name="d", piece_size=PS)


def test_a_bad_piece_size_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(ValueError):
        hash_file(path, name="f", piece_size=1000)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_shorter_than_expected_raises_file_changed(tmp_path, small_windows, workers):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(5 * PS))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(FileChanged):
            hash_fd(fd, 6 * PS, name="f", piece_size=PS, workers=workers)
    finally:
        os.close(fd)


def test_hash_fd_leaves_the_file_offset_alone(tmp_path):
    data = os.urandom(3 * PS)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        m = hash_fd(fd, len(data), name="f", piece_size=PS, workers=2)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
    finally:
        os.close(fd)
    assert m.piece_hashes == naive_hashes(data)


def test_iter_piece_hashes_agrees_with_hash_file(tmp_path):
    data = os.urandom(4 * PS + 99)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert tuple(iter_piece_hashes(fd, len(data), PS)) == naive_hashes(data)
    finally:
        os.close(fd)
