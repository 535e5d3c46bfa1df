"""The piece picker: rarest first, one request per piece until the endgame, bans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.piece_picker import PiecePicker
from p2pshare.core.pieces import PieceSet


def test_a_seeder_gets_pieces_in_order_and_each_only_once() -> None:
    picker: PiecePicker[str] = PiecePicker(10)
    picker.add_provider("a")
    picker.add_provider("b")
    assert picker.pick("a", 3) == [0, 1, 2]
    assert picker.pick("b", 3) == [3, 4, 5]
    assert picker.pick("a", 10) == [6, 7, 8, 9]


def test_a_download_begins_at_its_start_and_wraps_around() -> None:
    held = PieceSet(10)
    held.add(8)
    picker: PiecePicker[str] = PiecePicker(10, held, start=7)
    picker.add_provider("seeder")
    assert picker.pick("seeder", 5) == [7, 9, 0, 1, 2]
    assert picker.pick("seeder", 10) == [3, 4, 5, 6]


def test_downloaders_that_start_apart_fetch_different_pieces_then_trade() -> None:
    """Two downloaders of one seeder: each first asks it for pieces from its own start;
    once each knows the other holds some, rarest first sends each to the other for the
    pieces only the other has, and to the seeder for those nobody else has."""
    a: PiecePicker[str] = PiecePicker(8, start=0)
    b: PiecePicker[str] = PiecePicker(8, start=4)
    for picker in (a, b):
        picker.add_provider("seeder")
    from_seeder_a, from_seeder_b = a.pick("seeder", 2), b.pick("seeder", 2)
    assert (from_seeder_a, from_seeder_b) == ([0, 1], [4, 5])
    for picker, got in ((a, from_seeder_a), (b, from_seeder_b)):
        for index in got:
            picker.received("seeder", index)
    has_a, has_b = PieceSet(8), PieceSet(8)
    for index in from_seeder_a:
        has_a.add(index)
    for index in from_seeder_b:
        has_b.add(index)
    a.add_provider("b", has_b)
    b.add_provider("a", has_a)
    assert a.pick("b", 8) == [4, 5] and b.pick("a", 8) == [0, 1]
    # the seeder is asked for what neither holds, each from its own start
    assert a.pick("seeder", 2) == [2, 3] and b.pick("seeder", 2) == [6, 7]


def test_a_start_outside_the_file_is_refused() -> None:
    with pytest.raises(ValueError):
        PiecePicker(4, start=4)


def test_held_pieces_are_never_asked_for() -> None:
    picker: PiecePicker[str] = PiecePicker(6, PieceSet(6, [0, 2, 4]))
    picker.add_provider("a")
    assert picker.pick("a", 10) == [1, 3, 5]


def test_rarest_pieces_go_first() -> None:
    picker: PiecePicker[str] = PiecePicker(4)
    picker.add_provider("a", PieceSet(4, [0, 1, 2, 3]))
    picker.add_provider("b", PieceSet(4, [0, 1, 2]))
    picker.add_provider("c", PieceSet(4, [0, 1]))
    # availability: 0→3, 1→3, 2→2, 3→1
    assert picker.pick("a", 2) == [3, 2]


def test_a_provider_is_asked_only_for_pieces_it_has() -> None:
    picker: PiecePicker[str] = PiecePicker(4)
    picker.add_provider("a", PieceSet(4, [1, 3]))
    assert picker.pick("a", 4) == [1, 3]
    assert picker.wanted_from("a")
    picker.received("a", 1)
    picker.received("a", 3)
    assert not picker.wanted_from("a")


def test_failed_requests_go_back_to_the_pool() -> None:
    picker: PiecePicker[str] = PiecePicker(3)
    picker.add_provider("a")
    picker.add_provider("b")
    assert picker.pick("a", 3) == [0, 1, 2]
    picker.failed("a", 1)
    assert picker.pick("b", 3) == [1]


def test_removed_provider_releases_its_pieces_in_flight() -> None:
    picker: PiecePicker[str] = PiecePicker(2)
    picker.add_provider("a")
    picker.add_provider("b")
    picker.pick("a", 2)
    picker.remove_provider("a")
    assert picker.pick("b", 2) == [0, 1]


def test_endgame_duplicates_pieces_in_flight_and_first_arrival_wins() -> None:
    picker: PiecePicker[str] = PiecePicker(2)
    picker.add_provider("slow")
    picker.add_provider("fast")
    assert picker.pick("slow", 2) == [0, 1]
    assert picker.pick("fast", 2) == [0, 1]  # nothing fresh left: duplicate
    assert picker.received("fast", 0) is True
    assert picker.received("slow", 0) is False  # the duplicate is not new
    assert picker.in_flight("slow") == frozenset({1})
    assert picker.received("fast", 1) is True
    assert picker.complete
    assert picker.in_flight("slow") == frozenset()


def test_a_banned_provider_is_dropped_and_cannot_come_back() -> None:
    picker: PiecePicker[str] = PiecePicker(2)
    picker.add_provider("liar")
    picker.add_provider("honest")
    picker.pick("liar", 1)
    picker.ban("liar")
    assert picker.is_banned("liar")
    assert picker.providers == ["honest"]
    assert picker.add_provider("liar") is False
    assert picker.pick("liar", 2) == []
    assert picker.pick("honest", 2) == [0, 1]


@settings(max_examples=200)
@given(
    count=st.integers(1, 40),
    providers=st.lists(st.sets(st.integers(0, 39)), min_size=1, max_size=5),
    seed=st.randoms(use_true_random=False),
)
def test_any_run_completes_when_every_piece_has_a_provider(count, providers, seed) -> None:
    haves = [PieceSet(count, [i for i in p if i < count]) for p in providers]
    haves.append(PieceSet(count, range(count)))  # one seeder ensures completion
    picker: PiecePicker[int] = PiecePicker(count)
    for n, have in enumerate(haves):
        picker.add_provider(n, have)
    asked: dict[int, set[int]] = {n: set() for n in range(len(haves))}
    for _ in range(count * len(haves) * 4):
        if picker.complete:
            break
        n = seed.randrange(len(haves))
        for index in picker.pick(n, seed.randint(1, 4)):
            assert index in haves[n]  # only pieces it has
            assert index not in picker.held  # never a held piece
            asked[n].add(index)
            if seed.random() < 0.8:
                picker.received(n, index)
            else:
                picker.failed(n, index)
    while not picker.complete:  # drain with the seeder
        for index in picker.pick(len(haves) - 1, count):
            picker.received(len(haves) - 1, index)
    assert len(picker.held) == count


def test_the_window_follows_measured_throughput() -> None:
    piece = 1 << 20
    picker: PiecePicker[str] = PiecePicker(1000, piece_size=piece)
    picker.add_provider("fast")
    picker.add_provider("slow")
    assert picker.window("fast", now=0.0) == 8  # unknown rate: the initial window
    t = 0.0
    for i in range(200):  # fast: 100 MiB/s for 2 s; slow: 1 MiB/s
        t = i * 0.01
        picker.received("fast", picker.pick("fast", 1)[0], now=t, size=piece)
    for i in range(2):
        picker.received("slow", picker.pick("slow", 1)[0], now=float(i), size=piece)
    assert picker.rate("fast", t) > 40 * picker.rate("slow", t)
    assert picker.window("fast", t) == 64  # capped
    assert picker.window("slow", t) == 2  # floor
    assert picker.ranking(t) == ["fast", "slow"]


def test_budget_is_the_window_less_what_is_in_flight() -> None:
    picker: PiecePicker[str] = PiecePicker(100, piece_size=1)
    picker.add_provider("a")
    assert picker.budget("a", now=0.0) == 8
    picker.pick("a", 5)
    assert picker.budget("a", now=0.0) == 3
    assert picker.budget("unknown", now=0.0) == 0


def test_an_idle_provider_rate_decays() -> None:
    picker: PiecePicker[str] = PiecePicker(10, piece_size=1 << 20)
    picker.add_provider("a")
    picker.received("a", picker.pick("a", 1)[0], now=0.0, size=1 << 20)
    assert picker.rate("a", 10.0) < picker.rate("a", 0.0) / 100


def simulate(
    speeds: dict[str, float], count: int, liars: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Drive a picker with providers of given speeds (pieces per tick); pieces each delivered."""
    picker: PiecePicker[str] = PiecePicker(count, piece_size=1)
    for name in speeds:
        picker.add_provider(name)
    got = dict.fromkeys(speeds, 0)
    progress = dict.fromkeys(speeds, 0.0)
    tick = 0
    while not picker.complete:
        tick += 1
        assert tick < 10_000, "the swarm got stuck"
        for name, speed in speeds.items():
            if picker.is_banned(name):
                continue
            flying = sorted(picker.in_flight(name))
            if not flying:
                picker.pick(name, picker.budget(name, float(tick)))
                continue
            progress[name] += speed
            while progress[name] >= 1 and flying:
                progress[name] -= 1
                index = flying.pop(0)
                if name in liars:
                    picker.ban(name)
                    break
                if picker.received(name, index, now=float(tick), size=1):
                    got[name] += 1
    return got


def test_simulated_fast_providers_carry_most_of_the_file() -> None:
    got = simulate({"fast": 8.0, "medium": 2.0, "slow": 0.25}, count=400)
    assert sum(got.values()) == 400
    assert got["fast"] > got["medium"] > got["slow"]


def test_simulated_liar_is_banned_and_the_rest_finish_the_file() -> None:
    got = simulate({"honest": 2.0, "liar": 4.0}, count=100, liars=frozenset({"liar"}))
    assert got == {"honest": 100, "liar": 0}


def test_the_rate_when_last_heard_ignores_the_silence_since() -> None:
    picker: PiecePicker[str] = PiecePicker(10, piece_size=100)
    picker.add_provider("a")
    for t in (0.0, 0.1, 0.2):
        picker.received("a", picker.pick("a", 1)[0], now=t, size=100)
    heard = picker.rate_when_last_heard("a")
    assert heard == pytest.approx(picker.rate("a", 0.2))
    assert picker.rate("a", 30.0) < heard / 1000


def test_a_provider_still_downloading_is_asked_only_for_what_it_has_now() -> None:
    picker: PiecePicker[str] = PiecePicker(4)
    picker.add_provider("leech", PieceSet(4, [0]))
    assert not picker.is_seeder("leech")
    assert picker.pick("leech", 4) == [0]
    picker.update_have("leech", PieceSet(4, [0, 2, 3]))
    assert picker.pick("leech", 4) == [2, 3]
    picker.update_have("leech", None)  # it completed
    assert picker.is_seeder("leech")
    assert picker.pick("leech", 4) == [1]


def test_have_updates_keep_rarity_right() -> None:
    picker: PiecePicker[str] = PiecePicker(3)
    picker.add_provider("seed")
    picker.add_provider("x", PieceSet(3, [0]))
    picker.add_provider("y", PieceSet(3))
    # 0 is held by seed and x; 1 and 2 by the seed alone
    assert picker.pick("seed", 1) == [1]
    picker.update_have("y", PieceSet(3, [2]))
    picker.failed("seed", 1)
    assert picker.pick("seed", 3) == [1, 0, 2]  # 1 is the rarest; 0 and 2 tie, index order


def test_bytes_per_provider_are_counted_and_kept_after_the_provider_goes() -> None:
    picker: PiecePicker[str] = PiecePicker(4, piece_size=100)
    picker.add_provider("a")
    picker.add_provider("b")
    assert picker.pick("a", 2) == [0, 1]
    assert picker.pick("b", 1) == [2]
    assert picker.all_in_flight() == {0, 1, 2}
    picker.received("a", 0, now=1.0, size=100)
    picker.received("b", 2, now=1.0, size=100)
    picker.received("a", 1, now=1.5, size=100)
    assert picker.all_in_flight() == set()
    picker.remove_provider("a")
    assert picker.delivered() == {"a": 200, "b": 100}


def test_a_pushed_have_adds_one_piece_to_a_provider_still_downloading() -> None:
    picker: PiecePicker[str] = PiecePicker(4, PieceSet(4), piece_size=1)
    picker.add_provider("a", PieceSet(4))
    assert picker.pick("a", 4) == []
    assert picker.add_have("a", 2) is True
    assert picker.add_have("a", 2) is False
    assert picker.pick("a", 4) == [2]


def test_no_piece_is_duplicated_while_some_missing_piece_is_asked_of_nobody() -> None:
    """A provider with nothing fresh is no endgame while others still download: a
    duplicate then was waste (the slow seeder's pieces fetched twice)."""
    picker: PiecePicker[str] = PiecePicker(3, PieceSet(3), piece_size=1)
    picker.add_provider("seed", PieceSet(3, [0]))  # a super-seeder offering piece 0
    picker.add_provider("fellow", PieceSet(3, [0]))
    assert picker.pick("seed", 4) == [0]
    assert picker.pick("fellow", 4) == []  # piece 1 and 2: nobody has them yet
    picker.add_have("seed", 1)
    picker.add_have("seed", 2)
    assert picker.pick("seed", 4) == [1, 2]
    assert picker.pick("fellow", 4) == [0]  # everything is asked for: the endgame


def test_in_the_endgame_a_piece_is_asked_of_at_most_two_providers() -> None:
    picker: PiecePicker[str] = PiecePicker(1, PieceSet(1), piece_size=1)
    for name in ("a", "b", "c"):
        picker.add_provider(name)
    assert picker.pick("a", 1) == [0]
    assert picker.pick("b", 1) == [0]  # the endgame: a second request
    assert picker.pick("c", 1) == []  # a third would only add waste
