"""The tracker's REST API (FastAPI): join, heartbeat, publish files, search, find providers.

``create_app(registry)`` builds one app around one registry; the registry's calls are
synchronous and short, so the handlers call it straight from the event loop. Every
error leaves as ``{"error": "..."}``: the ``p2pshare.errors`` tree is mapped to status
codes by one handler, validation problems become a readable 422, and nothing else of
a failure (no traceback) reaches the client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response
from prometheus_client import Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from p2pshare import __version__, http_errors
from p2pshare.core.manifest import check_content_id
from p2pshare.core.names import check_query
from p2pshare.errors import (
    P2PShareError,
    PermissionDenied,
    Unauthenticated,
)
from p2pshare.http_errors import error_response, status_of
from p2pshare.tracker import events
from p2pshare.tracker.auth import AuthMiddleware, RequestAuth
from p2pshare.tracker.dial_back import AddressCheck, Dial
from p2pshare.tracker.limits import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    FileRate,
    Refusal,
    RequestLimits,
)
from p2pshare.tracker.metrics import TrackerMetrics
from p2pshare.tracker.models import (
    ErrorResponse,
    FilesResponse,
    HealthResponse,
    HeartbeatResponse,
    PatchFilesRequest,
    PeersResponse,
    ProvidersResponse,
    RegisterRequest,
    RegisterResponse,
    ReplaceFilesRequest,
    SearchResponse,
    compact_json,
)
from p2pshare.tracker.registry import Reachability, Registry
from p2pshare.tracker.slices import run_sliced

__all__ = [
    "MAX_BODY_BYTES",
    "HotRoutes",
    "create_app",
    "heartbeat_answer",
    "search_answer",
    "with_hot_routes",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 << 20
"""Larger request bodies get 413; a peer with a huge share registers, then PATCHes in parts."""
MAX_SEARCH_LIMIT = 500
MAX_PEERS_LIMIT = 1000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ERRORS = {"model": ErrorResponse}


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PermissionDenied("this needs the peer's token: Authorization: Bearer <token>")
    return token.strip()


Token = Annotated[str | None, Header(alias="Authorization", description="Bearer <token>")]


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def _too_large_head(scope: Scope) -> Refusal | None:
    """414 or 431 for a request target or headers over the limits (``http_server``
    refuses them while parsing; this is for uvicorn and in-process transports)."""
    target = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b""))
    if target > MAX_URL_BYTES:
        return _refusal(414, f"request target longer than {MAX_URL_BYTES} bytes")
    headers = scope.get("headers") or ()
    if len(headers) > MAX_HEADERS:
        return _refusal(431, f"more than {MAX_HEADERS} header lines")
    if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
        return _refusal(431, f"headers larger than {MAX_HEADER_BYTES} bytes")
    return None


def _refusal(status: int, message: str) -> Refusal:
    return status, compact_json({"error": message}).encode(), ()


class _Edge:
    """Pure ASGI middleware: request metrics per route, the request rate limit, and the
    size limits of a request (target, headers, body)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        requests: Counter,
        latency: Histogram,
        max_body: int,
        limits: RequestLimits,
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self.max_body = max_body
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = counted = False

        def count() -> None:
            nonlocal counted
            if counted:
                return
            counted = True
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(path, method, str(status)).inc()
            self.latency.labels(path, method).observe(time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # counted before the last byte leaves: a client that has its answer and
                # scrapes another worker at once finds the request in the metrics
                count()
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        try:
            client = scope.get("client")
            refused = _too_large_head(scope) or self.limits.refuse(
                client[0] if client else None, scope["path"]
            )
            if refused is not None:
                await _respond(send_wrapper, *refused)
                return
            if length.isdigit() and int(length) > self.max_body:
                raise _BodyTooLarge(self.max_body)
            await self.app(scope, receive_wrapper, send_wrapper)
        except _BodyTooLarge as exc:
            if started:
                raise
            await error_response(413, exc.detail)(scope, receive, send_wrapper)
        finally:
            count()  # no answer went out whole (an error): counted all the same


_HEARTBEAT_ROUTE = "/v1/peers/{peer_id}/heartbeat"
_SEARCH_ROUTE = "/v1/search"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class HotRoutes:
    """Pure ASGI middleware that answers the two routes every peer calls all the time,
    heartbeat and search, without FastAPI's routing, dependency injection and models.

    Answers, errors and metrics are the same as those of the FastAPI routes (tests
    check both ways); anything unusual (another method, a query string that does not
    parse plainly) goes on to the FastAPI app, which answers it as before.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: Registry,
        clock: Callable[[], float],
        requests: Counter,
        latency: Histogram,
        limits: RequestLimits,
        auth: RequestAuth | None = None,
        address_check: AddressCheck | None = None,
    ) -> None:
        self.app = app
        self.registry = registry
        self.address_check = address_check
        self.clock = clock
        self.limits = limits
        self.auth = auth
        self.requests = requests
        self.latency = latency
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers = {
            route: latency.labels(route, method)
            for route, method in ((_HEARTBEAT_ROUTE, "POST"), (_SEARCH_ROUTE, "GET"))
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # oversized requests go on to the app, which refuses them (``http_server``
        # refuses them before they get here)
        if scope["type"] == "http" and _too_large_head(scope) is None:
            client = scope.get("client")
            answer = self.answer(
                scope["method"],
                scope["path"],
                scope.get("query_string", b""),
                scope["headers"],
                client[0] if client else None,
            )
            if answer is not None:
                await _respond(send, *answer)
                return
        await self.app(scope, receive, send)

    def answer(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        client: str | None,
    ) -> Refusal | None:
        """Status, JSON body and extra headers of a heartbeat or search request from
        the address ``client`` (a 429 if it is over its rate); None for any other
        request, which the FastAPI app answers. ``path`` is percent-decoded."""
        peer_id = ""
        params = None
        if method == "POST" and path.startswith("/v1/peers/") and path.endswith("/heartbeat"):
            peer_id = path[10:-10]
            if not peer_id or "/" in peer_id:
                return None
            route = _HEARTBEAT_ROUTE
        elif method == "GET" and path == _SEARCH_ROUTE:
            params = _plain_search_params(query_string)
            if params is None:
                return None
            route = _SEARCH_ROUTE
        else:
            return None
        if _has_body(headers):
            # the app answers: it applies the body limit, and a proof of the key covers
            # the body (and counts the request once, against the rate limit too)
            return None
        # the rate limit first: a flood costs no HMAC
        refusal = self._limited(route, method, client, path)
        if refusal is None and self.auth is not None:
            refusal = self._unauthenticated(method, path, query_string, headers, route)
        if refusal is not None:
            return refusal
        if params is not None:
            return self._search(*params)
        return self._heartbeat(path, headers, peer_id)

    def _unauthenticated(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        route: str,
    ) -> Refusal | None:
        """The 401 of a private network's request without valid proof of the key
        (the check the FastAPI app makes too); None if it may go on."""
        assert self.auth is not None
        start = time.perf_counter()
        try:
            self.auth.check(method, path, query_string, headers)
        except Unauthenticated as exc:
            status, body = _failure(exc, method, route)
            self._count(route, method, status, start)
            return status, body, ()
        return None

    def _limited(self, route: str, method: str, client: str | None, path: str) -> Refusal | None:
        refused = self.limits.refuse(client, path)
        if refused is not None:
            self._count(route, method, refused[0], time.perf_counter())
        return refused

    def _heartbeat(
        self, path: str, headers: Iterable[tuple[bytes, bytes]], peer_id: str
    ) -> Refusal:
        """Answer a heartbeat (one without a body: ``answer`` leaves the others to the app)."""
        start = time.perf_counter()
        authorization = None
        for key, value in headers:
            if key == b"authorization":
                authorization = value.decode("latin-1")
        try:
            body = heartbeat_answer(
                self.registry, peer_id, authorization, self.clock(), self.address_check
            )
        except Exception as exc:  # noqa: BLE001 - answered as the FastAPI handlers would
            status, body = _failure(exc, "POST", path)
        else:
            status = 200
        self._count(_HEARTBEAT_ROUTE, "POST", status, start)
        return status, body, ()

    def _search(self, q: str, limit: int) -> Refusal:
        start = time.perf_counter()
        try:
            body = search_answer(self.registry, q, limit, self.clock())
        except Exception as exc:  # noqa: BLE001 - answered as the FastAPI handlers would
            status, body = _failure(exc, "GET", _SEARCH_ROUTE)
        else:
            status = 200
        self._count(_SEARCH_ROUTE, "GET", status, start)
        return status, body, ()

    def _count(self, route: str, method: str, status: int, start: float) -> None:
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        self._timers[route].observe(time.perf_counter() - start)


def heartbeat_answer(
    registry: Registry,
    peer_id: str,
    authorization: str | None,
    now: float,
    address_check: AddressCheck | None = None,
) -> bytes:
    """The JSON body of a heartbeat's answer: the one code path of both the FastAPI
    route and ``HotRoutes`` (errors are raised, and each answers them alike). A peer
    whose address did not answer is dialled again now and then (``AddressCheck``)."""
    state = registry.heartbeat(peer_id, _token(authorization), now)
    if state.reachable is False and address_check is not None:
        address_check.recheck(peer_id)
    return _heartbeat_json(registry.lease_seconds, state)


@functools.lru_cache(maxsize=1024)
def _heartbeat_json(lease_seconds: float, state: Reachability) -> bytes:
    reply = HeartbeatResponse(
        lease_seconds=lease_seconds, reachable=state.reachable, reachability=state.reason
    )
    return reply.model_dump_json().encode()


def search_answer(registry: Registry, q: str, limit: int, now: float) -> bytes:
    """The JSON body of a search's answer (``SearchResponse``), for both routes."""
    return b'{"hits":' + registry.search_json(check_query(q), limit, now) + b"}"


class _PeerLocks:
    """One sliced write at a time per registration in this process (a second one
    waits), so two replacements of one index never interleave their slices."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, peer_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(peer_id, (asyncio.Lock(), 0))
        self._locks[peer_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[peer_id]
            if users <= 1:
                del self._locks[peer_id]
            else:
                self._locks[peer_id] = (lock, users - 1)


def with_hot_routes(app: FastAPI) -> HotRoutes:
    """``app`` (from ``create_app``) behind the fast path for heartbeat and search: what
    the server runs. The answers are the same; only the time spent differs."""
    return HotRoutes(app, **app.state.hot_routes)


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(
        (key == b"content-length" and value != b"0") or key == b"transfer-encoding"
        for key, value in headers
    )


def _plain_search_params(query_string: bytes) -> tuple[str, int] | None:
    """``q`` and ``limit`` of a search when both are plainly valid; else None (FastAPI
    answers, with its own 422 for a missing or bad parameter)."""
    q: str | None = None
    limit = 50
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "q":
            if q is not None:
                return None
            q = value
        elif key == "limit":
            if not (value.isascii() and value.isdigit()):
                return None
            limit = int(value)
            if not 1 <= limit <= MAX_SEARCH_LIMIT:
                return None
    if q is None:
        return None
    return q, limit


def _failure(exc: Exception, method: str, path: str) -> tuple[int, bytes]:
    if isinstance(exc, P2PShareError):
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", method, path, exc)
        return status, compact_json({"error": str(exc)}).encode()
    log.error("%s %s crashed", method, path, exc_info=exc)
    return 500, b'{"error":"internal error of the tracker"}'


async def _respond(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    registry: Registry,
    *,
    neighbour_sample: int = 8,
    clock: Callable[[], float] = time.time,
    max_body: int = MAX_BODY_BYTES,
    limits: RequestLimits | None = None,
    network_key: str | None = None,
    shared_metrics: Path | None = None,
    dial: Dial | None = None,
    file_rate: FileRate | None = None,
) -> FastAPI:
    """The tracker's REST API around ``registry``; ``clock`` gives ``now`` to every call;
    ``limits``: the request rate limit (default: none). With ``network_key`` (a private
    network) every route but ``/healthz`` needs proof of the key (``tracker.auth``).
    ``shared_metrics``: the directory where every worker of the tracker keeps its
    metrics (see ``tracker.metrics``); None: this process alone serves the tracker.
    ``dial``: how to call ``Hello`` at a registered address (``dial_back.GrpcHello``);
    with it a registration is handed out only once its address answered as it; None:
    no address is checked (each is handed out at once). ``file_rate``: the files one
    client address may add or remove per second (default: no limit)."""
    limits = limits or RequestLimits(rate=0, burst=1)
    app = FastAPI(
        title="p2pshare tracker",
        version="1",
        description="Bootstrap server of p2pshare: live peers, their files, name search.",
    )
    metrics = TrackerMetrics(shared=shared_metrics)
    requests, latency = metrics.requests, metrics.latency
    auth = RequestAuth(network_key) if network_key else None
    if auth is not None:
        # inside _Edge: refusals are counted, the rate and body limits come first
        app.add_middleware(AuthMiddleware, auth=auth)
    app.add_middleware(_Edge, requests=requests, latency=latency, max_body=max_body, limits=limits)
    app.state.hot_routes = {
        "registry": registry,
        "clock": clock,
        "requests": requests,
        "latency": latency,
        "limits": limits,
        "auth": auth,
    }
    app.state.registry = registry
    app.state.metrics = metrics
    checker = AddressCheck(registry, dial, clock=clock) if dial is not None else None
    app.state.address_check = checker
    app.state.hot_routes["address_check"] = checker
    locks = _PeerLocks()

    http_errors.install(app, name="tracker")

    responses: dict[int | str, dict[str, Any]] = {
        **({401: _ERRORS} if auth is not None else {}),
        400: _ERRORS,  # a body that is not even text (FastAPI's "error parsing the body")
        403: _ERRORS,
        404: _ERRORS,
        422: _ERRORS,
        413: _ERRORS,
        429: _ERRORS,
    }

    @app.post("/v1/peers", status_code=201, response_model=RegisterResponse, responses=responses)
    async def register(body: RegisterRequest, request: Request) -> Response:
        """Join: the answer's token alone may update or remove this registration.

        With address checks on, the registration is handed out (search hits,
        providers, neighbours) once the tracker dialled the address back and it
        answered as this peer; heartbeat answers say whether it did, and why not."""
        client = request.client.host if request.client else None
        if file_rate is not None:
            file_rate.charge(client, len(body.files))
        previous = (body.previous.peer_id, body.previous.token) if body.previous else None
        steps = registry.register_steps(
            body.address,
            body.files,
            clock(),
            neighbours=neighbour_sample,
            client=client,
            check=checker is not None,
            previous=previous,
        )
        reg = await run_sliced(steps)
        state = registry.reachability(reg.peer_id)
        if checker is not None:
            local = request.scope.get("server")
            if client is not None and local and local[0] == client:
                checker.note_own_address(client)  # from this machine to itself
            checker.start(reg.peer_id, body.address, client)
        reply = RegisterResponse(
            peer_id=reg.peer_id,
            token=reg.token,
            lease_seconds=registry.lease_seconds,
            neighbours=reg.neighbours,
            seen_from=client or "",
            reachable=state.reachable,
            reachability=state.reason,
        )
        return _json(reply, 201)

    @app.post(
        "/v1/peers/{peer_id}/heartbeat", response_model=HeartbeatResponse, responses=responses
    )
    async def heartbeat(peer_id: str, authorization: Token = None) -> Response:
        """Renew the lease; 404 means it ran out: register again."""
        body = heartbeat_answer(registry, peer_id, authorization, clock(), checker)
        return Response(body, media_type="application/json")

    @app.put("/v1/peers/{peer_id}/files", response_model=FilesResponse, responses=responses)
    async def replace_files(
        peer_id: str, body: ReplaceFilesRequest, request: Request, authorization: Token = None
    ) -> Response:
        """Replace the peer's whole file index."""
        token = _token(authorization)
        if file_rate is not None:
            file_rate.charge(request.client.host if request.client else None, len(body.files))
        async with locks.hold(peer_id):
            steps = registry.replace_files_steps(peer_id, token, body.files, clock())
            n = await run_sliced(steps)
        return _json(FilesResponse(files=n, lease_seconds=registry.lease_seconds))

    @app.patch("/v1/peers/{peer_id}/files", response_model=FilesResponse, responses=responses)
    async def patch_files(
        peer_id: str, body: PatchFilesRequest, request: Request, authorization: Token = None
    ) -> Response:
        """Remove the content ids in ``remove``, then add the files in ``add``."""
        token = _token(authorization)
        if file_rate is not None:
            changed = len(body.add) + len(body.remove)
            file_rate.charge(request.client.host if request.client else None, changed)
        async with locks.hold(peer_id):
            steps = registry.patch_files_steps(peer_id, token, body.add, body.remove, clock())
            n = await run_sliced(steps)
        return _json(FilesResponse(files=n, lease_seconds=registry.lease_seconds))

    @app.delete("/v1/peers/{peer_id}", status_code=204, responses=responses)
    async def logout(peer_id: str, authorization: Token = None) -> Response:
        """Leave: the registration and its files are gone from every answer at once."""
        async with locks.hold(peer_id):
            await run_sliced(registry.remove_steps(peer_id, _token(authorization), clock()))
        return Response(status_code=204)

    @app.get("/v1/peers", response_model=PeersResponse, responses=responses)
    async def peers(limit: Annotated[int, Query(ge=1, le=MAX_PEERS_LIMIT)] = 100) -> Response:
        """Live peers, the most recently heard of first."""
        return _json(PeersResponse(peers=registry.live_peers(limit, clock())))

    @app.get("/v1/search", response_model=SearchResponse, responses=responses)
    async def search(
        q: Annotated[str, Query(description="words (prefixes) or a glob such as *.iso")],
        limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 50,
    ) -> Response:
        """Files whose name matches ``q``, one hit per content id, with live providers."""
        return Response(search_answer(registry, q, limit, clock()), media_type="application/json")

    @app.get(
        "/v1/files/{content_id}/providers",
        response_model=ProvidersResponse,
        responses=responses,
    )
    async def providers(content_id: str) -> Response:
        """The live peers that provide a content id; 404 if none does."""
        hit = registry.providers(check_content_id(content_id), clock())
        return _json(
            ProvidersResponse(
                content_id=hit.content_id, name=hit.name, size=hit.size, providers=hit.providers
            )
        )

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> Response:
        stats = registry.stats(clock())
        return _json(
            HealthResponse(status="ok", version=__version__, peers=stats.peers, files=stats.files)
        )

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text format: the whole tracker's, whichever worker answers."""
        metrics.count_searches(*registry.search_counts())
        exposition = metrics.exposition(registry.stats(clock()))
        return Response(exposition, media_type=CONTENT_TYPE_LATEST)

    events.install(app, registry)
    return app
