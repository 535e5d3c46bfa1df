"""The client side of the peer protocol: one channel per remote peer, typed calls.

Every call's gRPC failure goes through ``translated`` (one place), which raises
the p2pshare error for it (``wire.translate``): nothing above this module sees a
``grpc.RpcError``, neither the asyncio calls nor the blocking piece streams that
the download threads iterate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Protocol

import grpc

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.core.manifest import Manifest, check_content_id
from p2pshare.core.pieces import PieceSet
from p2pshare.peer.rpc.auth import GrpcAuth
from p2pshare.peer.rpc.wire import (
    CHANNEL_OPTIONS,
    GET_PIECES,
    manifest_from_pb,
    translate,
)

if TYPE_CHECKING:
    from p2pshare.tls import Tls  # loaded only when TLS is on (X.509 is ~10 MB)

CALL_TIMEOUT = 10.0


@contextlib.contextmanager
def translated(address: str) -> Iterator[None]:
    """Raise the p2pshare error for a failed gRPC call to ``address`` (aio or blocking)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise translate(exc, address) from exc


class _GrpcPieceCall(Protocol):
    def __iter__(self) -> Iterator[bytes]: ...

    def cancel(self) -> bool: ...


class PieceCall:
    """A blocking GetPieces call: iterate for raw pieces (a failure comes out as a
    p2pshare error), cancel from any thread."""

    def __init__(self, call: _GrpcPieceCall, address: str) -> None:
        self._call = call
        self._address = address

    def __iter__(self) -> Iterator[bytes]:
        with translated(self._address):
            yield from self._call

    def cancel(self) -> bool:
        return self._call.cancel()


class OverlayStream:
    """An open ``Overlay`` stream to one peer (see ``p2pshare.peer.overlay.network``): batches
    written one at a time, the peer's batches iterated; a failure comes out as a
    p2pshare error."""

    def __init__(self, call: grpc.aio.StreamStreamCall, address: str) -> None:  # type: ignore[type-arg]
        self._call = call
        self._address = address

    async def write(self, batch: pb.OverlayBatch) -> None:
        try:
            with translated(self._address):
                await self._call.write(batch)
        except asyncio.InvalidStateError as exc:  # the peer ended the stream
            raise errors.Unreachable(f"peer {self._address} closed the overlay stream") from exc

    async def batches(self) -> AsyncIterator[pb.OverlayBatch]:
        with translated(self._address):
            async for batch in self._call:
                yield batch

    def cancel(self) -> None:
        self._call.cancel()


class ExchangeStream:
    """An open ``Exchange`` stream to one provider (see ``p2pshare.peer.transfer.swarm``):
    messages written one at a time, read one at a time (None: the provider ended it);
    a failure comes out as a p2pshare error."""

    def __init__(self, call: grpc.aio.StreamStreamCall, address: str) -> None:  # type: ignore[type-arg]
        self._call = call
        self._address = address

    async def write(self, message: pb.ExchangeMessage) -> None:
        try:
            with translated(self._address):
                await self._call.write(message)
        except asyncio.InvalidStateError as exc:  # the peer ended the stream
            raise errors.Unreachable(f"peer {self._address} closed the exchange") from exc

    async def read(self) -> pb.ExchangeMessage | None:
        with translated(self._address):
            message = await self._call.read()
        if message is grpc.aio.EOF:  # type: ignore[attr-defined]
            return None
        assert isinstance(message, pb.ExchangeMessage)
        return message

    def cancel(self) -> None:
        self._call.cancel()


class PeerClients:
    """Channels to other peers, opened on first use and reused; over TLS when ``tls`` is
    given (every channel a peer opens to another peer is made here)."""

    def __init__(
        self, *, me: pb.PeerInfo | None = None, tls: Tls | None = None, auth: GrpcAuth | None = None
    ) -> None:
        self._credentials = tls.channel_credentials() if tls else None
        self._options = CHANNEL_OPTIONS + (tls.channel_options() if tls else [])
        self._auth = auth  # a private network's: every call carries proof of the key
        self._channels: dict[str, tuple[grpc.aio.Channel, pb_grpc.PeerStub]] = {}
        # the piece data path runs on threads with blocking channels (see downloads.py)
        self._sync_channels: dict[str, grpc.Channel] = {}
        self._me = me or pb.PeerInfo()

    def set_me(self, me: pb.PeerInfo) -> None:
        self._me = me

    def _entry(self, address: str) -> tuple[grpc.aio.Channel, pb_grpc.PeerStub]:
        entry = self._channels.get(address)
        if entry is None:
            signs = self._auth.interceptors(address) if self._auth is not None else None
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(
                    address, options=self._options, interceptors=signs
                )
            else:
                channel = grpc.aio.secure_channel(
                    address, self._credentials, self._options, interceptors=signs
                )
            entry = (channel, pb_grpc.PeerStub(channel))  # type: ignore[no-untyped-call]
            self._channels[address] = entry
        return entry

    def _stub(self, address: str) -> pb_grpc.PeerStub:
        return self._entry(address)[1]

    async def forget(self, address: str) -> None:
        sync_channel = self._sync_channels.pop(address, None)
        if sync_channel is not None:
            sync_channel.close()
        entry = self._channels.pop(address, None)
        if entry is not None:
            await entry[0].close(None)

    async def close(self) -> None:
        channels = [c for c, _ in self._channels.values()]
        self._channels.clear()
        for sync_channel in self._sync_channels.values():
            sync_channel.close()
        self._sync_channels.clear()
        for channel in channels:
            await channel.close(None)

    async def hello(self, address: str, *, timeout: float = CALL_TIMEOUT) -> pb.HelloResponse:
        with translated(address):
            reply: pb.HelloResponse = await self._stub(address).Hello(
                pb.HelloRequest(peer=self._me), timeout=timeout
            )
        return reply

    async def manifest(
        self, address: str, content_id: str, *, timeout: float = CALL_TIMEOUT
    ) -> Manifest:
        """The manifest of ``content_id`` from ``address``, checked against the id."""
        check_content_id(content_id)
        with translated(address):
            msg = await self._stub(address).GetManifest(
                pb.ManifestRequest(content_id=content_id), timeout=timeout
            )
        return manifest_from_pb(msg, content_id)

    async def have(
        self, address: str, content_id: str, *, timeout: float = CALL_TIMEOUT
    ) -> PieceSet | None:
        """The pieces ``address`` holds of ``content_id``; ``None`` when it has them all."""
        try:
            with translated(address):
                reply: pb.HaveMap = await self._stub(address).GetHave(
                    pb.HaveRequest(content_id=content_id), timeout=timeout
                )
        except errors.Unsupported:
            return None  # a peer from before have-maps only serves whole files
        if reply.complete:
            return None
        try:
            return PieceSet.from_bytes(reply.piece_count, reply.bitfield)
        except ValueError as exc:
            raise errors.RemoteError(f"peer {address} sent a malformed have-map: {exc}") from exc

    def pieces_blocking(
        self, address: str, content_id: str, indexes: list[int], *, timeout: float
    ) -> PieceCall:
        """A GetPieces call whose iterator yields raw ``pb.Piece`` bytes (see
        ``wire.decode_piece``); blocking, for the download threads. Iterating
        raises p2pshare errors."""
        channel = self._sync_channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.insecure_channel(address, options=self._options)
            else:
                channel = grpc.secure_channel(address, self._credentials, self._options)
            self._sync_channels[address] = channel
        get_pieces = channel.unary_stream(
            GET_PIECES,
            request_serializer=pb.PiecesRequest.SerializeToString,
            response_deserializer=None,
        )
        call: _GrpcPieceCall = get_pieces(
            pb.PiecesRequest(content_id=content_id, indexes=indexes),
            timeout=timeout,
            metadata=self._auth.metadata(GET_PIECES, address) if self._auth is not None else None,
        )
        return PieceCall(call, address)

    async def search_share_of(
        self,
        address: str,
        query: str,
        *,
        limit: int = 0,
        timeout: float = CALL_TIMEOUT,
        with_versions: bool = False,
        name: str = "",
    ) -> list[pb.SearchHit]:
        """The hits of ``address``'s own share for ``query`` (no overlay behind it);
        ``with_versions``: with their versions, removed names too (of ``name`` only)."""
        request = pb.SearchRequest(query=query, limit=limit, with_versions=with_versions, name=name)
        with translated(address):
            return [hit async for hit in self._stub(address).Search(request, timeout=timeout)]

    def overlay(self, address: str) -> OverlayStream:
        """Open an ``Overlay`` stream to ``address``; it fails on first use if the peer
        cannot be reached."""
        return OverlayStream(self._stub(address).Overlay(), address)

    def exchange(self, address: str) -> ExchangeStream:
        """Open an ``Exchange`` stream to ``address``; it fails on first use if the peer
        cannot be reached (``Unsupported``: a peer from before exchanges)."""
        return ExchangeStream(self._stub(address).Exchange(), address)

    async def subscribe(self, address: str, query: str = "") -> AsyncIterator[pb.ShareChange]:
        """The changes ``address`` publishes (its own and those it relays), until the
        stream ends or fails (then a ``TransportError``)."""
        request = pb.SubscribeRequest(query=query, sender=self._me)
        call = self._stub(address).Subscribe(request)
        try:
            with translated(address):
                async for change in call:
                    yield change
        finally:
            call.cancel()
