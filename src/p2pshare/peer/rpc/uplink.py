"""This peer's upload of blocks: the requests of every ``Exchange`` stream in one
``core.upload_queue.UploadQueue``, sent round robin as the streams take them.

Upload bandwidth is what a swarm on real links runs short of, so the order in which
requested blocks leave decides who gets what: the queue gives each requester an
equal share, completes one copy of a piece at a time, and refuses (chokes) a
requester over its share. The queue only works if blocks wait *in it* and not
downstream, where a cancel can no longer reach them and the order is no longer
ours: a block is taken from the queue for a stream only when fewer than
``MAX_WRITING`` of its blocks are being written (a gRPC write completes once its
bytes are in the transport, so what waits beyond that is bounded by the socket
buffers and the downloaders' windows, see ``core.block_picker``). The limit is per
stream: with one limit for all, a few connections slowed by losses held every slot
and the uplink ran at a third of its rate (netswarm --hard).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Protocol

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.link_use import LinkUse
from p2pshare.core.rate import TokenBucket
from p2pshare.core.upload_queue import UploadQueue, limit_for

__all__ = ["BlockSource", "PieceRead", "Requester", "Uplink"]

MAX_WRITING = 2
"""Blocks handed to gRPC and not yet written, per stream: one in the socket, one next."""
MIN_BLOCK, MAX_BLOCK = 16 * 1024, 1024 * 1024  # block sizes a downloader may ask for
QUEUE_FLOOR = 8  # blocks queued in all before choking, whatever the measured rate
ESTIMATE_BLOCK = 128 * 1024  # the block size the queue's limit is reckoned in
IDLE_SLACK = 0.01  # seconds: an uplink this close to drained counts as idle
IDLE_AGAIN = 0.2  # seconds: still idle after offers, look again this much later

Block = tuple[int, int]


class PieceRead(Protocol):
    def read(self, index: int) -> bytes: ...


class BlockSource:
    """The blocks of one file, read a piece at a time: a requester's blocks mostly
    come one after another from one piece, which is then read from disk once."""

    def __init__(self, reader: PieceRead, block_size: int) -> None:
        self._reader = reader
        self.block_size = block_size
        self._piece = -1
        self._data = b""

    def read(self, block: Block) -> tuple[bytes, bool]:
        """The bytes of ``block``, and whether it is the last of its piece."""
        piece, b = block
        if piece != self._piece:
            self._data = self._reader.read(piece)
            self._piece = piece
        start = b * self.block_size
        end = start + self.block_size
        return self._data[start:end], end >= len(self._data)


class Requester(Protocol):
    """The sending side of one ``Exchange`` stream, as the uplink sees it."""

    def __hash__(self) -> int: ...

    def put(self, message: pb.ExchangeMessage, on_sent: Callable[[], None] | None) -> None: ...

    def block(self, block: Block) -> tuple[bytes, bool]:
        """The bytes of ``block``, and whether it is the last of its piece."""

    def fail(self, exc: errors.P2PShareError) -> None:
        """End the stream with ``exc`` (its file can no longer be read)."""


class Uplink:
    """Queues the block requests of every stream and feeds the streams in turn."""

    def __init__(
        self,
        *,
        rate: TokenBucket,
        on_idle: Callable[[], bool],
        on_block: Callable[[int, bool], None] = lambda size, last: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_idle``: the link has room (True: it offered pieces, which may bring
        requests); ``on_block``: a block of this many bytes goes out (True: the last of
        its piece)."""
        self._queue: UploadQueue[Requester, Block] = UploadQueue(
            max_queued=QUEUE_FLOOR, group=lambda block: block[0]
        )
        self._rate = rate
        self._on_idle = on_idle
        self._on_block = on_block
        self._clock = clock
        self._use = LinkUse()
        self._looked_at = -IDLE_AGAIN  # when ``on_idle`` was last called
        self._writing: dict[Requester, int] = {}  # blocks handed to each stream, not written
        # when what was handed to gRPC will have crossed the link, at the measured rate
        self._drained_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        return bool(self._writing) or len(self._queue) > 0

    def request(self, requester: Requester, block: Block) -> bool:
        """Queue ``block`` for ``requester``; False: refused, the requester is choked."""
        rate = self._use.rate(self._clock())
        self._queue.max_queued = max(QUEUE_FLOOR, limit_for(rate, ESTIMATE_BLOCK))
        if not self._queue.request(requester, block):
            return False
        self._fill()
        return True

    def cancel(self, requester: Requester, block: Block) -> None:
        self._queue.cancel(requester, block)

    def drop(self, requester: Requester) -> None:
        """The stream ended: its queued blocks are never sent."""
        self._queue.drop(requester)
        self._fill()

    def _fill(self) -> None:
        """Hand blocks to the streams that have fewer than ``MAX_WRITING`` in writing."""
        while True:
            nxt = self._queue.next(self._ready)
            if nxt is None:
                break
            requester, block = nxt
            invited = self._queue.unchoke()
            if invited is not None:
                invited.put(pb.ExchangeMessage(unchoke=True), None)
            self._send(requester, block)
        self._check_idle()

    def _ready(self, requester: Requester) -> bool:
        return self._writing.get(requester, 0) < MAX_WRITING

    def _check_idle(self) -> None:
        """Tell ``on_idle`` once the link idles, or runs well below the rate it has
        shown (``core.link_use``), at most every ``IDLE_AGAIN`` seconds then. A write
        completes when its bytes are in the socket, seconds before they cross a slow
        link: told then, a super-seeder offered second copies of pieces while its
        uplink was still full (1.22 copies)."""
        if self._idle_timer is not None:  # one look pending at a time
            self._idle_timer.cancel()
            self._idle_timer = None
        now = self._clock()
        # blocks in writing do not count (what they hold is in ``_drained_at``): a
        # connection that died without a word holds its writes until keepalive notices,
        # 40 s, and a super-seeder offered nothing more all that time (netns test)
        if self._use.underused(now):
            left = self._looked_at + IDLE_AGAIN - now
        elif len(self._queue):
            return
        else:
            left = self._drained_at - now
        if left <= IDLE_SLACK:
            self._looked_at = now
            if not self._on_idle():
                return
            # offers a downloader no longer needs bring no request, and nothing would
            # look again: a super-seeder sat idle through the end of the hard netswarm
            left = IDLE_AGAIN
        self._idle_timer = asyncio.get_running_loop().call_later(left, self._check_idle)

    def _send(self, requester: Requester, block: Block) -> None:
        try:
            # a page-cache read: cheaper inline than a hop to a thread
            data, last = requester.block(block)
        except errors.P2PShareError as exc:  # the file changed or went: end that stream
            self._queue.drop(requester)
            requester.fail(exc)
            return
        now = self._clock()
        self._use.count(len(data), now)
        rate = self._use.rate(now)
        if rate > 0:
            self._drained_at = max(now, self._drained_at) + len(data) / rate
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._on_block(len(data), last)
        piece, b = block
        message = pb.ExchangeMessage(block=pb.Block(piece=piece, block=b, data=data))
        self._writing[requester] = self._writing.get(requester, 0) + 1
        sent = functools.partial(self._sent, requester)
        delay = self._rate.take(len(data), now)
        if delay:
            asyncio.get_running_loop().call_later(delay, requester.put, message, sent)
        else:
            requester.put(message, sent)

    def _sent(self, requester: Requester) -> None:
        """A block to ``requester`` was written (or its stream ended): the next may go."""
        left = self._writing[requester] - 1
        if left:
            self._writing[requester] = left
        else:
            del self._writing[requester]
        self._fill()
