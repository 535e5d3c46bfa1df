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
from p2pshare.core.names import parse_query
from p2pshare.core.query_router import DEFAULT_TTL, MAX_TTL, MAX_WALKERS
from p2pshare.peer.api import web_page
from p2pshare.peer.node import PeerNode
from p2pshare.peer.overlay.subscriptions import DEFAULT_KEEP, MAX_KEEP, Subscription
from p2pshare.peer.sharing.folders import check_out_folder
from p2pshare.peer.sync.engine import STATE_DIR, FolderSync
from p2pshare.peer.transfer.downloads import PiecesDetail
from p2pshare.peer.transfer.progress import Download
from p2pshare.peer.transfer.pulse import Pulse
from p2pshare.tracker.models import ErrorResponse, FileEntry, SearchHit

LONG_POLL_MAX = 30.0
KEEPALIVE_SECONDS = 15.0
LIVE_STATUS_EVERY = 1.0  # seconds between status events of /v1/status/events
LIVE_MIN_INTERVAL = 0.1  # seconds: download changes are sent at most this often
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
        if (
            scope["type"] == "http"
            and scope["path"] not in OPEN_PATHS
            and not web_page.is_page_asset(scope["path"])
        ):
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
    out_dir: str = Field("", description="The folder it is saved into.")
    received: int = Field(0, description="Bytes received by this run of the peer.")
    delivered: dict[str, int] = Field(
        default_factory=dict, description="Verified bytes received from each provider."
    )
    have: str = Field(
        "",
        description="Verified pieces: base64 of a bitfield (piece i: byte i // 8, bit"
        " 0x80 >> i % 8).",
    )
    in_flight: list[int] = Field(
        default_factory=list, description="Pieces asked of a provider, not yet received."
    )

    @classmethod
    def of(cls, d: Download, detail: PiecesDetail | None = None) -> DownloadView:
        end = d.finished or time.monotonic()
        more: dict[str, Any] = {}
        if detail is not None:
            more = {"delivered": detail.delivered, "have": detail.have}
            more["in_flight"] = detail.in_flight
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
            out_dir=str(d.out_dir),
            received=d.received,
            **more,
        )


class SearchResult(_Model):
    hits: list[SearchHit]
    sources: dict[str, str] = Field(description="Each source asked and how it answered.")


class FilesView(_Model):
    files: list[FileEntry]
    served: dict[str, int] = Field(
        default_factory=dict,
        description="Bytes of each file (by content id) served to other peers since the start.",
    )


class TrackerView(_Model):
    url: str | None
    state: str
    peer_id: str
    last_ok: float | None
    reachable: str = Field("not known yet", description="Whether the tracker dialled us back.")


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
    mirror: bool = Field(
        default=False, description="Follow removals too (the file goes to the versions)."
    )
    versions: int = Field(
        default=DEFAULT_KEEP,
        ge=0,
        le=MAX_KEEP,
        description="Replaced files kept per name (0: none).",
    )


class FetchedView(_Model):
    content_id: str
    name: str
    state: str


class SyncEventView(_Model):
    action: str = Field(description="added, replaced, removed, conflict or failed.")
    name: str
    detail: str
    at: float = Field(description="Unix time.")
    fetched: int = Field(description="Bytes downloaded for it.")
    reused: int = Field(description="Bytes taken from local files instead.")
    steps: dict[str, float] = Field(
        default_factory=dict,
        description="Unix times of a new version's steps: heard, seeded, downloaded, landed.",
    )


class SubscriptionView(_Model):
    id: str
    query: str
    into: str
    mirror: bool = False
    versions: int = Field(default=DEFAULT_KEEP, description="Replaced files kept per name.")
    two_way: bool = Field(
        default=False, description="The folder is this peer's share: its changes go out too."
    )
    fetched: list[FetchedView] = Field(
        default_factory=list, description="Downloads into its folder since the peer started."
    )
    kept: list[str] = Field(
        default_factory=list, description="Versions kept in .p2pshare/versions/ of the folder."
    )
    conflicts: list[str] = Field(
        default_factory=list, description="Conflict copies made since the peer started."
    )
    syncing: list[str] = Field(default_factory=list, description="Names being synced now.")
    events: list[SyncEventView] = Field(default_factory=list, description="The last ones.")
    bytes_fetched: int = 0
    bytes_reused: int = Field(default=0, description="Taken from local files, not fetched.")

    @classmethod
    def of(
        cls,
        s: Subscription,
        downloads: list[Download] | None = None,
        folder: FolderSync | None = None,
    ) -> SubscriptionView:
        into = Path(s.into)
        incoming = into / STATE_DIR / "incoming"
        fetched = [
            FetchedView(content_id=d.content_id, name=d.name, state=d.state)
            for d in downloads or []
            if d.out_dir in (into, incoming)
        ]
        view = cls(
            id=s.id, query=s.query, into=s.into, mirror=s.mirror, versions=s.keep, fetched=fetched
        )
        if folder is not None:
            view.two_way = folder.two_way
            view.kept = folder.kept_versions()
            view.conflicts = list(folder.conflicts)
            view.syncing = folder.busy()
            view.events = [
                SyncEventView(
                    action=e.action,
                    name=e.name,
                    detail=e.detail,
                    at=e.at,
                    fetched=e.fetched,
                    reused=e.reused,
                    steps=e.steps,
                )
                for e in folder.events
            ]
            view.bytes_fetched, view.bytes_reused = folder.fetched, folder.reused
        return view


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
    syncing: list[str] = Field(
        default_factory=list, description="Names the folder syncs are bringing in now."
    )
    conflicts: list[str] = Field(
        default_factory=list,
        description="Conflict copies the folder syncs made since the peer started (paths).",
    )


class StatusView(_Model):
    version: str
    peer_id: str
    address: str = Field(description="HOST:PORT other peers dial (advertised).")
    listening: str = Field(description="HOST:PORT the gRPC server is bound to.")
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
    bytes_received: int = Field(0, description="Bytes of verified pieces downloaded.")
    tls: bool = Field(False, description="Whether calls between peers use TLS.")
    private_network: bool = Field(False, description="Whether a network key is set.")


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
        await node.tracker_state_now()
        return _status(node)

    changed = Pulse()  # any download changed: wakes the live streams
    node.downloads.changed = changed.fire

    def view(d: Download) -> DownloadView:
        return DownloadView.of(d, node.downloads.detail(d.content_id))

    @app.get(
        "/v1/status/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def status_events() -> StreamingResponse:
        """Server-sent events for a live view: ``status`` (the status without its
        downloads) at once and every second, and ``download`` (a download's view, with
        its pieces map) each time one changes, at most every 0.1 s each."""

        async def stream() -> AsyncIterator[bytes]:
            sent: dict[str, int] = {}
            last_status = -LIVE_STATUS_EVERY
            yield b": p2pshare live status\n\n"
            while True:
                now = time.monotonic()
                if now - last_status >= LIVE_STATUS_EVERY:
                    last_status = now
                    doc = _status(node, downloads=False).model_dump(exclude={"downloads"})
                    yield _sse("status", doc)
                    # the rate of a stalled download falls with no change to announce it
                    sent = {cid: v for cid, v in sent.items() if not _moving(node, cid)}
                for d in node.downloads.all():
                    if sent.get(d.content_id) != d.version:
                        sent[d.content_id] = d.version
                        yield _sse("download", view(d).model_dump())
                if any(sent.get(d.content_id) != d.version for d in node.downloads.all()):
                    await asyncio.sleep(LIVE_MIN_INTERVAL)
                    continue
                left = LIVE_STATUS_EVERY - (time.monotonic() - last_status)
                if await changed.wait(max(left, 0.0)):
                    await asyncio.sleep(LIVE_MIN_INTERVAL)  # one event for a burst of pieces

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/files")
    async def files() -> FilesView:
        return FilesView(files=node.file_entries(), served=node.share.served())

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
        hits, sources = await node.network_search.search_everywhere(
            q, limit, source=source, ttl=ttl, walkers=walkers, timeout=timeout
        )
        return SearchResult(hits=hits, sources=sources)

    @app.get(
        "/v1/search/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **_errors(422)},
    )
    async def search_stream(
        q: Annotated[str, Query(min_length=1, max_length=256, description="Words or a glob.")],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        source: Annotated[Literal["tracker", "overlay", "both"], Query()] = "both",
        ttl: Annotated[int, Query(ge=1, le=MAX_TTL)] = DEFAULT_TTL,
        walkers: Annotated[int, Query(ge=0, le=MAX_WALKERS)] = 0,
        timeout: Annotated[float, Query(gt=0, le=30)] = 3.0,
    ) -> StreamingResponse:
        """The hits of ``/v1/search`` as server-sent events, as each source gives them:
        ``hits`` ``{"source", "hits", "state"}`` (this peer's share first, then the
        tracker, then each overlay hit as it arrives; ``state`` is set on a source's
        last event), then ``done``. Hits are not merged: merge them by content id."""
        parse_query(q)  # a bad query is a 422, before the stream starts
        found = node.network_search.search_stream(
            q, limit, source=source, ttl=ttl, walkers=walkers, timeout=timeout
        )

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for batch in found:
                    hits = [h.model_dump() for h in batch.hits]
                    yield _sse("hits", {"source": batch.source, "hits": hits, "state": batch.state})
                yield _sse("done", {})
            finally:
                await found.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

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
        return [view(d) for d in node.downloads.all()]

    @app.post("/v1/downloads/{content_id}/pause", responses=_errors(400, 404, 422))
    async def pause(content_id: str) -> DownloadView:
        """Stop fetching; the partial file and its record stay, so ``resume`` goes on
        from the pieces already verified."""
        return view(await node.downloads.pause(node.resolve_content_id(content_id)))

    @app.post("/v1/downloads/{content_id}/resume", responses=_errors(400, 404, 422))
    async def resume(content_id: str) -> DownloadView:
        return view(node.downloads.resume(node.resolve_content_id(content_id)))

    @app.post("/v1/downloads/{content_id}/cancel", responses=_errors(400, 404, 422))
    async def cancel(content_id: str) -> DownloadView:
        """Stop fetching and delete the partial file and its record."""
        return view(await node.downloads.cancel(node.resolve_content_id(content_id)))

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
        return view(d)

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
        "content_id", "name", "size", "provider"}`` (``version``: the name's version
        vector, when the provider keeps them); and what this peer's folder syncs do:
        ``event: sync``, ``data: {"event": "sync", "action": "added"|"replaced"|
        "removed"|"conflict"|"failed", "name", "folder", "subscription", "detail",
        "at", "fetched", "reused"}`` (names matching ``q``)."""
        changes = node.changes(q, by_version=False)  # a person: a rewrite is no news
        first = asyncio.ensure_future(anext(changes))  # a bad query fails here, as a 422
        await asyncio.sleep(0)
        if first.done() and first.exception() is not None:
            raise first.exception()  # type: ignore[misc]
        wanted = parse_query(q) if q else None
        syncs = node.sync_events()

        async def stream() -> AsyncIterator[bytes]:
            pending = first
            pending_sync = asyncio.ensure_future(anext(syncs))
            yield b": p2pshare peer events\n\n"
            try:
                while True:
                    done, _ = await asyncio.wait(
                        {pending, pending_sync},
                        timeout=KEEPALIVE_SECONDS,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not done:
                        yield b": keepalive\n\n"
                        continue
                    if pending_sync in done:
                        event = pending_sync.result()
                        pending_sync = asyncio.ensure_future(anext(syncs))
                        if wanted is None or wanted.matches(event.name):
                            body = json.dumps(event.to_json(), ensure_ascii=False)
                            yield f"event: sync\ndata: {body}\n\n".encode()
                    if pending in done:
                        change = pending.result()
                        pending = asyncio.ensure_future(anext(changes))
                        body = json.dumps(change.to_json(), ensure_ascii=False)
                        yield f"event: {change.kind}\ndata: {body}\n\n".encode()
            finally:
                for p in (pending, pending_sync):
                    p.cancel()
                await asyncio.gather(pending, pending_sync, return_exceptions=True)
                await changes.aclose()  # type: ignore[attr-defined]
                await syncs.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/subscriptions")
    async def subscriptions() -> SubscriptionsView:
        return SubscriptionsView(
            subscriptions=[
                SubscriptionView.of(s, node.downloads.all(), node.subscriptions.folders.get(s.id))
                for s in node.subscriptions.all()
            ]
        )

    @app.post("/v1/subscriptions", status_code=201, responses=_errors(400, 422))
    async def subscribe(req: SubscribeRequest) -> SubscriptionView:
        sub = node.subscriptions.add(req.query, req.into, mirror=req.mirror, keep=req.versions)
        return SubscriptionView.of(sub, folder=node.subscriptions.folders.get(sub.id))

    @app.delete("/v1/subscriptions/{sub_id}", responses=_errors(404, 422))
    async def unsubscribe(sub_id: str) -> SubscriptionView:
        return SubscriptionView.of(node.subscriptions.remove(sub_id))

    web_page.install(app)
    return app


def _moving(node: PeerNode, content_id: str) -> bool:
    return node.downloads.get(content_id).state in ("starting", "downloading")


def _sse(event: str, doc: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(doc, ensure_ascii=False)}\n\n".encode()


def _status(node: PeerNode, *, downloads: bool = True) -> StatusView:
    files = node.share.files()
    t = node.registration
    uploaded = node.served()
    return StatusView(
        version=__version__,
        peer_id=t.peer_id,
        address=node.address,
        listening=node.listening,
        share=str(node.share_root),
        files=len(files),
        shared_bytes=sum(f.size for f in files),
        scan=ScanView(
            hashed=node.scan.hashed,
            cached=node.scan.cached,
            skipped=[f"{path}: {why}" for path, why in node.scan.skipped],
        ),
        tracker=TrackerView(
            url=t.url, state=t.state, peer_id=t.peer_id, last_ok=t.last_ok, reachable=t.reachable
        ),
        neighbours=node.overlay.neighbours(),
        overlay=OverlayView(**dataclasses.asdict(node.overlay_stats())),
        pubsub=PubSubView(
            following=node.feeds.following(),
            subscribers=node.publisher.subscribers,
            published=node.publisher.published,
            relayed=node.publisher.relayed,
            tracker_events=node.tracker_events,
            subscriptions=len(node.subscriptions.all()),
            syncing=[
                str(Path(f.folder, n))
                for f in node.subscriptions.folders.values()
                for n in f.busy()
            ],
            conflicts=[
                str(Path(f.folder, c))
                for f in node.subscriptions.folders.values()
                for c in f.conflicts
            ],
        ),
        pieces_served=uploaded.pieces,
        bytes_served=uploaded.bytes,
        downloads=[DownloadView.of(d) for d in node.downloads.all()] if downloads else [],
        uptime=time.time() - node.started,
        bytes_received=node.bytes_received(),
        tls=node.tls is not None,
        private_network=bool(node.settings.network_key),
    )
