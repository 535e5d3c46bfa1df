"""Calling every method of the peer service the way a stranger would: raw bytes, any
metadata, and the status each call ends with."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from p2pshare._proto import peer_pb2 as pb

Metadata = tuple[tuple[str, str], ...]
SERVICE = pb.DESCRIPTOR.services_by_name["Peer"]
METHODS = [f"/{SERVICE.full_name}/{m.name}" for m in SERVICE.methods]
"""Every method of the service, from its descriptor: a new one is probed too."""


async def status_of(
    channel: grpc.aio.Channel, method: str, metadata: Metadata, *, timeout: float = 2.0
) -> grpc.StatusCode:
    """How a call of ``method`` with an empty request (none for a client stream) and
    ``metadata`` ends (OK if it answers, or streams at least one message before the
    deadline)."""
    desc = SERVICE.methods_by_name[method.rsplit("/", 1)[1]]
    try:
        if desc.client_streaming:
            # opened, and nothing sent: a refusal comes at once (the key is checked as
            # the call starts); a call let in waits for a message until the deadline. A
            # message written by the probe would race a refusal, and grpc.aio reports a
            # write to a call the server just ended as INTERNAL, not the server's status
            call = channel.stream_stream(method)(metadata=metadata, timeout=timeout)
            async for _ in call:
                break
            call.cancel()
            if not desc.server_streaming:
                raise AssertionError("no client-streaming unary method yet: teach the probe")
        elif desc.server_streaming:
            stream = channel.unary_stream(method)(b"", metadata=metadata, timeout=timeout)
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(method)(b"", metadata=metadata, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def statuses(
    address: str, metadata: Callable[[str], Metadata], *, timeout: float = 2.0
) -> dict[str, grpc.StatusCode]:
    """The status of every method called with ``metadata(method)``."""
    async with grpc.aio.insecure_channel(address) as channel:
        return {m: await status_of(channel, m, metadata(m), timeout=timeout) for m in METHODS}
