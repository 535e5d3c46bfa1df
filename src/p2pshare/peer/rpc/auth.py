"""The network key on gRPC between peers (see ``p2pshare.core.auth``).

``ServerAuth``, one server interceptor, refuses every call without a valid proof
with PERMISSION_DENIED before any handler runs or any request is parsed: whatever
the method (the generated ones, GetPieces' hand-written handler, one added later,
one that does not exist). ``GrpcAuth`` makes the proof for the calls this peer
makes: as metadata of one call (``metadata``, for the blocking piece channels) and
as interceptors of the aio channels (``interceptors``).

Without a network key none of this is installed: an open network pays nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc

from p2pshare.core.auth import (
    GRPC_PURPOSE,
    HEADER,
    NONCE_BYTES,
    CallSigner,
    CallVerifier,
    grpc_call,
)
from p2pshare.errors import Unauthenticated

__all__ = ["GrpcAuth", "ServerAuth"]

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str], ...]

if TYPE_CHECKING:  # generic only in the stubs
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamStreamBase = grpc.aio.StreamStreamClientInterceptor[Any, Any]
    _ServerBase = grpc.aio.ServerInterceptor[Any, Any]
else:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor
    _StreamStreamBase = grpc.aio.StreamStreamClientInterceptor
    _ServerBase = grpc.aio.ServerInterceptor


class GrpcAuth:
    """Signs this peer's outgoing calls with the network key."""

    def __init__(self, network_key: str) -> None:
        self._signer = CallSigner(network_key, GRPC_PURPOSE)

    def metadata(self, method: str, receiver: str) -> Metadata:
        """The metadata proving the key for one call of ``method`` (``/pkg.Service/Name``)
        to the peer dialled at ``receiver``."""
        value = self._signer.sign(
            grpc_call(method, receiver), now=time.time(), nonce=os.urandom(NONCE_BYTES)
        )
        return ((HEADER, value),)

    def interceptors(self, receiver: str) -> list[grpc.aio.ClientInterceptor]:
        """For a channel to ``receiver``: its calls name it in their proofs."""
        # the stubs type ClientInterceptor as a placeholder that every use must cast
        return [
            cast(grpc.aio.ClientInterceptor, i)
            for i in (_UnaryUnary(self, receiver), _UnaryStream(self, receiver),
                      _StreamStream(self, receiver))
        ]  # fmt: skip

    def details(
        self, details: grpc.aio.ClientCallDetails, receiver: str
    ) -> grpc.aio.ClientCallDetails:
        """``details`` with the proof added to its metadata."""
        method = details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata(name, receiver))
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryUnary(_UnaryUnaryBase):
    def __init__(self, auth: GrpcAuth, receiver: str) -> None:
        self._auth = auth
        self._receiver = receiver

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._auth.details(client_call_details, self._receiver), request)


class _UnaryStream(_UnaryStreamBase):
    def __init__(self, auth: GrpcAuth, receiver: str) -> None:
        self._auth = auth
        self._receiver = receiver

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._auth.details(client_call_details, self._receiver), request)


class _StreamStream(_StreamStreamBase):
    """The ``Overlay`` stream: signed once, when it opens."""

    def __init__(self, auth: GrpcAuth, receiver: str) -> None:
        self._auth = auth
        self._receiver = receiver

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(
            self._auth.details(client_call_details, self._receiver), request_iterator
        )


class ServerAuth(_ServerBase):
    """Lets a call through only with a valid proof of the network key made for this
    peer, one of the addresses ``names`` gives (each proof once: the replay memory is
    this server's)."""

    def __init__(
        self,
        network_key: str,
        *,
        names: Callable[[], Iterable[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = CallVerifier(network_key, GRPC_PURPOSE)
        self._names = names
        self._clock = clock

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        value = None
        for key, item in handler_call_details.invocation_metadata or ():
            if key == HEADER:
                value = item if isinstance(item, str) else None
                break
        try:
            calls = (grpc_call(method, name) for name in self._names())
            self._verifier.verify(value, *calls, now=self._clock())
        except Unauthenticated as exc:
            # debug only: a stranger's calls must not flood the log
            log.debug("refused %s: %s", method, exc)
            return await _refusal(continuation, handler_call_details, str(exc))
        return await continuation(handler_call_details)


async def _refusal(
    continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
    details: grpc.HandlerCallDetails,
    why: str,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as the real one that answers PERMISSION_DENIED
    without reading the request (no deserializer: it stays bytes)."""
    message = why
    handler = await continuation(details)
    if handler is not None and handler.response_streaming:

        async def refuse_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
            yield b""  # never reached: it makes this an async generator

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return grpc.unary_stream_rpc_method_handler(refuse_stream)

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        raise AssertionError("unreachable")  # context.abort always raises

    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
