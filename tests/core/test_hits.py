"""Search hits merged by content id (core.hits)."""

from __future__ import annotations

from p2pshare.core.hits import HitMerger, Provider

A, B, C = Provider("a", "10.0.0.1:1"), Provider("b", "10.0.0.2:1"), Provider("c", "10.0.0.3:1")


def test_one_hit_per_content_id_with_each_provider_once_by_address():
    m = HitMerger()
    m.add("x", "song.mp3", 5, [A])
    m.add("x", "other name.mp3", 7, [B, A])
    m.add("x", "song.mp3", 5, [Provider("", A.address)])
    [hit] = m.hits()
    assert (hit.name, hit.size) == ("song.mp3", 5)  # the first answer names it
    assert hit.providers == [A, B]


def test_providers_repeated_within_one_answer_count_once():
    m = HitMerger()
    m.add("x", "a", 1, [A, A, B])
    assert m.hits()[0].providers == [A, B]


def test_hits_keep_the_order_content_ids_were_first_heard_of():
    m = HitMerger()
    for cid in ("z", "y", "z", "x"):
        m.add(cid, cid, 1, [A])
    assert [h.content_id for h in m.hits()] == ["z", "y", "x"]


def test_ranked_puts_the_most_provided_first_then_by_name_and_cuts_at_limit():
    m = HitMerger()
    m.add("1", "b", 1, [A])
    m.add("2", "a", 1, [A])
    m.add("3", "c", 1, [A, B, C])
    assert [h.content_id for h in m.ranked(10)] == ["3", "2", "1"]
    assert [h.content_id for h in m.ranked(2)] == ["3", "2"]
    assert m.ranked(0) == []
