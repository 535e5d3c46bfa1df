"""The control API: the local REST API through which the CLI drives a running peer.

It listens on 127.0.0.1 by default, where only this machine reaches it. Bound to
any other address it demands a token (``Authorization: Bearer TOKEN``) on every
route but ``/healthz``: ``api_token`` from the settings, else one made once and
kept in ``<data>/api-token`` (mode 0600), which the CLI reads (``api_token_for``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from p2pshare import __version__, errors, http_errors
from p2pshare.config import API_TOKEN_ENV, API_TOKEN_FILE, PeerSettings
from p2pshare.core.browser_origin import host_allowed, is_loopback, origin_allowed
from p2pshare.core.query_router import DEFAULT_TTL, MAX_TTL, MAX_WALKERS
from p2pshare.peer.node import PeerNode
from p2pshare.peer.overlay.subscriptions import Subscription
from p2pshare.peer.sharing.folders import check_out_folder
from p2pshare.peer.transfer.progress import Download
from p2pshare.tracker.models import ErrorResponse, FileEntry, SearchHit

LONG_POLL_MAX = 30.0
KEEPALIVE_SECONDS = 15.0
OPEN_PATHS = frozenset({"/healthz"})


def api_token_for(
    settings: PeerSettings, data_dir: Path, bound_host: str
) -> tuple[str | None, str]:
    """The token the control API bound at ``bound_host`` demands (None on loopback),
    and the line that tells the user where it is."""
    if is_loopback(bound_host):
        return None, ""
    if settings.api_token:
        return settings.api_token, (
            f"the control API on {bound_host} is not loopback-only: it demands the api_token"
            " of the peer's config (Authorization: Bearer)"
        )
    path = data_dir / API_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            token = path.read_text().strip()
            path.chmod(0o600)
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.ConfigError(f"peer.api_token: cannot read {path}: {exc}") from exc
    except OSError as exc:
        raise errors.ConfigError(f"peer.api_token: cannot write {path}: {exc}") from exc
    else:
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    if len(token) < 16:
        raise errors.ConfigError(f"peer.api_token: {path} holds no usable token; delete it")
    return token, (
        f"the control API on {bound_host} is not loopback-only: it demands the token in {path}"
        f" (Authorization: Bearer; the CLI reads it, or ${API_TOKEN_ENV})"
    )


class _TokenGate:
    """Pure ASGI middleware: 401 for a request without the token."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                why = "wrong token" if given else "no token"
                response = http_errors.error_response(
                    401,
                    f"this control API demands its token ({why}): Authorization: Bearer TOKEN,"
                    f" from <data>/{API_TOKEN_FILE} or api_token",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BrowserGate:
    """Pure ASGI middleware: 403 for what only a hostile web page sends (see
    ``core.browser_origin``): on loopback, a ``Host`` that does not name this
    machine (DNS rebinding); anywhere, a foreign ``Origin`` or a cross-site fetch."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts  # None: not on loopback, the token guards

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            why = self._refusal(dict(scope["headers"]))
            if why is not None:
                await http_errors.error_response(403, why)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> str | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and not host_allowed(host, self.allowed_hosts):
            return (
                f"this control API answers only requests to this machine, not to Host {host!r}"
                " (a web page trying DNS rebinding?); to use that name, add it to"
                " peer.api_allowed_hosts"
            )
        origin = headers.get(b"origin")
        if origin is not None and not origin_allowed(origin.decode("latin-1"), host):
            return f"cross-origin request from {origin.decode('latin-1')!r} refused"
        if headers.get(b"sec-fetch-site") == b"cross-site":
            return "cross-site request refused"
        return None


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents: the spec lists every status it can give
    (see ``http_errors``), so clients and the fuzz tests know what to expect."""
    return {status: {"model": ErrorResponse} for status in statuses}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DownloadRequest(_Model):
    """``POST /v1/downloads``: what to fetch and where to put it."""

    content_id: str = Field(description="A content id, or a unique prefix of one seen here.")
    out_dir: str | None = Field(
        None, description="Absolute folder to save into (default: the share)."
    )


class BanView(_Model):
    """A provider banned from a download, and why."""

    address: str
    reason: str


class DownloadView(_Model):
    """A download's progress; ``why_stalled`` says what it waits for when it is not moving."""

    content_id: str
    name: str
    state: str
    size: int
    bytes_done: int
    pieces: int
    pieces_done: int
    rate: float
    providers: list[str]
    banned: list[BanView] = Field(description="Providers banned, each with the reason.")
    path: str | None
    error: str | None
    why_stalled: str | None
    seconds: float
    version: int

    @classmethod
    def of(cls, d: Download) -> DownloadView:
        end = d.finished or time.monotonic()
        return cls(
            content_id=d.content_id,
            name=d.name,
            state=d.state,
            size=d.size,
            bytes_done=d.bytes_done,
            pieces=d.pieces,
            pieces_done=d.pieces_done,
            rate=d.rate,
            providers=d.providers,
            banned=[BanView(address=b.address, reason=b.reason) for b in d.banned],
            path=d.path,
            error=d.error,
            why_stalled=d.why_stalled,
            seconds=end - d.started,
            version=d.version,
        )


class SearchResult(_Model):
    hits: list[SearchHit]
    sources: dict[str, str] = Field(description="Each source asked and how it answered.")


class FilesView(_Model):
    files: list[FileEntry]


class TrackerView(_Model):
    url: str | None
    state: str
    peer_id: str
    last_ok: float | None


class ScanView(_Model):
    """The scan of the share folder at start-up."""

    hashed: int = Field(description="Files hashed (new or changed).")
    cached: int = Field(description="Files whose hashes came from the cache.")
    skipped: list[str] = Field(description="Entries not shared, each with why.")


class OverlayView(_Model):
    """This peer in the overlay."""

    candidates: int = Field(description="Peers known but not neighbours.")
    queries_started: int
    queries_relayed: int = Field(description="Queries from other peers answered or passed on.")
    messages_sent: int = Field(description="Query messages sent to neighbours.")


class SubscribeRequest(_Model):
    """``POST /v1/subscriptions``: download every current and future match of ``query``."""

    query: str = Field(min_length=1, max_length=256, description="Words or a glob.")
    into: str = Field(max_length=4096, description="Absolute folder to download into.")


class SubscriptionView(_Model):
    id: str
    query: str
    into: str

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionView:
        return cls(id=s.id, query=s.query, into=s.into)


class SubscriptionsView(_Model):
    subscriptions: list[SubscriptionView]


class PubSubView(_Model):
    """Publish/subscribe at this peer."""

    following: list[str] = Field(description="Neighbours whose changes this peer follows.")
    subscribers: int = Field(description="Streams of changes open here (peers, watches).")
    published: int = Field(description="Changes of this peer's share published.")
    relayed: int = Field(description="Changes of other peers passed on.")
    tracker_events: str = Field(description="The tracker's event stream, when one is open.")
    subscriptions: int


class StatusView(_Model):
    version: str
    peer_id: str
    address: str
    share: str
    files: int
    shared_bytes: int
    scan: ScanView
    tracker: TrackerView
    neighbours: list[str] = Field(description="Overlay neighbours (HOST:PORT).")
    overlay: OverlayView
    pubsub: PubSubView
    pieces_served: int
    bytes_served: int
    downloads: list[DownloadView]
    uptime: float


def create_app(
    node: PeerNode, *, token: str | None = None, allowed_hosts: frozenset[str] | None = None
) -> FastAPI:
    """The control API of ``node``; with ``token``, demanded on every route but /healthz.
    ``allowed_hosts``: on loopback, the host names it answers besides localhost and
    loopback addresses (None: it is not on loopback, any ``Host`` will do)."""
    app = FastAPI(
        title="p2pshare peer control API",
        version=__version__,
        description="Drives one running peer. Listens on 127.0.0.1 unless configured otherwise.",
    )
    http_errors.install(app, name="peer")
    if token is not None:
        app.add_middleware(_TokenGate, token=token)
    app.add_middleware(_BrowserGate, allowed_hosts=allowed_hosts)  # outermost: runs first
    metrics = CollectorRegistry()
    files_gauge = Gauge("p2pshare_peer_files", "Files shared", registry=metrics)
    served = Gauge("p2pshare_peer_bytes_served", "Bytes of pieces served", registry=metrics)
    active = Gauge("p2pshare_peer_downloads_active", "Downloads running", registry=metrics)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        files_gauge.set(len(node.share.files()))
        served.set(node.served().bytes)
        active.set(sum(not d.done for d in node.downloads.all()))
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status")
    async def status() -> StatusView:
        files = node.share.files()
        t = node.registration
        uploaded = node.served()
        return StatusView(
            version=__version__,
            peer_id=t.peer_id,
            address=node.address,
            share=str(node.share_root),
            files=len(files),
            shared_bytes=sum(f.size for f in files),
            scan=ScanView(
                hashed=node.scan.hashed,
                cached=node.scan.cached,
                skipped=[f"{path}: {why}" for path, why in node.scan.skipped],
            ),
            tracker=TrackerView(url=t.url, state=t.state, peer_id=t.peer_id, last_ok=t.last_ok),
            neighbours=node.overlay.neighbours(),
            overlay=OverlayView(**dataclasses.asdict(node.overlay_stats())),
            pubsub=PubSubView(
                following=node.feeds.following(),
                subscribers=node.publisher.subscribers,
                published=node.publisher.published,
                relayed=node.publisher.relayed,
                tracker_events=node.tracker_events,
                subscriptions=len(node.subscriptions.all()),
            ),
            pieces_served=uploaded.pieces,
            bytes_served=uploaded.bytes,
            downloads=[DownloadView.of(d) for d in node.downloads.all()],
            uptime=time.time() - node.started,
        )

    @app.get("/v1/files")
    async def files() -> FilesView:
        return FilesView(files=node.file_entries())

    @app.get("/v1/search", responses=_errors(422, 502))
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=256, description="Words or a glob.")],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        source: Annotated[
            Literal["tracker", "overlay", "both"],
            Query(description="Ask the tracker, the overlay, or both (this peer's share always)."),
        ] = "both",
        ttl: Annotated[
            int, Query(ge=1, le=MAX_TTL, description="Overlay hops the query travels.")
        ] = DEFAULT_TTL,
        walkers: Annotated[
            int,
            Query(ge=0, le=MAX_WALKERS, description="0: flood the overlay; more: random walks."),
        ] = 0,
        timeout: Annotated[
            float, Query(gt=0, le=30, description="Seconds to wait for overlay hits.")
        ] = 3.0,
    ) -> SearchResult:
        hits, sources = await node.search_everywhere(
            q, limit, source=source, ttl=ttl, walkers=walkers, timeout=timeout
        )
        return SearchResult(hits=hits, sources=sources)

    # 400: a body that is not even text; 404: an unseen prefix
    @app.post("/v1/downloads", status_code=202, responses=_errors(400, 404, 422))
    async def start_download(req: DownloadRequest) -> DownloadView:
        content_id = node.resolve_content_id(req.content_id)
        out = (
            check_out_folder(req.out_dir, data_dir=node.data_dir, option="-o")
            if req.out_dir is not None
            else None
        )
        return DownloadView.of(node.downloads.start(content_id, out))

    @app.get("/v1/downloads")
    async def downloads() -> list[DownloadView]:
        return [DownloadView.of(d) for d in node.downloads.all()]

    @app.get("/v1/downloads/{content_id}", responses=_errors(404, 422))
    async def download(
        content_id: str,
        after: Annotated[
            int | None, Query(description="Long-poll: answer once the version exceeds this.")
        ] = None,
        wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX)] = 10.0,
    ) -> DownloadView:
        d = node.downloads.get(node.resolve_content_id(content_id))
        if after is not None:
            await d.wait_change(after, wait)
        return DownloadView.of(d)

    @app.get(
        "/v1/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **_errors(422)},
    )
    async def events(
        q: Annotated[
            str, Query(max_length=256, description="Words or a glob; empty: every change.")
        ] = "",
    ) -> StreamingResponse:
        """Server-sent events, one per new or removed match anywhere this peer hears of
        (its share, its neighbours, the tracker): ``data: {"event": "added"|"removed",
        "content_id", "name", "size", "provider"}``."""
        changes = node.changes(q)
        first = asyncio.ensure_future(anext(changes))  # a bad query fails here, as a 422
        await asyncio.sleep(0)
        if first.done() and first.exception() is not None:
            raise first.exception()  # type: ignore[misc]

        async def stream() -> AsyncIterator[bytes]:
            pending = first
            yield b": p2pshare peer events\n\n"
            try:
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
                    if not done:
                        yield b": keepalive\n\n"
                        continue
                    change = pending.result()
                    pending = asyncio.ensure_future(anext(changes))
                    body = json.dumps(change.to_json(), ensure_ascii=False)
                    yield f"event: {change.kind}\ndata: {body}\n\n".encode()
            finally:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
                await changes.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/subscriptions")
    async def subscriptions() -> SubscriptionsView:
        return SubscriptionsView(
            subscriptions=[SubscriptionView.of(s) for s in node.subscriptions.all()]
        )

    @app.post("/v1/subscriptions", status_code=201, responses=_errors(400, 422))
    async def subscribe(req: SubscribeRequest) -> SubscriptionView:
        return SubscriptionView.of(node.subscriptions.add(req.query, req.into))

    @app.delete("/v1/subscriptions/{sub_id}", responses=_errors(404, 422))
    async def unsubscribe(sub_id: str) -> SubscriptionView:
        return SubscriptionView.of(node.subscriptions.remove(sub_id))

    return app
