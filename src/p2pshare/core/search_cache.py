"""Search answers kept until a change could alter them.

A tracker answers a one-word search over 100,000 names by visiting some 200 rows of
its index (260 us); the same search, remembered, costs a dictionary lookup. An
answer stays right until

- a file is added or removed whose name has a word starting with one of the query's
  terms: it may enter or leave the answer. ``forget_words`` is told the words of
  each such name (the caller also tells it the words of every other name of that
  content, since the answer lists the content's providers whatever the name);
- one of its providers lets its lease run out: ``valid_until``, the earliest lease
  among them, given by the caller.

An answer cut at its limit says where (``last_rank``: the rank, in the order the
search reads names, of the last name it read). A name ranked after it can neither
enter nor leave the answer, so a change to it leaves the answer be: the tracker reads
names in the order they were first registered, so new names, most of what peers
joining bring, touch no answer already full.

A query's terms are the words every matching name has a word starting with, so a
name word ``w`` can only touch answers filed under a prefix of ``w``: invalidation
looks up ``len(w)`` keys, however many answers are kept.

Memory is bounded by ``max_bytes``, the least recently used answers going first. An
answer is kept as one opaque value (the tracker keeps the JSON it sends, compressed):
keeping each hit once and sharing it between answers took less memory only when the
cache held nearly every answer, and its bookkeeping cost 60-100 us per answer kept.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SearchCache"]

_ENTRY_BYTES = 240
"""What an answer costs beside its value: the key, the entry, the dict slots, its terms."""


@dataclass(slots=True)
class _Answer:
    value: bytes
    terms: tuple[str, ...]
    valid_until: float
    size: int
    last_rank: int | None


class SearchCache:
    """Answers by key (a query and its limit), each filed under its query's terms."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._answers: dict[Hashable, _Answer] = {}  # least recently used first
        self._by_term: dict[str, set[Hashable]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: Hashable, now: float) -> bytes | None:
        """The answer kept for ``key`` if it still holds at ``now``."""
        answer = self._answers.pop(key, None)
        if answer is not None and now >= answer.valid_until:
            self._release(key, answer)
            answer = None
        if answer is None:
            return None
        self._answers[key] = answer  # now the most recently used
        return answer.value

    def put(
        self,
        key: Hashable,
        terms: Sequence[str],
        value: bytes,
        valid_until: float,
        *,
        last_rank: int | None = None,
    ) -> None:
        """Keep ``value`` for ``key`` until a name with a word starting with one of
        ``terms`` changes (``forget_words``), or until ``valid_until``. ``terms`` must
        not be empty: an answer no term bounds could change with any name.
        ``last_rank``: for an answer cut at its limit, the rank of the last name read."""
        if not terms:
            raise ValueError("an answer is filed under at least one term")
        old = self._answers.pop(key, None)
        if old is not None:
            self._release(key, old)
        answer = _Answer(
            value,
            tuple(dict.fromkeys(terms)),
            valid_until,
            sys.getsizeof(value) + _ENTRY_BYTES,
            last_rank,
        )
        self._answers[key] = answer
        for term in answer.terms:
            self._by_term.setdefault(term, set()).add(key)
        self.bytes += answer.size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._answers))
            self._release(oldest, self._answers.pop(oldest))

    def forget_words(self, name_words: Iterable[str], rank: int | None = None) -> int:
        """Drop the answers a name with these words (of rank ``rank``; None: unknown)
        could enter or leave; return how many."""
        dropped = 0
        for word in name_words:
            for end in range(1, len(word) + 1):
                keys = self._by_term.get(word[:end])
                if not keys:
                    continue
                for key in list(keys):
                    last = self._answers[key].last_rank
                    if rank is None or last is None or rank <= last:
                        self._release(key, self._answers.pop(key))
                        dropped += 1
        return dropped

    def clear(self) -> None:
        self._answers.clear()
        self._by_term.clear()
        self.bytes = 0

    def _release(self, key: Hashable, answer: _Answer) -> None:
        """Release what ``answer``, already out of ``_answers``, held."""
        for term in answer.terms:
            keys = self._by_term[term]
            keys.discard(key)
            if not keys:
                del self._by_term[term]
        self.bytes -= answer.size
