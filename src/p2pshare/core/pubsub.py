"""Publish/subscribe of shared files, without I/O: what a change is, which changes
are new (de-duplication), and when a file that changed on disk has settled
(debouncing). The peer's asyncio adapters (``p2pshare.peer.sharing.watcher``,
``p2pshare.peer.overlay.publisher``) feed these with ``now`` and act on their answers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from p2pshare.core.sync import FileVersion

__all__ = ["ADDED", "REMOVED", "ChangeDeduper", "Debouncer", "Kind", "ShareChange"]

ADDED: Literal["added"] = "added"
REMOVED: Literal["removed"] = "removed"
Kind = Literal["added", "removed"]


@dataclass(frozen=True, slots=True)
class ShareChange:
    """A provider started (``added``) or stopped (``removed``) sharing a content id."""

    kind: Kind
    content_id: str
    name: str
    size: int
    provider: str
    """``HOST:PORT`` of the provider."""
    peer_id: str = ""
    hops: int = 0
    """How far the provider is from the peer that reports the change (0: itself)."""
    version: FileVersion | None = None
    """The version of the name after the change (folder sync), when it is known."""

    def stamp(self) -> str:
        """What tells two changes of one name and content apart: the version."""
        v = self.version
        if v is None:
            return ""
        counters = ",".join(f"{d}:{n}" for d, n in v.vector.items())
        return f"{counters}/{v.content_id}/{int(v.deleted)}"

    def to_json(self) -> dict[str, object]:
        """The change as ``p2pshare watch --json`` prints it."""
        doc: dict[str, object] = {
            "event": self.kind,
            "content_id": self.content_id,
            "name": self.name,
            "size": self.size,
            "provider": self.provider,
        }
        if self.version is not None:
            doc["version"] = self.version.vector.to_json()
        return doc


K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


class ChangeDeduper:
    """Lets each ``(content_id, name, provider, kind)`` transition through once.

    Remembers the last kind seen per ``(content_id, name, provider)``: a change that
    repeats it is a duplicate (the same change over another path, or a relay that
    came back); a change to the other kind is new. With ``by_version`` (relays and
    folder sync) a change that carries a version not seen yet is new too, since the
    version is what a sync acts on; a change without one (the tracker's events carry
    none) repeats whatever was seen of that content. Without ``by_version`` (what a
    person watches) a new version of the same content is no news. At most
    ``capacity`` keys of each kind are remembered, the least recently seen first
    forgotten.
    """

    def __init__(self, capacity: int = 10_000, *, by_version: bool = True) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._by_version = by_version
        self._plain: OrderedDict[tuple[str, str, str], Kind] = OrderedDict()
        self._versioned: OrderedDict[tuple[str, str, str, str], Kind] = OrderedDict()

    def __len__(self) -> int:
        return len(self._plain)

    def is_new(self, change: ShareChange) -> bool:
        """Whether ``change`` is new; remembers it either way."""
        key = (change.content_id, change.name, change.provider)
        new = self._remember(self._plain, key, change.kind)
        if self._by_version and change.version is not None:
            new = self._remember(self._versioned, (*key, change.stamp()), change.kind)
        return new

    def _remember(self, last: OrderedDict[K, Kind], key: K, kind: Kind) -> bool:
        before = last.get(key)
        last[key] = kind
        last.move_to_end(key)
        while len(last) > self._capacity:
            last.popitem(last=False)
        return before != kind


class Debouncer(Generic[K, S]):
    """Decides when a changed path is looked at: once it has been quiet for
    ``quiet`` seconds *and* its signature (e.g. size and mtime) did not change over
    that time, so a burst of events costs one look and a file still being written
    is indexed once it settles.

    ``touch(key, signature, now)`` for every event (the signature as of now);
    ``due(now)`` gives the keys quiet long enough, each with the signature it had
    when last touched: the caller compares it with the current one and, if they
    differ, touches again. At most ``capacity`` keys wait; ``overflowed`` says
    that some were dropped (then the caller rescans everything).
    """

    def __init__(self, *, quiet: float, capacity: int = 10_000) -> None:
        if quiet < 0:
            raise ValueError("quiet must be >= 0")
        self.quiet = quiet
        self._capacity = capacity
        self._pending: dict[K, tuple[float, S]] = {}
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._pending)

    def touch(self, key: K, signature: S, now: float) -> None:
        if key not in self._pending and len(self._pending) >= self._capacity:
            self.overflowed = True
            return
        self._pending.pop(key, None)  # keep insertion order = order of last touch
        self._pending[key] = (now, signature)

    def due(self, now: float) -> list[tuple[K, S]]:
        """Keys untouched for ``quiet`` seconds, oldest first; they stop waiting."""
        ready = [(k, s) for k, (t, s) in self._pending.items() if now - t >= self.quiet]
        for key, _ in ready:
            del self._pending[key]
        return ready

    def next_due(self) -> float | None:
        """When the next key becomes due (``None``: nothing waits)."""
        if not self._pending:
            return None
        return min(t for t, _ in self._pending.values()) + self.quiet
