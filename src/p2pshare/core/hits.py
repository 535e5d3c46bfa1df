"""Search hits merged: one hit per content id, with every provider once.

A search asks several sources (the tracker's index, the overlay, this peer's
share), and the overlay answers once per provider. ``HitMerger`` is the one
rule that turns all those answers into the list a user sees: the first answer
for a content id gives its name and size, each later one only adds the
providers not known yet (by address); ``ranked`` puts the most-provided first,
then by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Provider:
    """A peer that provides a content id: its id at the tracker (may be empty) and
    the address it is dialled at."""

    peer_id: str
    address: str


@dataclass(slots=True)
class Hit:
    """One content id whose name matched, with the providers found so far."""

    content_id: str
    name: str
    size: int
    providers: list[Provider] = field(default_factory=list)


class HitMerger:
    """Collects hits from any number of sources, merged by content id."""

    def __init__(self) -> None:
        self._hits: dict[str, Hit] = {}

    def add(self, content_id: str, name: str, size: int, providers: Iterable[Provider]) -> None:
        known = self._hits.get(content_id)
        if known is None:
            known = self._hits[content_id] = Hit(content_id, name, size)
        seen = {p.address for p in known.providers}
        for p in providers:
            if p.address not in seen:
                seen.add(p.address)
                known.providers.append(p)

    def hits(self) -> list[Hit]:
        """The merged hits, in the order their content ids were first heard of."""
        return list(self._hits.values())

    def ranked(self, limit: int) -> list[Hit]:
        """At most ``limit`` hits: the most providers first, then by name."""
        return sorted(self._hits.values(), key=lambda h: (-len(h.providers), h.name))[:limit]
