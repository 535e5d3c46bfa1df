"""Block scheduling: which sub-piece block to ask of which provider next.

The successor of ``piece_picker`` for swarms on real links, where upload bandwidth
is scarce. A piece (1 MiB) is fetched as blocks (``block_size``, 128 KiB by
default) and verified as a whole; a block is the unit of a request, a cancel and
an endgame duplicate, so the endgame wastes at most a block per provider, not a
piece. A pure state machine: the adapter tells it what happens (a provider joins,
announces a piece with a ``Have``, a block arrives, a piece verifies or not) with
the current time ``now``, and asks it for the next blocks to request of one
provider. Policy:

- **finish what is started**: blocks of pieces already begun go first, so a piece is
  complete (and can be served to others) as soon as possible;
- **rarest first** among new pieces, ties broken from the download's ``start``
  (each downloader begins somewhere else) -- availability comes from the providers'
  have-maps, kept current by ``add_have`` (one ``Have`` message per verified piece,
  pushed as it happens, instead of a poll);
- **one request per block** until the endgame; the **endgame** begins only when no
  block of the whole file is left unrequested (not when one provider has nothing
  fresh, which happens all the time with providers still downloading): then a block
  in flight elsewhere may be asked of a second provider, and when it arrives the
  other request is returned as a cancel;
- a provider that refuses a request (we have our share of its upload queue) **chokes**
  us: it is asked nothing more until it sends a block or says it has room (``unchoke``);
- **a window per provider from its bandwidth-delay product**: about ``rate x
  (latency + QUEUE_SECONDS)`` bytes in flight, ``latency`` the shortest request to
  block time seen, so a provider's queue never runs dry yet holds few blocks that
  another provider could have sent;
- a piece that fails verification: if one provider sent all of it, that provider is
  banned; if several did, the piece is fetched again from one provider only
  (pinned), so a second failure names the culprit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from p2pshare.core.availability import Availability
from p2pshare.core.piece_picker import Throughput
from p2pshare.core.pieces import PieceSet

__all__ = ["Arrival", "Block", "BlockPicker"]

P = TypeVar("P", bound=Hashable)

Block = tuple[int, int]
"""(piece index, block index within the piece)."""

BLOCK_SIZE = 128 * 1024
INITIAL_BLOCKS = 4  # blocks in flight at a provider before its rate is known
MIN_BLOCKS = 2  # one being sent, one queued behind it
MAX_BLOCKS = 256
QUEUE_SECONDS = 0.1  # a window holds a round trip plus this much of a provider's data
MAX_REQUESTERS = 2  # endgame: a block is asked of at most this many providers at once

_FREE, _ASKED, _GOT = 0, 1, 2


@dataclass(frozen=True)
class Arrival(Generic[P]):
    """What a received block meant."""

    new: bool
    """The block was wanted (False: a duplicate, its bytes wasted)."""
    piece_done: int | None = None
    """Every block of this piece is here: verify it, then ``piece_verified``/``piece_failed``."""
    cancels: tuple[tuple[P, Block], ...] = ()
    """Requests of the same block to other providers, to cancel now."""


@dataclass
class _Source:
    in_flight: dict[Block, float] = field(default_factory=dict)  # block -> when asked
    meter: Throughput = field(default_factory=Throughput)
    latency: float | None = None  # shortest request-to-block time seen
    choked: bool = False  # refused our requests; ask again when it unchokes us


class BlockPicker(Generic[P]):
    """Hands out blocks of one file to providers."""

    def __init__(
        self,
        *,
        file_size: int,
        piece_size: int,
        block_size: int = BLOCK_SIZE,
        held: PieceSet | None = None,
        start: int = 0,
    ) -> None:
        if piece_size <= 0 or block_size <= 0 or file_size < 0:
            raise ValueError("sizes must be positive")
        count = -(-file_size // piece_size)
        self._held = held if held is not None else PieceSet(count)
        if self._held.count != count:
            raise ValueError("held set does not match the piece count")
        if not 0 <= start < max(count, 1):
            raise ValueError("start is not a piece of the file")
        self.file_size = file_size
        self.piece_size = piece_size
        self.block_size = min(block_size, piece_size)
        self._count = count
        self._start = start
        self._sources: dict[P, _Source] = {}
        self._holders: Availability[P] = Availability(count)
        self._delivered: dict[P, int] = {}  # bytes of new blocks from each, kept after it goes
        self._blocks: dict[int, list[int]] = {}  # started pieces: state of each block
        self._asked: dict[Block, list[P]] = {}  # blocks in flight: their providers
        self._senders: dict[int, set[P]] = {}  # started pieces: who sent their blocks
        self._pinned: dict[int, P | None] = {}  # pieces to fetch from one provider
        self._free = sum(self.blocks_in(i) for i in self._held.missing())

    # -- the file ------------------------------------------------------------------

    @property
    def held(self) -> PieceSet:
        return self._held

    @property
    def complete(self) -> bool:
        return self._held.complete

    @property
    def endgame(self) -> bool:
        """No block of the file is left unrequested."""
        return self._free == 0 and not self.complete

    def piece_length(self, piece: int) -> int:
        return min(self.piece_size, self.file_size - piece * self.piece_size)

    def blocks_in(self, piece: int) -> int:
        return -(-self.piece_length(piece) // self.block_size)

    def block_length(self, block: Block) -> int:
        piece, b = block
        return min(self.block_size, self.piece_length(piece) - b * self.block_size)

    # -- providers -----------------------------------------------------------------

    @property
    def providers(self) -> list[P]:
        return list(self._sources)

    def is_banned(self, provider: P) -> bool:
        return self._holders.is_banned(provider)

    def is_seeder(self, provider: P) -> bool:
        return self._holders.is_seeder(provider)

    def add_provider(self, provider: P, have: PieceSet | None = None) -> bool:
        """Add a provider (``have=None``: it has every piece); False if banned or known."""
        if not self._holders.add(provider, have):
            return False
        self._sources[provider] = _Source()
        return True

    def add_have(self, provider: P, piece: int) -> bool:
        """``provider`` announced that it now holds ``piece`` (a ``Have`` message); True
        if that is news."""
        return self._holders.add_have(provider, piece)

    def update_have(self, provider: P, have: PieceSet | None) -> None:
        """``provider`` sent its whole have-map again (``None``: it holds everything)."""
        self._holders.update(provider, have)

    def remove_provider(self, provider: P) -> None:
        """Forget a provider (gone, or dropped); its blocks in flight go back to the pool."""
        self._holders.remove(provider)
        state = self._sources.pop(provider, None)
        if state is None:
            return
        for block in state.in_flight:
            self._unask(block, provider)
        for piece, owner in self._pinned.items():
            if owner == provider:
                self._pinned[piece] = None

    def ban(self, provider: P) -> None:
        """A provider sent a bad piece: drop it for the rest of this download."""
        self.remove_provider(provider)
        self._holders.ban(provider)

    def ranking(self, now: float) -> list[P]:
        """Providers, fastest first: the order to prefer them in."""
        return sorted(self._sources, key=lambda p: -self._sources[p].meter.rate(now))

    def delivered(self) -> dict[P, int]:
        """Bytes of new blocks received from each provider so far, gone ones included."""
        return dict(self._delivered)

    def all_in_flight(self) -> set[int]:
        """Pieces begun and not yet held (some of their blocks asked or here)."""
        return set(self._blocks)

    # -- requests ------------------------------------------------------------------

    def window(self, provider: P, now: float) -> int:
        """How many blocks ``provider`` may have in flight: its bandwidth-delay product."""
        state = self._sources.get(provider)
        if state is None:
            return 0
        rate = state.meter.rate(now)
        if rate <= 0:
            return INITIAL_BLOCKS
        latency = state.latency or 0.0
        want = math.ceil(rate * (latency + QUEUE_SECONDS) / self.block_size) + 1
        return max(MIN_BLOCKS, min(MAX_BLOCKS, want))

    def choke(self, provider: P) -> None:
        """``provider`` refused a request (we hold our share of its queue): ask it nothing
        until it sends a block or ``unchoke``. Give the refused blocks back with ``failed``."""
        state = self._sources.get(provider)
        if state is not None:
            state.choked = True

    def unchoke(self, provider: P) -> None:
        """``provider`` has room for our requests again."""
        state = self._sources.get(provider)
        if state is not None:
            state.choked = False

    def is_choked(self, provider: P) -> bool:
        state = self._sources.get(provider)
        return state is not None and state.choked

    def budget(self, provider: P, now: float) -> int:
        """How many more blocks ``provider`` may be asked for now (none while it chokes us)."""
        state = self._sources.get(provider)
        if state is None or state.choked:
            return 0
        return max(0, self.window(provider, now) - len(state.in_flight))

    def in_flight(self, provider: P) -> frozenset[Block]:
        state = self._sources.get(provider)
        return frozenset(state.in_flight) if state else frozenset()

    def rate(self, provider: P, now: float) -> float:
        """Measured throughput of ``provider`` in bytes per second (0 if unknown)."""
        state = self._sources.get(provider)
        return state.meter.rate(now) if state else 0.0

    def rate_when_last_heard(self, provider: P) -> float:
        """Throughput as of ``provider``'s last block: what to expect when it goes quiet."""
        state = self._sources.get(provider)
        return state.meter.rate_when_last_heard() if state else 0.0

    def wanted_from(self, provider: P) -> bool:
        """Whether ``provider`` has any piece still missing here."""
        return provider in self._sources and any(
            self._holders.has(provider, i) for i in self._held.missing()
        )

    def pick(self, provider: P, limit: int, now: float) -> list[Block]:
        """Up to ``limit`` blocks to ask of ``provider`` now, marked in flight."""
        state = self._sources.get(provider)
        if state is None or state.choked or limit <= 0 or self.complete:
            return []
        chosen: list[Block] = []
        for piece in self._pieces_for(provider, state):
            states = self._blocks.get(piece)
            for b in range(self.blocks_in(piece)):
                if states is None or states[b] == _FREE:
                    chosen.append((piece, b))
                    if len(chosen) == limit:
                        break
            if len(chosen) == limit:
                break
        if not chosen and self._free == 0:
            chosen = self._endgame(provider, state, limit)
        for block in chosen:
            self._ask(block, provider, state, now)
        return chosen

    def _pieces_for(self, provider: P, state: _Source) -> Iterator[int]:
        """Pieces with free blocks that ``provider`` has: started ones, then rarest first."""
        holders = self._holders
        for piece, states in self._blocks.items():
            if _FREE in states and holders.has(provider, piece) and self._may_send(piece, provider):
                yield piece
        fresh = [
            i
            for i in self._held.missing(self._start)
            if i not in self._blocks and holders.has(provider, i) and self._may_send(i, provider)
        ]
        if not holders.only_seeders:
            fresh.sort(key=holders.holders)  # stable: ties keep the order
        yield from fresh

    def _may_send(self, piece: int, provider: P) -> bool:
        owner = self._pinned.get(piece, provider)
        return owner is None or owner == provider

    def _endgame(self, provider: P, state: _Source, limit: int) -> list[Block]:
        """Blocks in flight elsewhere that ``provider`` could send too, least asked first,
        then longest waited for."""
        candidates = [
            (len(askers), min(self._sources[a].in_flight[block] for a in askers), block)
            for block, askers in self._asked.items()
            if provider not in askers
            and len(askers) < MAX_REQUESTERS
            and self._holders.has(provider, block[0])
            and self._may_send(block[0], provider)
        ]
        candidates.sort()
        return [block for _, _, block in candidates[:limit]]

    def _ask(self, block: Block, provider: P, state: _Source, now: float) -> None:
        piece, b = block
        if piece in self._pinned and self._pinned[piece] is None:
            self._pinned[piece] = provider
        states = self._blocks.get(piece)
        if states is None:
            states = self._blocks[piece] = [_FREE] * self.blocks_in(piece)
            self._senders[piece] = set()
        if states[b] == _FREE:
            states[b] = _ASKED
            self._free -= 1
        self._asked.setdefault(block, []).append(provider)
        state.in_flight[block] = now

    def _unask(self, block: Block, provider: P) -> None:
        """``provider`` no longer has ``block`` in flight; free it if nobody else has."""
        askers = self._asked.get(block)
        if askers is None or provider not in askers:
            return
        askers.remove(provider)
        if askers:
            return
        del self._asked[block]
        states = self._blocks.get(block[0])
        if states is not None and states[block[1]] == _ASKED:
            states[block[1]] = _FREE
            self._free += 1

    def failed(self, provider: P, block: Block) -> None:
        """A request of ``block`` to ``provider`` will not deliver (refused, lost, or
        the provider is slow and the adapter gave up on it)."""
        state = self._sources.get(provider)
        if state is not None:
            state.in_flight.pop(block, None)
        self._unask(block, provider)

    def received(self, provider: P, block: Block, now: float) -> Arrival[P]:
        """``block`` arrived from ``provider`` at ``now``."""
        size = self.block_length(block)
        state = self._sources.get(provider)
        if state is not None:
            state.choked = False  # it serves us: it had room for what it has sent
            asked_at = state.in_flight.pop(block, None)
            if asked_at is not None:
                took = now - asked_at
                if state.latency is None or took < state.latency:
                    state.latency = took
            state.meter.count(size, now)
        askers = self._asked.pop(block, [])
        cancels: list[tuple[P, Block]] = []
        for other in askers:
            if other != provider:
                cancels.append((other, block))
                other_state = self._sources.get(other)
                if other_state is not None:
                    other_state.in_flight.pop(block, None)
        piece, b = block
        states = self._blocks.get(piece)
        if piece in self._held or (states is not None and states[b] == _GOT):
            return Arrival(new=False, cancels=tuple(cancels))
        if states is None:  # a block that was asked, then given up on, came anyway
            states = self._blocks[piece] = [_FREE] * self.blocks_in(piece)
            self._senders[piece] = set()
        if states[b] == _FREE:
            self._free -= 1
        states[b] = _GOT
        self._senders[piece].add(provider)
        self._delivered[provider] = self._delivered.get(provider, 0) + size
        done = piece if all(s == _GOT for s in states) else None
        return Arrival(new=True, piece_done=done, cancels=tuple(cancels))

    def piece_verified(self, piece: int) -> bool:
        """Every block of ``piece`` arrived and its hash matched; True if it was new."""
        self._blocks.pop(piece, None)
        self._senders.pop(piece, None)
        self._pinned.pop(piece, None)
        return self._held.add(piece)

    def piece_failed(self, piece: int) -> list[P]:
        """The blocks of ``piece`` did not hash right: fetch it again. Returns the providers
        banned for it (the one that sent every block); with several senders none is
        banned, and the piece is fetched from one provider next time."""
        senders = self._senders.pop(piece, set())
        states = self._blocks.pop(piece, None)
        if states is not None:  # every block was here (piece_done): all free again
            self._free += len(states)
        banned = []
        if len(senders) == 1:
            banned = list(senders)
            for provider in banned:
                self.ban(provider)
            self._pinned.pop(piece, None)
        else:
            self._pinned[piece] = None
        return banned
