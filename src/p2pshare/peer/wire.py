"""The edge between p2pshare and gRPC: channel options, status codes, conversions.

Errors cross here exactly once: ``status_for`` maps our error tree to gRPC status
codes on the server side, ``translate`` maps a failed call back to our tree on the
client side.
"""

from __future__ import annotations

import grpc

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.manifest import MAX_PIECE_SIZE, Manifest, validate_manifest

PROTOCOL_VERSION = 1
MAX_MESSAGE = MAX_PIECE_SIZE + (64 << 10)
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
]
SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", 1 << 20),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]

_STATUS: list[tuple[type[errors.P2PShareError], grpc.StatusCode]] = [
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.TimedOut, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.TransportError, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: errors.P2PShareError) -> grpc.StatusCode:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def translate(exc: grpc.aio.AioRpcError, address: str) -> errors.P2PShareError:
    """The p2pshare error for a failed call to the peer at ``address``."""
    code = exc.code()
    detail = f"peer {address}: {exc.details() or code.name}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.Unreachable(detail)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.TimedOut(detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(detail)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.PermissionDenied(detail)
    if code == grpc.StatusCode.CANCELLED:
        return errors.Unreachable(detail)
    return errors.RemoteError(detail)


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
