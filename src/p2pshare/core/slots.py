"""Concurrency limits: at most ``total`` things at once (uploads, subscriptions), and at
most ``per_key`` of them for any one key (a remote peer), so one remote cannot take
every slot and others are still served.

No waiting here: a request over a limit is refused (the adapter answers "busy", and
the remote retries), which keeps a greedy remote from queueing up memory.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Slots"]

K = TypeVar("K", bound=Hashable)


class Slots(Generic[K]):
    """Counts what is in use, in total and per key; memory only for keys in use."""

    def __init__(self, *, total: int, per_key: int) -> None:
        if total < 1 or per_key < 1:
            raise ValueError("total and per_key must be >= 1")
        self.total = total
        self.per_key = per_key
        self._used: dict[K, int] = {}
        self._in_use = 0

    def __len__(self) -> int:
        """Slots in use."""
        return self._in_use

    def holders(self) -> int:
        """Keys that hold a slot."""
        return len(self._used)

    def acquire(self, key: K) -> str | None:
        """Take a slot for ``key``; None if taken, else why not (the limit that is full)."""
        if self._in_use >= self.total:
            return f"all {self.total} in use"
        held = self._used.get(key, 0)
        if held >= self.per_key:
            return f"{self.per_key} in use by this peer already"
        self._used[key] = held + 1
        self._in_use += 1
        return None

    def release(self, key: K) -> None:
        """Give back a slot ``key`` took."""
        held = self._used.get(key, 0)
        if held <= 0:
            raise ValueError(f"{key!r} holds no slot")
        if held == 1:
            del self._used[key]
        else:
            self._used[key] = held - 1
        self._in_use -= 1
