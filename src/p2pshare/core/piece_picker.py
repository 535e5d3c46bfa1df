"""Piece scheduling: which piece to ask of which provider next.

A pure state machine. The downloader tells it what happens (a provider joins,
a piece arrives, a request fails, a provider lies) and asks it for the next
batch of pieces for one provider. Policy:

- rarest first: among the pieces a provider has, the ones fewest providers have
  go first; ties are broken in index order from the download's ``start``, wrapping
  around, so a run on one provider reads the file sequentially, while downloaders
  that start at different places fetch different pieces of a seeder and then have
  pieces to trade (all starting at piece 0, eight downloaders of one seeder held the
  same pieces at the same time: the seeder sent 3.5 GB of the 4.5 GB a swarm of a
  512 MiB file moved, the downloaders 22-307 MB each);
- a piece is in flight with at most one provider at a time, except in the
  endgame: when nothing unrequested is left, a provider may duplicate a piece
  in flight elsewhere, so one slow provider cannot hold up the last pieces;
- a provider that sent a bad piece is banned and never asked again;
- each provider has a window of pieces in flight that follows its measured
  throughput (about ``QUEUE_SECONDS`` of its data, within bounds), so a fast
  provider is kept busy while a slow one holds few pieces back from the others.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from p2pshare.core.availability import Availability
from p2pshare.core.pieces import PieceSet

P = TypeVar("P", bound=Hashable)


INITIAL_WINDOW = 8  # pieces in flight before a provider's rate is known
MIN_WINDOW = 2
MAX_WINDOW = 64
QUEUE_SECONDS = 1.0  # a window holds about this much of a provider's data
MAX_REQUESTERS = 2  # endgame: a piece is asked of at most this many providers at once
RATE_TAU = 2.0  # seconds: the time constant of the throughput average
MIN_OBSERVED = 0.05  # seconds: the shortest span a rate is computed over


class Throughput:
    """Bytes per second received from one source, averaged over about ``RATE_TAU``
    seconds (each byte weighted by ``exp(-age / RATE_TAU)``)."""

    __slots__ = ("decayed_bytes", "first_update", "last_update")

    def __init__(self) -> None:
        self.decayed_bytes = 0.0
        self.first_update = 0.0
        self.last_update: float | None = None

    def rate(self, now: float) -> float:
        """Bytes per second as of ``now`` (0 before anything was counted)."""
        if self.last_update is None:
            return 0.0
        # divide by the weight of the time observed, not by RATE_TAU: a provider
        # seen for a tenth of a second is not credited with a twentieth of its speed
        observed = max(now - self.first_update, MIN_OBSERVED)
        weight = RATE_TAU * (1 - math.exp(-observed / RATE_TAU))
        return self.decayed_bytes * math.exp(-(now - self.last_update) / RATE_TAU) / weight

    def rate_when_last_heard(self) -> float:
        """The rate as of the last count: what to expect when the source goes quiet."""
        return 0.0 if self.last_update is None else self.rate(self.last_update)

    def count(self, size: int, now: float) -> None:
        """``size`` bytes arrived at ``now``."""
        if self.last_update is None:
            self.first_update = now
        else:
            self.decayed_bytes *= math.exp(-(now - self.last_update) / RATE_TAU)
        self.decayed_bytes += size
        self.last_update = now


@dataclass
class _Provider:
    in_flight: set[int] = field(default_factory=set)
    received: int = 0
    meter: Throughput = field(default_factory=Throughput)


class PiecePicker(Generic[P]):
    """Hands out pieces of one file to providers."""

    def __init__(
        self, count: int, held: PieceSet | None = None, *, piece_size: int = 1, start: int = 0
    ) -> None:
        """``start``: the piece this download begins at (see the module's policy)."""
        self._held = held if held is not None else PieceSet(count)
        if self._held.count != count:
            raise ValueError("held set does not match the piece count")
        if not 0 <= start < max(count, 1):
            raise ValueError("start is not a piece of the file")
        self._start = start
        self._count = count
        self._piece_size = piece_size
        self._providers: dict[P, _Provider] = {}
        self._sources: Availability[P] = Availability(count)
        self._requested: dict[int, set[P]] = {}
        self._delivered: dict[P, int] = {}  # verified bytes from each provider, kept after it goes

    @property
    def held(self) -> PieceSet:
        return self._held

    @property
    def complete(self) -> bool:
        return self._held.complete

    @property
    def providers(self) -> list[P]:
        return list(self._providers)

    def is_banned(self, provider: P) -> bool:
        return self._sources.is_banned(provider)

    def add_provider(self, provider: P, have: PieceSet | None = None) -> bool:
        """Add a provider (``have=None``: it has every piece); False if banned or known."""
        if not self._sources.add(provider, have):
            return False
        self._providers[provider] = _Provider()
        return True

    def is_seeder(self, provider: P) -> bool:
        return self._sources.is_seeder(provider)

    def update_have(self, provider: P, have: PieceSet | None) -> None:
        """A provider still downloading tells what it holds now (``None``: everything)."""
        self._sources.update(provider, have)

    def add_have(self, provider: P, index: int) -> bool:
        """A provider still downloading announced piece ``index`` (a pushed ``Have``);
        True if that is news."""
        return self._sources.add_have(provider, index)

    def remove_provider(self, provider: P) -> None:
        """Forget a provider; its pieces in flight go back to the pool."""
        self._sources.remove(provider)
        state = self._providers.pop(provider, None)
        if state is not None:
            for i in state.in_flight:
                self._unrequest(i, provider)

    def ban(self, provider: P) -> None:
        """A provider sent a bad piece: drop it for the rest of this download."""
        self.remove_provider(provider)
        self._sources.ban(provider)

    def _unrequest(self, index: int, provider: P) -> None:
        askers = self._requested.get(index)
        if askers is not None:
            askers.discard(provider)
            if not askers:
                del self._requested[index]

    def pick(self, provider: P, limit: int) -> list[int]:
        """Up to ``limit`` pieces to ask of ``provider`` now, marked in flight."""
        state = self._providers.get(provider)
        if state is None or limit <= 0:
            return []
        sources = self._sources
        candidates = (
            i
            for i in self._held.missing(self._start)
            if i not in self._requested and sources.has(provider, i)
        )
        if sources.only_seeders:
            # every provider has every piece: rarity is equal, take the first ones in order
            fresh = list(itertools.islice(candidates, limit))
        else:
            fresh = sorted(candidates, key=sources.holders)[:limit]
        if fresh:
            chosen = fresh
        elif len(self._requested) < self._held.count - len(self._held):
            # some missing piece is asked of nobody yet (no provider has it so far, or a
            # super-seeder has not offered it): not the endgame, a duplicate would be
            # waste (a provider with nothing fresh is common while others download)
            chosen = []
        else:
            # endgame: duplicate pieces in flight elsewhere, least-duplicated first
            dup = [
                i
                for i in self._requested
                if provider not in self._requested[i]
                and len(self._requested[i]) < MAX_REQUESTERS
                and sources.has(provider, i)
                and i not in self._held
            ]
            dup.sort(key=lambda i: (len(self._requested[i]), i))
            chosen = dup[:limit]
        for i in chosen:
            self._requested.setdefault(i, set()).add(provider)
            state.in_flight.add(i)
        return chosen

    def received(self, provider: P, index: int, *, now: float | None = None, size: int = 0) -> bool:
        """A verified piece of ``size`` bytes arrived at ``now``; True if it was new."""
        self._delivered[provider] = self._delivered.get(provider, 0) + size
        state = self._providers.get(provider)
        if state is not None:
            state.in_flight.discard(index)
            state.received += 1
            if now is not None:
                state.meter.count(size, now)
        askers = self._requested.pop(index, set())
        for other in askers:
            other_state = self._providers.get(other)
            if other_state is not None:
                other_state.in_flight.discard(index)
        return self._held.add(index)

    def failed(self, provider: P, index: int) -> None:
        """A request for ``index`` to ``provider`` did not deliver; the piece goes back."""
        state = self._providers.get(provider)
        if state is not None:
            state.in_flight.discard(index)
        self._unrequest(index, provider)

    def rate(self, provider: P, now: float) -> float:
        """Measured throughput of ``provider`` in bytes per second (0 if unknown)."""
        state = self._providers.get(provider)
        return state.meter.rate(now) if state else 0.0

    def rate_when_last_heard(self, provider: P) -> float:
        """Throughput as of ``provider``'s last piece: what to expect when it goes quiet."""
        state = self._providers.get(provider)
        return state.meter.rate_when_last_heard() if state else 0.0

    def window(self, provider: P, now: float) -> int:
        """How many pieces ``provider`` may have in flight: about a second of its data."""
        state = self._providers.get(provider)
        if state is None:
            return 0
        if state.meter.last_update is None:
            return INITIAL_WINDOW
        want = math.ceil(state.meter.rate(now) * QUEUE_SECONDS / self._piece_size)
        return max(MIN_WINDOW, min(MAX_WINDOW, want))

    def budget(self, provider: P, now: float) -> int:
        """How many more pieces ``provider`` may be asked for now."""
        state = self._providers.get(provider)
        return max(0, self.window(provider, now) - len(state.in_flight)) if state else 0

    def ranking(self, now: float) -> list[P]:
        """Providers, fastest first: the order to prefer them in."""
        return sorted(self._providers, key=lambda p: -self._providers[p].meter.rate(now))

    def delivered(self) -> dict[P, int]:
        """Verified bytes received from each provider so far, gone ones included."""
        return dict(self._delivered)

    def all_in_flight(self) -> set[int]:
        """Pieces asked of some provider and not yet received."""
        return set(self._requested)

    def in_flight(self, provider: P) -> frozenset[int]:
        state = self._providers.get(provider)
        return frozenset(state.in_flight) if state else frozenset()

    def wanted_from(self, provider: P) -> bool:
        """Whether ``provider`` has any piece still missing here."""
        return provider in self._sources and any(
            self._sources.has(provider, i) for i in self._held.missing()
        )
