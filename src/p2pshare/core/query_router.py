"""The query router: where an overlay query goes next, and whether to answer it.

DESIGN.md, Network: *Search*. A query carries an id (random, 128 bits), a TTL
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

The router does no I/O: it returns a ``Route`` (answer or not, and which
messages to send), and the adapter (``p2pshare.peer.overlay``) sends them and
streams the hits back along the reverse path.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

DEFAULT_TTL = 4
MAX_TTL = 8
MAX_WALKERS = 64
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


@dataclass(frozen=True, slots=True)
class Route:
    """What a peer does with a query: answer it from its own share or not, and the
    messages to send (neighbour address, query)."""

    answer: bool
    forward: tuple[tuple[str, Query], ...] = ()


def check_query(*, ttl: int, walkers: int) -> None:
    """``ValueError`` unless ``ttl`` and ``walkers`` are within bounds."""
    if not 0 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 0 and {MAX_TTL}")
    if not 0 <= walkers <= MAX_WALKERS:
        raise ValueError(f"walkers must be between 0 (flood) and {MAX_WALKERS}")


def new_query_id(rng: random.Random) -> str:
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
        # query id -> (expires at, largest TTL it arrived with)
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

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
        rng: random.Random,
    ) -> tuple[Query, Route]:
        """A new query from this peer: flood if ``walkers`` is 0, else random walks."""
        check_query(ttl=ttl, walkers=walkers)
        mode = Mode.WALK if walkers else Mode.FLOOD
        query = Query(new_query_id(rng), ttl, mode, walkers or 1, origin=me)
        self._remember(query.query_id, ttl, now)
        if ttl == 0 or not neighbours:
            return query, Route(answer=True)
        if mode is Mode.FLOOD:
            return query, Route(True, tuple((n, query) for n in neighbours))
        picks = [rng.choice(neighbours) for _ in range(walkers)]
        return query, Route(True, _group(query, picks))

    def receive(
        self,
        query: Query,
        *,
        sender: str,
        neighbours: Sequence[str],
        now: float,
        rng: random.Random,
    ) -> Route:
        """``query`` arrived from ``sender``: answer it or not, and where it goes on."""
        self._expire(now)
        known = self._seen.get(query.query_id)
        first = known is None
        if query.mode is Mode.FLOOD:
            if known is not None and known[1] >= query.ttl:
                return Route(answer=False)
            self._remember(query.query_id, query.ttl, now)
            if query.ttl <= 1:
                return Route(answer=first)
            onward = replace(query, ttl=query.ttl - 1)
            targets = [n for n in neighbours if n not in (sender, query.origin)]
            return Route(first, tuple((n, onward) for n in targets))
        self._remember(query.query_id, query.ttl, now)
        if query.ttl <= 1:
            return Route(answer=first)
        others = [n for n in neighbours if n != sender]
        if not others:
            return Route(answer=first)  # a dead end: the walkers stop here
        picks = [rng.choice(others) for _ in range(query.walkers)]
        return Route(first, _group(replace(query, ttl=query.ttl - 1), picks))

    def _remember(self, query_id: str, ttl: int, now: float) -> None:
        old = self._seen.pop(query_id, None)
        self._seen[query_id] = (now + self.remember_for, max(ttl, old[1] if old else 0))
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            query_id, (expires, _) = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[query_id]


def _group(query: Query, picks: list[str]) -> tuple[tuple[str, Query], ...]:
    """One message per picked neighbour, carrying as many walkers as picked it."""
    counts: dict[str, int] = {}
    for address in picks:
        counts[address] = counts.get(address, 0) + 1
    return tuple((a, replace(query, walkers=n)) for a, n in counts.items())
