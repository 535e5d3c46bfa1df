"""Super-seeding: a complete provider spends its upload on pieces nobody has yet.

In a swarm the seeder's uplink is the scarce resource: every byte of it should be a
piece no downloader holds, which the downloaders then trade among themselves
(Kumar and Ross 2006: the minimum distribution time is reached only when the seeder
sends each piece once while the others forward it). Downloaders cannot arrange that
by themselves: each sees what the others *hold*, not what they are fetching from the
seeder at this moment. So, as in BitTorrent's super-seeding (BEP 16), the seeder
decides: it does not announce its whole have-map; it *offers* each downloader a few
pieces (``open_offers``), announced as ordinary ``Have`` messages, and serves blocks
of offered pieces only. Policy:

- an offer is a piece the downloader lacks, chosen by fewest offers made so far (each
  piece goes out once before any goes out twice), then fewest downloaders holding it
  (learnt from their ``Have`` messages), then index order from a rotating cursor
  (consecutive offers are spread over the file);
- a piece goes out a second time only when the uplink idles (``idle``): once every
  piece was offered, a held offer closes with no new one, as the rest is in the
  downloaders' hands (offering the pieces still in flight to a first downloader to
  others as well made the seeder send 1.22 copies on the netswarm testbed);
- when a downloader holds an offered piece (from the seeder or from anyone else: its
  ``Have`` says so) the offer is closed and the next one made, so each downloader has
  ``open_offers`` pieces to fetch from the seeder at any time, and the seeder's
  uplink, shared among them (``UploadQueue``), never runs dry;
- but, as BEP 16 does, not while ``max_unspread`` pieces that the downloader got from
  offers are held by nobody else yet: a downloader gets new pieces from the seeder as
  fast as it passes them on, so the seeder's pieces go to the uplinks that spread them
  (twelve downloaders with 10, 40 and 100 Mbit/s uplinks: 1.38 -> 1.25 x the minimum);
  and when the seeder's uplink has room (``idle``: nothing to send, or well below
  the rate it has shown, ``core.link_use``) it offers beyond that limit, so it never
  waits for slow spreaders (a 100 Mbit/s seeder with six 10 Mbit/s downloaders must
  send several copies: 1.79 -> 1.11 x the minimum), every downloader one piece more
  per look (under 1% loss one connection carries ~7 Mbit/s, so a 40 Mbit/s uplink
  needs half a dozen asking at once: the hard netswarm run's seeder fell to 15-30
  Mbit/s after its first pass while offers went to one downloader at a time);
- a downloader that leaves returns its open offers (their offer counts drop), so the
  pieces are offered again.

Pure: the adapter reports joins, ``Have`` messages and departures, and sends the
``Have`` messages that the returned offers stand for.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from p2pshare.core.pieces import PieceSet

__all__ = ["SuperSeed"]

P = TypeVar("P", bound=Hashable)

OPEN_OFFERS = 2  # pieces each downloader may fetch from the seeder at once
MAX_UNSPREAD = 1  # pieces a downloader got from offers that nobody else holds yet


@dataclass
class _Downloader:
    have: PieceSet
    announced: set[int] = field(default_factory=set)  # every piece offered (Haves are final)
    open: set[int] = field(default_factory=set)  # offered and not yet held
    unspread: set[int] = field(default_factory=set)  # got from an offer, nobody else has it


class SuperSeed(Generic[P]):
    """What a complete provider offers each downloader of one file."""

    def __init__(
        self,
        piece_count: int,
        *,
        open_offers: int = OPEN_OFFERS,
        lone_offers: int | None = None,
        max_unspread: int = MAX_UNSPREAD,
        start: int = 0,
    ) -> None:
        if open_offers < 1 or max_unspread < 1:
            raise ValueError("open_offers and max_unspread must be >= 1")
        # a lone downloader spreads nothing and shares the uplink with nobody: on a
        # fast link (loopback, a LAN) two pieces at a time leave the uplink idle for
        # a round trip after each, so it may be offered more at once
        self.lone_offers = max(open_offers, lone_offers or open_offers)
        if not 0 <= start < max(piece_count, 1):
            raise ValueError("start is not a piece of the file")
        self.piece_count = piece_count
        self.open_offers = open_offers
        self.max_unspread = max_unspread
        self._cursor = start
        self._offers = [0] * piece_count  # offers made of each piece
        self._holders = [0] * piece_count  # downloaders known to hold each piece
        self._downloaders: dict[P, _Downloader] = {}

    @property
    def downloaders(self) -> int:
        """How many downloaders are joined."""
        return len(self._downloaders)

    def offers(self, piece: int) -> int:
        """How many times ``piece`` was offered (about the copies of it sent)."""
        return self._offers[piece]

    def announced(self, downloader: P) -> frozenset[int]:
        """The pieces announced to ``downloader``: the ones it may ask for."""
        state = self._downloaders.get(downloader)
        return frozenset(state.announced) if state else frozenset()

    def may_serve(self, downloader: P, piece: int) -> bool:
        state = self._downloaders.get(downloader)
        return state is not None and piece in state.announced

    def join(self, downloader: P, have: PieceSet) -> list[int]:
        """A downloader connected, holding ``have``; the pieces to announce to it."""
        if have.count != self.piece_count:
            raise ValueError("have-map does not match the piece count")
        if downloader in self._downloaders:
            self.leave(downloader)
        state = _Downloader(PieceSet.from_bytes(have.count, have.to_bytes()))
        self._downloaders[downloader] = state
        for i in have:
            self._holders[i] += 1
        return self._top_up(state)

    def has(self, downloader: P, piece: int) -> list[tuple[P, int]]:
        """``downloader`` announced ``piece``; the new offers to announce, to it and to
        the downloader whose piece this spread."""
        state = self._downloaders.get(downloader)
        if state is None:
            return []
        if state.have.add(piece):
            self._holders[piece] += 1
        if piece in state.open:
            state.open.discard(piece)
            if self._holders[piece] == 1:
                state.unspread.add(piece)
        offers: list[tuple[P, int]] = []
        for other, other_state in self._downloaders.items():
            if other != downloader and piece in other_state.unspread:
                other_state.unspread.discard(piece)
                offers += [(other, i) for i in self._top_up(other_state)]
        offers += [(downloader, i) for i in self._top_up(state)]
        return offers

    def leave(self, downloader: P) -> None:
        """``downloader`` went away: what it was offered and did not get is offered again."""
        state = self._downloaders.pop(downloader, None)
        if state is None:
            return
        for i in state.have:
            self._holders[i] -= 1
        for i in state.open:
            self._offers[i] -= 1

    def idle(self) -> list[tuple[P, int]]:
        """The seeder's uplink has room: offers beyond the spread limit, so that it
        never waits for slow spreaders while it could send. Every downloader with no
        open offer gets one; if all have one, each gets another, up to twice
        ``open_offers``."""
        offers: list[tuple[P, int]] = []
        for downloader, state in self._downloaders.items():
            if not state.open:
                offers += [(downloader, i) for i in self._offer(state, 1)]
        if not offers:
            for downloader, state in self._downloaders.items():
                if len(state.open) < 2 * self.open_offers:
                    offers += [(downloader, i) for i in self._offer(state, len(state.open) + 1)]
        return offers

    def _top_up(self, state: _Downloader) -> list[int]:
        if len(self._downloaders) == 1:
            return self._offer(state, self.lone_offers)
        if len(state.unspread) >= self.max_unspread:
            return []  # wait until one of them is passed on (or the uplink idles)
        return self._offer(state, self.open_offers, fresh=True)

    def _offer(self, state: _Downloader, up_to: int, *, fresh: bool = False) -> list[int]:
        """Up to ``up_to`` open offers for ``state``; ``fresh``: only pieces never offered."""
        new: list[int] = []
        while len(state.open) < up_to:
            piece = self._choose(state)
            if piece is None or (fresh and self._offers[piece]):
                break
            state.open.add(piece)
            state.announced.add(piece)
            self._offers[piece] += 1
            self._cursor = (piece + 1) % self.piece_count
            new.append(piece)
        return new

    def _choose(self, state: _Downloader) -> int | None:
        best: int | None = None
        best_key = (0, 0)
        n = self.piece_count
        for k in range(n):
            i = (self._cursor + k) % n
            if i in state.have or i in state.announced:
                continue
            key = (self._offers[i], self._holders[i])
            if best is None or key < best_key:
                best, best_key = i, key
        return best
