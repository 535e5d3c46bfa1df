"""The neighbour table: bounded, fed by offers, pings the quiet, drops and replaces the dead."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.neighbours import Added, Dropped, NeighbourTable


def table(**kwargs: object) -> NeighbourTable:
    args: dict[str, object] = {"me": "me:1", "capacity": 3, "max_failures": 2}
    args.update(kwargs)
    return NeighbourTable(**args)  # type: ignore[arg-type]


def join(t: NeighbourTable, *addresses: str, now: float = 0.0) -> None:
    """Make ``addresses`` neighbours, as peers that called us."""
    for address in addresses:
        t.heard_from(address, now)


def test_offers_become_candidates_and_never_include_ourselves() -> None:
    t = table()
    t.offer(["a:1", "me:1", "b:1", "a:1", ""])
    assert t.candidates() == ["a:1", "b:1"]
    assert len(t) == 0


def test_due_tries_random_candidates_for_the_free_slots_only() -> None:
    t = table(capacity=6)
    t.offer([f"p{i}:1" for i in range(10)])
    tries = t.due(0.0, random.Random(1))
    assert len(tries) == 3
    assert t.due(0.0, random.Random(1)) == []  # all slots reserved by the tries in flight


def test_random_choices_repeat_with_the_same_seed() -> None:
    picks = []
    for _ in range(2):
        t = table()
        t.offer([f"p{i}:1" for i in range(10)])
        picks.append(t.due(0.0, random.Random(42)))
    assert picks[0] == picks[1]


def test_a_candidate_that_answers_becomes_a_neighbour_and_its_known_peers_candidates() -> None:
    t = table()
    t.offer(["a:1"])
    assert t.due(0.0, random.Random(0)) == ["a:1"]
    assert t.answered("a:1", 1.0, peer_id="A", known=["b:1", "me:1"]) == Added("a:1")
    n = t.get("a:1")
    assert n is not None and (n.peer_id, n.added, n.last_seen) == ("A", 1.0, 1.0)
    assert t.candidates() == ["b:1"]


def test_a_candidate_that_fails_is_tried_again_only_after_retry_after() -> None:
    t = table(retry_after=30.0)
    t.offer(["a:1"])
    assert t.due(0.0, random.Random(0)) == ["a:1"]
    assert t.failed("a:1", 1.0) is None
    assert t.due(10.0, random.Random(0)) == []
    assert t.due(30.0, random.Random(0)) == ["a:1"]


def test_table_never_holds_more_than_its_capacity() -> None:
    t = table()
    for address in ("a:1", "b:1", "c:1", "d:1"):
        t.heard_from(address, 0.0)
    assert len(t) == 3
    assert t.heard_from("e:1", 1.0) is None  # full: kept as a candidate
    assert "e:1" in t.candidates() and "e:1" not in t


def test_a_caller_becomes_a_neighbour_while_there_is_room() -> None:
    t = table()
    assert t.heard_from("x:1", 5.0, peer_id="X") == Added("x:1")
    assert t.addresses() == ["x:1"]


def test_a_candidate_that_refuses_us_stays_a_candidate_for_later() -> None:
    t = table(retry_after=30.0)
    t.offer(["a:1"])
    assert t.due(0.0, random.Random(0)) == ["a:1"]
    assert t.answered("a:1", 1.0, accepted=False, known=["b:1"]) is None
    assert "a:1" not in t and t.candidates() == ["a:1", "b:1"]
    assert t.due(2.0, random.Random(0)) == ["b:1"]


def test_a_neighbour_that_no_longer_keeps_us_is_dropped() -> None:
    t = table(ping_every=10.0)
    join(t, "a:1")
    assert t.due(10.0, random.Random(0)) == ["a:1"]
    change = t.answered("a:1", 10.5, accepted=False)
    assert isinstance(change, Dropped) and change.address == "a:1"


def test_candidates_are_dialled_only_up_to_half_the_capacity() -> None:
    t = table(capacity=8)
    t.offer([f"p{i}:1" for i in range(20)])
    assert len(t.due(0.0, random.Random(0))) == 4 == t.dial_to


def test_a_call_from_a_neighbour_counts_as_a_sign_of_life() -> None:
    t = table(ping_every=10.0)
    join(t, "a:1")
    t.failed("a:1", 1.0)
    t.heard_from("a:1", 9.0)
    n = t.get("a:1")
    assert n is not None and (n.last_seen, n.failures) == (9.0, 0)
    assert t.due(15.0, random.Random(0)) == []


def test_neighbours_quiet_for_ping_every_are_pinged_once_until_they_answer() -> None:
    t = table(ping_every=10.0)
    join(t, "a:1", "b:1")
    t.heard_from("b:1", 8.0)
    assert t.due(9.0, random.Random(0)) == []
    assert t.due(10.0, random.Random(0)) == ["a:1"]
    assert t.due(11.0, random.Random(0)) == []  # the ping is in flight
    t.answered("a:1", 12.0)
    assert t.due(18.0, random.Random(0)) == ["b:1"]


def test_a_neighbour_is_dropped_after_max_failures_in_a_row() -> None:
    t = table(max_failures=3, capacity=2)
    join(t, "a:1")
    assert t.failed("a:1", 1.0) is None
    assert t.failed("a:1", 2.0) is None
    t.answered("a:1", 3.0)  # an answer resets the count
    assert t.failed("a:1", 4.0) is None
    assert t.failed("a:1", 5.0) is None
    assert t.failed("a:1", 6.0) == Dropped("a:1", "failed 3 times in a row")
    assert "a:1" not in t


def test_a_dropped_neighbour_is_replaced_by_the_next_candidate_that_answers() -> None:
    t = table(capacity=4, max_failures=1, retry_after=30.0)
    join(t, "a:1", "b:1")
    t.offer(["c:1"])
    assert t.failed("a:1", 1.0) == Dropped("a:1", "failed 1 times in a row")
    tries = t.due(2.0, random.Random(0))
    assert tries == ["c:1"]  # the dead one waits retry_after before it is tried again
    assert t.answered("c:1", 2.5) == Added("c:1", replaces="a:1")
    assert sorted(t.addresses()) == ["b:1", "c:1"]


def test_the_candidate_pool_is_bounded_and_forgets_the_oldest_offers() -> None:
    t = table(max_candidates=4)
    t.offer([f"p{i}:1" for i in range(10)])
    assert t.candidates() == ["p6:1", "p7:1", "p8:1", "p9:1"]


def test_learning_our_own_address_removes_it() -> None:
    t = table(me="")
    t.heard_from("self:1", 0.0)
    t.offer(["self:1"])
    t.set_me("self:1")
    assert "self:1" not in t and "self:1" not in t.candidates()


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        NeighbourTable(me="m:1", capacity=0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["offer", "due", "answered", "failed", "heard"]),
            st.integers(0, 20),
        ),
        max_size=200,
    ),
    st.integers(0, 2**32),
)
def test_any_sequence_of_events_keeps_the_table_bounded_and_consistent(
    events: list[tuple[str, int]], seed: int
) -> None:
    rng = random.Random(seed)
    t = NeighbourTable(me="p0:1", capacity=4, max_failures=2, max_candidates=8, ping_every=3.0)
    now = 0.0
    for kind, i in events:
        now += 1.0
        address = f"p{i}:1"
        if kind == "offer":
            t.offer([address])
        elif kind == "due":
            t.due(now, rng)
        elif kind == "answered":
            t.answered(address, now, known=[f"p{(i * 7) % 21}:1"], accepted=i % 3 > 0)
        elif kind == "failed":
            t.failed(address, now)
        else:
            t.heard_from(address, now)
        assert len(t) <= 4
        assert len(t.candidates()) <= 8 + 4  # in-flight tries are never evicted
        assert "p0:1" not in t
        assert not set(t.addresses()) & set(t.candidates())
        json.dumps(t.addresses())  # what the adapter saves
