"""Reverse paths: replies routed by tag, queries over, cancelled, lost and expired."""

from __future__ import annotations

import pytest

from p2pshare.core.reverse_paths import MAX_TAG, ReversePaths


def paths(max_hits: int = 100) -> ReversePaths[str]:
    return ReversePaths(max_hits_per_link=max_hits)


def test_replies_go_back_with_the_upstream_tag_and_the_last_done_ends_the_relay() -> None:
    p = paths()
    relay = p.open(
        query_id="q", upstream="up", up_tag=7, ttl=3, downstream=["a", "b"], deadline=5.0
    )
    assert p.relaying == 1 and p.came_from("up", 7)
    taken = p.reply(relay.tag, "a", hits=2, done=False)
    assert taken is not None and taken.relay is relay and (taken.hits, taken.over) == (2, False)
    assert relay.upstream == "up" and relay.up_tag == 7
    taken = p.reply(relay.tag, "a", hits=0, done=True)
    assert taken is not None and not taken.over
    taken = p.reply(relay.tag, "b", hits=1, done=True)
    assert taken is not None and (taken.hits, taken.over) == (1, True)
    assert len(p) == 0 and p.relaying == 0 and not p.came_from("up", 7)


def test_a_reply_for_an_unknown_tag_or_from_a_link_not_asked_is_dropped() -> None:
    p = paths()
    relay = p.open(query_id="q", upstream=None, up_tag=0, ttl=3, downstream=["a"], deadline=5.0)
    assert p.reply(relay.tag + 1, "a", hits=1, done=True) is None
    assert p.reply(relay.tag, "intruder", hits=1, done=True) is None
    assert p.reply(relay.tag, "a", hits=0, done=True) is not None
    assert p.reply(relay.tag, "a", hits=1, done=False) is None  # over already


def test_a_link_that_sends_too_many_hits_is_cut_off_at_the_limit() -> None:
    p = paths(max_hits=3)
    relay = p.open(
        query_id="q", upstream=None, up_tag=0, ttl=3, downstream=["a", "b"], deadline=5.0
    )
    first = p.reply(relay.tag, "a", hits=2, done=False)
    second = p.reply(relay.tag, "a", hits=5, done=False)
    assert first is not None and second is not None
    assert (first.hits, second.hits, second.over) == (2, 1, False)
    assert p.reply(relay.tag, "a", hits=1, done=False) is None  # counts as done now
    assert list(relay.waiting) == ["b"]


def test_the_upstream_cancelling_closes_the_relay_and_names_the_links_owed_a_cancel() -> None:
    p = paths()
    relay = p.open(
        query_id="q", upstream="up", up_tag=3, ttl=3, downstream=["a", "b"], deadline=5.0
    )
    p.reply(relay.tag, "a", hits=0, done=True)
    assert p.cancel("other", 3) is None
    assert p.cancel("up", 3) is relay
    assert list(relay.waiting) == ["b"]
    assert len(p) == 0 and p.relaying == 0


def test_a_lost_link_is_done_downstream_and_cancels_what_came_over_it() -> None:
    p = paths()
    from_x = p.open(
        query_id="q1", upstream="x", up_tag=1, ttl=3, downstream=["y", "z"], deadline=5.0
    )
    to_x = p.open(query_id="q2", upstream="y", up_tag=1, ttl=3, downstream=["x"], deadline=5.0)
    both = p.open(
        query_id="q3", upstream=None, up_tag=0, ttl=3, downstream=["x", "z"], deadline=5.0
    )
    over, cancelled = p.lost("x")
    assert over == [to_x] and cancelled == [from_x]
    assert list(both.waiting) == ["z"]
    assert len(p) == 1


def test_relays_expire_at_their_deadline_in_order() -> None:
    p = paths()
    late = p.open(query_id="q1", upstream=None, up_tag=0, ttl=3, downstream=["a"], deadline=9.0)
    early = p.open(query_id="q2", upstream="u", up_tag=1, ttl=3, downstream=["a"], deadline=2.0)
    done = p.open(query_id="q3", upstream=None, up_tag=0, ttl=3, downstream=["b"], deadline=1.0)
    p.reply(done.tag, "b", hits=0, done=True)
    assert p.expired(1.5) == []  # the one due then is over already
    assert p.expired(2.0) == [early]
    assert p.close(late) and not p.close(late)
    assert p.expired(10.0) == []


def test_tags_are_unique_among_open_relays_and_wrap_around_skipping_those_in_use() -> None:
    p = paths()
    p._next_tag = MAX_TAG - 1
    relays = [
        p.open(query_id=f"q{i}", upstream=None, up_tag=0, ttl=3, downstream=["a"], deadline=1.0)
        for i in range(3)
    ]
    assert [r.tag for r in relays] == [MAX_TAG - 1, MAX_TAG, 1]
    p._next_tag = MAX_TAG
    assert (
        p.open(query_id="q", upstream=None, up_tag=0, ttl=3, downstream=[], deadline=1.0).tag == 2
    )


@pytest.mark.parametrize("upstream", ["up", None])
def test_only_relays_from_a_neighbour_count_as_relaying(upstream: str | None) -> None:
    p = paths()
    p.open(query_id="q", upstream=upstream, up_tag=1, ttl=3, downstream=["a"], deadline=1.0)
    assert p.relaying == (1 if upstream else 0)


def test_a_covering_copy_stands_for_the_replies_to_copies_with_ttl_up_to_one_more() -> None:
    p = paths()
    low = p.open(query_id="q", upstream="up", up_tag=1, ttl=3, downstream=["b1", "c"], deadline=5)
    high = p.open(query_id="q", upstream="up", up_tag=2, ttl=4, downstream=["b2"], deadline=5)
    other = p.open(query_id="r", upstream="up", up_tag=3, ttl=1, downstream=["b1"], deadline=5)
    taken = p.covered("q", lambda link: link.startswith("b"), 2)  # b knew q with TTL 3
    assert [(t.relay, t.hits, t.over) for t in taken] == [(low, 0, False)]
    assert list(low.waiting) == ["c"] and list(high.waiting) == ["b2"]
    assert list(other.waiting) == ["b1"]
    taken = p.covered("q", lambda link: link.startswith("b"), 3)
    assert [(t.relay, t.over) for t in taken] == [(high, True)]
    assert p.get(high.tag) is None and len(p) == 2


def test_next_deadline_is_the_earliest_open_relays_and_skips_closed_ones():
    from p2pshare.core.reverse_paths import ReversePaths

    paths: ReversePaths[str] = ReversePaths(max_hits_per_link=10)
    assert paths.next_deadline() is None
    early = paths.open(
        query_id="q1", upstream=None, up_tag=0, ttl=2, downstream=["b"], deadline=5.0
    )
    paths.open(query_id="q2", upstream=None, up_tag=0, ttl=2, downstream=["b"], deadline=9.0)
    assert paths.next_deadline() == 5.0
    paths.close(early)
    assert paths.next_deadline() == 9.0
    assert [r.query_id for r in paths.expired(9.0)] == ["q2"]
    assert paths.next_deadline() is None
