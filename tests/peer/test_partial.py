"""Partial downloads on disk: verified pieces only, resumable, never trusted blindly."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from p2pshare.core.manifest import Manifest
from p2pshare.errors import BadPiece, DownloadFailed
from p2pshare.peer.transfer.downloads import _target_path
from p2pshare.peer.transfer.partial import PartialDownload, load_record, partial_path
from tests.hostile_names import HOSTILE

PIECE = 16 << 10


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def make(data: bytes, name: str = "f.bin") -> Manifest:
    hashes = tuple(hashlib.sha256(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE))
    return Manifest(name, len(data), PIECE, hashes)


def piece(data: bytes, i: int) -> bytes:
    return data[i * PIECE : (i + 1) * PIECE]


def test_a_bad_piece_is_refused_and_not_written(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    data = os.urandom(3 * PIECE)
    m = make(data)
    p = PartialDownload.open(m, tmp_path / "f.bin", tmp_path / "rec.json", pool=pool)
    with pytest.raises(BadPiece):
        p.write_verified(0, b"\0" * PIECE)
    with pytest.raises(BadPiece):
        p.write_verified(2, piece(data, 2)[:-1])
    p.close()
    assert partial_path(tmp_path / "f.bin").read_bytes().strip(b"\0") == b""


def test_finish_moves_the_complete_file_into_place(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    data = os.urandom(2 * PIECE + 100)
    m = make(data)
    record = tmp_path / "rec.json"
    p = PartialDownload.open(m, tmp_path / "f.bin", record, pool=pool)
    for i in (2, 0, 1):
        p.write_verified(i, piece(data, i))
        p.have.add(i)
    p.save_record()
    assert record.exists()
    assert p.finish() == tmp_path / "f.bin"
    assert (tmp_path / "f.bin").read_bytes() == data
    assert not partial_path(tmp_path / "f.bin").exists()
    assert not record.exists()


def test_finish_refuses_an_incomplete_file(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    data = os.urandom(2 * PIECE)
    p = PartialDownload.open(make(data), tmp_path / "f.bin", tmp_path / "r.json", pool=pool)
    p.write_verified(0, piece(data, 0))
    p.have.add(0)
    with pytest.raises(DownloadFailed):
        p.finish()
    p.close()
    assert not (tmp_path / "f.bin").exists()


def test_resume_keeps_verified_pieces_and_rechecks_them(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    data = os.urandom(4 * PIECE)
    m = make(data)
    target, record = tmp_path / "f.bin", tmp_path / "rec.json"
    p = PartialDownload.open(m, target, record, pool=pool)
    for i in (0, 1, 3):
        p.write_verified(i, piece(data, i))
        p.have.add(i)
    p.save_record()
    p.close()
    # scribble on piece 1 while the peer is down
    with partial_path(target).open("r+b") as f:
        f.seek(PIECE + 10)
        f.write(b"oops")

    resumed = PartialDownload.open(m, target, record, pool=pool)
    assert sorted(resumed.have) == [0, 3]
    resumed.close()
    assert load_record(record) == (m, target)


def test_a_truncated_partial_file_loses_only_the_missing_pieces(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    data = os.urandom(4 * PIECE)
    m = make(data)
    target, record = tmp_path / "f.bin", tmp_path / "rec.json"
    p = PartialDownload.open(m, target, record, pool=pool)
    for i in range(4):
        p.write_verified(i, piece(data, i))
        p.have.add(i)
    p.save_record()
    p.close()
    os.truncate(partial_path(target), 2 * PIECE + 5)
    resumed = PartialDownload.open(m, target, record, pool=pool)
    assert sorted(resumed.have) == [0, 1]
    resumed.close()


def test_a_download_started_again_elsewhere_takes_its_verified_pieces_along(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """After a disk filled up, ``get -o`` to another folder: nothing is fetched twice,
    and no partial file is left on the full disk."""
    data = os.urandom(4 * PIECE)
    m = make(data)
    record = tmp_path / "rec.json"
    first = PartialDownload.open(m, tmp_path / "a" / "f.bin", record, pool=pool)
    for i in (0, 2):
        first.write_verified(i, piece(data, i))
        first.have.add(i)
    first.save_record()
    first.close()
    moved = PartialDownload.open(m, tmp_path / "b" / "f.bin", record, pool=pool)
    assert sorted(moved.have) == [0, 2]
    assert not partial_path(tmp_path / "a" / "f.bin").exists()
    for i in (1, 3):
        moved.write_verified(i, piece(data, i))
        moved.have.add(i)
    assert moved.finish().read_bytes() == data


@pytest.mark.parametrize("record_text", ["", "{garbled", '{"content_id": 7}', "[]"])
def test_a_lost_or_garbled_record_costs_a_check_of_the_partial_file_not_a_refetch(
    tmp_path: Path, pool: ThreadPoolExecutor, record_text: str
) -> None:
    data = os.urandom(3 * PIECE + 10)
    m = make(data)
    record = tmp_path / "rec.json"
    first = PartialDownload.open(m, tmp_path / "f.bin", record, pool=pool)
    for i in (1, 3):
        first.write_verified(i, piece(data, i))
        first.have.add(i)
    first.save_record()
    first.close()
    record.write_text(record_text)
    again = PartialDownload.open(m, tmp_path / "f.bin", record, pool=pool)
    assert sorted(again.have) == [1, 3]
    again.close()


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[why for _, why in HOSTILE])
def test_hostile_names_from_a_manifest_are_refused(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(DownloadFailed, match="refusing"):
        _target_path(tmp_path / "out", name)
    assert list(tmp_path.iterdir()) == []


def test_a_name_through_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "sub")
    with pytest.raises(DownloadFailed, match="symlink"):
        _target_path(out, "sub/f.bin")
    with pytest.raises(DownloadFailed, match="symlink"):
        _target_path(out, "sub/not/yet/there.bin")
    assert _target_path(out, "fine/f.bin") == out / "fine" / "f.bin"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 1 MiB (tmpfs), mounted for the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_file_larger_than_the_free_space_fails_before_a_byte_is_written(
    small_disk: Path, pool: ThreadPoolExecutor
) -> None:
    data = os.urandom(128 * PIECE)  # 2 MiB, on a 1 MiB disk
    record = small_disk.parent / "rec.json"
    with pytest.raises(DownloadFailed, match=r"not enough free space for 'f.bin'.*get -o"):
        PartialDownload.open(make(data), small_disk / "f.bin", record, pool=pool)
    assert list(small_disk.iterdir()) == []
    fits = PartialDownload.open(make(data[: 16 * PIECE]), small_disk / "g.bin", record, pool=pool)
    fits.close()
