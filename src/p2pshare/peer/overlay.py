"""The overlay: neighbours kept alive over gRPC, and searches that travel peer to peer.

The asyncio side of ``core.neighbours`` and ``core.query_router`` (DESIGN.md,
Network: *Overlay* and *Search*). One task keeps the neighbour table alive: it
asks the table whom to greet (``due``), sends those ``Hello`` calls, reports
each answer or failure back, and saves the neighbours to
``<data>/neighbours.json`` whenever they change, so a restart rejoins through
them when the tracker is down. Candidates come from that file, the ``seeds`` of
the config, the tracker's sample, the neighbours' ``Hello`` answers and the
peers that greet this one.

Searches travel as ``Search`` calls that carry a query id. Hits come back along
the reverse path as gRPC server streams: a peer yields its own hits at once,
forwards the query to the neighbours the router picks, all concurrently, and
relays their streams into its own, each hit's ``hops`` one larger. Why streams
rather than hits sent straight to the asker (Gnutella's QueryHit routing, or a
callback to the asker's address): the asker may not be reachable from every peer
(behind NAT it is only reachable over the connection it opened), a stream needs
no second listener or per-query state to route replies, and cancellation and
deadlines are gRPC's: when the asker stops reading or its deadline passes, every
hop below is cancelled. Each hop gives its neighbours a deadline a little shorter
than its own, so the deepest peers stop first and their hits still make it back.
The cost, one open stream per hop while the query runs, is bounded: a peer
relays at most ``max_relays`` queries at once and answers any more from its own
share only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.manifest import check_content_id
from p2pshare.core.names import parse_query
from p2pshare.core.neighbours import Change, Dropped, NeighbourTable
from p2pshare.core.query_router import (
    MAX_TTL,
    MAX_WALKERS,
    Mode,
    Query,
    QueryRouter,
    Route,
)
from p2pshare.peer.peer_client import PeerClients
from p2pshare.peer.share import Share
from p2pshare.tracker.models import check_address

log = logging.getLogger(__name__)

SAVED_NAME = "neighbours.json"
HELLO_TIMEOUT = 2.0
TICK = 1.0  # seconds between looks at the neighbour table
DEFAULT_DEADLINE = 3.0  # a relayed query whose caller set no deadline
MAX_DEADLINE = 30.0
MAX_RELAYS = 64  # queries forwarded at once; more are answered from the share only
MAX_HITS_PER_NEIGHBOUR = 2000  # hits relayed from one neighbour's stream for one query
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_QUERY_ID = 64

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
    ) -> None:
        self._clients = clients
        self._share = share
        self._me = me
        self._saved_path = saved
        self._seeds = list(seeds)
        self._learn = learn
        self._rng = rng or random.Random()
        self._tick = tick
        self._max_relays = max_relays
        self._relays = 0
        self.table = NeighbourTable(me="", capacity=capacity)
        self.router = QueryRouter()
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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._save()

    # -- neighbours -----------------------------------------------------------------

    def offer(self, addresses: Iterable[str]) -> None:
        """Candidate neighbours (e.g. the tracker's sample); greeted at the next tick."""
        self.table.offer(addresses)
        self._wake.set()

    def neighbours(self) -> list[str]:
        return self.table.addresses()

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

    async def search(
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
        try:
            q, route = self.router.start(
                me=self._me().address,
                ttl=ttl,
                walkers=walkers,
                neighbours=self.table.addresses(),
                now=time.monotonic(),
                rng=self._rng,
            )
        except ValueError as exc:
            raise errors.UsageError(str(exc)) from exc
        self.queries_started += 1
        request = pb.SearchRequest(
            query=query, limit=limit, content_id=content_id, origin=self._me()
        )
        async for hit in self._forward(request, route, time.monotonic() + timeout):
            yield hit

    async def relay(
        self, request: pb.SearchRequest, time_remaining: float | None
    ) -> AsyncIterator[pb.SearchHit]:
        """Answer a query that came from ``request.sender``: our own hits unless we
        answered this query id before, then the hits of the neighbours it goes on to."""
        if len(request.query_id) > MAX_QUERY_ID:
            raise errors.UsageError(f"query_id is longer than {MAX_QUERY_ID} characters")
        own = self.local_hits(request)  # also refuses a malformed query before it spreads
        query = Query(
            request.query_id,
            min(request.ttl, MAX_TTL),
            _MODES.get(request.mode, Mode.FLOOD),
            min(max(request.walkers, 1), MAX_WALKERS),
            origin=request.origin.address,
        )
        now = time.monotonic()
        route = self.router.receive(
            query,
            sender=request.sender.address,
            neighbours=self.table.addresses(),
            now=now,
            rng=self._rng,
        )
        self.queries_relayed += 1
        if route.answer:
            for hit in own:
                yield hit
        deadline = now + min(time_remaining or DEFAULT_DEADLINE, MAX_DEADLINE)
        async for hit in self._forward(request, route, deadline):
            yield hit

    def local_hits(self, request: pb.SearchRequest) -> list[pb.SearchHit]:
        """What our own share holds for ``request`` (by content id, or by name)."""
        me = self._me()
        if request.content_id:
            try:
                shared = self._share.get(check_content_id(request.content_id))
            except errors.NotFound:
                return []
            found = [shared]
        else:
            try:
                parsed = parse_query(request.query)
            except ValueError as exc:
                raise errors.UsageError(str(exc)) from exc
            found = self._share.search(parsed, min(request.limit or DEFAULT_LIMIT, MAX_LIMIT))
        return [
            pb.SearchHit(content_id=f.content_id, name=f.name, size=f.size, provider=me)
            for f in found
        ]

    async def _forward(
        self, request: pb.SearchRequest, route: Route, deadline: float
    ) -> AsyncIterator[pb.SearchHit]:
        """Send the routed messages concurrently; relay the hits of all their streams."""
        remaining = deadline - time.monotonic()
        # leave our caller time to receive what we relay: a tenth, at most 100 ms
        timeout = remaining - min(0.1, remaining / 10)
        if not route.forward or timeout <= 0 or self._relays >= self._max_relays:
            return
        me = self._me()
        queue: asyncio.Queue[pb.SearchHit | None] = asyncio.Queue()

        async def pump(address: str, q: Query) -> None:
            msg = pb.SearchRequest()
            msg.CopyFrom(request)
            msg.query_id, msg.ttl, msg.walkers = q.query_id, q.ttl, q.walkers
            msg.mode = _PB_MODES[q.mode]
            msg.sender.CopyFrom(me)
            count = 0
            try:
                async for hit in self._clients.search_stream(address, msg, timeout=timeout):
                    hit.hops += 1
                    queue.put_nowait(hit)
                    count += 1
                    if count >= MAX_HITS_PER_NEIGHBOUR:
                        break
            except errors.Unreachable as exc:
                log.debug("search via %s: %s", address, exc)
                self._note(self.table.failed(address, time.monotonic()))
            except errors.P2PShareError as exc:
                log.debug("search via %s: %s", address, exc)
            finally:
                queue.put_nowait(None)

        self._relays += 1
        self.messages_sent += len(route.forward)
        tasks = [asyncio.create_task(pump(a, q)) for a, q in route.forward]
        try:
            pending = len(tasks)
            while pending:
                hit = await queue.get()
                if hit is None:
                    pending -= 1
                else:
                    yield hit
        finally:
            self._relays -= 1
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _valid_address(address: str) -> bool:
    try:
        check_address(address)
    except ValueError:
        return False
    return True
