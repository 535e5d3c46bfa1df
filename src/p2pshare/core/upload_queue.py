"""Upload scheduling: whose requested block goes out next on this peer's uplink.

Upload bandwidth is the scarce resource of a swarm, and a requester that keeps many
requests queued must not get more of it than one that keeps few. Every requester has
a queue of the blocks it asked for; the uplink serves the requesters in turn, one
block each (round robin, as a fair-queueing scheduler would; blocks are of one size
but a file's last), so each of ``k`` requesters with work queued gets ``1/k`` of the
uplink, and a requester that stops asking frees its share at once. This is the
fair share that BitTorrent's choking approximates with four unchoke slots, without
the ten-second rounds.

Two refinements, both measured in the swarm simulation (``tests/swarm_sim``):

- **a copy at a time**: given ``group`` (the piece of a block), the requester whose
  piece at the head of its queue is furthest along goes first, so the copies of a
  piece complete one after the other, not all together at the end: a piece is
  verified, announced and forwarded by its new holder sooner (the default testbed's
  last finish went from 1.10 to 1.07 x the minimum);
- **choking by share**: about ``max_queued`` blocks wait in all (half a second of the
  uplink, ``limit_for``), split equally among the requesters (``share``, at least
  ``MIN_SHARE`` each); a request over a requester's share is refused and the requester
  *choked*: it asks elsewhere until a block comes from here or it is *unchoked*
  (``unchoke``, oldest first) when it has room again. Without it a slow uploader with a
  rare piece gathers requests from everyone and serves them seconds later, while the
  blocks wait there instead of at a faster provider (twelve downloaders with 10, 40
  and 100 Mbit/s uplinks: 1.97 x the minimum).

A requester may queue at most ``per_requester`` blocks, so a greedy remote cannot
queue up memory. A cancel removes a block not yet sent. Pure: no clock is needed;
the adapter pops the next block when its uplink (its socket's write buffer) has room,
naming the requesters whose connection can take a block now (``ready``): one slow
connection (TCP after a loss) must not hold up the others.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["UploadQueue"]

P = TypeVar("P", bound=Hashable)
T = TypeVar("T", bound=Hashable)

PER_REQUESTER = 256  # blocks one requester may have queued (32 MiB of 128 KiB blocks)
GROUPS_KEPT = 4  # per requester: the pieces whose progress is remembered
QUEUE_SECONDS = 0.5  # how much of the uplink may wait in requests (choking beyond)
MIN_QUEUED = 4
MIN_SHARE = 2  # items any requester may queue: one being sent, one behind it


def limit_for(rate: float, block_size: int) -> int:
    """``max_queued`` for an uplink of ``rate`` bytes per second: ``QUEUE_SECONDS`` of it."""
    return max(MIN_QUEUED, int(rate * QUEUE_SECONDS / block_size))


class UploadQueue(Generic[P, T]):
    """Requested items (blocks) of every requester, served round robin."""

    def __init__(
        self,
        *,
        per_requester: int = PER_REQUESTER,
        max_queued: int | None = None,
        group: Callable[[T], Hashable] | None = None,
    ) -> None:
        """``max_queued``: items queued in all before requesters are choked (None: no
        limit but ``per_requester``); ``group``: the piece an item (block) belongs to."""
        if per_requester < 1 or (max_queued is not None and max_queued < 1):
            raise ValueError("per_requester and max_queued must be >= 1")
        self.per_requester = per_requester
        self.max_queued = max_queued
        self._choked: dict[P, None] = {}  # refused requesters, oldest first
        self._group = group
        self._queues: OrderedDict[P, deque[T]] = OrderedDict()  # in serving order
        self._queued = 0
        self._progress: dict[P, dict[Hashable, int]] = {}  # items of a group sent

    def __len__(self) -> int:
        """Items queued, all requesters together."""
        return self._queued

    def queued(self, requester: P) -> int:
        queue = self._queues.get(requester)
        return len(queue) if queue else 0

    def requesters(self) -> list[P]:
        """Requesters with items queued, the next to be served first."""
        return list(self._queues)

    def is_choked(self, requester: P) -> bool:
        return requester in self._choked

    def share(self, requester: P | None = None) -> int:
        """How many items one requester may have queued: an equal part of ``max_queued``
        among the requesters with items queued or waiting (``requester`` counted)."""
        if self.max_queued is None:
            return self.per_requester
        interested = len(self._queues.keys() | self._choked.keys())
        if (
            requester is not None
            and requester not in self._queues
            and requester not in self._choked
        ):
            interested += 1
        return max(MIN_SHARE, min(self.per_requester, self.max_queued // max(1, interested)))

    def request(self, requester: P, item: T) -> bool:
        """Queue ``item`` for ``requester``; False if it is refused because the
        requester has its ``share`` queued already. A refused requester is choked: it
        should ask nothing more until a block comes or ``unchoke`` names it."""
        queue = self._queues.get(requester)
        if queue is not None and len(queue) >= self.share(requester):
            self._choked[requester] = None
            return False
        self._choked.pop(requester, None)
        if queue is None:
            queue = self._queues[requester] = deque()
        queue.append(item)
        self._queued += 1
        return True

    def cancel(self, requester: P, item: T) -> bool:
        """Remove ``item`` if it is still queued (True), as the requester asked."""
        queue = self._queues.get(requester)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        self._queued -= 1
        if not queue:
            del self._queues[requester]
        return True

    def drop(self, requester: P) -> list[T]:
        """Forget ``requester`` (it went away); its queued items, never sent."""
        self._progress.pop(requester, None)
        self._choked.pop(requester, None)
        queue = self._queues.pop(requester, None)
        if queue is None:
            return []
        self._queued -= len(queue)
        return list(queue)

    def next(self, ready: Callable[[P], bool] | None = None) -> tuple[P, T] | None:
        """The item to send now and whom to, or None if nothing is queued; ``ready``:
        only requesters for which it is true may be served now (the others' links are
        full: they keep their place in line)."""
        requester = self._choose(ready)
        if requester is None:
            return None
        queue = self._queues.pop(requester)
        item = queue.popleft()
        self._queued -= 1
        if queue:
            self._queues[requester] = queue  # to the back of the line
        if self._group is not None:
            progress = self._progress.setdefault(requester, {})
            key = self._group(item)
            progress[key] = progress.pop(key, 0) + 1  # the latest group last
            if len(progress) > GROUPS_KEPT:
                del progress[next(iter(progress))]
        return requester, item

    def unchoke(self) -> P | None:
        """A choked requester with room under its share again (the oldest such), to
        invite back now; call it after each ``next``."""
        share = self.share()
        for requester in self._choked:
            if self.queued(requester) < share:
                del self._choked[requester]
                return requester
        return None

    def _choose(self, ready: Callable[[P], bool] | None) -> P | None:
        """The requester to serve: the first ready one in line, unless (with ``group``)
        another has more of the piece at the head of its queue already sent."""
        best: P | None = None
        most = -1
        for requester, queue in self._queues.items():
            if ready is not None and not ready(requester):
                continue
            if self._group is None:
                return requester
            sent = self._progress.get(requester, {}).get(self._group(queue[0]), 0)
            if sent > most:
                best, most = requester, sent
        return best
