"""Pieces, manifests and content ids (core.manifest)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.manifest import (
    DEFAULT_PIECE_SIZE,
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    Manifest,
    check_content_id,
    check_content_id_prefix,
    check_piece_size,
    content_id_of,
    piece_count,
    piece_length,
    validate_manifest,
)
from p2pshare.errors import BadManifest, BadPiece, InvalidContentId

piece_sizes = st.sampled_from([1 << k for k in range(14, 25)])


@pytest.mark.parametrize(
    ("size", "piece_size", "count"),
    [(0, 16384, 0), (1, 16384, 1), (16384, 16384, 1), (16385, 16384, 2), (3 << 20, 1 << 20, 3)],
)
def test_piece_count_is_ceiling_of_size_over_piece_size(size, piece_size, count):
    assert piece_count(size, piece_size) == count


def test_piece_length_is_full_except_a_shorter_last_piece():
    assert [piece_length(40000, 16384, i) for i in range(3)] == [16384, 16384, 7232]


@pytest.mark.parametrize("index", [-1, 3])
def test_piece_length_refuses_an_index_out_of_range(index):
    with pytest.raises(IndexError):
        piece_length(40000, 16384, index)


def test_an_empty_file_has_no_piece_to_measure():
    with pytest.raises(IndexError):
        piece_length(0, 16384, 0)


@given(size=st.integers(0, 1 << 40), piece_size=piece_sizes)
def test_piece_lengths_add_up_to_the_size(size, piece_size):
    count = piece_count(size, piece_size)
    assert (count - 1) * piece_size < size <= count * piece_size or (size == count == 0)
    if count:
        last = piece_length(size, piece_size, count - 1)
        assert 0 < last <= piece_size
        assert (count - 1) * piece_size + last == size


@pytest.mark.parametrize("ok", [MIN_PIECE_SIZE, DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE])
def test_check_piece_size_accepts_powers_of_two_in_range(ok):
    assert check_piece_size(ok) == ok


@pytest.mark.parametrize("bad", [0, -16384, MIN_PIECE_SIZE // 2, MAX_PIECE_SIZE * 2, 3 << 14])
def test_check_piece_size_refuses_others(bad):
    with pytest.raises(ValueError):
        check_piece_size(bad)


def test_content_id_is_sha256_of_the_canonical_encoding():
    hashes = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    expected = hashlib.sha256(
        b"p2pshare/content/v1\x00" + struct.pack(">QI", 20000, 16384) + b"".join(hashes)
    ).hexdigest()
    assert content_id_of(20000, 16384, hashes) == expected
    assert content_id_of(20000, 16384, iter(hashes)) == expected


def test_content_id_of_the_empty_file_is_fixed():
    assert (
        content_id_of(0, 16384, [])
        == hashlib.sha256(b"p2pshare/content/v1\x00" + struct.pack(">QI", 0, 16384)).hexdigest()
    )


hash_lists = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=8)


@given(hashes=hash_lists, piece_size=piece_sizes, extra=st.integers(1, 1000))
def test_content_id_changes_with_every_field(hashes, piece_size, extra):
    size = (len(hashes) - 1) * piece_size + 1
    cid = content_id_of(size, piece_size, hashes)
    assert check_content_id(cid) == cid
    assert content_id_of(size + extra, piece_size, hashes) != cid
    assert content_id_of(size, piece_size * 2, hashes) != cid
    flipped = [bytes([hashes[0][0] ^ 1]) + hashes[0][1:], *hashes[1:]]
    assert content_id_of(size, piece_size, flipped) != cid


def test_the_name_is_not_part_of_the_content_id():
    a = Manifest("a.txt", 1, 16384, (hashlib.sha256(b"x").digest(),))
    b = Manifest("other/b.bin", 1, 16384, (hashlib.sha256(b"x").digest(),))
    assert a.content_id == b.content_id


@pytest.mark.parametrize("bad", ["", "ab", "A" * 64, "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63])
def test_check_content_id_refuses_anything_but_64_lowercase_hex(bad):
    with pytest.raises(InvalidContentId):
        check_content_id(bad)


def test_check_content_id_prefix_lowercases_and_strips():
    assert check_content_id_prefix("  ABcd ") == "abcd"
    for bad in ("", "xyz", "a" * 65):
        with pytest.raises(InvalidContentId):
            check_content_id_prefix(bad)


def _manifest_of(data: bytes, piece_size: int = 16384, name: str = "f") -> Manifest:
    hashes = tuple(
        hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size)
    )
    return Manifest(name, len(data), piece_size, hashes, hashlib.sha256(data).digest())


def test_manifest_geometry_and_piece_verification():
    data = bytes(range(256)) * 150  # 38400 bytes: 16384, 16384, 5632
    m = _manifest_of(data)
    assert m.piece_count == 3
    assert [m.piece_offset(i) for i in range(3)] == [0, 16384, 32768]
    assert [m.piece_length(i) for i in range(3)] == [16384, 16384, 5632]
    for i in range(3):
        m.verify_piece(i, data[m.piece_offset(i) : m.piece_offset(i) + m.piece_length(i)])
    m.verify_piece(2, memoryview(data)[32768:])


@pytest.mark.parametrize(
    ("index", "piece"),
    [(0, b"\x00" * 16384), (2, b"short"), (3, b""), (-1, b"")],
    ids=["wrong-bytes", "wrong-length", "past-the-end", "negative"],
)
def test_verify_piece_raises_bad_piece(index, piece):
    m = _manifest_of(bytes(range(256)) * 150)
    with pytest.raises(BadPiece):
        m.verify_piece(index, piece)


@given(data=st.binary(max_size=70000), name=st.text(min_size=1, max_size=20))
def test_validate_manifest_round_trips_a_manifest(data, name):
    m = _manifest_of(data, name=name)
    again = validate_manifest(
        content_id=m.content_id,
        name=name,
        size=m.size,
        piece_size=m.piece_size,
        piece_hashes=list(m.piece_hashes),
        file_sha256=m.file_sha256,
    )
    assert again == m


def _fields(**changes):
    m = _manifest_of(b"z" * 40000)
    fields = dict(
        content_id=m.content_id,
        name="f",
        size=m.size,
        piece_size=m.piece_size,
        piece_hashes=list(m.piece_hashes),
        file_sha256=m.file_sha256,
    )
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    "changes",
    [
        {"content_id": "0" * 64},
        {"size": 39999},
        {"size": -1},
        {"size": 50000},
        {"piece_size": 1000},
        {"piece_size": 32768},
        {"piece_hashes": [b"\x00" * 31] * 3},
        {"piece_hashes": []},
        {"file_sha256": b"\x00" * 5},
    ],
    ids=lambda c: next(iter(c)),
)
def test_validate_manifest_refuses_what_does_not_add_up(changes):
    with pytest.raises(BadManifest):
        validate_manifest(**_fields(**changes))
