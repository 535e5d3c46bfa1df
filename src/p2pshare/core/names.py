"""Name matching: how a query selects shared files by name.

A query is either words or a glob:

- words: every query word must be the start of some word of the name
  (``"lin iso"`` matches ``debian-linux-12.iso``); case and accents are ignored.
- glob: a query containing ``*`` or ``?`` is matched against the whole name
  (``"*.iso"``), case-insensitively.

The tracker's full-text index implements the same rule (FTS5 prefix queries), so
tracker and peer answers agree.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from dataclasses import dataclass

from p2pshare.errors import InvalidQuery, UsageError

MAX_QUERY_LENGTH = 256
_WORD = re.compile(r"[^\W_]+")


def _fold(text: str) -> str:
    # NFKD before and after casefold: the compatibility caseless match of Unicode §3.13,
    # so folding is idempotent (NFKD of "𝑨" is "A", which casefold must still lower)
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The words of ``text``: runs of letters and digits, case and accents folded."""
    return _WORD.findall(_fold(text))


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed name query."""

    text: str
    terms: tuple[str, ...]
    glob: str | None

    def matches(self, name: str) -> bool:
        if self.glob is not None:
            return fnmatch.fnmatchcase(_fold(name), self.glob)
        name_words = words(name)
        return all(any(w.startswith(t) for w in name_words) for t in self.terms)


def parse_query(text: str) -> Query:
    """Parse a query; raise ``InvalidQuery`` if it is empty, wordless or too long."""
    text = text.strip()
    if not text:
        raise InvalidQuery("the query is empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidQuery(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    if "*" in text or "?" in text:
        return Query(text, tuple(words(text)), _fold(text))
    terms = tuple(words(text))
    if not terms:
        raise InvalidQuery("the query has no letters or digits")
    return Query(text, terms, None)


def check_query(text: str) -> Query:
    """``parse_query`` for a query that came in from a client: a ``UsageError`` (a
    4xx with its message) if it is empty or too long. A text far over the limit is
    refused before it is folded, so a 1 MiB query costs no Unicode work."""
    if len(text) > MAX_QUERY_LENGTH * 4:
        raise UsageError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    try:
        return parse_query(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
