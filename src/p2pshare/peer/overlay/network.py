"""The overlay: neighbours kept alive over gRPC, and searches that travel peer to peer.

The asyncio side of ``core.neighbours`` and ``core.query_router`` (docs/design.md,
Network: *Overlay* and *Search*). One task keeps the neighbour table alive: it
asks the table whom to greet (``due``), sends those ``Hello`` calls, reports
each answer or failure back, and saves the neighbours to
``<data>/neighbours.json`` whenever they change, so a restart rejoins through
them when the tracker is down. Candidates come from that file, the ``seeds`` of
the config, the tracker's sample, the neighbours' ``Hello`` answers and the
peers that greet this one.

Searches travel on one long-lived bidirectional ``Overlay`` stream per pair of
neighbours (a ``Link``), opened by whichever needs it first and then used by both:
a query is one message on it, and so is each reply. A peer that sends a query on
gives it a tag; its neighbours' replies (hits, and ``done`` when they have no
more) come back with that tag on the link the query went out on, and the peer
passes the hits back on the link the query came from, each hit's ``hops`` one
larger: hits travel the reverse path, Gnutella-style, and reach the asker as they
are found. The bookkeeping (which tag came from where, which links still owe a
reply, deadlines) is the pure ``core.reverse_paths``.

Why not one gRPC call per query and hop (the first design: server streams along
the reverse path): a flood with TTL 4 among 100 peers of degree 8 is ~660
messages, most of them duplicates answered with nothing, and a call costs
roughly 0.6 ms of CPU between two Python peers (set-up, metadata, status, a
handler task); with messages on open streams a flood costs a third of the CPU
(bench/OVERLAY.md has the measurements), and the whole flood's CPU cost is what
stands between the asker and its first hit when peers share CPUs. Copies that
cross on a link need no reply at all (``covers``: ``QueryRouter``).

What the call-per-hop design gave is kept: replies still go back over the
connection the neighbour opened or accepted, never to an address of the asker,
so a peer behind NAT is reached over the stream it opened; deadlines and
cancellation travel as messages: each query carries the time its receiver has, a
hop gives its neighbours a little less than it has itself (so the deepest peers
stop first and their hits still make it back), a peer whose deadline passes
tells its upstream it is done and sends ``cancel`` downstream, and so does one
whose asker stops reading. A lost link counts as done for every query waiting on
it and cancels every query that came over it. A peer relays at most
``max_relays`` queries at once and answers any more from its own share only.
Messages that pile up for one link while a write is in flight go out together
in the next write (an ``OverlayBatch``). The price: a stream per neighbour stays
open (two if both ends dialled at once; the newest carries our queries), about
0.2 ms of CPU a second per peer while idle, and our own streams to a neighbour
that is dropped are hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.addresses import check_address
from p2pshare.core.manifest import check_content_id
from p2pshare.core.names import parse_query
from p2pshare.core.neighbours import Change, Dropped, NeighbourTable
from p2pshare.core.query_router import (
    Mode,
    QueryRouter,
    Route,
    admit,
    downstream_timeout,
    relay_deadline,
)
from p2pshare.core.reverse_paths import Relay, ReversePaths
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.sharing.share import Share

log = logging.getLogger(__name__)

SAVED_NAME = "neighbours.json"
HELLO_TIMEOUT = 2.0
TICK = 1.0  # seconds between looks at the neighbour table
MAX_RELAYS = 64  # queries forwarded at once; more are answered from the share only
MAX_HITS_PER_NEIGHBOUR = 2000  # hits relayed from one neighbour for one query
MAX_QUEUED = 20_000  # messages waiting for one link's stream before it is cut
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_MODES = {pb.SEARCH_MODE_FLOOD: Mode.FLOOD, pb.SEARCH_MODE_WALK: Mode.WALK}
_PB_MODES = {m: p for p, m in _MODES.items()}


class Overlay:
    """This peer's place in the overlay: its neighbours and the queries it routes."""

    def __init__(
        self,
        *,
        clients: PeerClients,
        share: Share,
        me: Callable[[], pb.PeerInfo],
        saved: Path,
        capacity: int,
        seeds: Sequence[str] = (),
        learn: bool = True,
        rng: random.Random | None = None,
        tick: float = TICK,
        max_relays: int = MAX_RELAYS,
        versioned_hits: Callable[[pb.SearchRequest], list[pb.SearchHit]] = lambda r: [],
    ) -> None:
        """``versioned_hits``: the answer to a ``Search`` with ``with_versions`` (folder
        sync: every name's version, removed ones too)."""
        self._clients = clients
        self._share = share
        self._versioned_hits = versioned_hits
        self._me = me
        self._saved_path = saved
        self._seeds = list(seeds)
        self._learn = learn
        self._rng = rng or random.Random()
        self._tick = tick
        self._max_relays = max_relays
        self.table = NeighbourTable(me="", capacity=capacity)
        self.router = QueryRouter()
        self.paths: ReversePaths[Link] = ReversePaths(max_hits_per_link=MAX_HITS_PER_NEIGHBOUR)
        self._timer: asyncio.TimerHandle | None = None  # at the earliest relay's deadline
        self._timer_at = math.inf
        self._links: dict[str, Link] = {}  # the link our queries to each neighbour go on
        self._open: set[Link] = set()
        self._dialled: set[asyncio.Task[None]] = set()  # the tasks of the links we opened
        self._askers: dict[int, asyncio.Queue[list[pb.SearchHit] | None]] = {}
        self._saved: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Change], None]] = []
        self.queries_started = 0
        self.queries_relayed = 0
        self.messages_sent = 0

    # -- start and stop -------------------------------------------------------------

    def start(self) -> None:
        """Begin keeping neighbours: from the saved list and the seeds first."""
        self.table.set_me(self._me().address)
        self._saved = self._load()
        self.table.offer(self._saved + self._seeds)
        self._task = asyncio.create_task(self._maintain(), name="overlay")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        tasks = list(self._dialled) + ([self._task] if self._task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._save()

    # -- neighbours -----------------------------------------------------------------

    def offer(self, addresses: Iterable[str]) -> None:
        """Candidate neighbours (e.g. the tracker's sample); greeted at the next tick."""
        self.table.offer(addresses)
        self._wake.set()

    def neighbours(self) -> list[str]:
        return self.table.addresses()

    def candidate_count(self) -> int:
        """Peers known as possible neighbours, not (yet) neighbours."""
        return len(self.table.candidates())

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` with every change of neighbours (``Added``, ``Dropped``),
        e.g. to open or close a subscription stream to each neighbour."""
        self._listeners.append(listener)

    def known(self) -> list[pb.PeerInfo]:
        """Our neighbours, as a ``Hello`` answer tells them."""
        out = []
        for address in self.table.addresses():
            n = self.table.get(address)
            out.append(pb.PeerInfo(peer_id=n.peer_id if n else "", address=address))
        return out

    def hello_from(self, peer: pb.PeerInfo) -> bool:
        """A peer greeted us; whether we keep it as a neighbour (``accepted``)."""
        try:
            check_address(peer.address)
        except ValueError:
            return False
        self._note(self.table.heard_from(peer.address, time.monotonic(), peer_id=peer.peer_id))
        return peer.address in self.table

    async def _maintain(self) -> None:
        while True:
            targets = self.table.due(time.monotonic(), self._rng)
            if targets:
                await asyncio.gather(*(self._hello(a) for a in targets))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick)

    async def _hello(self, address: str) -> None:
        try:
            reply = await self._clients.hello(address, timeout=HELLO_TIMEOUT)
        except errors.P2PShareError as exc:
            if isinstance(exc, errors.PermissionDenied):  # another network, or a wrong key
                log.warning("hello %s refused: %s", address, exc)
            else:
                log.debug("hello %s: %s", address, exc)
            self._note(self.table.failed(address, time.monotonic()))
            return
        known = [k.address for k in reply.known if _valid_address(k.address)]
        change = self.table.answered(
            address,
            time.monotonic(),
            peer_id=reply.peer.peer_id,
            known=known if self._learn else (),
            accepted=reply.accepted,
        )
        self._note(change)

    def _note(self, change: Change | None) -> None:
        if change is not None:
            log.info("neighbour %s", change)
            self._save()
            for listener in self._listeners:
                listener(change)
            if isinstance(change, Dropped):
                self._wake.set()  # look for a replacement now
                for link in list(self._open):
                    if link.address == change.address:
                        link.close()  # the streams we opened to it (it may close its own)

    def _load(self) -> list[str]:
        try:
            doc = json.loads(self._saved_path.read_text())
            addresses = doc["neighbours"]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", self._saved_path, exc)
            return []
        if not isinstance(addresses, list):
            return []
        return [a for a in addresses if isinstance(a, str) and _valid_address(a)]

    def _save(self) -> None:
        """Write the neighbours if they changed (never an empty list over a good one)."""
        addresses = sorted(self.table.addresses())
        if not addresses or addresses == sorted(self._saved):
            return
        tmp = self._saved_path.with_name(self._saved_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"neighbours": addresses}, indent=1) + "\n")
            os.replace(tmp, self._saved_path)
        except OSError as exc:
            log.warning("cannot save neighbours to %s: %s", self._saved_path, exc)
            return
        self._saved = addresses

    # -- searches ---------------------------------------------------------------------

    async def search_overlay(
        self,
        *,
        query: str = "",
        content_id: str = "",
        ttl: int,
        walkers: int,
        limit: int,
        timeout: float,
    ) -> AsyncIterator[pb.SearchHit]:
        """Start a query from this peer; the other peers' hits as they arrive (``hops``:
        how far away each provider is). Our own share is not asked."""
        now = time.monotonic()
        q, route = self.router.start(
            me=self._me().address,
            ttl=ttl,
            walkers=walkers,
            neighbours=self.table.addresses(),
            now=now,
            rng=self._rng,
        )
        self.queries_started += 1
        template = pb.OverlayQuery(
            query_id=q.query_id, origin=self._me(), query=query, content_id=content_id, limit=limit
        )
        relay = self._forward(template, route, None, 0, now + timeout, now)
        if relay is None:
            return
        inbox: asyncio.Queue[list[pb.SearchHit] | None] = asyncio.Queue()
        self._askers[relay.tag] = inbox
        try:
            while (hits := await inbox.get()) is not None:
                for hit in hits:
                    yield hit
        finally:
            del self._askers[relay.tag]
            if self.paths.close(relay):  # the asker stopped reading before the end
                self._cancel_downstream(relay)

    def local_hits(self, request: pb.SearchRequest | pb.OverlayQuery) -> list[pb.SearchHit]:
        """What our own share holds for ``request`` (by content id, or by name); with
        ``with_versions``, each name's version, removed names too (folder sync)."""
        if isinstance(request, pb.SearchRequest) and request.with_versions:
            return self._versioned_hits(request)
        me = self._me()
        if request.content_id:
            try:
                shared = self._share.get(check_content_id(request.content_id))
            except errors.NotFound:
                return []
            found = [shared]
        else:
            parsed = parse_query(request.query)
            found = self._share.files_matching(
                parsed, min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
            )
        return [
            pb.SearchHit(content_id=f.content_id, name=f.name, size=f.size, provider=me)
            for f in found
        ]

    # -- links: the Overlay streams to the neighbours ----------------------------------

    async def accept(
        self,
        incoming: AsyncIterator[pb.OverlayBatch],
        write: Callable[[pb.OverlayBatch], Awaitable[None]],
    ) -> None:
        """Serve an ``Overlay`` stream another peer opened, until it ends; its first
        message says who the peer is."""
        batches = aiter(incoming)
        try:
            first = await asyncio.wait_for(anext(batches, None), HELLO_TIMEOUT)
        except TimeoutError as exc:
            raise errors.TimedOut("no hello on the overlay stream") from exc
        if first is None or not first.messages or not first.messages[0].HasField("hello"):
            raise errors.UsageError("an overlay stream starts with hello")
        address = first.messages[0].hello.address
        if not _valid_address(address):
            raise errors.UsageError(f"bad address in hello: {address!r}")
        link = Link(address, write)
        # the newest link to a peer carries our queries to it: an older one may be dead
        self._links[address] = link
        self._read(link, first.messages[1:])
        await self._run_link(link, batches)

    def _link_to(self, address: str) -> Link:
        """The link queries to ``address`` go on; dialled now if there is none."""
        link = self._links.get(address)
        if link is None:
            stream = self._clients.overlay(address)
            link = Link(address, stream.write, hang_up=stream.cancel)
            link.send().hello.CopyFrom(self._me())
            self._links[address] = link
            task = asyncio.create_task(self._run_link(link, stream.batches()))
            self._dialled.add(task)
            task.add_done_callback(self._dialled.discard)
        return link

    async def _run_link(self, link: Link, incoming: AsyncIterator[pb.OverlayBatch]) -> None:
        """Write ``link``'s outbox and handle what comes in, until either fails or the
        stream ends; then the link is lost."""
        error: BaseException | None = None
        self._open.add(link)

        async def read() -> None:
            async for batch in incoming:
                self._read(link, batch.messages)

        tasks = [asyncio.create_task(link.write_all()), asyncio.create_task(read())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            error = next((t.exception() for t in done if t.exception()), None)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if link.hang_up is not None:
                link.hang_up()
            self._lost(link, error)
        if error is not None and not isinstance(error, errors.P2PShareError):
            raise error

    def _lost(self, link: Link, error: BaseException | None) -> None:
        """``link`` is gone: what waited for its replies is done with it, what came
        over it is cancelled."""
        self._open.discard(link)
        if self._links.get(link.address) is link:
            del self._links[link.address]
        over, cancelled = self.paths.lost(link)
        for relay in over:
            self._deliver(relay, (), over=True)
        for relay in cancelled:
            self._cancel_downstream(relay)
        if error is not None:
            log.debug("overlay link %s: %s", link.address, error)
        if link.hang_up is not None and not link.closed and isinstance(error, errors.Unreachable):
            self._note(self.table.failed(link.address, time.monotonic()))

    def _read(self, link: Link, messages: Iterable[pb.OverlayMessage]) -> None:
        for msg in messages:
            kind = msg.WhichOneof("kind")
            if kind == "query":
                self._on_query(link, msg.query)
            elif kind == "reply":
                self._on_reply(link, msg.reply)
            elif kind == "cancel":
                relay = self.paths.cancel(link, msg.cancel)
                if relay is not None:
                    self._cancel_downstream(relay)
            # a hello after the first message, or a kind from a newer peer: nothing to do

    def _on_query(self, link: Link, msg: pb.OverlayQuery) -> None:
        """A query from ``link``'s peer: our hits unless we answered its id before, and
        the query sent on where the router says; done at once if it goes nowhere."""
        now = time.monotonic()
        self.queries_relayed += 1
        if msg.covers:  # it stands for the sender's replies to copies we sent it
            for taken in self.paths.covered(msg.query_id, link.same_peer, msg.ttl):
                self._deliver(taken.relay, (), over=taken.over)
        try:
            if self.paths.came_from(link, msg.tag):
                raise errors.UsageError(f"tag {msg.tag} is already open")
            query = admit(
                query_id=msg.query_id,
                ttl=msg.ttl,
                mode=_MODES.get(msg.mode, Mode.FLOOD),
                walkers=msg.walkers,
                origin=msg.origin.address,
                covers=msg.covers,
            )
            route = self.router.receive(
                query,
                sender=link.address,
                neighbours=self.table.addresses(),
                now=now,
                rng=self._rng,
            )
            # a duplicate is not even parsed; anything else is refused before it spreads
            own = self.local_hits(msg) if route.answer or route.forward else []
        except errors.UsageError as exc:
            log.debug("query from %s refused: %s", link.address, exc)
            route, own = Route(answer=False), []
        if not route.reply:
            return  # our covering copy to the sender stands for the reply
        if not route.answer:
            own = []
        timeout = relay_deadline(msg.timeout_ms)
        relay = None
        if self.paths.relaying < self._max_relays:
            relay = self._forward(msg, route, link, msg.tag, now + timeout, now)
        if own or relay is None:
            reply = link.send().reply
            reply.tag = msg.tag
            reply.hits.extend(own)
            reply.done = relay is None

    def _forward(
        self,
        template: pb.OverlayQuery,
        route: Route,
        upstream: Link | None,
        up_tag: int,
        deadline: float,
        now: float,
    ) -> Relay[Link] | None:
        """Send ``route``'s messages (``template`` with each one's TTL and walkers) and
        open a relay for their replies; ``None`` if nothing was sent."""
        timeout_ms = int(downstream_timeout(deadline - now) * 1000)
        if not route.forward or timeout_ms <= 0:
            return None
        sends = [(self._link_to(address), q) for address, q in route.forward]
        relay = self.paths.open(
            query_id=template.query_id,
            upstream=upstream,
            up_tag=up_tag,
            ttl=route.forward[0][1].ttl,
            downstream=[link for link, _ in sends],
            deadline=deadline,
        )
        for link, q in sends:
            msg = link.send().query
            msg.CopyFrom(template)
            msg.tag, msg.ttl, msg.walkers = relay.tag, q.ttl, q.walkers
            msg.mode, msg.timeout_ms, msg.covers = _PB_MODES[q.mode], timeout_ms, q.covers
        self.messages_sent += len(sends)
        self._arm_timer()
        return relay

    def _on_reply(self, link: Link, msg: pb.OverlayReply) -> None:
        taken = self.paths.reply(msg.tag, link, hits=len(msg.hits), done=msg.done)
        if taken is None:
            return  # over here already, or not asked of this link
        hits = msg.hits[: taken.hits]
        for hit in hits:
            hit.hops += 1
        self._deliver(taken.relay, hits, over=taken.over)

    def _deliver(self, relay: Relay[Link], hits: Sequence[pb.SearchHit], *, over: bool) -> None:
        """Pass ``hits`` back towards the asker (and that the query is ``over`` here)."""
        if relay.upstream is None:
            inbox = self._askers.get(relay.tag)
            if inbox is not None:
                if hits:
                    inbox.put_nowait(list(hits))
                if over:
                    inbox.put_nowait(None)
        elif hits or over:
            reply = relay.upstream.send().reply
            reply.tag = relay.up_tag
            reply.hits.extend(hits)
            reply.done = over

    def _cancel_downstream(self, relay: Relay[Link]) -> None:
        for link in relay.waiting:
            link.send().cancel = relay.tag

    def _arm_timer(self) -> None:
        """One timer for every relay's deadline: set for the earliest one."""
        deadline = self.paths.next_deadline()
        if deadline is None or deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        for relay in self.paths.expired(time.monotonic()):
            self._deliver(relay, (), over=True)
            self._cancel_downstream(relay)
        self._arm_timer()


class Link:
    """One open ``Overlay`` stream with a neighbour, from either end. Messages wait in
    a batch that one task writes whenever the stream is free, so what piles up while
    a write is in flight goes out together in the next one. A neighbour that does not
    read what it is sent is cut off once ``MAX_QUEUED`` messages wait."""

    def __init__(
        self,
        address: str,
        write: Callable[[pb.OverlayBatch], Awaitable[None]],
        *,
        hang_up: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        # set when we opened it: ends the stream (and its failing says the peer is unreachable)
        self.hang_up = hang_up
        self.closed = False  # we hung up on purpose
        self._write = write
        self._outbox = pb.OverlayBatch()
        self._ready = asyncio.Event()

    def close(self) -> None:
        """Hang up a stream we opened (one the peer opened, it closes)."""
        if self.hang_up is not None:
            self.closed = True
            self.hang_up()

    def same_peer(self, other: Link) -> bool:
        return other.address == self.address

    def send(self) -> pb.OverlayMessage:
        """A new message in the outbox, for the caller to fill in."""
        self._ready.set()
        return self._outbox.messages.add()

    async def write_all(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if len(self._outbox.messages) > MAX_QUEUED:
                raise errors.Busy(f"peer {self.address} is not reading its overlay stream")
            batch, self._outbox = self._outbox, pb.OverlayBatch()
            await self._write(batch)


def _valid_address(address: str) -> bool:
    try:
        check_address(address)
    except ValueError:
        return False
    return True
