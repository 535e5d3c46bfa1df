"""Share names: the relative paths under which files are shared and saved.

A share name is what crosses the network. It must stay a plain relative path
inside a share folder whatever a remote peer puts in it, so every name that comes
in (from a manifest, a request, a scan) passes through ``check_share_name``.
"""

from __future__ import annotations

import unicodedata

from p2pshare.errors import InvalidName

MAX_NAME_LENGTH = 1024
MAX_PART_LENGTH = 255
PARTIAL_SUFFIX = ".p2pshare-part"
STATE_DIR = ".p2pshare"
_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}  # fmt: skip
# slashes that NFKC leaves alone but that look like one (or become one where a
# program maps Unicode to a code page, as Windows' "best fit" does)
_SLASH_LOOKALIKES = frozenset("\u2044\u2215\u2216\u2571\u2572\u29f5\u29f8\u29f9")
# format characters that belong in names: zero-width non-joiner and joiner (Persian,
# Indic scripts, emoji sequences); the others (bidi overrides, zero-width space,
# byte order mark) only make a name look like another one
_NAME_FORMAT_CHARS = frozenset("\u200c\u200d")


def check_share_name(name: str) -> str:
    """Return ``name`` if it is a safe relative path with ``/`` separators.

    Refused: empty names, absolute paths, ``.`` and ``..`` parts, backslashes,
    control and invisible format characters, over-long names, Windows reserved
    names, hidden parts (which include our own partial downloads and state folder),
    and look-alikes: names whose compatibility normal form (NFKC, which turns a
    fullwidth solidus into ``/`` and a two dot leader into ``..``) is refused, and
    slash look-alikes.
    """
    _check_structure(name)
    for c in name:
        category = unicodedata.category(c)
        if category in ("Cc", "Zl", "Zp") or (category == "Cf" and c not in _NAME_FORMAT_CHARS):
            raise InvalidName(f"name contains a control or invisible character: {name!r:.80}")
        if c in _SLASH_LOOKALIKES:
            raise InvalidName(f"name contains a look-alike of a slash: {name!r:.80}")
    normal = unicodedata.normalize("NFKC", name)
    if normal.count("/") != name.count("/"):
        raise InvalidName(f"name contains a look-alike of a slash: {name!r:.80}")
    if normal != name:
        try:
            _check_structure(normal)
        except InvalidName as exc:
            raise InvalidName(f"name is a look-alike of a refused one ({exc})") from None
    return name


def _check_structure(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName("name contains a control character")
    if "\\" in name or ":" in name:
        raise InvalidName(f"name contains a backslash or colon: {name!r:.80}")
    if name.startswith("/"):
        raise InvalidName(f"name is an absolute path: {name!r:.80}")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InvalidName(f"name has an empty, '.' or '..' part: {name!r:.80}")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_LENGTH:
            raise InvalidName("a part of the name is longer than 255 bytes")
        if part.startswith("."):
            raise InvalidName(f"hidden names are not shared: {name!r:.80}")
        if part.endswith(PARTIAL_SUFFIX):
            raise InvalidName(f"partial downloads are not shared: {name!r:.80}")
        if part.split(".")[0].rstrip(" ").lower() in _WINDOWS_RESERVED or part.endswith((" ", ".")):
            raise InvalidName(f"name is reserved on Windows: {name!r:.80}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidName("name is not valid UTF-8") from exc
