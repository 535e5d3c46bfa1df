"""Reverse paths: where the hits of a relayed query go, and when the query is over here.

docs/design.md, Network: *Search*. Overlay queries and their replies travel on one
long-lived stream per pair of neighbours (``p2pshare.peer.overlay.network``), so the
replies of many queries share a stream and each must say which query it answers.
A peer that sends a query on gives it a **tag**, its own handle for the query,
and the neighbours' replies carry that tag back: hits to relay, and ``done`` when
a neighbour has nothing more. One query id may be open twice at one peer (a flood
copy that came again by a shorter path is sent on again), so the tag, not the
query id, names what is open here.

A ``Relay`` is one query open at this peer: where its hits go (the link and the
tag it came with, or nowhere when it started here: the asker reads it), and the
links whose replies are still to come. It is over when every one of those said
``done`` or was lost (or a covering flood copy from it stands for its reply:
``QueryRouter``), or at its deadline; it is cancelled when its upstream
cancels it or is lost. The table does no I/O and holds links as opaque keys: the
adapter sends what the answers say.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

L = TypeVar("L", bound=Hashable)

MAX_TAG = 0xFFFF_FFFF  # tags are uint32 on the wire; 0 is never used


@dataclass(eq=False, slots=True)
class Relay(Generic[L]):
    """One query open at this peer."""

    tag: int
    query_id: str
    upstream: L | None  # None: this peer started the query
    up_tag: int  # the upstream's tag, which our replies carry
    ttl: int  # the TTL the messages we sent for it carried
    deadline: float
    waiting: dict[L, int] = field(default_factory=dict)  # link -> hits taken from it


@dataclass(frozen=True, slots=True)
class Taken(Generic[L]):
    """What to do with one reply: pass on its first ``hits`` hits to ``relay``'s
    upstream, and if ``over``, tell the upstream the query is done here."""

    relay: Relay[L]
    hits: int
    over: bool


class ReversePaths(Generic[L]):
    """The queries open at one peer, by their tag and by the upstream tag they came with."""

    def __init__(self, *, max_hits_per_link: int) -> None:
        self.max_hits_per_link = max_hits_per_link
        self._by_tag: dict[int, Relay[L]] = {}
        self._by_upstream: dict[tuple[L, int], Relay[L]] = {}
        self._by_query: dict[str, list[Relay[L]]] = {}
        self._deadlines: list[tuple[float, int]] = []  # a heap; closed tags are skipped
        self._next_tag = 1
        self.relaying = 0  # open relays that came from a neighbour (not started here)

    def __len__(self) -> int:
        return len(self._by_tag)

    def get(self, tag: int) -> Relay[L] | None:
        return self._by_tag.get(tag)

    def came_from(self, upstream: L, up_tag: int) -> bool:
        """Whether a query ``upstream`` sent with ``up_tag`` is open here."""
        return (upstream, up_tag) in self._by_upstream

    def open(
        self,
        *,
        query_id: str,
        upstream: L | None,
        up_tag: int,
        ttl: int,
        downstream: Iterable[L],
        deadline: float,
    ) -> Relay[L]:
        """A query sent on to ``downstream`` with ``ttl``; its replies are awaited until
        ``deadline``."""
        tag = self._new_tag()
        relay = Relay(tag, query_id, upstream, up_tag, ttl, deadline, dict.fromkeys(downstream, 0))
        self._by_tag[tag] = relay
        self._by_query.setdefault(query_id, []).append(relay)
        if upstream is not None:
            self._by_upstream[(upstream, up_tag)] = relay
            self.relaying += 1
        heapq.heappush(self._deadlines, (deadline, tag))
        return relay

    def reply(self, tag: int, link: L, *, hits: int, done: bool) -> Taken[L] | None:
        """A reply from ``link`` for ``tag``; ``None`` if nothing is open for it there
        (the query is over, or ``link`` was never asked). A link's hits beyond
        ``max_hits_per_link`` are dropped and it counts as done."""
        relay = self._by_tag.get(tag)
        if relay is None or link not in relay.waiting:
            return None
        taken = min(hits, self.max_hits_per_link - relay.waiting[link])
        relay.waiting[link] += taken
        if done or relay.waiting[link] >= self.max_hits_per_link:
            del relay.waiting[link]
        over = not relay.waiting
        if over:
            self._remove(relay)
        return Taken(relay, taken, over)

    def covered(self, query_id: str, link: Callable[[L], bool], ttl: int) -> list[Taken[L]]:
        """A covering flood copy of ``query_id`` with ``ttl`` came from the peer whose
        links ``link`` picks: it stands for that peer's (empty) reply to each copy we
        sent it with a TTL up to ``ttl + 1``. What to tell the upstreams, as ``reply``."""
        out = []
        for relay in list(self._by_query.get(query_id, ())):
            if relay.ttl > ttl + 1:
                continue
            for waiting in [w for w in relay.waiting if link(w)]:
                del relay.waiting[waiting]
                over = not relay.waiting
                if over:
                    self._remove(relay)
                out.append(Taken(relay, 0, over))
        return out

    def cancel(self, upstream: L, up_tag: int) -> Relay[L] | None:
        """``upstream`` no longer wants the query it sent with ``up_tag``: the relay,
        closed (its ``waiting`` links are owed a cancel), or ``None``."""
        relay = self._by_upstream.get((upstream, up_tag))
        if relay is not None:
            self._remove(relay)
        return relay

    def close(self, relay: Relay[L]) -> bool:
        """Close ``relay`` (its asker stopped reading); whether it was still open."""
        if self._by_tag.get(relay.tag) is not relay:
            return False
        self._remove(relay)
        return True

    def lost(self, link: L) -> tuple[list[Relay[L]], list[Relay[L]]]:
        """``link`` is gone: the relays now over (every other link has replied: their
        upstream is owed a done) and those cancelled (they came from ``link``: their
        ``waiting`` links are owed a cancel). Both are closed."""
        over, cancelled = [], []
        for relay in list(self._by_tag.values()):
            if relay.upstream == link:
                self._remove(relay)
                cancelled.append(relay)
            elif link in relay.waiting:
                del relay.waiting[link]
                if not relay.waiting:
                    self._remove(relay)
                    over.append(relay)
        return over, cancelled

    def expired(self, now: float) -> list[Relay[L]]:
        """The relays whose deadline has come, closed: their upstream is owed a done and
        their ``waiting`` links a cancel."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, tag = heapq.heappop(self._deadlines)
            relay = self._by_tag.get(tag)
            if relay is not None:
                self._remove(relay)
                out.append(relay)
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open relay (``None``: no relay is open): when
        ``expired`` has something to say next."""
        while self._deadlines:
            deadline, tag = self._deadlines[0]
            relay = self._by_tag.get(tag)
            if relay is not None and relay.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)  # closed before its deadline
        return None

    def _remove(self, relay: Relay[L]) -> None:
        del self._by_tag[relay.tag]
        same = self._by_query[relay.query_id]
        same.remove(relay)
        if not same:
            del self._by_query[relay.query_id]
        if relay.upstream is not None:
            del self._by_upstream[(relay.upstream, relay.up_tag)]
            self.relaying -= 1
        if not self._by_tag:
            self._deadlines.clear()  # every entry left would be skipped anyway

    def _new_tag(self) -> int:
        tag = self._next_tag
        while tag in self._by_tag:
            tag = tag % MAX_TAG + 1
        self._next_tag = tag % MAX_TAG + 1
        return tag
