"""Kept search answers: what drops them, and the memory bound (core.search_cache)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.names import parse_query, words
from p2pshare.core.search_cache import SearchCache

BIG = 1 << 30


def hit(n: int) -> str:
    return f'{{"content_id":"{n:064x}","name":"file {n}","size":{n}}}'


def answer(*ns: int) -> bytes:
    return ("[" + ",".join(hit(n) for n in ns) + "]").encode()


def test_an_answer_is_given_back_until_its_valid_until():
    cache = SearchCache(BIG)
    cache.put("k", ["tux"], answer(1, 2), valid_until=100.0)
    assert cache.get("k", 99.9) == answer(1, 2)
    assert cache.get("k", 100.0) is None
    assert cache.get("k", 50.0) is None  # dropped, not only hidden
    assert len(cache) == 0
    assert cache.bytes == 0


def test_a_name_word_drops_the_answers_of_its_prefixes_only():
    cache = SearchCache(BIG)
    for key, terms in {
        "t": ["t"],
        "tu": ["tu"],
        "tux": ["tux"],
        "tuxe": ["tuxe"],
        "x": ["x"],
    }.items():
        cache.put(key, terms, answer(1), valid_until=BIG)
    assert cache.forget_words(["tux"]) == 3
    assert [k for k in ("t", "tu", "tux", "tuxe", "x") if cache.get(k, 0) is not None] == [
        "tuxe",
        "x",
    ]


def test_an_answer_cut_at_its_limit_stays_when_a_later_name_changes():
    cache = SearchCache(BIG)
    cache.put("full", ["tux"], answer(1), valid_until=BIG, last_rank=10)
    cache.put("all", ["tux"], answer(1), valid_until=BIG)  # every match: no cut
    cache.put("other", ["tu"], answer(1), valid_until=BIG, last_rank=10)
    assert cache.forget_words(["tuxedo"], rank=11) == 1  # only the answer with no cut
    assert cache.get("all", 0) is None
    assert cache.get("full", 0) == answer(1)
    assert cache.forget_words(["tux"], rank=10) == 2  # the last name read itself
    cache.put("full", ["tux"], answer(1), valid_until=BIG, last_rank=10)
    assert cache.forget_words(["tux"]) == 1  # rank unknown: dropped
    assert cache.bytes == 0


def test_an_answer_of_several_terms_goes_when_any_term_is_touched():
    cache = SearchCache(BIG)
    cache.put("lin iso", ["lin", "iso"], answer(1), valid_until=BIG)
    cache.put("lin", ["lin"], answer(1), valid_until=BIG)
    assert cache.forget_words(["isolde"]) == 1
    assert cache.get("lin iso", 0) is None
    assert cache.get("lin", 0) == answer(1)
    assert cache.forget_words(["linux", "lint"]) == 1  # each answer counted once
    assert len(cache) == 0
    assert cache.bytes == 0


def test_repeated_terms_are_filed_once():
    cache = SearchCache(BIG)
    cache.put("tux tux", ["tux", "tux"], answer(1), valid_until=BIG)
    assert cache.forget_words(["tux"]) == 1
    assert cache.bytes == 0


def test_put_again_replaces_the_answer():
    cache = SearchCache(BIG)
    cache.put("k", ["a"], answer(1), valid_until=BIG)
    cache.put("k", ["b"], answer(2), valid_until=BIG)
    assert cache.get("k", 0) == answer(2)
    assert cache.forget_words(["a"]) == 0
    assert cache.forget_words(["b"]) == 1
    assert cache.bytes == 0


def test_an_answer_needs_a_term():
    with pytest.raises(ValueError, match="term"):
        SearchCache(BIG).put("*", [], answer(1), valid_until=BIG)


def test_the_least_recently_used_answers_go_first_past_the_bound():
    probe = SearchCache(BIG)
    probe.put("x", ["x"], answer(0), valid_until=BIG)
    cache = SearchCache(probe.bytes * 3)
    for n in range(3):
        cache.put(n, [f"w{n}"], answer(n), valid_until=BIG)
    assert cache.get(0, 0) is not None  # 0 is now more recent than 1 and 2
    cache.put(3, ["w3"], answer(3), valid_until=BIG)
    assert cache.get(1, 0) is None
    assert [n for n in (0, 2, 3) if cache.get(n, 0) is not None] == [0, 2, 3]
    assert cache.bytes <= cache.max_bytes


def test_an_answer_larger_than_the_bound_is_not_kept():
    cache = SearchCache(100)
    cache.put("k", ["k"], answer(*range(10)), valid_until=BIG)
    assert len(cache) == 0
    assert cache.bytes == 0


def test_clear_drops_everything():
    cache = SearchCache(BIG)
    cache.put("k", ["k"], answer(1), valid_until=BIG)
    cache.clear()
    assert cache.get("k", 0) is None
    assert cache.bytes == 0
    assert cache.forget_words(["k"]) == 0


_word = st.text("abcé", min_size=1, max_size=4)
_name = st.lists(_word, min_size=1, max_size=4).map(" ".join)


@given(queries=st.lists(_name, min_size=1, max_size=8), changed=_name)
def test_every_answer_a_changed_name_could_match_is_dropped(queries, changed):
    """A query answered before a name changed must be asked again when the name matches
    it (model: ``Query.matches`` over the changed name); others may stay."""
    cache = SearchCache(BIG)
    for text in queries:
        query = parse_query(text)
        cache.put(text, query.terms, answer(len(text)), valid_until=BIG)
    cache.forget_words(words(changed))
    for text in queries:
        if parse_query(text).matches(changed):
            assert cache.get(text, 0) is None, (text, changed)
    if len(cache) == 0:
        assert cache.bytes == 0
