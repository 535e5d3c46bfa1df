"""A discrete-event simulation of one swarm on links with rates and delays.

One seeder and N downloaders of one file, each host with an upload rate, a download
rate and a one-way delay (everything a host sends reaches the other end that much
later). The clock jumps from event to event, so a 64 MiB swarm of seven hosts runs in
a fraction of a second, exactly and repeatably (the same ``seed``, the same figures).

Links. A host's uplink sends one chunk at a time at its upload rate; which chunk next
is the host's own decision (its upload scheduler): in the ``block`` protocol the pure
core's ``UploadQueue`` (round robin among requesters, one block each), in the
``legacy`` protocol round robin among the GetPieces streams being served, one chunk
each (HTTP/2 streams sharing a connection, connections sharing the link the way TCP
does). A chunk then crosses the delay and the receiver's downlink, modelled as a
second queue at the download rate (unbounded by default, as on the testbed). Small
control messages (requests, cancels, Have) cost only the delay.

Protocols. Both drive the real pure core, not a copy of it:

- ``legacy``: today's ``peer/swarm.py`` over ``PiecePicker``: per provider, four
  workers each asking ``pick(provider, min(8, budget))`` in one GetPieces stream of
  whole pieces; what a provider still downloading holds is polled (GetHave) every
  second; the endgame duplicates whole pieces; a stream whose pieces all arrived
  elsewhere is cancelled, and what the provider had already queued in the HTTP/2
  window (``CANCEL_OVERRUN``) still crosses the link.
- ``block``: the new core. ``BlockPicker`` on each downloader (blocks, windows from
  the bandwidth-delay product, endgame by block with cancels), ``Have`` pushed to every
  neighbour when a piece verifies, ``UploadQueue`` on every uploader, ``SuperSeed`` on
  the seeder (it offers each downloader pieces nobody holds and serves only those).

Figures (``Result``): each downloader's finish, the last, the minimum distribution time
``T_min = max(F/u_s, F/d_min, N F/(u_s + sum u_i))`` (Kumar and Ross 2006) over the
downloaders present to the end, the copies of the file the seeder uploaded and the
copies each downloader received (1.0 is no waste).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pshare.core.block_picker import Block, BlockPicker
from p2pshare.core.piece_picker import PiecePicker
from p2pshare.core.pieces import PieceSet
from p2pshare.core.super_seed import SuperSeed
from p2pshare.core.upload_queue import UploadQueue, limit_for

MIB = 1 << 20
KIB = 1 << 10
MBIT = 1e6 / 8  # bytes per second

# the legacy adapter's settings (peer/swarm.py, config.py)
LEGACY_STREAMS = 4  # streams_per_provider
LEGACY_BATCH = 8  # pieces_per_request
LEGACY_HAVE_POLL = 1.0  # HAVE_REFRESH
LEGACY_IDLE_WAIT = 1.0  # an idle worker waits for a change or this long
IDLE_AGAIN = 0.2  # an idle super-seeder looks again this much later (peer/rpc/uplink.py)
CANCEL_OVERRUN = 256 * KIB  # bytes of a cancelled stream still sent (HTTP/2 window)
CHUNK = 128 * KIB  # how finely uplinks interleave the streams they serve


@dataclass(frozen=True)
class HostSpec:
    up: float  # bytes per second
    down: float = math.inf
    delay: float = 0.010  # one-way, on everything this host sends
    join: float = 0.0
    leave: float | None = None  # a downloader that leaves at this time, unfinished


@dataclass(frozen=True)
class Testbed:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    seeder: HostSpec
    downloaders: tuple[HostSpec, ...]
    file_size: int = 64 * MIB
    piece_size: int = MIB
    block_size: int = 128 * KIB

    @classmethod
    def default(cls) -> Testbed:
        """Issue 13's testbed: a seeder and six downloaders, 40 Mbit/s up, 10 ms."""
        return cls(HostSpec(40 * MBIT), tuple(HostSpec(40 * MBIT) for _ in range(6)))

    @classmethod
    def harder(cls) -> Testbed:
        """Twelve downloaders with 10, 40 and 100 Mbit/s uplinks; one joins 5 s late,
        one leaves after 6 s."""
        ups = [10, 40, 100] * 4
        hosts = [HostSpec(u * MBIT) for u in ups]
        hosts[4] = HostSpec(40 * MBIT, join=5.0)
        hosts[8] = HostSpec(100 * MBIT, leave=6.0)
        return cls(HostSpec(40 * MBIT), tuple(hosts))

    def t_min(self) -> float:
        """Kumar and Ross' minimum distribution time, over the downloaders that stay."""
        stay = [d for d in self.downloaders if d.leave is None]
        f = self.file_size
        return max(
            f / self.seeder.up,
            f / min(d.down for d in stay),
            len(stay) * f / (self.seeder.up + sum(d.up for d in stay)),
        )


@dataclass
class Result:
    testbed: Testbed
    protocol: str
    finish: dict[int, float]  # downloader -> when it held the whole file
    uploaded: list[int]  # bytes each host sent, the seeder first
    received: list[int]  # bytes each host received, the seeder first

    @property
    def last(self) -> float:
        return max(self.finish.values())

    @property
    def t_min(self) -> float:
        return self.testbed.t_min()

    @property
    def ratio(self) -> float:
        return self.last / self.t_min

    @property
    def seeder_copies(self) -> float:
        return self.uploaded[0] / self.testbed.file_size

    def received_copies(self, downloader: int) -> float:
        return self.received[downloader + 1] / self.testbed.file_size

    @property
    def max_received_copies(self) -> float:
        return max(self.received_copies(d) for d in self.finish)

    def summary(self) -> str:
        return (
            f"{self.protocol}: last {self.last:.1f} s, T_min {self.t_min:.1f} s,"
            f" ratio {self.ratio:.2f}, seeder {self.seeder_copies:.2f} copies,"
            f" downloaders received {self.max_received_copies:.2f} copies at most"
        )


class Clock:
    """The event queue: callbacks at times, run in time order (ties in call order)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run(self, until: float, done: Callable[[], bool]) -> None:
        while self._queue and not done():
            when, _, fn, args = heapq.heappop(self._queue)
            if when > until:
                raise AssertionError(f"the swarm did not finish in {until} simulated seconds")
            self.now = when
            fn(*args)


@dataclass
class Chunk:
    to: Host
    size: int
    then: Callable[..., None]
    args: tuple[Any, ...]


class Host:
    """One machine: its links, its neighbours, and (in subclasses) its peer."""

    def __init__(self, swarm: Swarm, index: int, spec: HostSpec) -> None:
        self.swarm = swarm
        self.clock = swarm.clock
        self.index = index  # 0: the seeder
        self.spec = spec
        self.alive = False
        self.neighbours: dict[int, Host] = {}
        self.sending = False
        self.uploaded = 0
        self.received = 0
        self.down_free = 0.0
        self.finished: float | None = None

    # -- links -----------------------------------------------------------------------

    def send(self, to: Host, fn: Callable[..., None], *args: Any) -> None:
        """A control message: it takes the delay, no bandwidth."""
        self.clock.after(self.spec.delay, self._deliver, to, fn, args)

    def _deliver(self, to: Host, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self.alive and to.alive and to.index in self.neighbours:
            fn(*args)

    def kick(self) -> None:
        """Start sending the next chunk if the uplink is idle."""
        if self.sending or not self.alive:
            return
        chunk = self.next_chunk()
        if chunk is None:
            return
        self.sending = True
        self.clock.after(chunk.size / self.spec.up, self._sent, chunk)

    def _sent(self, chunk: Chunk) -> None:
        self.sending = False
        if not self.alive:
            return
        self.uploaded += chunk.size
        to = chunk.to
        arrive = self.clock.now + self.spec.delay
        if math.isfinite(to.spec.down):
            arrive = max(arrive, to.down_free) + chunk.size / to.spec.down
            to.down_free = arrive
        self.clock.at(arrive, self._arrive, chunk)
        self.kick()

    def _arrive(self, chunk: Chunk) -> None:
        if self.alive and chunk.to.alive and chunk.to.index in self.neighbours:
            chunk.to.received += chunk.size
            chunk.then(*chunk.args)

    # -- the peer (subclasses) ---------------------------------------------------------

    def next_chunk(self) -> Chunk | None:
        raise NotImplementedError

    def connected(self, other: Host) -> None:
        """A connection to ``other`` is up (both ends are told)."""

    def disconnected(self, other: Host) -> None:
        """``other`` went away."""

    def done(self) -> None:
        self.finished = self.clock.now
        self.swarm.finished(self)


# -- the new core ----------------------------------------------------------------------


class BlockPeer(Host):
    """A peer on the new core: blocks, Have pushed, fair uplink, super-seeding."""

    def __init__(self, swarm: Swarm, index: int, spec: HostSpec, rng: random.Random) -> None:
        super().__init__(swarm, index, spec)
        tb = swarm.testbed
        count = -(-tb.file_size // tb.piece_size)
        rules = swarm.rules
        self.queue: UploadQueue[int, Block] = UploadQueue(
            max_queued=limit_for(spec.up, tb.block_size) if rules.choking else None,
            group=_piece_of if rules.copy_at_a_time else None,
        )
        self.picker: BlockPicker[int] | None = None
        self.seed: SuperSeed[int] | None = None
        if index == 0:
            self.have = PieceSet(count, range(count))
            if rules.super_seeding:
                self.seed = SuperSeed(count, start=rng.randrange(count))
        else:
            self.picker = BlockPicker(
                file_size=tb.file_size,
                piece_size=tb.piece_size,
                block_size=tb.block_size,
                start=rng.randrange(count),
            )
            self.have = self.picker.held
        self.block_size = min(tb.block_size, tb.piece_size)

    def connected(self, other: Host) -> None:
        if self.seed is None:  # the seeder answers a bitfield with its offers
            self.send(
                other,
                other.on_bitfield,
                self,
                PieceSet.from_bytes(self.have.count, self.have.to_bytes()),
            )

    def disconnected(self, other: Host) -> None:
        self.queue.drop(other.index)
        if self.seed is not None:
            self.seed.leave(other.index)
        if self.picker is not None:
            self.picker.remove_provider(other.index)
            self.pump_all()

    def on_bitfield(self, src: BlockPeer, have: PieceSet) -> None:
        if self.seed is not None:
            offers = self.seed.join(src.index, have)
            self.send(src, src.on_bitfield, self, PieceSet(have.count, offers))
            return
        if self.picker is None:
            return  # a seeder without super-seeding sent its bitfield on connecting
        if not self.picker.add_provider(src.index, have):
            self.picker.update_have(src.index, have)
        self.pump(src)

    def on_have(self, src: BlockPeer, piece: int) -> None:
        if self.seed is not None:
            for downloader, offer in self.seed.has(src.index, piece):
                if downloader in self.neighbours:
                    to = self.neighbours[downloader]
                    self.send(to, to.on_have, self, offer)
            return
        if self.picker is not None:
            self.picker.add_have(src.index, piece)
            self.pump(src)

    def pump(self, provider: Host) -> None:
        picker = self.picker
        if picker is None or picker.complete or not self.alive:
            return
        now = self.clock.now
        blocks = picker.pick(provider.index, picker.budget(provider.index, now), now)
        if blocks:
            self.send(provider, provider.on_request, self, blocks)

    def pump_all(self) -> None:
        for other in list(self.neighbours.values()):
            self.pump(other)

    def on_request(self, src: BlockPeer, blocks: list[Block]) -> None:
        refused = []
        for block in blocks:
            piece = block[0]
            ok = piece in self.have and (self.seed is None or self.seed.may_serve(src.index, piece))
            if not ok:
                self.send(src, src.on_reject, self, block)
            elif not self.queue.request(src.index, block):
                refused.append(block)
        if refused:
            self.send(src, src.on_choke, self, refused)
        self.kick()

    def on_choke(self, src: BlockPeer, blocks: list[Block]) -> None:
        assert self.picker is not None
        self.picker.choke(src.index)
        for block in blocks:
            self.picker.failed(src.index, block)
        for other in list(self.neighbours.values()):
            if other is not src:
                self.pump(other)

    def on_unchoke(self, src: BlockPeer) -> None:
        if self.picker is not None:
            self.picker.unchoke(src.index)
            self.pump(src)

    def on_cancel(self, src: BlockPeer, block: Block) -> None:
        self.queue.cancel(src.index, block)

    def on_reject(self, src: BlockPeer, block: Block) -> None:
        assert self.picker is not None
        self.picker.failed(src.index, block)
        for other in list(self.neighbours.values()):
            if other is not src:
                self.pump(other)

    def next_chunk(self) -> Chunk | None:
        item = self.queue.next()
        if item is None:
            if self.seed is not None:  # idle: offer beyond the spread limit
                offers = self.seed.idle()
                for downloader, offer in offers:
                    to = self.neighbours[downloader]
                    self.send(to, to.on_have, self, offer)
                if offers:  # still idle later (offers that bring no request): look again
                    self.clock.after(IDLE_AGAIN, self.kick)
            return None
        requester, block = item
        invited = self.queue.unchoke()
        if invited is not None and invited in self.neighbours:
            self.send(self.neighbours[invited], self.neighbours[invited].on_unchoke, self)
        to = self.neighbours[requester]
        size = self.swarm.block_length(block)
        return Chunk(to, size, to.on_block, (self, block))

    def on_block(self, src: BlockPeer, block: Block) -> None:
        picker = self.picker
        assert picker is not None
        arrival = picker.received(src.index, block, self.clock.now)
        for other, dup in arrival.cancels:
            if other in self.neighbours:
                self.send(self.neighbours[other], self.neighbours[other].on_cancel, self, dup)
        if arrival.piece_done is not None:
            picker.piece_verified(arrival.piece_done)  # the sim sends no bad data
            for other in list(self.neighbours.values()):
                self.send(other, other.on_have, self, arrival.piece_done)
            if picker.complete:
                self.done()
                return
        self.pump(src)
        for other, _ in arrival.cancels:
            if other in self.neighbours:
                self.pump(self.neighbours[other])
        if picker.endgame:
            self.pump_all()


def _piece_of(block: Block) -> int:
    return block[0]


# -- today's adapter -------------------------------------------------------------------


@dataclass
class _Stream:
    id: int
    provider: int
    pending: set[int]
    cancelled: bool = False


@dataclass
class _Flow:
    """A GetPieces stream being served: pieces left, bytes left of the current one."""

    to: int
    stream: int
    pieces: deque[int]
    left: int = 0
    overrun: int | None = None  # after a cancel: bytes still to cross, then stop
    head: int = field(default=-1)


class LegacyPeer(Host):
    """A peer as ``peer/swarm.py`` and ``peer/peer_server.py`` work today."""

    def __init__(self, swarm: Swarm, index: int, spec: HostSpec, rng: random.Random) -> None:
        super().__init__(swarm, index, spec)
        tb = swarm.testbed
        count = -(-tb.file_size // tb.piece_size)
        self.picker: PiecePicker[int] | None = None
        if index == 0:
            self.have = PieceSet(count, range(count))
        else:
            self.picker = PiecePicker(count, piece_size=tb.piece_size, start=rng.randrange(count))
            self.have = self.picker.held
        self.flows: OrderedDict[tuple[int, int], _Flow] = OrderedDict()
        self.streams: dict[int, _Stream] = {}
        self.waiting: dict[tuple[int, int], bool] = {}  # idle workers: not yet woken?
        self.ids = itertools.count()
        self.polling = False

    # downloader side

    def connected(self, other: Host) -> None:
        if self.picker is None:
            return
        self.send(other, other.on_get_have, self)
        if not self.polling:
            self.polling = True
            self.clock.after(LEGACY_HAVE_POLL, self.poll_haves)

    def disconnected(self, other: Host) -> None:
        self.flows = OrderedDict((k, f) for k, f in self.flows.items() if f.to != other.index)
        if self.picker is not None:
            self.picker.remove_provider(other.index)
            for stream in list(self.streams.values()):
                if stream.provider == other.index:
                    del self.streams[stream.id]
            self.notify()

    def on_get_have(self, src: LegacyPeer) -> None:
        have = (
            None
            if self.have.complete
            else PieceSet.from_bytes(self.have.count, self.have.to_bytes())
        )
        self.send(src, src.on_have_map, self, have)

    def on_have_map(self, src: LegacyPeer, have: PieceSet | None) -> None:
        picker = self.picker
        if picker is None or picker.complete:
            return
        if picker.add_provider(src.index, have):
            for k in range(LEGACY_STREAMS):
                self.work(src.index, k)
        else:
            picker.update_have(src.index, have)
            self.notify()

    def poll_haves(self) -> None:
        picker = self.picker
        if picker is None or picker.complete or not self.alive:
            return
        for p in picker.providers:
            if not picker.is_seeder(p) and p in self.neighbours:
                self.send(self.neighbours[p], self.neighbours[p].on_get_have, self)
        self.clock.after(LEGACY_HAVE_POLL, self.poll_haves)

    def work(self, provider: int, worker: int) -> None:
        picker = self.picker
        assert picker is not None
        self.waiting.pop((provider, worker), None)
        if picker.complete or provider not in picker.providers or not self.alive:
            return
        now = self.clock.now
        batch = picker.pick(provider, min(LEGACY_BATCH, picker.budget(provider, now)))
        if not batch:
            if picker.is_seeder(provider) and not picker.wanted_from(provider):
                return
            self.waiting[(provider, worker)] = True
            self.clock.after(LEGACY_IDLE_WAIT, self.wake, provider, worker)
            return
        stream = _Stream(next(self.ids) * 64 + worker, provider, set(batch))
        self.streams[stream.id] = stream
        to = self.neighbours[provider]
        self.send(to, to.on_get_pieces, self, stream.id, batch)

    def wake(self, provider: int, worker: int) -> None:
        if (provider, worker) in self.waiting:
            self.work(provider, worker)

    def notify(self) -> None:
        """Wake every idle worker (once: a worker already woken is not woken again)."""
        for key, idle in self.waiting.items():
            if idle:
                self.waiting[key] = False
                self.clock.after(0, self.wake, *key)

    def on_piece(self, src: LegacyPeer, stream_id: int, index: int) -> None:
        picker = self.picker
        assert picker is not None
        stream = self.streams.get(stream_id)
        if stream is None or stream.cancelled:
            return  # bytes of a cancelled stream: wasted
        stream.pending.discard(index)
        size = self.swarm.piece_length(index)
        if picker.received(src.index, index, now=self.clock.now, size=size):
            if picker.complete:
                # the swarm ends: its workers are cancelled, and with them their streams
                for other in list(self.streams.values()):
                    self.end_stream(other, cancel=other is not stream)
                self.done()
                return
            # endgame: a stream elsewhere that only waits for pieces now held is cancelled
            for other in list(self.streams.values()):
                if (
                    other.provider != src.index
                    and other.pending
                    and all(i in picker.held for i in other.pending)
                ):
                    self.end_stream(other, cancel=True)
        if not stream.pending:
            self.end_stream(stream, cancel=False)
        self.notify()

    def end_stream(self, stream: _Stream, *, cancel: bool) -> None:
        assert self.picker is not None
        del self.streams[stream.id]
        for index in stream.pending:
            self.picker.failed(stream.provider, index)
        provider = self.neighbours.get(stream.provider)
        if cancel and provider is not None:
            stream.cancelled = True
            self.send(provider, provider.on_cancel_stream, self, stream.id)
        self.work(stream.provider, stream.id % 64)

    # uploader side

    def on_get_pieces(self, src: LegacyPeer, stream_id: int, batch: list[int]) -> None:
        self.flows[(src.index, stream_id)] = _Flow(src.index, stream_id, deque(batch))
        self.kick()

    def on_cancel_stream(self, src: LegacyPeer, stream_id: int) -> None:
        flow = self.flows.get((src.index, stream_id))
        if flow is not None and flow.overrun is None:
            flow.overrun = CANCEL_OVERRUN

    def next_chunk(self) -> Chunk | None:
        while self.flows:
            key, flow = self.flows.popitem(last=False)
            if flow.overrun is not None and flow.overrun <= 0:
                continue
            if flow.left == 0:
                if not flow.pieces:
                    continue
                flow.head = flow.pieces.popleft()
                flow.left = self.swarm.piece_length(flow.head)
            size = min(CHUNK, flow.left)
            if flow.overrun is not None:
                size = min(size, flow.overrun)
                flow.overrun -= size
            flow.left -= size
            if flow.left or flow.pieces:
                self.flows[key] = flow  # to the back of the line
            to = self.neighbours.get(flow.to)
            if to is None:
                continue
            if flow.left == 0 and flow.overrun is None:
                return Chunk(to, size, to.on_piece, (self, flow.stream, flow.head))
            return Chunk(to, size, _nothing, ())
        return None


def _nothing() -> None:
    pass


# -- the swarm ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The new core's rules that the ``block`` protocol may leave out, to measure each."""

    super_seeding: bool = True  # SuperSeed on the seeder (else it announces every piece)
    copy_at_a_time: bool = True  # UploadQueue's group: the copy furthest along first
    choking: bool = True  # UploadQueue's max_queued: requests over a share are refused


class Swarm:
    """Hosts on a full mesh (the tracker hands every peer all others), joining and
    leaving as their specs say, until every downloader present is done."""

    def __init__(
        self, testbed: Testbed, protocol: str = "block", *, seed: int = 0, rules: Rules = Rules()
    ) -> None:
        self.testbed = testbed
        self.protocol = protocol
        self.rules = rules
        self.clock = Clock()
        rng = random.Random(seed)
        kind = {"block": BlockPeer, "legacy": LegacyPeer}[protocol]
        specs = (testbed.seeder, *testbed.downloaders)
        self.hosts: list[Host] = [kind(self, i, s, rng) for i, s in enumerate(specs)]
        self.waiting_for = {i for i, s in enumerate(specs) if i and s.leave is None}

    def piece_length(self, piece: int) -> int:
        tb = self.testbed
        return min(tb.piece_size, tb.file_size - piece * tb.piece_size)

    def block_length(self, block: Block) -> int:
        size = min(self.testbed.block_size, self.testbed.piece_size)
        return min(size, self.piece_length(block[0]) - block[1] * size)

    def run(self, *, until: float = 600.0) -> Result:
        for host in self.hosts:
            self.clock.at(host.spec.join, self.join, host)
            if host.spec.leave is not None:
                self.clock.at(host.spec.leave, self.leave, host)
        self.clock.run(until, lambda: not self.waiting_for)
        return Result(
            self.testbed,
            self.protocol,
            {h.index - 1: h.finished for h in self.hosts if h.finished is not None},
            [h.uploaded for h in self.hosts],
            [h.received for h in self.hosts],
        )

    def join(self, host: Host) -> None:
        host.alive = True
        for other in self.hosts:
            if other is not host and other.alive:
                host.neighbours[other.index] = other
                other.neighbours[host.index] = host
                host.connected(other)
                other.connected(host)

    def leave(self, host: Host) -> None:
        if host.finished is not None:
            return
        host.alive = False
        for other in list(host.neighbours.values()):
            del other.neighbours[host.index]
            self.clock.after(other.spec.delay, other.disconnected, host)
        host.neighbours.clear()

    def finished(self, host: Host) -> None:
        self.waiting_for.discard(host.index)
