"""The one table of hostile names, used by every test of a way a name comes in:
share names (``core.paths``), names in a provider's manifest, share scanning,
subscription folders (``--into``), download folders (``-o``), the tracker's index.

Each entry is ``(name, why)``. Absolute entries point only at system paths that
every check refuses before touching the disk; tests that could write confine the
relative escapes to their temporary folder (at most two levels up).
"""

from __future__ import annotations

from p2pshare.core.paths import PARTIAL_SUFFIX, STATE_DIR

HOSTILE: list[tuple[str, str]] = [
    ("", "empty"),
    (".", "current dir"),
    ("..", "parent"),
    ("../x", "leading parent"),
    ("../../etc/passwd", "parents to passwd"),
    ("a/../../x", "inner parent"),
    ("a/..", "trailing parent"),
    ("./a", "leading current dir"),
    ("a/./b", "inner current dir"),
    ("a//b", "empty part"),
    ("a/", "trailing slash"),
    ("/etc/passwd", "absolute"),
    ("/", "root"),
    ("//server/share", "unc-like absolute"),
    ("..\\x", "backslash parent"),
    ("a\\b", "backslash"),
    ("\\\\server\\share\\x", "windows unc"),
    ("C:x", "drive relative"),
    ("C:\\x", "drive absolute"),
    ("C:/Windows/x", "drive absolute with slashes"),
    ("a:stream", "alternate data stream"),
    ("a\x00b", "nul inside"),
    ("\x00", "nul alone"),
    ("a\nb", "newline"),
    ("a\rb", "carriage return"),
    ("a\tb", "tab"),
    ("a\x1bb", "escape"),
    ("a\x7fb", "delete"),
    ("a\x85b", "c1 control"),
    ("a\u2028b", "line separator"),
    ("a\u202etxt.exe", "right-to-left override"),
    ("a\u200bb", "zero-width space"),
    ("\ufeffa", "byte order mark"),
    ("\u2025", "two dot leader (looks like ..)"),
    ("\u2025/x", "two dot leader as a part"),
    ("\uff0e\uff0e/x", "fullwidth dots"),
    ("a\uff0fb", "fullwidth solidus"),
    ("..\u2215x", "division slash"),
    ("a\u2044b", "fraction slash"),
    ("a\uff3cb", "fullwidth backslash"),
    ("C\uff1ax", "fullwidth colon"),
    ("COM\u00b9", "windows com with superscript one"),
    (".hidden", "hidden file"),
    ("dir/.hidden", "hidden file in a folder"),
    (".git/config", "hidden folder"),
    (STATE_DIR, "state folder"),
    (f"{STATE_DIR}/hashes.db", "hash cache in the state folder"),
    (f"{STATE_DIR}/downloads/{'ab' * 32}.json", "download record"),
    (f"movie.mkv{PARTIAL_SUFFIX}", "partial download"),
    (f".movie.mkv{PARTIAL_SUFFIX}", "hidden partial download"),
    (f"dir/movie.mkv{PARTIAL_SUFFIX}", "partial download in a folder"),
    ("con", "windows con"),
    ("CON", "windows CON"),
    ("NUL", "windows NUL"),
    ("CON.txt", "windows con with extension"),
    ("aux.txt", "windows aux"),
    ("dir/nul", "windows nul in a folder"),
    ("com1", "windows com1"),
    ("COM1.log", "windows COM1 with extension"),
    ("LPT9.log", "windows lpt9"),
    ("prn ", "windows prn trailing space"),
    ("a.", "trailing dot"),
    ("a ", "trailing space"),
    ("a. .", "trailing dots and spaces"),
    ("dir./x", "folder with trailing dot"),
    ("x" * 256, "part over 255 bytes"),
    ("é" * 128, "part over 255 bytes in utf-8"),
    ("a/" * 512 + "a", "name over 1024 characters"),
    ("/".join(["d" * 200] * 25), "name over 4096 bytes"),
    ("bad\udcffname", "not utf-8 (surrogate escape)"),
]

HOSTILE_NAMES = [name for name, _ in HOSTILE]
HOSTILE_IDS = [why for _, why in HOSTILE]


def creatable(name: str) -> bool:
    """Whether a file of this name can exist on this (POSIX) system, relative to a folder."""
    if (
        not name
        or "\x00" in name
        or name.startswith("/")
        or len(name.encode(errors="surrogateescape")) >= 4096
    ):
        return False
    parts = name.split("/")
    return all(
        p not in ("", ".", "..") and len(p.encode(errors="surrogateescape")) <= 255 for p in parts
    )
