"""The server side of the peer protocol: serves this peer's share over gRPC."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.core.manifest import Manifest, check_content_id
from p2pshare.core.names import parse_query
from p2pshare.core.rate import TokenBucket
from p2pshare.peer.overlay import Overlay
from p2pshare.peer.partial import PartialDownload
from p2pshare.peer.publisher import Publisher, change_to_pb
from p2pshare.peer.share import Share
from p2pshare.peer.wire import (
    PROTOCOL_VERSION,
    SERVER_OPTIONS,
    encode_piece,
    manifest_to_pb,
    status_for,
)

log = logging.getLogger(__name__)

MAX_PIECES_PER_REQUEST = 1024

Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
R = TypeVar("R")


def _unary(
    fn: Callable[[Any, T, Ctx], Awaitable[R]],
) -> Callable[[Any, T, Ctx], Awaitable[R]]:
    """Map our errors to a gRPC status; anything else is logged as INTERNAL."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: T, context: Ctx) -> R:
        try:
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
        try:
            async for item in fn(self, request, context):
                yield item
        except errors.P2PShareError as exc:
            await context.abort(status_for(exc), str(exc))

    return wrapper


class PeerService(pb_grpc.PeerServicer):
    """Answers other peers: who we are, manifests, pieces, searches (ours and the
    overlay's, see ``p2pshare.peer.overlay``)."""

    def __init__(
        self,
        *,
        share: Share,
        me: Callable[[], pb.PeerInfo],
        overlay: Overlay,
        publisher: Publisher | None = None,
        partial: Callable[[str], PartialDownload | None] = lambda content_id: None,
        max_uploads: int,
        max_upload_rate: int = 0,
    ) -> None:
        self._share = share
        self._me = me
        self._overlay = overlay
        self._publisher = publisher or Publisher()
        self._partial = partial
        self._uploads = asyncio.Semaphore(max_uploads)
        # a quarter second of burst: smooth enough, and a piece larger than that just waits
        self._rate = TokenBucket(max_upload_rate, max(max_upload_rate / 4, 1), time.monotonic())
        self.pieces_served = 0
        self.bytes_served = 0

    @_unary
    async def Hello(self, request: pb.HelloRequest, context: Ctx) -> pb.HelloResponse:
        accepted = self._overlay.hello_from(request.peer)
        return pb.HelloResponse(
            peer=self._me(),
            known=self._overlay.known(),
            protocol_version=PROTOCOL_VERSION,
            accepted=accepted,
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
        if self._uploads.locked():
            raise errors.Busy("too many uploads at once; retry shortly")
        async with self._uploads:
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

    @_stream
    async def Search(self, request: pb.SearchRequest, context: Ctx) -> AsyncIterator[pb.SearchHit]:
        """Our own hits (overlay searches come on ``Overlay`` streams)."""
        for hit in self._overlay.local_hits(request):
            yield hit

    async def Overlay(self, request_iterator: AsyncIterator[pb.OverlayBatch], context: Ctx) -> None:
        """A neighbour's overlay stream: queries both ways, their replies back (see
        ``p2pshare.peer.overlay``)."""
        try:
            await self._overlay.accept(request_iterator, context.write)
        except errors.P2PShareError as exc:
            await context.abort(status_for(exc), str(exc))

    @_stream
    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Ctx
    ) -> AsyncIterator[pb.ShareChange]:
        """Our changes and those we relay, matching the query, as they happen; never the
        subscriber's own. A subscriber that falls behind is cut off (it may come back)."""
        if len(request.query) > 256:
            raise errors.UsageError("the query is longer than 256 characters")
        try:
            query = parse_query(request.query) if request.query else None
        except ValueError as exc:
            raise errors.UsageError(str(exc)) from exc
        with self._publisher.subscribe(query, exclude=request.sender.address) as sub:
            async for change in sub:
                yield change_to_pb(change)
        if sub.ended:
            raise errors.Busy("this subscriber fell behind; subscribe again")


def _handlers(service: PeerService) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    """The generated handlers, except that GetPieces yields already serialized pieces."""
    methods = {
        "Hello": grpc.unary_unary_rpc_method_handler(
            service.Hello,
            request_deserializer=pb.HelloRequest.FromString,
            response_serializer=pb.HelloResponse.SerializeToString,
        ),
        "GetManifest": grpc.unary_unary_rpc_method_handler(
            service.GetManifest,
            request_deserializer=pb.ManifestRequest.FromString,
            response_serializer=pb.Manifest.SerializeToString,
        ),
        "GetPieces": grpc.unary_stream_rpc_method_handler(
            service.GetPieces,
            request_deserializer=pb.PiecesRequest.FromString,
            response_serializer=None,  # the servicer yields bytes
        ),
        "GetHave": grpc.unary_unary_rpc_method_handler(
            service.GetHave,
            request_deserializer=pb.HaveRequest.FromString,
            response_serializer=pb.HaveMap.SerializeToString,
        ),
        "Search": grpc.unary_stream_rpc_method_handler(
            service.Search,
            request_deserializer=pb.SearchRequest.FromString,
            response_serializer=pb.SearchHit.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe,
            request_deserializer=pb.SubscribeRequest.FromString,
            response_serializer=pb.ShareChange.SerializeToString,
        ),
        "Overlay": grpc.stream_stream_rpc_method_handler(
            service.Overlay,
            request_deserializer=pb.OverlayBatch.FromString,
            response_serializer=pb.OverlayBatch.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler("p2pshare.v1.Peer", methods)


async def start_server(service: PeerService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server for ``service``; returns it and the port it bound."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((_handlers(service),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise errors.ConfigError(f"peer.port: cannot listen on {host}:{port}")
    await server.start()
    return server, bound
