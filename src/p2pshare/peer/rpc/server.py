"""The server side of the peer protocol: serves this peer's share over gRPC.

Limits keep one remote peer from taking what others need: piece streams
(``max_uploads`` in all, ``max_uploads_per_peer`` per remote) and ``Subscribe``
streams (``max_subscribers``, ``max_subscribers_per_peer``), ``Overlay`` streams
(``MAX_OVERLAY_STREAMS``, ``MAX_OVERLAY_STREAMS_PER_PEER``), and the cheap calls
(Hello, GetManifest, GetHave, Search) by their rate per remote
(``max_calls_per_peer``); a call over a limit gets RESOURCE_EXHAUSTED at once and
others are served as before. A remote peer is its IP
address (``wire.remote_key``). Message sizes are capped by the channel options
(``wire.SERVER_OPTIONS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from p2pshare import __version__, errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.core.manifest import Manifest, check_content_id
from p2pshare.core.names import parse_query
from p2pshare.core.pieces import PieceSet
from p2pshare.core.rate import ClientBuckets, TokenBucket
from p2pshare.core.slots import Slots
from p2pshare.core.super_seed import SuperSeed
from p2pshare.peer.overlay.network import Overlay
from p2pshare.peer.overlay.publisher import Publisher, change_to_pb
from p2pshare.peer.rpc.uplink import MAX_BLOCK, MIN_BLOCK, BlockSource, PieceRead, Uplink
from p2pshare.peer.rpc.wire import (
    PROTOCOL_VERSION,
    SERVER_OPTIONS,
    encode_piece,
    is_loopback_peer,
    manifest_to_pb,
    remote_key,
    status_for,
)
from p2pshare.peer.sharing.share import Share
from p2pshare.peer.transfer.partial import PartialDownload

if TYPE_CHECKING:
    from p2pshare.tls import Tls  # loaded only when TLS is on (X.509 is ~10 MB)

log = logging.getLogger(__name__)

MAX_PIECES_PER_REQUEST = 1024
MAX_OVERLAY_STREAMS = 256
"""Overlay streams served at once: far more than the peers that take us as neighbour."""
MAX_OVERLAY_STREAMS_PER_PEER = 8
"""Per remote address: one per neighbour pair, a few peers behind one NAT address."""
MAX_EXCHANGES = 1024
"""Exchange streams served at once: one per downloader and file it fetches from us."""
MAX_EXCHANGES_PER_PEER = 64
LONE_OFFERS = 16
"""Pieces a super-seeder offers a downloader that is alone (see ``SuperSeed``)."""

Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M", bound=Message)


class _Malformed:
    """A request that did not parse. gRPC would answer UNKNOWN and log a traceback
    for a deserializer that raises, so the deserializer hands this to the servicer,
    whose wrapper answers INVALID_ARGUMENT."""

    def __init__(self, why: str) -> None:
        self.why = why


def _parser(cls: type[M]) -> Callable[[bytes], M | _Malformed]:
    def parse(data: bytes) -> M | _Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(f"malformed {cls.DESCRIPTOR.name}: {exc}")

    return parse


def _unary(
    fn: Callable[[Any, T, Ctx], Awaitable[R]],
) -> Callable[[Any, T, Ctx], Awaitable[R]]:
    """Map our errors to a gRPC status; anything else is logged as INTERNAL."""

    @functools.wraps(fn)
    async def wrapper(self: PeerService, request: T, context: Ctx) -> R:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.why)
        try:
            self.count_call(context)
            return await fn(self, request, context)
        except errors.P2PShareError as exc:
            await context.abort(status_for(exc), str(exc))
        raise AssertionError("unreachable")  # context.abort always raises

    return wrapper


def _stream(
    fn: Callable[[Any, T, Ctx], AsyncIterator[R]],
) -> Callable[[Any, T, Ctx], AsyncIterator[R]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: T, context: Ctx) -> AsyncIterator[R]:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.why)
        try:
            async for item in fn(self, request, context):
                yield item
        except errors.P2PShareError as exc:
            await context.abort(status_for(exc), str(exc))

    return wrapper


class PeerService(pb_grpc.PeerServicer):
    """Answers other peers: who we are, manifests, pieces, searches (ours and the
    overlay's, see ``p2pshare.peer.overlay.network``)."""

    def __init__(
        self,
        *,
        share: Share,
        me: Callable[[], pb.PeerInfo],
        overlay: Overlay,
        publisher: Publisher | None = None,
        partial: Callable[[str], PartialDownload | None] = lambda content_id: None,
        max_uploads: int,
        max_uploads_per_peer: int | None = None,
        max_subscribers: int = 256,
        max_subscribers_per_peer: int = 8,
        max_overlay_streams: int = MAX_OVERLAY_STREAMS,
        max_overlay_streams_per_peer: int = MAX_OVERLAY_STREAMS_PER_PEER,
        max_calls_per_peer: float = 0,
        max_upload_rate: int = 0,
        super_seed: str = "auto",
    ) -> None:
        self._share = share
        self._super_seed = super_seed
        self._me = me
        self._overlay = overlay
        self._publisher = publisher or Publisher()
        self._partial = partial
        self._uploads: Slots[str] = Slots(
            total=max_uploads, per_key=max_uploads_per_peer or max_uploads
        )
        self._subscribers: Slots[str] = Slots(
            total=max_subscribers, per_key=max_subscribers_per_peer
        )
        self._overlay_streams: Slots[str] = Slots(
            total=max_overlay_streams, per_key=max_overlay_streams_per_peer
        )
        self._calls: ClientBuckets[str] | None = None
        if max_calls_per_peer > 0:
            self._calls = ClientBuckets(
                rate=max_calls_per_peer, burst=max(2 * max_calls_per_peer, 1)
            )
        # a quarter second of burst: smooth enough, and a piece larger than that just waits
        self._rate = TokenBucket(max_upload_rate, max(max_upload_rate / 4, 1), time.monotonic())
        self.pieces_served = 0
        self.bytes_served = 0
        self._exchanges: Slots[str] = Slots(total=MAX_EXCHANGES, per_key=MAX_EXCHANGES_PER_PEER)
        self._seeds: dict[str, SuperSeed[_Exchange]] = {}  # content id -> its super-seeding
        self._watchers: dict[str, set[_Exchange]] = {}  # content id (partial here) -> streams
        self._sending = 0  # GetPieces streams running: none, and the uplink idles
        self._uplink = Uplink(rate=self._rate, on_idle=self._maybe_idle, on_block=self._served)

    def announce(self, content_id: str, index: int) -> None:
        """A piece of a download in progress here verified: tell every downloader that
        fetches this file from us (its ``Exchange`` stream)."""
        for watcher in self._watchers.get(content_id, ()):
            watcher.send(index)

    def _served(self, size: int, last: bool) -> None:
        """A block went out: a piece counts as served with its last block."""
        self.bytes_served += size
        self.pieces_served += last

    def _maybe_idle(self) -> bool:
        return not self._sending and self._idle()

    def _idle(self) -> bool:
        """The uplink has nothing to send: each super-seeded file may offer more. True
        if anything was offered."""
        offered = False
        for seed in self._seeds.values():
            for downloader, piece in seed.idle():
                downloader.send(piece)
                offered = True
        return offered

    def count_call(self, context: Ctx) -> None:
        """Count a cheap call against its remote's rate; ``Busy`` over it."""
        if self._calls is None:
            return
        wait = self._calls.check(remote_key(context.peer()), time.monotonic())
        if wait:
            raise errors.Busy(
                f"too many calls from this peer: the limit is {self._calls.rate:g} per"
                f" second; retry in {wait:.1f} s"
            )

    @_unary
    async def Hello(self, request: pb.HelloRequest, context: Ctx) -> pb.HelloResponse:
        accepted = self._overlay.hello_from(request.peer)
        return pb.HelloResponse(
            peer=self._me(),
            known=self._overlay.known(),
            protocol_version=PROTOCOL_VERSION,
            accepted=accepted,
            software_version=__version__,
        )

    def _source(self, content_id: str) -> tuple[Manifest, PartialDownload | None]:
        """The manifest of ``content_id`` and, if it is still downloading here, its partial."""
        check_content_id(content_id)
        try:
            return self._share.get(content_id).manifest, None
        except errors.NotFound:
            partial = self._partial(content_id)
            if partial is None:
                raise
            return partial.manifest, partial

    @_unary
    async def GetManifest(self, request: pb.ManifestRequest, context: Ctx) -> pb.Manifest:
        manifest, _ = self._source(request.content_id)
        return manifest_to_pb(manifest)

    @_unary
    async def GetHave(self, request: pb.HaveRequest, context: Ctx) -> pb.HaveMap:
        manifest, partial = self._source(request.content_id)
        if partial is None:
            return pb.HaveMap(
                content_id=request.content_id, complete=True, piece_count=manifest.piece_count
            )
        return pb.HaveMap(
            content_id=request.content_id,
            complete=partial.have.complete,
            piece_count=manifest.piece_count,
            bitfield=partial.have.to_bytes(),
        )

    @_stream
    async def GetPieces(self, request: pb.PiecesRequest, context: Ctx) -> AsyncIterator[bytes]:
        """Serialized ``pb.Piece`` messages (see ``wire.encode_piece``)."""
        content_id = check_content_id(request.content_id)
        if len(request.indexes) > MAX_PIECES_PER_REQUEST:
            raise errors.UsageError(f"at most {MAX_PIECES_PER_REQUEST} pieces per request")
        remote = remote_key(context.peer())
        full = self._uploads.acquire(remote)
        if full is not None:
            raise errors.Busy(f"too many uploads at once ({full}); retry shortly")
        self._sending += 1
        try:
            manifest, partial = self._source(content_id)
            count = manifest.piece_count
            bad = [i for i in request.indexes if i >= count]
            if bad:
                raise errors.UsageError(f"piece {bad[0]} out of range (file has {count})")
            source = partial.reader() if partial else self._share.reader(content_id)
            with source as reader:
                for index in request.indexes:
                    # a page-cache read of one piece takes well under a millisecond:
                    # cheaper inline than a hop to a thread
                    data = reader.read(index)
                    delay = self._rate.take(len(data), time.monotonic())
                    if delay:
                        await asyncio.sleep(delay)
                    self.pieces_served += 1
                    self.bytes_served += len(data)
                    yield encode_piece(index, data)
        finally:
            self._uploads.release(remote)
            self._sending -= 1
            if not self._sending and not self._uplink.busy:
                self._idle()

    async def Exchange(
        self, request_iterator: AsyncIterator[pb.ExchangeMessage], context: Ctx
    ) -> None:
        """A downloader's availability stream for one file: its have-map and ``have``
        messages in; ours (or, for a file of our share, the pieces we offer it as a
        super-seeder, ``core.super_seed``) out. Pieces themselves go by GetPieces."""
        remote = remote_key(context.peer())
        full = self._exchanges.acquire(remote)
        if full is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many exchanges ({full})")
        try:
            await self._exchange(_well_formed(request_iterator), context)
        except errors.P2PShareError as exc:
            await context.abort(status_for(exc), str(exc))
        finally:
            self._exchanges.release(remote)

    async def _exchange(self, messages: AsyncIterator[pb.ExchangeMessage], context: Ctx) -> None:
        first = await anext(messages, None)
        if first is None:
            return
        if first.WhichOneof("kind") != "open":
            raise errors.UsageError("an exchange begins with open")
        content_id = check_content_id(first.open.content_id)
        manifest, partial = self._source(content_id)
        me = _Exchange(manifest, partial)
        block_size = first.open.block_size
        if block_size and not MIN_BLOCK <= block_size <= MAX_BLOCK:
            raise errors.UsageError(
                f"blocks of {block_size} bytes: not in [{MIN_BLOCK}, {MAX_BLOCK}]"
            )
        seed, reply = self._exchange_reply(content_id, manifest, partial, first.open, me, context)
        with contextlib.ExitStack() as stack:
            if block_size:
                pieces: PieceRead = (
                    stack.enter_context(partial.reader())
                    if partial
                    else stack.enter_context(self._share.reader(content_id))
                )
                me.source = BlockSource(pieces, block_size)
                reply.block_size = block_size
            reader_task = asyncio.create_task(self._exchange_reader(messages, me, seed))
            try:
                await context.write(pb.ExchangeMessage(bitfield=reply))
                while (item := await me.next()) is not None:
                    message, on_sent = item
                    try:
                        await context.write(message)
                    finally:
                        if on_sent is not None:
                            on_sent()
            finally:
                reader_task.cancel()
                await asyncio.gather(reader_task, return_exceptions=True)
                self._uplink.drop(me)
                me.release()
                self._exchange_ended(content_id, me, seed)
        if me.error is not None:
            raise me.error

    def _exchange_reply(
        self,
        content_id: str,
        manifest: Manifest,
        partial: PartialDownload | None,
        opening: pb.ExchangeOpen,
        me: _Exchange,
        context: Ctx,
    ) -> tuple[SuperSeed[_Exchange] | None, pb.HaveMap]:
        """What we hold (or, super-seeding, offer ``me``), and the super-seeding if any."""
        count = manifest.piece_count
        if partial is None and not self._super_seeds(context):
            return None, pb.HaveMap(content_id=content_id, complete=True, piece_count=count)
        if partial is None:
            seed = self._seeds.get(content_id)
            if seed is None:
                start = random.randrange(count) if count else 0
                seed = SuperSeed(count, start=start, lone_offers=LONE_OFFERS)
                self._seeds[content_id] = seed
            offered = PieceSet(count, seed.join(me, _have_map(opening.have, count)))
            return seed, pb.HaveMap(
                content_id=content_id,
                complete=False,
                piece_count=count,
                bitfield=offered.to_bytes(),
            )
        _have_map(opening.have, count)  # checked, as from everyone
        self._watchers.setdefault(content_id, set()).add(me)
        return None, pb.HaveMap(
            content_id=content_id,
            complete=partial.have.complete,
            piece_count=count,
            bitfield=partial.have.to_bytes(),
        )

    def _exchange_ended(
        self, content_id: str, me: _Exchange, seed: SuperSeed[_Exchange] | None
    ) -> None:
        if seed is not None:
            seed.leave(me)
            if not seed.downloaders:
                self._seeds.pop(content_id, None)
        watchers = self._watchers.get(content_id)
        if watchers is not None:
            watchers.discard(me)
            if not watchers:
                del self._watchers[content_id]

    def _super_seeds(self, context: Ctx) -> bool:
        """Whether a downloader is offered pieces a few at a time: between processes of
        one machine upload costs no bandwidth, only CPU (many small requests: the
        loopback swarm bench took 1.5x as long), so ``auto`` leaves those out."""
        if self._super_seed != "auto":
            return self._super_seed == "on"
        return not is_loopback_peer(context.peer())

    async def _exchange_reader(
        self,
        messages: AsyncIterator[pb.ExchangeMessage],
        me: _Exchange,
        seed: SuperSeed[_Exchange] | None,
    ) -> None:
        """The downloader's ``have`` messages (to a super-seeder, offers they close) and
        its block requests and cancels (to the uplink's queue)."""
        count = me.manifest.piece_count
        try:
            async for message in messages:
                kind = message.WhichOneof("kind")
                if kind == "have":
                    if message.have >= count:
                        raise errors.UsageError(f"piece {message.have} out of range ({count})")
                    if seed is not None:
                        for downloader, piece in seed.has(me, message.have):
                            downloader.send(piece)
                elif kind == "request":
                    block = me.check(message.request)
                    if not self._uplink.request(me, block):
                        me.put(pb.ExchangeMessage(refused=message.request), None)
                elif kind == "cancel":
                    self._uplink.cancel(me, me.check(message.cancel))
                else:
                    raise errors.UsageError("after open an exchange sends have, request or cancel")
        except errors.P2PShareError as exc:
            me.error = exc
        me.close()

    @_stream
    async def Search(self, request: pb.SearchRequest, context: Ctx) -> AsyncIterator[pb.SearchHit]:
        """Our own hits (overlay searches come on ``Overlay`` streams)."""
        self.count_call(context)
        for hit in self._overlay.local_hits(request):
            yield hit

    async def Overlay(self, request_iterator: AsyncIterator[pb.OverlayBatch], context: Ctx) -> None:
        """A neighbour's overlay stream: queries both ways, their replies back (see
        ``p2pshare.peer.overlay.network``). A neighbour needs one; a remote that opens more than
        its share, or too many remotes at once, are refused."""
        remote = remote_key(context.peer())
        full = self._overlay_streams.acquire(remote)
        if full is not None:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many overlay streams ({full})"
            )
        try:
            await self._overlay.accept(_well_formed(request_iterator), context.write)
        except errors.P2PShareError as exc:
            await context.abort(status_for(exc), str(exc))
        finally:
            self._overlay_streams.release(remote)

    @_stream
    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Ctx
    ) -> AsyncIterator[pb.ShareChange]:
        """Our changes and those we relay, matching the query, as they happen; never the
        subscriber's own. A subscriber that falls behind is cut off (it may come back)."""
        if len(request.query) > 256:
            raise errors.UsageError("the query is longer than 256 characters")
        query = parse_query(request.query) if request.query else None
        remote = remote_key(context.peer())
        full = self._subscribers.acquire(remote)
        if full is not None:
            raise errors.Busy(f"too many subscribers ({full}); subscribe again later")
        try:
            with self._publisher.subscribe(query, exclude=request.sender.address) as sub:
                async for change in sub:
                    yield change_to_pb(change)
        finally:
            self._subscribers.release(remote)
        if sub.ended:
            raise errors.Busy("this subscriber fell behind; subscribe again")


class _Exchange:
    """The sending side of one ``Exchange`` stream: announcements and blocks, in order,
    each block with the uplink's callback for when it is written."""

    def __init__(self, manifest: Manifest, partial: PartialDownload | None) -> None:
        self.manifest = manifest
        self._partial = partial
        self._queue: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self.error: errors.P2PShareError | None = None
        self.source: BlockSource | None = None  # set when the downloader asks for blocks
        self._ended = False

    def send(self, piece: int) -> None:
        self.put(pb.ExchangeMessage(have=piece), None)

    def put(self, message: pb.ExchangeMessage, on_sent: Callable[[], None] | None) -> None:
        if self._ended:  # a block the rate limit held back past the stream's end
            if on_sent is not None:
                on_sent()
            return
        self._queue.put_nowait((message, on_sent))

    def check(self, ref: pb.BlockRef) -> tuple[int, int]:
        """The block ``ref`` names, if this stream serves blocks and we hold its piece."""
        if self.source is None:
            raise errors.UsageError("block requests on an exchange opened without block_size")
        count = self.manifest.piece_count
        if ref.piece >= count:
            raise errors.UsageError(f"piece {ref.piece} out of range ({count})")
        if self._partial is not None and ref.piece not in self._partial.have:
            raise errors.UsageError(f"piece {ref.piece} is not held here")
        blocks = -(-self.manifest.piece_length(ref.piece) // self.source.block_size)
        if ref.block >= blocks:
            raise errors.UsageError(f"block {ref.block} out of range ({blocks})")
        return ref.piece, ref.block

    def block(self, block: tuple[int, int]) -> tuple[bytes, bool]:
        assert self.source is not None  # only checked requests reach the uplink
        return self.source.read(block)

    def fail(self, exc: errors.P2PShareError) -> None:
        self.error = exc
        self.close()

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def next(self) -> _Outgoing | None:
        return await self._queue.get()

    def release(self) -> None:
        """The stream ended: blocks handed to it and never written free the uplink."""
        self._ended = True
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and item[1] is not None:
                item[1]()


_Outgoing = tuple[pb.ExchangeMessage, Callable[[], None] | None]


def _have_map(msg: pb.HaveMap, count: int) -> PieceSet:
    """The pieces a downloader says it holds (all of them when ``complete``)."""
    if msg.complete:
        return PieceSet(count, range(count))
    if not msg.bitfield:
        return PieceSet(count)
    try:
        return PieceSet.from_bytes(count, msg.bitfield)
    except ValueError as exc:
        raise errors.UsageError(f"malformed have-map: {exc}") from exc


async def _well_formed(batches: AsyncIterator[M | _Malformed]) -> AsyncIterator[M]:
    """The messages of a client stream, until one does not parse (INVALID_ARGUMENT)."""
    async for batch in batches:
        if isinstance(batch, _Malformed):
            raise errors.UsageError(batch.why)
        yield batch


def _handlers(service: PeerService) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    """The generated handlers, except that GetPieces yields already serialized pieces
    and a request that does not parse reaches the servicer as ``_Malformed``."""
    methods = {
        "Hello": grpc.unary_unary_rpc_method_handler(
            service.Hello,
            request_deserializer=_parser(pb.HelloRequest),
            response_serializer=pb.HelloResponse.SerializeToString,
        ),
        "GetManifest": grpc.unary_unary_rpc_method_handler(
            service.GetManifest,
            request_deserializer=_parser(pb.ManifestRequest),
            response_serializer=pb.Manifest.SerializeToString,
        ),
        "GetPieces": grpc.unary_stream_rpc_method_handler(
            service.GetPieces,
            request_deserializer=_parser(pb.PiecesRequest),
            response_serializer=None,  # the servicer yields bytes
        ),
        "GetHave": grpc.unary_unary_rpc_method_handler(
            service.GetHave,
            request_deserializer=_parser(pb.HaveRequest),
            response_serializer=pb.HaveMap.SerializeToString,
        ),
        "Exchange": grpc.stream_stream_rpc_method_handler(
            service.Exchange,
            request_deserializer=_parser(pb.ExchangeMessage),
            response_serializer=pb.ExchangeMessage.SerializeToString,
        ),
        "Search": grpc.unary_stream_rpc_method_handler(
            service.Search,
            request_deserializer=_parser(pb.SearchRequest),
            response_serializer=pb.SearchHit.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe,
            request_deserializer=_parser(pb.SubscribeRequest),
            response_serializer=pb.ShareChange.SerializeToString,
        ),
        "Overlay": grpc.stream_stream_rpc_method_handler(
            service.Overlay,
            request_deserializer=_parser(pb.OverlayBatch),
            response_serializer=pb.OverlayBatch.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler("p2pshare.v1.Peer", methods)


async def start_server(
    service: PeerService,
    host: str,
    port: int,
    *,
    tls: Tls | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server for ``service`` (over TLS when ``tls`` is given); returns it
    and the port it bound. ``interceptors`` see every call first (``peer.auth.ServerAuth``
    in a private network)."""
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    server.add_generic_rpc_handlers((_handlers(service),))
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, tls.server_credentials())
    if bound == 0:
        raise errors.ConfigError(f"peer.port: cannot listen on {host}:{port}")
    await server.start()
    return server, bound
