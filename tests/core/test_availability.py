"""Who holds which piece: have-maps, pushed Haves, seeders, bans."""

from __future__ import annotations

from p2pshare.core.availability import Availability
from p2pshare.core.pieces import PieceSet


def test_holders_count_partial_providers_and_follow_their_haves() -> None:
    a: Availability[str] = Availability(4)
    assert a.add("x", PieceSet(4, [0, 1]))
    assert a.add("y", PieceSet(4, [1]))
    assert a.add("seed", None)
    assert [a.holders(i) for i in range(4)] == [1, 2, 0, 0]
    assert a.add_have("y", 3) and not a.add_have("y", 3)
    assert not a.add_have("seed", 2)  # a seeder holds everything already
    assert [a.holders(i) for i in range(4)] == [1, 2, 0, 1]
    assert a.has("seed", 2) and not a.has("x", 2) and not a.has("gone", 0)
    assert not a.only_seeders
    a.update("x", None)  # x finished
    assert a.is_seeder("x") and [a.holders(i) for i in range(4)] == [0, 1, 0, 1]
    assert a.remove("y") and not a.remove("y")
    assert a.only_seeders and [a.holders(i) for i in range(4)] == [0, 0, 0, 0]


def test_a_have_map_is_copied_and_a_banned_provider_cannot_join_again() -> None:
    a: Availability[str] = Availability(3)
    mine = PieceSet(3, [0])
    a.add("x", mine)
    mine.add(1)
    assert not a.has("x", 1)
    a.ban("x")
    assert a.is_banned("x") and "x" not in a and a.holders(0) == 0
    assert not a.add("x", None)
