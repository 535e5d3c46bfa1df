"""Share names: what may cross the network as a path (core.paths)."""

from __future__ import annotations

import os
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.paths import MAX_NAME_LENGTH, PARTIAL_SUFFIX, STATE_DIR, check_share_name
from p2pshare.errors import InvalidName, UsageError


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
    ],
)
def test_plain_relative_names_are_accepted(name):
    assert check_share_name(name) == name


HOSTILE = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("//server/share", "unc-like absolute"),
    ("..", "parent"),
    ("../x", "leading parent"),
    ("a/../../x", "inner parent"),
    ("a/..", "trailing parent"),
    (".", "current dir"),
    ("./a", "leading current dir"),
    ("a/./b", "inner current dir"),
    ("a//b", "empty part"),
    ("a/", "trailing slash"),
    ("..\\x", "backslash parent"),
    ("a\\b", "backslash"),
    ("C:x", "drive relative"),
    ("C:\\Windows", "drive absolute"),
    ("a:stream", "alternate data stream"),
    ("a\x00b", "nul"),
    ("a\nb", "newline"),
    ("a\tb", "tab"),
    ("a\x1bb", "escape"),
    ("a\x7fb", "delete"),
    (".hidden", "hidden file"),
    ("dir/.hidden", "hidden file in a folder"),
    (".git/config", "hidden folder"),
    (f"{STATE_DIR}/hashes.db", "state folder"),
    (f"movie.mkv{PARTIAL_SUFFIX}", "partial download"),
    (f".movie.mkv{PARTIAL_SUFFIX}", "hidden partial download"),
    (f"dir/movie.mkv{PARTIAL_SUFFIX}", "partial download in a folder"),
    ("con", "windows con"),
    ("CON.txt", "windows con with extension"),
    ("dir/nul", "windows nul in a folder"),
    ("aux.tar.gz", "windows aux"),
    ("com1", "windows com1"),
    ("LPT9.log", "windows lpt9"),
    ("prn ", "windows prn trailing space"),
    ("a.", "trailing dot"),
    ("a ", "trailing space"),
    ("x" * 256, "part over 255 bytes"),
    ("é" * 128, "part over 255 bytes in utf-8"),
    ("a/" * 512 + "a", "name over 1024 characters"),
    ("bad\udcffname", "not utf-8 (surrogate escape)"),
]


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[why for _, why in HOSTILE])
def test_hostile_names_are_refused(name, why):
    with pytest.raises(InvalidName):
        check_share_name(name)


def test_invalid_name_is_a_usage_error():
    assert issubclass(InvalidName, UsageError)


@given(st.text(max_size=60))
def test_an_accepted_name_never_leaves_the_folder(name):
    try:
        check_share_name(name)
    except InvalidName:
        return
    parts = name.split("/")
    assert not name.startswith("/")
    assert all(p and p not in (".", "..") and not p.startswith(".") for p in parts)
    assert posixpath.normpath(name) == name
    root = "/srv/share"
    joined = os.path.normpath(os.path.join(root, *parts))
    assert joined.startswith(root + "/")


_RESERVED = {"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10))}
_alnum_parts = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=10)


@given(st.lists(_alnum_parts, min_size=1, max_size=5))
def test_names_of_letters_and_digits_are_accepted_unless_reserved(parts):
    name = "/".join(parts)
    if any(p.lower() in _RESERVED for p in parts):
        with pytest.raises(InvalidName):
            check_share_name(name)
    else:
        assert check_share_name(name) == name
