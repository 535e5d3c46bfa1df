"""Piece bookkeeping: which pieces of a file are held, as a compact bitfield."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator


class PieceSet:
    """A set of piece indexes in ``range(count)``, stored as a bitfield."""

    __slots__ = ("_bits", "_count", "_held")

    def __init__(self, count: int, held: Iterable[int] = ()) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._count = count
        self._bits = bytearray((count + 7) // 8)
        self._held = 0
        for i in held:
            self.add(i)

    @property
    def count(self) -> int:
        return self._count

    def _check(self, index: int) -> None:
        if not 0 <= index < self._count:
            raise IndexError(f"piece {index} out of range 0..{self._count - 1}")

    def add(self, index: int) -> bool:
        """Mark ``index`` held; return whether it was new."""
        self._check(index)
        byte, bit = divmod(index, 8)
        mask = 0x80 >> bit
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self._held += 1
        return True

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self._count:
            return False
        byte, bit = divmod(index, 8)
        return bool(self._bits[byte] & (0x80 >> bit))

    def __len__(self) -> int:
        return self._held

    def __iter__(self) -> Iterator[int]:
        return (i for i in range(self._count) if i in self)

    def missing(self, start: int = 0) -> Iterator[int]:
        """The pieces not held, in index order from ``start``, wrapping around."""
        order = itertools.chain(range(start, self._count), range(min(start, self._count)))
        return (i for i in order if i not in self)

    @property
    def complete(self) -> bool:
        return self._held == self._count

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    @classmethod
    def from_bytes(cls, count: int, data: bytes) -> PieceSet:
        if len(data) != (count + 7) // 8:
            raise ValueError("bitfield length does not match the piece count")
        ps = cls(count)
        ps._bits[:] = data
        # bits past the end must be clear, or the count would be wrong
        if count % 8 and ps._bits and ps._bits[-1] & (0xFF >> (count % 8)):
            raise ValueError("bitfield has bits set past the last piece")
        ps._held = sum(bin(b).count("1") for b in ps._bits)
        return ps
