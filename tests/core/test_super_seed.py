"""Super-seeding: the seeder offers each downloader pieces nobody has yet."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.pieces import PieceSet
from p2pshare.core.super_seed import SuperSeed


def test_each_downloader_is_offered_distinct_pieces() -> None:
    seed: SuperSeed[str] = SuperSeed(8, open_offers=2)
    a = seed.join("a", PieceSet(8))
    b = seed.join("b", PieceSet(8))
    c = seed.join("c", PieceSet(8))
    assert (a, b, c) == ([0, 1], [2, 3], [4, 5])
    assert seed.may_serve("a", 1) and not seed.may_serve("a", 2)


def test_a_held_offer_is_closed_and_the_next_made_once_the_piece_has_spread() -> None:
    """BEP 16: a downloader gets its next piece from the seeder when another downloader
    holds the last one it got, so the seeder's pieces go to those who pass them on."""
    seed: SuperSeed[str] = SuperSeed(8, open_offers=1, max_unspread=1)
    assert seed.join("a", PieceSet(8)) == [0]
    assert seed.join("b", PieceSet(8)) == [1]
    assert seed.has("a", 0) == []  # a holds 0, nobody else does yet: wait
    assert seed.has("b", 0) == [("a", 2)]  # b got 0 from a: a's next offer
    assert seed.has("b", 1) == []  # b's own piece has yet to spread
    assert seed.has("a", 1) == [("b", 3)]


def test_a_lone_downloader_is_not_held_back_by_the_spread_limit() -> None:
    seed: SuperSeed[str] = SuperSeed(4, open_offers=1)
    assert seed.join("a", PieceSet(4)) == [0]
    assert seed.has("a", 0) == [("a", 1)]


def test_an_idle_seeder_offers_beyond_the_spread_limit() -> None:
    seed: SuperSeed[str] = SuperSeed(8, open_offers=1, max_unspread=1)
    seed.join("a", PieceSet(8))
    seed.join("b", PieceSet(8))
    seed.has("a", 0)
    seed.has("b", 1)  # both wait for their piece to spread; the uplink idles
    assert seed.idle() == [("a", 2), ("b", 3)]
    # everyone has an open offer: one more to each (under loss a connection carries a
    # few Mbit/s, and an uplink needs many asking at once), up to twice open_offers
    assert seed.idle() == [("a", 4), ("b", 5)]
    assert seed.idle() == []


def test_every_piece_is_offered_once_before_any_twice_and_the_rarest_again_first() -> None:
    seed: SuperSeed[str] = SuperSeed(3, open_offers=1)
    assert seed.join("x", PieceSet(3, [0, 1])) == [2]
    assert seed.join("y", PieceSet(3, [1])) == [0]  # 0 was never offered; 2 was
    assert seed.join("z", PieceSet(3)) == [1]  # the one piece never offered
    # every piece offered once: a second copy only when the uplink idles, then the
    # one fewest downloaders hold (2: nobody yet)
    assert seed.join("w", PieceSet(3)) == []
    assert seed.idle() == [("w", 2)]
    assert seed.offers(2) == 2


def test_a_held_offer_closes_without_a_new_one_once_every_piece_was_offered() -> None:
    seed: SuperSeed[str] = SuperSeed(2, open_offers=1)
    assert seed.join("a", PieceSet(2)) == [0]
    assert seed.join("b", PieceSet(2)) == [1]
    assert seed.has("a", 1) == []  # from b: b's offer spread, nothing fresh is left
    assert seed.has("a", 0) == []


def test_pieces_offered_to_a_downloader_that_leaves_are_offered_again() -> None:
    seed: SuperSeed[str] = SuperSeed(3, open_offers=2)
    assert seed.join("a", PieceSet(3)) == [0, 1]
    assert seed.has("a", 0) == [("a", 2)]  # alone: no spread limit
    seed.leave("a")  # with 1 and 2 open
    assert (seed.offers(0), seed.offers(1), seed.offers(2)) == (1, 0, 0)
    assert seed.join("b", PieceSet(3)) == [1, 2]


def test_a_downloader_holding_everything_is_offered_nothing() -> None:
    seed: SuperSeed[str] = SuperSeed(3)
    assert seed.join("done", PieceSet(3, range(3))) == []


def test_a_have_map_of_another_file_is_refused() -> None:
    with pytest.raises(ValueError):
        SuperSeed[str](3).join("a", PieceSet(4))


@settings(max_examples=150)
@given(
    count=st.integers(1, 16),
    events=st.lists(
        st.tuples(
            st.sampled_from(["join", "has", "leave", "idle"]), st.integers(0, 3), st.integers(0, 15)
        ),
        max_size=60,
    ),
)
def test_offers_are_pieces_the_downloader_lacks_and_never_sent_more_than_others(
    count, events
) -> None:
    """Whatever happens, an offer is a piece the downloader lacks and was not offered
    before, and no piece is offered while another that it lacks was offered fewer times."""
    seed: SuperSeed[int] = SuperSeed(count)
    haves: dict[int, set[int]] = {}

    def check(downloader: int, piece: int, before: list[int]) -> None:
        assert piece not in haves[downloader] and piece not in announced[downloader]
        lacking = [i for i in range(count) if i not in haves[downloader]]
        assert before[piece] == min(
            before[i] for i in lacking if i not in announced[downloader] or i == piece
        )
        announced[downloader].add(piece)

    announced: dict[int, set[int]] = {}
    for kind, downloader, piece in events:
        piece %= count
        before = [seed.offers(i) for i in range(count)]
        if kind == "join" and downloader not in haves:
            haves[downloader], announced[downloader] = set(), set()
            for offer in seed.join(downloader, PieceSet(count)):
                check(downloader, offer, before)
                before[offer] += 1
            continue
        if downloader not in haves:
            continue
        if kind == "has":
            haves[downloader].add(piece)
            offers = seed.has(downloader, piece)
        elif kind == "idle":
            offers = seed.idle()
        else:
            seed.leave(downloader)
            del haves[downloader], announced[downloader]
            continue
        for who, offer in offers:
            check(who, offer, before)
            before[offer] += 1


def test_a_lone_downloader_may_be_offered_more_pieces_at_once_until_another_joins() -> None:
    seed: SuperSeed[str] = SuperSeed(32, lone_offers=8)
    assert len(seed.join("a", PieceSet(32))) == 8
    assert len(seed.join("b", PieceSet(32))) == 2  # two downloaders: two offers each
    assert seed.has("a", next(iter(seed.announced("a")))) == []  # a still has 7 open
