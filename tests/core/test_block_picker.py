"""The block picker: blocks of pieces, started pieces first, rarest first, endgame by
block with cancels, windows from the bandwidth-delay product, choking, bad pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.block_picker import INITIAL_BLOCKS, MIN_BLOCKS, BlockPicker
from p2pshare.core.pieces import PieceSet

KIB = 1024


def picker(pieces: int = 4, blocks: int = 4, start: int = 0) -> BlockPicker[str]:
    """``pieces`` pieces of ``blocks`` blocks of 1 KiB each."""
    return BlockPicker(
        file_size=pieces * blocks * KIB, piece_size=blocks * KIB, block_size=KIB, start=start
    )


def test_a_piece_is_asked_for_block_by_block_in_order() -> None:
    p = picker()
    p.add_provider("seed")
    assert p.pick("seed", 6, now=0.0) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]


def test_the_last_piece_and_block_may_be_short() -> None:
    p: BlockPicker[str] = BlockPicker(file_size=5 * KIB + 100, piece_size=4 * KIB, block_size=KIB)
    assert (p.blocks_in(0), p.blocks_in(1)) == (4, 2)
    assert p.block_length((1, 1)) == 100
    p.add_provider("seed")
    assert p.pick("seed", 10, now=0.0)[-2:] == [(1, 0), (1, 1)]


def test_started_pieces_are_finished_before_new_ones_begin() -> None:
    p = picker()
    p.add_provider("a", PieceSet(4, [0, 1]))
    p.add_provider("b", PieceSet(4, [0, 1]))
    assert p.pick("a", 2, now=0.0) == [(0, 0), (0, 1)]
    # b could start piece 1; it helps finish piece 0 first
    assert p.pick("b", 3, now=0.0) == [(0, 2), (0, 3), (1, 0)]


def test_rarest_pieces_go_first_ties_from_the_start() -> None:
    p = picker(pieces=4, blocks=1, start=2)
    p.add_provider("a", PieceSet(4, [0, 1, 2, 3]))
    p.add_provider("b", PieceSet(4, [0, 3]))
    # availability 0:2 1:1 2:1 3:2; ties in order from piece 2
    assert p.pick("a", 4, now=0.0) == [(2, 0), (1, 0), (3, 0), (0, 0)]


def test_a_have_makes_a_piece_available_at_once() -> None:
    p = picker()
    p.add_provider("leech", PieceSet(4))
    assert p.pick("leech", 4, now=0.0) == []
    p.add_have("leech", 2)
    assert p.pick("leech", 8, now=0.0) == [(2, 0), (2, 1), (2, 2), (2, 3)]


def test_no_endgame_while_any_block_is_unrequested() -> None:
    """A provider with nothing fresh to give is not made to duplicate blocks in flight
    elsewhere while other blocks of the file are still unrequested (the old picker did)."""
    p = picker(pieces=2)
    p.add_provider("a", PieceSet(2, [0]))
    p.add_provider("b", PieceSet(2, [0]))
    assert len(p.pick("a", 4, now=0.0)) == 4  # all of piece 0
    assert not p.endgame
    assert p.pick("b", 4, now=0.0) == []  # piece 1 is nowhere yet: wait, don't duplicate


def test_endgame_duplicates_a_block_once_and_the_first_arrival_cancels_the_other() -> None:
    p = picker(pieces=1, blocks=2)
    p.add_provider("slow")
    p.add_provider("fast")
    assert p.pick("slow", 2, now=0.0) == [(0, 0), (0, 1)]
    assert p.endgame
    assert p.pick("fast", 4, now=1.0) == [(0, 0), (0, 1)]
    p.add_provider("third")
    assert p.pick("third", 4, now=1.0) == []  # two requests per block at most
    first = p.received("fast", (0, 0), now=1.1)
    assert first.new and first.cancels == (("slow", (0, 0)),)
    assert p.in_flight("slow") == frozenset({(0, 1)})
    late = p.received("slow", (0, 0), now=1.2)  # the cancel came too late
    assert not late.new
    done = p.received("slow", (0, 1), now=1.3)
    assert done.piece_done == 0 and done.cancels == (("fast", (0, 1)),)
    assert p.piece_verified(0) and p.complete


def test_failed_blocks_go_back_to_the_pool() -> None:
    p = picker(pieces=1)
    p.add_provider("a")
    p.add_provider("b")
    p.pick("a", 4, now=0.0)
    p.failed("a", (0, 2))
    assert not p.endgame
    assert p.pick("b", 4, now=0.0) == [(0, 2)]


def test_a_removed_provider_releases_its_blocks() -> None:
    p = picker(pieces=1)
    p.add_provider("a")
    p.add_provider("b")
    p.pick("a", 4, now=0.0)
    p.remove_provider("a")
    assert p.pick("b", 4, now=0.0) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_a_choking_provider_is_asked_nothing_until_it_sends_or_unchokes() -> None:
    p = picker()
    p.add_provider("a")
    p.pick("a", 2, now=0.0)
    p.choke("a")
    assert p.budget("a", now=0.0) == 0 and p.pick("a", 4, now=0.0) == []
    p.received("a", (0, 0), now=0.1)
    assert not p.is_choked("a") and p.budget("a", now=0.1) > 0
    p.choke("a")
    p.unchoke("a")
    assert p.pick("a", 1, now=0.2) == [(0, 2)]


def test_the_window_is_the_bandwidth_delay_product() -> None:
    block = 128 * KIB
    p: BlockPicker[str] = BlockPicker(file_size=1 << 30, piece_size=1 << 20, block_size=block)
    p.add_provider("a")
    assert p.window("a", now=0.0) == INITIAL_BLOCKS
    # 5 MB/s with a 50 ms request-to-block time: (0.05 + 0.1) s x 5 MB/s = 5.7 blocks, + 1
    t = 0.0
    asked = {}
    for _ in range(200):
        for b in p.pick("a", p.budget("a", t), t):
            asked[b] = t
        b = min(asked, key=lambda x: asked[x])
        t = max(t + block / 5e6, asked.pop(b) + 0.05)
        p.received("a", b, now=t)
    assert p.rate("a", t) == pytest.approx(5e6, rel=0.1)
    assert p.window("a", t) == 7


def test_a_slow_provider_keeps_the_minimum_window() -> None:
    p = picker(pieces=64)
    p.add_provider("a")
    p.received("a", p.pick("a", 1, now=0.0)[0], now=10.0)
    assert p.window("a", now=100.0) == MIN_BLOCKS


def test_a_bad_piece_from_one_provider_bans_it() -> None:
    p = picker(pieces=1, blocks=2)
    p.add_provider("liar")
    p.add_provider("honest")
    for b in p.pick("liar", 2, now=0.0):
        p.received("liar", b, now=0.1)
    assert p.piece_failed(0) == ["liar"]
    assert p.is_banned("liar") and p.add_provider("liar") is False
    assert p.pick("honest", 4, now=0.2) == [(0, 0), (0, 1)]


def test_a_bad_piece_from_several_providers_is_fetched_again_from_one() -> None:
    p = picker(pieces=1, blocks=2)
    p.add_provider("a")
    p.add_provider("b")
    p.received("a", p.pick("a", 1, now=0.0)[0], now=0.1)
    p.received("b", p.pick("b", 1, now=0.0)[0], now=0.1)
    assert p.piece_failed(0) == []  # nobody to blame yet
    assert p.pick("a", 1, now=0.2) == [(0, 0)]
    assert p.pick("b", 4, now=0.2) == []  # pinned to a
    assert p.pick("a", 4, now=0.2) == [(0, 1)]


def test_a_late_block_that_was_given_up_on_still_counts() -> None:
    p = picker(pieces=1, blocks=1)
    p.add_provider("a")
    p.pick("a", 1, now=0.0)
    p.failed("a", (0, 0))
    arrival = p.received("a", (0, 0), now=1.0)
    assert arrival.new and arrival.piece_done == 0
    assert p.piece_verified(0) and p.complete


@settings(max_examples=150)
@given(
    pieces=st.integers(1, 12),
    blocks=st.integers(1, 4),
    haves=st.lists(st.sets(st.integers(0, 11)), min_size=1, max_size=4),
    seed=st.randoms(use_true_random=False),
)
def test_random_runs_keep_the_invariants(pieces, blocks, haves, seed) -> None:
    """Whatever happens: a provider is asked only for pieces it has; outside the
    endgame no block in flight elsewhere is asked for; nor one in flight at the same provider;
    held pieces are never asked for; and the file completes."""
    p = picker(pieces=pieces, blocks=blocks)
    maps = [PieceSet(pieces, [i for i in h if i < pieces]) for h in haves]
    for n, have in enumerate(maps):
        p.add_provider(str(n), have)
    p.add_provider("seed")
    names = [str(n) for n in range(len(maps))] + ["seed"]
    t = 0.0
    for _ in range(pieces * blocks * 12):
        if p.complete:
            break
        t += 0.01
        name = seed.choice(names)
        endgame = p.endgame
        flying = {b for n in names for b in p.in_flight(n)}
        mine_before = p.in_flight(name)
        got = p.pick(name, seed.randint(0, 5), now=t)
        for block in got:
            assert name == "seed" or block[0] in maps[int(name)]
            assert block[0] not in p.held
            assert block not in mine_before
            if not endgame:
                assert block not in flying
        assert len(set(got)) == len(got)
        mine = sorted(p.in_flight(name))
        if mine and seed.random() < 0.7:
            block = seed.choice(mine)
            arrival = p.received(name, block, now=t)
            if arrival.piece_done is not None:
                p.piece_verified(arrival.piece_done)
        elif mine:
            p.failed(name, seed.choice(mine))
        if seed.random() < 0.1:
            n, piece = seed.randrange(len(maps)), seed.randrange(pieces)
            maps[n].add(piece)
            p.add_have(str(n), piece)
    while not p.complete:  # the seeder finishes it
        t += 0.01
        blocks_now = p.pick("seed", 1000, now=t) or sorted(p.in_flight("seed"))
        for other in names:
            if other != "seed":
                for block in sorted(p.in_flight(other)):
                    p.failed(other, block)
        for block in blocks_now or sorted(p.in_flight("seed")):
            arrival = p.received("seed", block, now=t)
            if arrival.piece_done is not None:
                p.piece_verified(arrival.piece_done)
    assert len(p.held) == pieces
