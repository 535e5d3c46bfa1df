"""The swarm of one download on real links: blocks requested on the Exchange streams.

On links whose upload is the scarce resource (issue 13), whole 1 MiB pieces by
``GetPieces`` spread slowly (a fresh piece goes out at a fraction of an uplink
shared by whole-piece streams) and waste what the endgame duplicates and a cancel
cannot reach. Here every request is a 128 KiB block (``core.block_picker``) sent on
the provider's ``Exchange`` stream, which the provider serves from its fair upload
queue (``core.upload_queue``, ``peer.rpc.uplink``): a window of blocks per provider
sized by its bandwidth-delay product, cancels for endgame duplicates, and choking
when we hold our share of a provider's queue. Blocks are gathered into their piece
in memory; a complete piece is verified and written on a disk thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.block_picker import BLOCK_SIZE, Block, BlockPicker
from p2pshare.core.swarm_rules import stall_after
from p2pshare.peer.transfer.partial import PartialDownload
from p2pshare.peer.transfer.progress import Download
from p2pshare.peer.transfer.swarm import PieceSwarm, Swarm, SwarmTools

__all__ = ["BlockSwarm", "new_swarm"]

log = logging.getLogger(__name__)


def new_swarm(
    tools: SwarmTools, download: Download, partial: PartialDownload, providers: list[str]
) -> Swarm:
    """The swarm for this download: blocks (``BlockSwarm``) or whole pieces (``PieceSwarm``)
    as ``tools.blocks`` says; ``auto`` takes pieces only when every provider is on this
    machine, where the CPU binds and the blocking piece streams are the faster path."""
    blocks = tools.blocks == "on" or (
        tools.blocks == "auto" and not all(_is_local(a) for a in providers)
    )
    cls = BlockSwarm if blocks else PieceSwarm
    return cls(tools, download, partial, providers)


def _is_local(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BlockSwarm(Swarm):
    """Requests blocks of each provider on its Exchange stream, as its window allows."""

    TICK = 1.0  # stalls are looked for every second
    # the downloaders that start together find each other at once: looking first after
    # 3 s left every downloader's uplink idle that long on the netswarm testbed (on
    # loopback, where the CPU binds, the early looks made the swarm bench slower)
    FIRST_LOOK = 0.25

    def _new_picker(self, start: int) -> BlockPicker[str]:
        manifest = self.partial.manifest
        self.blocks: BlockPicker[str] = BlockPicker(
            file_size=manifest.size,
            piece_size=manifest.piece_size,
            block_size=BLOCK_SIZE,
            held=self.partial.have,
            start=start,
        )
        self.block_size = self.blocks.block_size
        self.buffers: dict[int, bytearray] = {}  # pieces being gathered
        self.heard: dict[str, float] = {}  # provider -> last block (or first request) seen
        self.checks: set[asyncio.Task[None]] = set()  # pieces being verified and written
        return self.blocks

    async def _ended(self) -> None:
        for task in self.checks:
            task.cancel()
        await asyncio.gather(*self.checks, return_exceptions=True)

    def _fetching(self, address: str, tasks: list[asyncio.Task[None]]) -> None:
        self._ask(address)

    def _news(self, address: str) -> None:
        self._ask(address)

    def _wake_workers(self) -> None:
        for address in list(self.outbox):
            self._ask(address)

    def _ask(self, address: str) -> None:
        """Fill ``address``'s window with requests."""
        queue = self.outbox.get(address)
        if queue is None:
            return
        now = time.monotonic()
        idle = not self.blocks.in_flight(address)
        endgame = self.blocks.endgame
        chosen = self.blocks.pick(address, self.blocks.budget(address, now), now)
        if not chosen:
            return
        if idle:
            self.heard[address] = now  # its silence counts from the first request
        for piece, b in chosen:
            queue.put_nowait(pb.ExchangeMessage(request=pb.BlockRef(piece=piece, block=b)))
        if self.blocks.endgame and not endgame:
            self._wake_workers()  # the endgame began: every provider may duplicate now

    async def _heard(self, address: str, message: pb.ExchangeMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "block":
            await self._block(address, message.block)
        elif kind == "refused":
            # over our share of its queue: choked until it sends a block or unchokes us
            self.blocks.failed(address, (message.refused.piece, message.refused.block))
            self.blocks.choke(address)
            self._wake_workers()
        elif kind == "unchoke":
            self.blocks.unchoke(address)
            self._ask(address)
        else:
            await super()._heard(address, message)

    def _check_block(self, address: str, block: pb.Block) -> Block:
        count = self.partial.manifest.piece_count
        if block.piece >= count or block.block >= self.blocks.blocks_in(block.piece):
            raise errors.RemoteError(f"peer {address} sent block {block.piece}/{block.block}")
        ref = (block.piece, block.block)
        if len(block.data) != self.blocks.block_length(ref):
            raise errors.RemoteError(f"peer {address} sent a block of {len(block.data)} bytes")
        return ref

    async def _block(self, address: str, block: pb.Block) -> None:
        ref = self._check_block(address, block)
        delay = self.tools.limit.delay(len(block.data))
        if delay:
            await asyncio.sleep(delay)
        now = self.heard[address] = time.monotonic()
        arrival = self.blocks.received(address, ref, now)
        for other, cancelled in arrival.cancels:
            queue = self.outbox.get(other)
            if queue is not None:
                piece, b = cancelled
                queue.put_nowait(pb.ExchangeMessage(cancel=pb.BlockRef(piece=piece, block=b)))
        if arrival.new:
            self.last_progress = now
            self.health.delivered(address)
            piece = ref[0]
            buffer = self.buffers.get(piece)
            if buffer is None:
                buffer = self.buffers[piece] = bytearray(self.blocks.piece_length(piece))
            start = ref[1] * self.blocks.block_size
            buffer[start : start + len(block.data)] = block.data
            if arrival.piece_done is not None:
                task = asyncio.create_task(self._check_piece(address, arrival.piece_done))
                self.checks.add(task)
                task.add_done_callback(self.checks.discard)
        self._ask(address)

    async def _check_piece(self, address: str, piece: int) -> None:
        """Verify and write a gathered piece on a disk thread; a bad one is fetched again
        and its sender, if it sent every block, banned."""
        data = self.buffers.pop(piece)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.tools.disk_pool, self.partial.write_verified, piece, memoryview(data)
            )
        except errors.BadPiece as exc:
            for culprit in self.blocks.piece_failed(piece):
                self._act(culprit, self.health.failed(culprit, exc, time.monotonic()), exc)
            self._wake_workers()
            return
        except errors.P2PShareError as exc:  # the disk: no provider can fix it
            self.fatal = exc
            self.changed.set()
            return
        self._verified(address, piece, len(data))
        await self._maybe_record()

    def _credit(self, address: str, index: int, size: int) -> bool:
        return self.blocks.piece_verified(index)

    def _tick(self, now: float) -> None:
        """Providers silent for longer than their blocks in flight should take are
        dropped (their blocks go to others); the others' windows are filled again."""
        for address in list(self.outbox):
            waiting = self.blocks.in_flight(address)
            if not waiting:
                continue
            silent = now - self.heard.get(address, now)
            if silent > stall_after(
                rate=self.blocks.rate_when_last_heard(address),
                in_flight=len(waiting),
                piece_size=self.blocks.block_size,
            ):
                exc = errors.TimedOut(f"peer {address} stalled")
                self._act(address, self.health.failed(address, exc, now), exc)
        self._wake_workers()
