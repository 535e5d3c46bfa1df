"""The query router: where an overlay query goes next, and whether to answer it.

docs/design.md, Network: *Search*. A query carries an id (random, 128 bits), a TTL
and a mode:

- **flood**: the peer that starts the query sends it to every neighbour with
  the full TTL; a peer that receives it answers with its own matches and sends
  it on to every other neighbour (not the one it came from, nor the peer that
  started it) with TTL − 1, while the TTL stays positive. So a query with TTL
  ``t`` reaches exactly the peers within ``t`` hops of the asker.
- **walk**: ``walkers`` random walks of ``ttl`` hops each; every hop sends each
  walker to one random neighbour other than the previous one. Walkers that pick
  the same neighbour travel in one message (``walkers`` counts them), so a walk
  costs at most walkers × TTL messages.

Every peer remembers the ids it has seen (a bounded memory whose entries expire)
and answers each id at most once: a repeated flood query gets nothing, unless it
arrives with a larger TTL than before (it came by a shorter path, later than a
longer one): then it is only sent on, so the reach stays exactly ``t`` hops
whatever order messages arrive in. A walker that comes back to a peer walks on
without a second answer.

Replies. Every message gets a reply (hits, and done when no more will come: the
adapter's reverse paths), except a flood copy that crossed one going the other
way, which most duplicates are: both ends of a link forward the same query to
each other. A flood message is marked ``covers`` when its sender had not heard
the query from the receiver: the sender then knew the query with TTL at least
``ttl + 1``, so a copy the receiver sends it with a TTL up to that is a duplicate
there, answered with nothing. The sender does not reply to such a copy, and the
receiver, on getting the covering message, stops waiting for that reply: both
decide from the same two TTLs, so they agree whatever order the messages cross
in. And a peer does not send a flood copy to a neighbour that already sent it
the query with at least the TTL it would give it. Neither changes the reach,
only the number of messages.

The router does no I/O: it returns a ``Route`` (answer or not, and which
messages to send), and the adapter (``p2pshare.peer.overlay.network``) sends them and
streams the hits back along the reverse path.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from p2pshare.errors import UsageError

if TYPE_CHECKING:
    from random import Random

DEFAULT_TTL = 4
MAX_TTL = 8
MAX_WALKERS = 64
MAX_QUERY_ID = 64  # characters of a query id a peer accepts
DEFAULT_DEADLINE = 3.0  # seconds a relayed query may take when its sender set no deadline
MAX_DEADLINE = 30.0  # seconds a relayed query may take at most
DEFAULT_MEMORY = 10_000
DEFAULT_REMEMBER_FOR = 120.0


class Mode(enum.Enum):
    FLOOD = "flood"
    WALK = "walk"


@dataclass(frozen=True, slots=True)
class Query:
    """One overlay query message: its id, hops left, and how it travels."""

    query_id: str
    ttl: int
    mode: Mode = Mode.FLOOD
    walkers: int = 1  # walkers carried by this message (walk mode only)
    origin: str = ""  # the address of the peer that started the query
    covers: bool = False  # flood: the sender had not heard it from the receiver


@dataclass(frozen=True, slots=True)
class Route:
    """What a peer does with a query: answer it from its own share or not, the
    messages to send (neighbour address, query), and whether the sender is owed a
    reply (not when a covering message from us stands for it)."""

    answer: bool
    forward: tuple[tuple[str, Query], ...] = ()
    reply: bool = True


@dataclass(slots=True)
class _Seen:
    """What a peer remembers of one query id."""

    expires: float
    ttl: int  # the largest TTL it arrived with
    heard: dict[str, int] = field(default_factory=dict)  # flood: neighbour -> largest TTL from it
    covered: dict[str, int] = field(
        default_factory=dict
    )  # flood: neighbour -> largest covering TTL


def check_query(*, ttl: int, walkers: int) -> None:
    """``UsageError`` unless ``ttl`` and ``walkers`` are within bounds."""
    if not 0 <= ttl <= MAX_TTL:
        raise UsageError(f"ttl must be between 0 and {MAX_TTL}")
    if not 0 <= walkers <= MAX_WALKERS:
        raise UsageError(f"walkers must be between 0 (flood) and {MAX_WALKERS}")


def admit(*, query_id: str, ttl: int, mode: Mode, walkers: int, origin: str, covers: bool) -> Query:
    """The query a neighbour's message stands for: its id checked (``UsageError``), its
    TTL and number of walkers clamped to what this peer relays."""
    if not query_id or len(query_id) > MAX_QUERY_ID:
        raise UsageError(f"query_id must be 1 to {MAX_QUERY_ID} characters")
    return Query(
        query_id,
        min(ttl, MAX_TTL),
        mode,
        min(max(walkers, 1), MAX_WALKERS),
        origin=origin,
        covers=covers,
    )


def relay_deadline(timeout_ms: int) -> float:
    """Seconds a relayed query may take here: what its sender gave it (none: the
    default), at most ``MAX_DEADLINE``."""
    return min(timeout_ms / 1000 or DEFAULT_DEADLINE, MAX_DEADLINE)


def downstream_timeout(remaining: float) -> float:
    """Seconds the next hop gets of the ``remaining`` ones: a tenth less, at most 100 ms
    less, so that what it finds still reaches our upstream in time (the deepest
    peers stop first)."""
    return remaining - min(0.1, remaining / 10)


def new_query_id(rng: Random) -> str:
    return f"{rng.getrandbits(128):032x}"


class QueryRouter:
    """Routes the queries one peer starts and receives."""

    def __init__(
        self, *, memory: int = DEFAULT_MEMORY, remember_for: float = DEFAULT_REMEMBER_FOR
    ) -> None:
        if memory < 1:
            raise ValueError("memory must be positive")
        self.memory = memory
        self.remember_for = remember_for
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, query_id: str, now: float) -> bool:
        self._expire(now)
        return query_id in self._seen

    def start(
        self,
        *,
        me: str,
        ttl: int,
        walkers: int,
        neighbours: Sequence[str],
        now: float,
        rng: Random,
    ) -> tuple[Query, Route]:
        """A new query from this peer: flood if ``walkers`` is 0, else random walks."""
        check_query(ttl=ttl, walkers=walkers)
        mode = Mode.WALK if walkers else Mode.FLOOD
        query = Query(new_query_id(rng), ttl, mode, walkers or 1, origin=me)
        seen = self._remember(query.query_id, ttl, now)
        if ttl == 0 or not neighbours:
            return query, Route(answer=True)
        if mode is Mode.FLOOD:
            seen.covered.update(dict.fromkeys(neighbours, ttl))
            return query, Route(True, tuple((n, replace(query, covers=True)) for n in neighbours))
        picks = [rng.choice(neighbours) for _ in range(walkers)]
        return query, Route(True, _group(query, picks))

    def receive(
        self,
        query: Query,
        *,
        sender: str,
        neighbours: Sequence[str],
        now: float,
        rng: Random,
    ) -> Route:
        """``query`` arrived from ``sender``: answer it or not, and where it goes on."""
        self._expire(now)
        known = self._seen.get(query.query_id)
        first = known is None
        if query.mode is Mode.FLOOD:
            if known is not None:
                known.heard[sender] = max(known.heard.get(sender, 0), query.ttl)
                if known.ttl >= query.ttl:
                    covered = known.covered.get(sender, -1) + 1 >= query.ttl
                    return Route(answer=False, reply=not covered)
            seen = self._remember(query.query_id, query.ttl, now)
            seen.heard[sender] = max(seen.heard.get(sender, 0), query.ttl)
            if query.ttl <= 1:
                return Route(answer=first)
            ttl = query.ttl - 1
            forward = []
            for n in neighbours:
                if n in (sender, query.origin) or seen.heard.get(n, -1) + 1 >= ttl:
                    continue  # it sent us the query with at least as much TTL left
                covers = n not in seen.heard
                if covers:
                    seen.covered[n] = max(seen.covered.get(n, 0), ttl)
                forward.append((n, replace(query, ttl=ttl, covers=covers)))
            return Route(first, tuple(forward))
        self._remember(query.query_id, query.ttl, now)
        if query.ttl <= 1:
            return Route(answer=first)
        others = [n for n in neighbours if n != sender]
        if not others:
            return Route(answer=first)  # a dead end: the walkers stop here
        picks = [rng.choice(others) for _ in range(query.walkers)]
        return Route(first, _group(replace(query, ttl=query.ttl - 1, covers=False), picks))

    def _remember(self, query_id: str, ttl: int, now: float) -> _Seen:
        seen = self._seen.pop(query_id, None)
        if seen is None:
            seen = _Seen(now + self.remember_for, ttl)
        else:
            seen.expires, seen.ttl = now + self.remember_for, max(ttl, seen.ttl)
        self._seen[query_id] = seen
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return seen

    def _expire(self, now: float) -> None:
        while self._seen:
            query_id, seen = next(iter(self._seen.items()))
            if seen.expires > now:
                return
            del self._seen[query_id]


def _group(query: Query, picks: list[str]) -> tuple[tuple[str, Query], ...]:
    """One message per picked neighbour, carrying as many walkers as picked it."""
    counts: dict[str, int] = {}
    for address in picks:
        counts[address] = counts.get(address, 0) + 1
    return tuple((a, replace(query, walkers=n)) for a, n in counts.items())
