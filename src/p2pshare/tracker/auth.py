"""The network key on the tracker's REST API, server side (see ``p2pshare.core.auth``).

Server side, ``RequestAuth.check`` is the one check of a request: the FastAPI app
runs it in ``AuthMiddleware`` for every route, and ``HotRoutes`` runs it for the
heartbeats and searches it answers itself. Only ``OPEN_PATHS`` (``/healthz``) are
answered without proof; everything else, the OpenAPI document, ``/docs``,
``/metrics``, ``/v1/events`` and paths that match no route included, gets 401.

The client side, ``TrackerAuth`` (signing each request of an ``httpx`` client), is
``p2pshare.tracker.client_auth``: peers and the CLI import it without this middleware.

The replay memory belongs to one process: with ``workers`` > 1 each worker keeps
its own, so within the time window a captured request could be accepted once by
each worker (the kernel picks the worker per connection). Sharing the memory would
cost a write to the registry per request; the window bounds the exposure instead,
and with TLS nothing can be captured in the first place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from p2pshare.core.auth import HEADER, HTTP_PURPOSE, NO_PROOF, CallVerifier
from p2pshare.core.auth import http_call as _http_call
from p2pshare.errors import Unauthenticated
from p2pshare.http_errors import error_response

__all__ = ["OPEN_PATHS", "AuthMiddleware", "RequestAuth"]

OPEN_PATHS = frozenset({"/healthz"})
"""Answered to anyone: a load balancer's liveness probe knows no key."""

_HEADER = HEADER.encode()


class RequestAuth:
    """Checks the proof of the network key on requests to this tracker process."""

    def __init__(self, network_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._verifier = CallVerifier(network_key, HTTP_PURPOSE)
        self._clock = clock

    def check(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> None:
        """Accept the request once, or raise ``Unauthenticated``. ``path`` is
        percent-decoded, ``query`` as sent."""
        call = _http_call(method, path, query.decode("latin-1"))
        self._verifier.verify(proof_of(headers), call, now=self._clock(), body=body)


def proof_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The proof header among ASGI-style (lower-case name, value) pairs."""
    for name, value in headers:
        if name == _HEADER:
            return value.decode("latin-1")
    return None


Scope = dict[str, Any]
Message = dict[str, Any]


class AuthMiddleware:
    """Pure ASGI middleware: 401 for any request without valid proof of the key."""

    def __init__(self, app: Any, *, auth: RequestAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if proof_of(scope["headers"]) is None:  # refused before reading any body
            await self._refuse(scope, receive, send, Unauthenticated(NO_PROOF))
            return
        chunks: list[bytes] = []
        while True:  # the body is covered by the proof; the size limit is outside
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            self.auth.check(
                scope["method"],
                scope["path"],
                scope.get("query_string", b""),
                scope["headers"],
                body,
            )
        except Unauthenticated as exc:
            await self._refuse(scope, receive, send, exc)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())  # later: the disconnect a stream waits for

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Any, send: Any, exc: Unauthenticated) -> None:
        await error_response(401, str(exc))(scope, receive, send)
