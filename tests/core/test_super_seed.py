"""Super-seeding: the seeder offers each downloader pieces nobody has yet."""

from __future__ import annotations

import pytest

from p2pshare.core.pieces import PieceSet
from p2pshare.core.super_seed import SuperSeed


def test_each_downloader_is_offered_distinct_pieces() -> None:
    seed: SuperSeed[str] = SuperSeed(8, open_offers=2)
    a = seed.join("a", PieceSet(8))
    b = seed.join("b", PieceSet(8))
    c = seed.join("c", PieceSet(8))
    assert (a, b, c) == ([0, 1], [2, 3], [4, 5])
    assert seed.may_serve("a", 1) and not seed.may_serve("a", 2)


def test_a_held_offer_is_closed_and_the_next_made() -> None:
    seed: SuperSeed[str] = SuperSeed(8, open_offers=1)
    assert seed.join("a", PieceSet(8)) == [0]
    assert seed.join("b", PieceSet(8)) == [1]
    assert seed.has("a", 0) == [2]  # a got 0: next offer
    assert seed.has("b", 0) == []  # b got 0 from a: its offer of 1 is still open
    assert seed.has("b", 1) == [3]


def test_every_piece_is_offered_once_before_any_twice_and_the_rarest_again_first() -> None:
    seed: SuperSeed[str] = SuperSeed(3, open_offers=1)
    assert seed.join("x", PieceSet(3, [0, 1])) == [2]
    assert seed.join("y", PieceSet(3, [1])) == [0]  # 0 was never offered; 2 was
    assert seed.join("z", PieceSet(3)) == [1]  # the one piece never offered
    # every piece offered once: the one fewest downloaders hold (2: nobody yet)
    assert seed.join("w", PieceSet(3)) == [2]
    assert seed.offers(2) == 2


def test_pieces_offered_to_a_downloader_that_leaves_are_offered_again() -> None:
    seed: SuperSeed[str] = SuperSeed(3, open_offers=2)
    assert seed.join("a", PieceSet(3)) == [0, 1]
    seed.has("a", 0)  # a got 0, and was offered 2; it leaves with 1 and 2 open
    seed.leave("a")
    assert (seed.offers(0), seed.offers(1), seed.offers(2)) == (1, 0, 0)
    assert seed.join("b", PieceSet(3)) == [1, 2]


def test_a_downloader_holding_everything_is_offered_nothing() -> None:
    seed: SuperSeed[str] = SuperSeed(3)
    assert seed.join("done", PieceSet(3, range(3))) == []


def test_a_have_map_of_another_file_is_refused() -> None:
    with pytest.raises(ValueError):
        SuperSeed[str](3).join("a", PieceSet(4))
