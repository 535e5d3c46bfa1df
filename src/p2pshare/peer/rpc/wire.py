"""The edge between p2pshare and gRPC: channel options, status codes, conversions.

Errors cross here exactly once: ``status_for`` maps our error tree to gRPC status
codes on the server side, ``translate`` maps a failed call back to our tree on the
client side.
"""

from __future__ import annotations

import ipaddress
from typing import cast

import grpc

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.manifest import MAX_PIECE_SIZE, Manifest, validate_manifest
from p2pshare.core.rate import client_key

PROTOCOL_VERSION = 1
MAX_MESSAGE = MAX_PIECE_SIZE + (64 << 10)
"""The largest message either side sends or takes: one piece of the largest size."""
MAX_REQUEST = 1 << 20
"""The largest message a peer's server takes (requests are small; a manifest list of
1024 piece indexes is a few KiB): larger ones get RESOURCE_EXHAUSTED."""
MAX_STREAMS_PER_CONNECTION = 256
"""Concurrent calls on one connection; more wait until one ends (HTTP/2 flow control)."""
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    # a peer whose link comes back is dialled again within seconds, not minutes
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_REQUEST),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]

# our errors as gRPC status codes, on the server side (``status_for``: the first match)
_STATUS: list[tuple[type[errors.P2PShareError], grpc.StatusCode]] = [
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.TimedOut, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Busy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.TransportError, grpc.StatusCode.UNAVAILABLE),
]
# and back, on the client side (``translate``); any other code is a ``RemoteError``
_ERROR_OF_STATUS: dict[grpc.StatusCode, type[errors.P2PShareError]] = {
    grpc.StatusCode.UNAVAILABLE: errors.Unreachable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.TimedOut,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.Busy,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.CANCELLED: errors.Unreachable,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unsupported,
}


def remote_key(peer: str) -> str:
    """Which remote peer a call comes from, for limits per remote peer, from gRPC's
    ``context.peer()`` (``ipv4:203.0.113.7:51234``, ``ipv6:[2001:db8::1]:51234``).

    Its IP address (IPv6: its /64), which it cannot forge over TCP; a peer id or
    address it states in a request could be anything. A call over loopback comes from
    a peer on this machine, where every peer has the same address: those are told
    apart by their connection (a peer keeps one channel to each peer it calls).
    """
    _, host, loopback = _split_peer(peer)
    return client_key(host) if loopback is False else peer


def is_loopback_peer(peer: str) -> bool:
    """Whether gRPC's ``context.peer()`` is a process on this machine (loopback)."""
    kind, _, loopback = _split_peer(peer)
    if kind not in ("ipv4", "ipv6"):
        return kind == "unix"
    return bool(loopback)


def _split_peer(peer: str) -> tuple[str, str, bool | None]:
    """gRPC's ``context.peer()`` as its kind (``ipv4``, ``ipv6``, ``unix``...), its
    host, and whether that host is a loopback address (None: not an IP address)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return kind, "", None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return kind, host, ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return kind, host, None


def status_for(exc: errors.P2PShareError) -> grpc.StatusCode:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def translate(exc: grpc.RpcError, address: str) -> errors.P2PShareError:
    """The p2pshare error for a failed call (aio or blocking) to the peer at ``address``."""
    call = cast(grpc.Call, exc)  # every RpcError grpc raises for a call is also a Call
    code = call.code()
    detail = f"peer {address}: {call.details() or code.name}"
    return _ERROR_OF_STATUS.get(code, errors.RemoteError)(detail)


def manifest_to_pb(manifest: Manifest) -> pb.Manifest:
    return pb.Manifest(
        content_id=manifest.content_id,
        name=manifest.name,
        size=manifest.size,
        piece_size=manifest.piece_size,
        piece_hashes=list(manifest.piece_hashes),
        file_sha256=manifest.file_sha256,
    )


def manifest_from_pb(msg: pb.Manifest, content_id: str) -> Manifest:
    """The manifest a peer sent for ``content_id``; ``BadManifest`` if it is not that."""
    return validate_manifest(
        content_id=content_id,
        name=msg.name,
        size=msg.size,
        piece_size=msg.piece_size,
        piece_hashes=list(msg.piece_hashes),
        file_sha256=msg.file_sha256,
    )


# -- the Piece message by hand ---------------------------------------------------
#
# Pieces are the hot path: every MiB would otherwise be copied into a protobuf
# message, serialized, parsed and copied out again. These two functions speak the
# same wire format as ``pb.Piece`` (field 1: varint index, field 2: bytes data),
# so peers built from the .proto alone interoperate, with one copy fewer on each
# side and no parse at all on the receiving one.

_TAG_INDEX = 0x08  # field 1, varint
_TAG_DATA = 0x12  # field 2, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise errors.RemoteError("malformed piece message: bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_piece(index: int, data: bytes) -> bytes:
    """``pb.Piece(index=index, data=data).SerializeToString()``, in one copy."""
    head = (bytes([_TAG_INDEX]) + _varint(index)) if index else b""
    if not data:
        return head
    return b"".join((head, bytes([_TAG_DATA]), _varint(len(data)), data))


def decode_piece(buf: bytes) -> tuple[int, memoryview]:
    """The index and data of a serialized ``pb.Piece``; data is a view, not a copy."""
    view = memoryview(buf)
    index, data = 0, view[:0]
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        wire_type = key & 7
        if wire_type == 0:
            value, pos = _read_varint(view, pos)
            if key >> 3 == 1:
                index = value
        elif wire_type == 2:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise errors.RemoteError("malformed piece message: truncated field")
            if key >> 3 == 2:
                data = view[pos : pos + length]
            pos += length
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise errors.RemoteError(f"malformed piece message: wire type {wire_type}")
    if pos != len(view):
        raise errors.RemoteError("malformed piece message: truncated field")
    return index, data


GET_PIECES = "/p2pshare.v1.Peer/GetPieces"
