"""The neighbour table: which peers this peer keeps as its overlay neighbours.

An unstructured overlay (docs/design.md, Network: *Overlay*): every peer keeps a
bounded set of neighbours, replaces the ones that stop answering and learns new
ones from the tracker's sample, a list saved at its last run, the seeds of its
config, what neighbours tell it in ``Hello`` and the peers that call it.

Links are symmetric: a peer that calls us (``heard_from``) becomes our
neighbour while we have fewer than ``capacity``, and the ``Hello`` answer says
whether we took it (``accepted``); a peer that refuses us is only a candidate.
A peer dials candidates only while it has fewer than ``capacity // 2``
neighbours and keeps the other half of its slots for peers that call it (the
low and high water marks of libp2p's connection manager): each newcomer then
takes as many free slots as it brings, so a network of full tables still has
room for the next peer, and a newcomer is reachable from the peers it joined.

Life of an address::

    candidate ─due()─▶ trying ─answered(accepted)─▶ neighbour ─failed() × max_failures─▶ dropped
        ▲                │ failed() or refused          ▲       or refused our ping
        └─ retry_after ──┘         heard_from() ────────┘  (the next peer to join takes its
                                   while there is room      slot: Added(replaces=...))
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from random import Random

DEFAULT_CAPACITY = 8
DEFAULT_MAX_FAILURES = 3
DEFAULT_PING_EVERY = 15.0
DEFAULT_RETRY_AFTER = 30.0
DEFAULT_MAX_CANDIDATES = 256


@dataclass
class Neighbour:
    """A peer in the table and what we know of its liveness."""

    address: str
    peer_id: str
    added: float
    last_seen: float
    failures: int = 0  # consecutive failed contacts


@dataclass(frozen=True, slots=True)
class Added:
    """``address`` became a neighbour, in the slot ``replaces`` left (if any)."""

    address: str
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """``address`` is no longer a neighbour, and why."""

    address: str
    why: str


Change = Added | Dropped


class NeighbourTable:
    """A bounded set of neighbours plus a bounded pool of candidates."""

    def __init__(
        self,
        *,
        me: str,
        capacity: int = DEFAULT_CAPACITY,
        max_failures: int = DEFAULT_MAX_FAILURES,
        ping_every: float = DEFAULT_PING_EVERY,
        retry_after: float = DEFAULT_RETRY_AFTER,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> None:
        if capacity < 1 or max_failures < 1 or max_candidates < 1:
            raise ValueError("capacity, max_failures and max_candidates must be positive")
        self.me = me
        self.capacity = capacity
        self.max_failures = max_failures
        self.ping_every = ping_every
        self.retry_after = retry_after
        self.max_candidates = max_candidates
        self._neighbours: dict[str, Neighbour] = {}
        # address -> when it was last tried (None: never); oldest offers first
        self._candidates: OrderedDict[str, float | None] = OrderedDict()
        self._trying: set[str] = set()
        self._pinging: set[str] = set()
        self._vacated: deque[str] = deque(maxlen=capacity)

    # -- what the table holds ---------------------------------------------------

    def addresses(self) -> list[str]:
        """The neighbours' addresses, oldest neighbour first."""
        return list(self._neighbours)

    def get(self, address: str) -> Neighbour | None:
        return self._neighbours.get(address)

    def candidates(self) -> list[str]:
        return list(self._candidates)

    def __len__(self) -> int:
        return len(self._neighbours)

    def __contains__(self, address: object) -> bool:
        return address in self._neighbours

    @property
    def full(self) -> bool:
        return len(self._neighbours) >= self.capacity

    @property
    def dial_to(self) -> int:
        """Candidates are dialled while there are fewer neighbours than this."""
        return max(1, self.capacity // 2)

    # -- inputs -------------------------------------------------------------------

    def set_me(self, me: str) -> None:
        """Our own address (known once the server is bound); never a neighbour."""
        self.me = me
        self._neighbours.pop(me, None)
        self._candidates.pop(me, None)

    def offer(self, addresses: Iterable[str]) -> None:
        """Addresses heard of (tracker sample, saved list, seeds, a neighbour's Hello)."""
        for address in addresses:
            if not address or address == self.me or address in self._neighbours:
                continue
            if address in self._candidates:
                continue
            self._candidates[address] = None
            while len(self._candidates) > self.max_candidates:
                # forget the oldest offer that is not being tried right now
                oldest = next((a for a in self._candidates if a not in self._trying), None)
                if oldest is None:
                    break
                del self._candidates[oldest]

    def due(self, now: float, rng: Random) -> list[str]:
        """Whom to send a ``Hello`` now: neighbours not heard of for ``ping_every``
        seconds, and random candidates while there are fewer than ``dial_to``
        neighbours (each candidate tried again at most every ``retry_after``
        seconds). Report each with ``answered`` or ``failed``."""
        pings = [
            n.address
            for n in self._neighbours.values()
            if now - n.last_seen >= self.ping_every and n.address not in self._pinging
        ]
        self._pinging.update(pings)
        free = self.dial_to - len(self._neighbours) - len(self._trying)
        tries: list[str] = []
        if free > 0:
            ready = [
                a
                for a, tried in self._candidates.items()
                if a not in self._trying and (tried is None or now - tried >= self.retry_after)
            ]
            tries = rng.sample(ready, min(free, len(ready)))
            for address in tries:
                self._candidates[address] = now
            self._trying.update(tries)
        return pings + tries

    def answered(
        self,
        address: str,
        now: float,
        *,
        peer_id: str = "",
        known: Iterable[str] = (),
        accepted: bool = True,
    ) -> Change | None:
        """``address`` answered our ``Hello``: ``accepted`` says whether it keeps us as
        its neighbour, ``known`` lists the peers it told us of."""
        self._pinging.discard(address)
        self._trying.discard(address)
        self.offer(known)
        if not accepted:
            if self._neighbours.pop(address, None) is not None:
                self._vacated.append(address)
                self._candidates[address] = now
                return Dropped(address, "no longer keeps us as a neighbour")
            self._candidates[address] = now  # full: tried again after retry_after
            return None
        return self._alive(address, now, peer_id)

    def heard_from(self, address: str, now: float, *, peer_id: str = "") -> Change | None:
        """``address`` called us (``Hello`` or a query): it is alive, and it becomes a
        neighbour while there is room. Whether it is one afterwards (``address in
        table``) is the ``accepted`` of our ``Hello`` answer."""
        return self._alive(address, now, peer_id)

    def failed(self, address: str, now: float) -> Change | None:
        """A call to ``address`` failed; ``Dropped`` once it failed ``max_failures``
        times in a row (its slot goes to the next candidate that answers)."""
        self._pinging.discard(address)
        if address in self._trying:
            self._trying.discard(address)
            return None  # a candidate: tried again after retry_after
        n = self._neighbours.get(address)
        if n is None:
            return None
        n.failures += 1
        if n.failures < self.max_failures:
            return None
        del self._neighbours[address]
        self._vacated.append(address)
        # keep it as a candidate: it may come back, but only after retry_after
        self._candidates[address] = now
        self._candidates.move_to_end(address, last=False)
        return Dropped(address, f"failed {n.failures} times in a row")

    # -- internals ----------------------------------------------------------------

    def _alive(self, address: str, now: float, peer_id: str) -> Change | None:
        if not address or address == self.me:
            return None
        n = self._neighbours.get(address)
        if n is not None:
            n.last_seen, n.failures = now, 0
            n.peer_id = peer_id or n.peer_id
            return None
        if self.full:
            self.offer([address])
            return None
        self._candidates.pop(address, None)
        self._trying.discard(address)
        self._neighbours[address] = Neighbour(address, peer_id, added=now, last_seen=now)
        replaces = self._vacated.popleft() if self._vacated else None
        return Added(address, replaces)
