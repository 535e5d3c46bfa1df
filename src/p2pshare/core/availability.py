"""Who holds which piece of one file: the providers' have-maps, kept current.

Both schedulers (``piece_picker`` for whole pieces, ``block_picker`` for blocks) rank
pieces by how many providers hold them (rarest first) and ask a provider only for
pieces it holds; this is that bookkeeping, once. A provider's have-map comes when it
joins and grows by pushed ``Have`` messages (``add_have``) or polls (``update``); a
seeder (``None``) holds every piece and counts apart, so that a swarm of seeders only
(rarity all equal) is cheap to tell. A provider that sent a bad piece is banned for
the rest of the download: it cannot join again.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from p2pshare.core.pieces import PieceSet

__all__ = ["Availability"]

P = TypeVar("P", bound=Hashable)


def _copy(have: PieceSet) -> PieceSet:
    # the caller's set must not change under us (nor ours under it)
    return PieceSet.from_bytes(have.count, have.to_bytes())


class Availability(Generic[P]):
    """Each provider's pieces and, for each piece, how many providers hold it."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._haves: dict[P, PieceSet | None] = {}  # None: a seeder
        self._seeders = 0
        self._holders = [0] * count  # providers with a partial have-map holding each piece
        self._banned: set[P] = set()

    @property
    def providers(self) -> list[P]:
        return list(self._haves)

    def __contains__(self, provider: object) -> bool:
        return provider in self._haves

    def is_banned(self, provider: P) -> bool:
        return provider in self._banned

    def is_seeder(self, provider: P) -> bool:
        return provider in self._haves and self._haves[provider] is None

    @property
    def only_seeders(self) -> bool:
        """Every provider holds every piece: rarity says nothing."""
        return self._seeders == len(self._haves)

    def has(self, provider: P, piece: int) -> bool:
        if provider not in self._haves:
            return False
        have = self._haves[provider]
        return have is None or piece in have

    def holders(self, piece: int) -> int:
        """Providers with a partial have-map that hold ``piece`` (seeders apart)."""
        return self._holders[piece]

    def add(self, provider: P, have: PieceSet | None) -> bool:
        """A provider joins with its have-map (``None``: every piece); False if it is
        banned or already here."""
        if provider in self._banned or provider in self._haves:
            return False
        self._haves[provider] = None
        self._count_in(provider, have)
        return True

    def add_have(self, provider: P, piece: int) -> bool:
        """``provider`` announced ``piece`` (a ``Have``); True if that is news."""
        have = self._haves.get(provider)
        if have is None or not have.add(piece):
            return False
        self._holders[piece] += 1
        return True

    def update(self, provider: P, have: PieceSet | None) -> None:
        """``provider`` sent its whole have-map again (``None``: it holds everything)."""
        if provider not in self._haves or self._haves[provider] is None:
            return
        self._count_out(provider)
        self._count_in(provider, have)

    def remove(self, provider: P) -> bool:
        """Forget ``provider``; False if it was not here."""
        if provider not in self._haves:
            return False
        self._count_out(provider)
        del self._haves[provider]
        return True

    def ban(self, provider: P) -> None:
        self.remove(provider)
        self._banned.add(provider)

    def _count_in(self, provider: P, have: PieceSet | None) -> None:
        if have is None:
            self._seeders += 1
            self._haves[provider] = None
            return
        self._haves[provider] = _copy(have)
        for i in have:
            self._holders[i] += 1

    def _count_out(self, provider: P) -> None:
        have = self._haves[provider]
        if have is None:
            self._seeders -= 1
            return
        for i in have:
            self._holders[i] -= 1
