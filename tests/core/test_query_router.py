"""The query router: duplicate ids, TTL, flooding targets, random walk choices."""

from __future__ import annotations

import random

import pytest

from p2pshare import errors
from p2pshare.core.query_router import MAX_TTL, Mode, Query, QueryRouter, Route, check_query

NEIGHBOURS = ["a:1", "b:1", "c:1", "d:1"]


def flood(ttl: int, query_id: str = "q1", origin: str = "o:1") -> Query:
    return Query(query_id, ttl, Mode.FLOOD, origin=origin)


def targets(route: Route) -> list[str]:
    return [address for address, _ in route.forward]


def test_a_flood_query_is_answered_and_sent_to_every_other_neighbour_with_ttl_minus_one() -> None:
    router = QueryRouter()
    route = router.receive(
        flood(3), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=random.Random(0)
    )
    assert route.answer
    assert targets(route) == ["b:1", "c:1", "d:1"]
    assert {q.ttl for _, q in route.forward} == {2}
    assert {q.query_id for _, q in route.forward} == {"q1"}


def test_a_flood_query_never_goes_back_to_its_origin() -> None:
    router = QueryRouter()
    route = router.receive(
        flood(3, origin="c:1"), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=random.Random(0)
    )
    assert targets(route) == ["b:1", "d:1"]


def test_ttl_one_is_answered_but_goes_no_further() -> None:
    router = QueryRouter()
    route = router.receive(
        flood(1), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=random.Random(0)
    )
    assert route == Route(answer=True)


def test_a_query_id_already_seen_gets_nothing() -> None:
    router = QueryRouter()
    rng = random.Random(0)
    router.receive(flood(3), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    again = router.receive(flood(3), sender="x:1", neighbours=NEIGHBOURS, now=1.0, rng=rng)
    assert again == Route(answer=False)  # x is no neighbour: we sent it nothing, it gets done
    lower = router.receive(flood(2), sender="x:1", neighbours=NEIGHBOURS, now=1.0, rng=rng)
    assert lower == Route(answer=False)


def test_a_seen_query_arriving_with_more_ttl_is_only_sent_on() -> None:
    router = QueryRouter()
    rng = random.Random(0)
    router.receive(flood(1), sender="x:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    route = router.receive(flood(3), sender="b:1", neighbours=NEIGHBOURS, now=0.1, rng=rng)
    assert not route.answer
    assert targets(route) == ["a:1", "c:1", "d:1"]


def test_seen_ids_expire_after_remember_for() -> None:
    router = QueryRouter(remember_for=10.0)
    rng = random.Random(0)
    router.receive(flood(2), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    assert router.seen("q1", 9.9)
    assert not router.seen("q1", 10.0)
    assert router.receive(flood(2), sender="a:1", neighbours=NEIGHBOURS, now=10.0, rng=rng).answer


def test_the_memory_of_seen_ids_is_bounded_oldest_forgotten_first() -> None:
    router = QueryRouter(memory=3)
    rng = random.Random(0)
    for i in range(5):
        router.receive(flood(1, f"q{i}"), sender="a:1", neighbours=[], now=0.0, rng=rng)
    assert len(router) == 3
    assert not router.seen("q1", 0.0) and router.seen("q4", 0.0)


def test_starting_a_flood_sends_the_full_ttl_to_every_neighbour() -> None:
    router = QueryRouter()
    query, route = router.start(
        me="o:1", ttl=4, walkers=0, neighbours=NEIGHBOURS, now=0.0, rng=random.Random(0)
    )
    assert query.mode is Mode.FLOOD and query.origin == "o:1" and len(query.query_id) == 32
    assert route.answer and targets(route) == NEIGHBOURS
    assert {q.ttl for _, q in route.forward} == {4}
    assert router.seen(query.query_id, 0.0)  # a query coming back is dropped


def test_starting_a_walk_sends_k_walkers_grouped_per_neighbour() -> None:
    router = QueryRouter()
    query, route = router.start(
        me="o:1", ttl=5, walkers=16, neighbours=NEIGHBOURS, now=0.0, rng=random.Random(3)
    )
    assert query.mode is Mode.WALK
    assert sum(q.walkers for _, q in route.forward) == 16
    assert len(set(targets(route))) == len(route.forward)
    assert {q.ttl for _, q in route.forward} == {5}


def test_a_walker_picks_one_random_neighbour_other_than_the_previous_one() -> None:
    walk = Query("w", 3, Mode.WALK, walkers=1, origin="o:1")
    picks = set()
    for seed in range(40):
        route = QueryRouter().receive(
            walk, sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=random.Random(seed)
        )
        assert len(route.forward) == 1 and route.forward[0][1].ttl == 2
        picks.add(route.forward[0][0])
    assert picks == {"b:1", "c:1", "d:1"}
    fixed = [
        router.receive(walk, sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=random.Random(7))
        for router in (QueryRouter(), QueryRouter())
    ]
    assert fixed[0] == fixed[1]  # the same seed, the same choice


def test_a_walker_that_returns_walks_on_without_a_second_answer() -> None:
    router = QueryRouter()
    walk = Query("w", 3, Mode.WALK, walkers=2, origin="o:1")
    rng = random.Random(0)
    first = router.receive(walk, sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    second = router.receive(walk, sender="b:1", neighbours=NEIGHBOURS, now=0.1, rng=rng)
    assert first.answer and not second.answer
    assert sum(q.walkers for _, q in second.forward) == 2


def test_a_walker_at_a_dead_end_stops() -> None:
    route = QueryRouter().receive(
        Query("w", 3, Mode.WALK, origin="o:1"),
        sender="a:1",
        neighbours=["a:1"],
        now=0.0,
        rng=random.Random(0),
    )
    assert route == Route(answer=True)


@pytest.mark.parametrize(("ttl", "walkers"), [(-1, 0), (MAX_TTL + 1, 0), (2, 65), (2, -1)])
def test_out_of_range_ttl_and_walkers_are_refused(ttl: int, walkers: int) -> None:
    with pytest.raises(errors.UsageError):
        check_query(ttl=ttl, walkers=walkers)


def test_a_flood_copy_is_covering_to_the_neighbours_that_have_not_sent_us_the_query() -> None:
    router = QueryRouter()
    rng = random.Random(0)
    router.receive(flood(4), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    # b sent it too (crossing ours): b knew it with TTL 3, so our TTL-3 copy to b is moot
    assert router.receive(flood(2), sender="b:1", neighbours=NEIGHBOURS, now=0.1, rng=rng) == Route(
        answer=False, reply=False
    )
    route = router.receive(flood(4), sender="c:1", neighbours=NEIGHBOURS, now=0.2, rng=rng)
    assert route == Route(answer=False, reply=False)  # c knew it with TTL 4 when we covered it


def test_a_duplicate_with_more_ttl_than_we_covered_it_with_gets_a_reply() -> None:
    router = QueryRouter()
    rng = random.Random(0)
    first = router.receive(flood(3), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    assert {(a, q.ttl, q.covers) for a, q in first.forward} == {
        ("b:1", 2, True),
        ("c:1", 2, True),
        ("d:1", 2, True),
    }
    # b's TTL 4 copy is news (we covered b only up to TTL 3): sent on, and b is owed a
    # reply; not to a, which knew it with TTL 4, nor back to b
    route = router.receive(flood(4), sender="b:1", neighbours=NEIGHBOURS, now=0.1, rng=rng)
    assert route.reply and not route.answer
    assert {(a, q.ttl, q.covers) for a, q in route.forward} == {("c:1", 3, True), ("d:1", 3, True)}


def test_a_neighbour_that_sent_us_at_least_the_ttl_we_would_give_it_is_skipped() -> None:
    router = QueryRouter()
    rng = random.Random(0)
    router.receive(flood(2), sender="a:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    router.receive(flood(2), sender="c:1", neighbours=NEIGHBOURS, now=0.0, rng=rng)
    route = router.receive(flood(4), sender="b:1", neighbours=NEIGHBOURS, now=0.1, rng=rng)
    # a and c knew it with TTL 3 already: our copy with TTL 3 would change nothing
    assert targets(route) == ["d:1"]


def test_a_received_query_has_its_ttl_and_walkers_clamped() -> None:
    from p2pshare.core.query_router import MAX_WALKERS, admit

    q = admit(query_id="q1", ttl=99, mode=Mode.WALK, walkers=999, origin="a:1", covers=False)
    assert (q.ttl, q.walkers, q.origin) == (MAX_TTL, MAX_WALKERS, "a:1")
    assert (
        admit(query_id="q", ttl=2, mode=Mode.FLOOD, walkers=0, origin="", covers=True).walkers == 1
    )


@pytest.mark.parametrize("query_id", ["", "x" * 65])
def test_a_received_query_without_a_sound_id_is_refused(query_id: str) -> None:
    from p2pshare.core.query_router import admit

    with pytest.raises(errors.UsageError, match="query_id"):
        admit(query_id=query_id, ttl=2, mode=Mode.FLOOD, walkers=1, origin="", covers=False)


def test_a_relayed_query_takes_what_its_sender_gave_it_within_bounds() -> None:
    from p2pshare.core.query_router import DEFAULT_DEADLINE, MAX_DEADLINE, relay_deadline

    assert relay_deadline(0) == DEFAULT_DEADLINE
    assert relay_deadline(1500) == 1.5
    assert relay_deadline(3_600_000) == MAX_DEADLINE


def test_the_next_hop_gets_a_tenth_less_time_at_most_100_ms_less() -> None:
    from p2pshare.core.query_router import downstream_timeout

    assert downstream_timeout(0.5) == pytest.approx(0.45)
    assert downstream_timeout(3.0) == pytest.approx(2.9)
