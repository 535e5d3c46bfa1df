"""Share names: what may cross the network as a path (core.paths)."""

from __future__ import annotations

import os
import posixpath
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.paths import MAX_NAME_LENGTH, check_share_name
from p2pshare.errors import InvalidName, UsageError
from tests.hostile_names import HOSTILE


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a.txt",
        "dir/sub/file.iso",
        "débian 12 (netinst).iso",
        "日本語/ファイル.txt",
        "a b",
        "x" * 255,
        "/".join(["d"] * 500)[:MAX_NAME_LENGTH].rstrip("/"),
        "con-tent.txt",
        "console",
        "file.p2pshare-part.txt",
        "ﬁle ½.txt",
        "نامه\u200cها.txt",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467.jpg",
    ],
)
def test_plain_relative_names_are_accepted(name):
    assert check_share_name(name) == name


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[why for _, why in HOSTILE])
def test_hostile_names_are_refused(name, why):
    with pytest.raises(InvalidName):
        check_share_name(name)


def test_invalid_name_is_a_usage_error():
    assert issubclass(InvalidName, UsageError)


_pathy = st.text(st.sampled_from("./\\:a \x00\u2025\uff0e\uff0f\u2215\ufe52\u2024"), max_size=12)


@given(st.one_of(st.text(max_size=60), _pathy))
def test_an_accepted_name_never_leaves_the_folder(name):
    try:
        check_share_name(name)
    except InvalidName:
        return
    # and neither does its compatibility form, which some file systems and tools make of it
    for form in (name, unicodedata.normalize("NFKC", name)):
        parts = form.split("/")
        assert not form.startswith("/")
        assert all(p and p not in (".", "..") and not p.startswith(".") for p in parts)
        assert "\\" not in form and ":" not in form and "\x00" not in form
        assert posixpath.normpath(form) == form
        root = "/srv/share"
        joined = os.path.normpath(os.path.join(root, *parts))
        assert joined.startswith(root + "/")


_RESERVED = {"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10))}
# letters and digits that are their own compatibility form ("²" is not: it is "2")
_alnum = st.characters(categories=["L", "N"]).filter(
    lambda c: unicodedata.normalize("NFKC", c) == c
)
_alnum_parts = st.text(_alnum, min_size=1, max_size=10)


@given(st.lists(_alnum_parts, min_size=1, max_size=5))
def test_names_of_letters_and_digits_are_accepted_unless_reserved(parts):
    name = "/".join(parts)
    if any(p.lower() in _RESERVED for p in parts):
        with pytest.raises(InvalidName):
            check_share_name(name)
    else:
        assert check_share_name(name) == name
