"""Name matching: which names a query selects (core.names)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare import errors
from p2pshare.core.names import MAX_QUERY_LENGTH, parse_query, words


def test_words_are_runs_of_letters_and_digits_folded():
    assert words("Debian-Linux_12.ISO") == ["debian", "linux", "12", "iso"]
    assert words("Crème Brûlée") == ["creme", "brulee"]
    assert words("Straße") == ["strasse"]
    assert words("--__..") == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("lin iso", "debian-linux-12.iso"),
        ("LIN", "debian-linux-12.iso"),
        ("creme", "Crème brûlée.txt"),
        ("brûlée", "creme-brulee.txt"),
        ("12", "debian-linux-12.iso"),
        ("iso linux", "debian-linux-12.iso"),
        ("music beatles", "music/The Beatles/help.mp3"),
        ("*.iso", "debian-linux-12.iso"),
        ("*.ISO", "debian-linux-12.iso"),
        ("debian-*-12.iso", "Debian-Linux-12.ISO"),
        ("file?.txt", "file1.txt"),
        ("music/*", "music/a/b.mp3"),
    ],
)
def test_query_matches(query, name):
    assert parse_query(query).matches(name)


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("inux", "debian-linux-12.iso"),  # a term must start a word
        ("linux mac", "debian-linux-12.iso"),  # every term must match
        ("isos", "debian-linux-12.iso"),
        ("*.iso", "debian-linux-12.iso.txt"),  # a glob matches the whole name
        ("file?.txt", "file12.txt"),
        ("debian", "ubuntu.iso"),
    ],
)
def test_query_does_not_match(query, name):
    assert not parse_query(query).matches(name)


def test_a_glob_query_keeps_its_words_and_a_words_query_has_no_glob():
    assert parse_query("*.iso").glob == "*.iso"
    assert parse_query("  Lin  ISO ").terms == ("lin", "iso")
    assert parse_query("lin iso").glob is None


@pytest.mark.parametrize("bad", ["", "   ", "-- ..", "x" * (MAX_QUERY_LENGTH + 1)])
def test_parse_query_refuses_empty_wordless_and_overlong_queries(bad):
    with pytest.raises(errors.InvalidQuery):
        parse_query(bad)


name_text = st.text(st.characters(categories=["L", "N", "Zs", "P"]), min_size=1, max_size=40)


@given(name=name_text)
def test_every_word_of_a_name_and_its_prefixes_find_it(name):
    for w in words(name):
        for cut in (1, len(w)):
            assert parse_query(w[:cut]).matches(name)


@given(name=name_text)
def test_the_name_itself_finds_it_as_words(name):
    is_glob = "*" in name or "?" in name
    if words(name) and not is_glob:
        assert parse_query(name).matches(name)


@given(name=name_text)
def test_star_matches_every_name(name):
    assert parse_query("*").matches(name)


@given(text=st.text(max_size=40))
def test_folding_is_idempotent(text):
    once = words(text)
    assert words(" ".join(once)) == once


def test_compatibility_letters_fold_like_their_plain_letters():
    assert words("𝑨𝒃𝒄 ﬁle") == ["abc", "file"]
    assert parse_query("A").matches("𝑨")


def test_check_query_refuses_a_client_query_as_a_usage_error():
    from p2pshare.core.names import MAX_QUERY_LENGTH, check_query
    from p2pshare.errors import UsageError

    assert check_query(" lin iso ").terms == ("lin", "iso")
    for bad, message in [("", "empty"), ("--", "no letters"), ("x" * 5000, "longer")]:
        with pytest.raises(UsageError, match=message):
            check_query(bad)
    with pytest.raises(UsageError, match="longer"):
        check_query("x" * (MAX_QUERY_LENGTH + 1))
