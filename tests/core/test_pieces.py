"""PieceSet: the bitfield of held pieces (core.pieces)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.pieces import PieceSet


@st.composite
def piece_sets(draw):
    count = draw(st.integers(0, 200))
    held = draw(st.sets(st.integers(0, count - 1))) if count else set()
    return count, held


def test_a_new_set_holds_nothing():
    ps = PieceSet(10)
    assert len(ps) == 0 and list(ps) == [] and list(ps.missing()) == list(range(10))
    assert not ps.complete


def test_add_reports_whether_the_piece_was_new():
    ps = PieceSet(10)
    assert ps.add(3) is True
    assert ps.add(3) is False
    assert len(ps) == 1 and 3 in ps and 4 not in ps


@pytest.mark.parametrize("bad", [-1, 10])
def test_add_refuses_an_index_out_of_range(bad):
    with pytest.raises(IndexError):
        PieceSet(10).add(bad)


def test_contains_is_false_for_out_of_range_and_non_ints():
    ps = PieceSet(3, [0, 1, 2])
    assert -1 not in ps and 3 not in ps and "1" not in ps


def test_an_empty_file_is_complete_with_no_pieces():
    ps = PieceSet(0)
    assert ps.complete and ps.to_bytes() == b""
    assert PieceSet.from_bytes(0, b"").complete


def test_negative_count_is_refused():
    with pytest.raises(ValueError):
        PieceSet(-1)


def test_bit_order_is_most_significant_bit_first():
    assert PieceSet(10, [0, 9]).to_bytes() == b"\x80\x40"


@given(piece_sets())
def test_to_bytes_from_bytes_round_trips(case):
    count, held = case
    ps = PieceSet(count, held)
    again = PieceSet.from_bytes(count, ps.to_bytes())
    assert set(again) == held == set(ps)
    assert len(again) == len(held)
    assert set(again.missing()) == set(range(count)) - held
    assert again.complete == (len(held) == count)


@pytest.mark.parametrize(("count", "data"), [(10, b"\x00"), (10, b"\x00\x00\x00"), (0, b"\x00")])
def test_from_bytes_refuses_a_wrong_length(count, data):
    with pytest.raises(ValueError):
        PieceSet.from_bytes(count, data)


def test_from_bytes_refuses_bits_past_the_last_piece():
    with pytest.raises(ValueError):
        PieceSet.from_bytes(10, b"\xff\xff")
    assert len(PieceSet.from_bytes(10, b"\xff\xc0")) == 10


def test_missing_pieces_come_from_a_start_wrapping_around() -> None:
    ps = PieceSet(6)
    ps.add(1)
    ps.add(4)
    assert list(ps.missing(3)) == [3, 5, 0, 2]
    assert list(ps.missing()) == [0, 2, 3, 5]
