"""A small HTTP/1.1 server for the tracker: heartbeats and searches answered straight
from the protocol callbacks, every other request handed to the ASGI app.

uvicorn runs one asyncio task and two socket writes per request; under saturation
its latency tail reaches a second at 256 connections. Here a heartbeat or search is
answered inside ``data_received`` with one write (``HotRoutes.answer``), in arrival
order, so latency stays flat and the tracker does four times more per core. Other
routes (register, files, peers, providers, health, metrics, OpenAPI) run through the
same FastAPI app as under uvicorn, one request at a time per connection.

HTTP parsing is httptools' (llhttp): this server exists only when httptools is
installed (``AVAILABLE``); without it the tracker runs under uvicorn and h11.

Limits (``p2pshare.tracker.limits``) are applied while parsing, so no client makes the
server hold more than they allow: a request target over ``MAX_URL_BYTES`` gets 414,
headers over ``MAX_HEADERS`` lines or ``MAX_HEADER_BYTES`` get 431, a body over
``max_body`` 413 (at once when its Content-Length says so), a request not complete
``REQUEST_SECONDS`` after its first byte 408; each closes the connection. A client
that pipelines requests faster than they are answered is not read from until the
queue drains. The request rate limit is checked by ``HotRoutes`` and the FastAPI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from p2pshare.tracker.app import MAX_BODY_BYTES, ASGIApp, HotRoutes, Message
from p2pshare.tracker.limits import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    REQUEST_SECONDS,
)

__all__ = ["AVAILABLE", "HttpServer"]

log = logging.getLogger(__name__)

try:
    _httptools: Any = importlib.import_module("httptools")
except ImportError:  # pragma: no cover - depends on what is installed
    _httptools = None

AVAILABLE = _httptools is not None
"""Whether httptools is installed, so ``HttpServer`` can run."""

IDLE_SECONDS = 30.0
"""A connection with no request in progress for this long is closed."""
HANDSHAKE_SECONDS = 10.0
"""A TLS handshake not done in this long is abandoned."""
MAX_QUEUED = 32
"""Pipelined requests waiting on one connection before it is read from no more."""
_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
}


@dataclass(slots=True)
class _Request:
    method: str = ""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    keep_alive: bool = True


def _head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytearray:
    out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status")))
    for name, value in headers:
        out += name + b": " + value + b"\r\n"
    if not keep_alive:
        out += b"connection: close\r\n"
    out += b"\r\n"
    return out


def _json_response(
    status: int, body: bytes, keep_alive: bool, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    head = _head(
        status,
        [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *extra],
        keep_alive,
    )
    return bytes(head + body)


class _Response:
    """One ASGI response as HTTP/1.1 bytes: the status line and headers go out with the
    first body message, with a Content-Length when that message is the whole body (else
    chunked); the answer to a HEAD has no body."""

    __slots__ = ("chunked", "done", "head_only", "keep_alive", "pending_head", "started")

    def __init__(self, method: str, keep_alive: bool) -> None:
        self.head_only = method == "HEAD"
        self.keep_alive = keep_alive
        self.started = False  # the app sent http.response.start
        self.done = False  # the app sent the last body message
        self.chunked = False
        self.pending_head: tuple[int, list[tuple[bytes, bytes]]] | None = None

    def encode(self, message: Message) -> bytes | None:
        """The bytes ``message`` puts on the wire; None: none (yet)."""
        if message["type"] == "http.response.start":
            self.started = True
            status = int(message["status"])
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
            self.pending_head = (status, headers)
            return None
        if message["type"] != "http.response.body" or not self.started:
            return None
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        out = bytearray()
        if self.pending_head is not None:
            status, headers = self.pending_head
            self.pending_head = None
            names = {k for k, _ in headers}
            if b"content-length" not in names and status not in (204, 304):
                if more:
                    self.chunked = True
                    headers.append((b"transfer-encoding", b"chunked"))
                else:
                    headers.append((b"content-length", b"%d" % len(chunk)))
            out += _head(status, headers, self.keep_alive)
        if self.head_only:
            chunk = b""
        if self.chunked:
            if chunk:
                out += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            if not more:
                out += b"0\r\n\r\n"
        else:
            out += chunk
        if not more:
            self.done = True
        return bytes(out)


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = _httptools.HttpRequestParser(self)
        self.current = _Request()
        self.queue: deque[_Request] = deque()
        self.busy = False  # an ASGI request of this connection is running
        self.queue_full = False  # reading paused until the queue drains
        self.closing = False
        self.refusal: tuple[int, str] | None = None  # why the request in parsing is refused
        self.receiving_since: float | None = None  # when the request in parsing began
        self.header_bytes = 0
        self.eof = False
        self.last_active = time.monotonic()
        self.disconnected = asyncio.Event()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server's is one
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if peer else None
        local = transport.get_extra_info("sockname")
        # this connection's own end, as uvicorn gives it (not the listening address,
        # which may be 0.0.0.0): a client at this address is on the tracker's machine
        self.local = (str(local[0]), int(local[1])) if local else self.server.address
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.disconnected.set()
        self.can_write.set()

    def eof_received(self) -> bool:
        """The client sent all it will: answer what it asked, then close."""
        self.eof = True
        return not self.idle()  # False: asyncio closes the transport at once

    def pause_writing(self) -> None:
        self.can_write.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.can_write.set()
        if self.transport is not None and not self.closing and not self.queue_full:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except _httptools.HttpParserUpgrade:
            self._fail(400, "upgrades are not supported")
        except (_httptools.HttpParserError, _Refused):
            # httptools wraps an exception of a callback in its own
            if self.refusal is not None:
                self._fail(*self.refusal)
            else:
                self._fail(400, "malformed HTTP request")
        else:
            self._run()

    # -- httptools callbacks -----------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        self.refusal = (status, message)
        raise _Refused

    def on_message_begin(self) -> None:
        self.current = _Request()
        self.receiving_since = self.last_active
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.current.url += url
        if len(self.current.url) > MAX_URL_BYTES:
            self._refuse(414, f"request target longer than {MAX_URL_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp may hand a long header over in pieces, each a call (name or value empty)
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"headers larger than {MAX_HEADER_BYTES} bytes")
        if len(self.current.headers) >= MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} header lines")
        self.current.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.current.method = self.parser.get_method().decode("ascii", "replace")
        self.current.keep_alive = self.parser.should_keep_alive()
        for name, value in self.current.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.server.max_body:
                self._refuse(413, f"request body larger than {self.server.max_body} bytes")
        for name, value in self.current.headers:
            expect = name == b"expect" and value.lower() == b"100-continue"
            if expect and self.transport and not self.busy and not self.queue:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it

    def on_body(self, body: bytes) -> None:
        self.current.size += len(body)
        if self.current.size > self.server.max_body:
            self._refuse(413, f"request body larger than {self.server.max_body} bytes")
        self.current.body.append(body)

    def on_message_complete(self) -> None:
        self.receiving_since = None
        self.queue.append(self.current)
        if len(self.queue) >= MAX_QUEUED and not self.queue_full and self.transport is not None:
            self.queue_full = True
            self.transport.pause_reading()  # until answered (``_run``)

    # -- answering ---------------------------------------------------------------------

    def _run(self) -> None:
        """Answer queued requests in order until one needs the ASGI app."""
        transport = self.transport
        while self.queue and not self.busy and not self.closing and transport is not None:
            req = self.queue.popleft()
            raw_path, _, query = req.url.partition(b"?")
            path = unquote(raw_path.decode("latin-1"), "utf-8", "surrogateescape")
            client = self.client[0] if self.client else None
            try:
                answer = self.server.hot.answer(req.method, path, query, req.headers, client)
            except Exception:
                log.exception("%s %s crashed", req.method, path)
                answer = (500, b'{"error":"internal error of the tracker"}', ())
            if answer is not None:
                transport.write(_json_response(answer[0], answer[1], req.keep_alive, answer[2]))
                if not req.keep_alive:
                    self._close()
                continue
            self.busy = True
            task = asyncio.ensure_future(self._asgi(req, raw_path, path, query))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)
        if self.queue_full and len(self.queue) < MAX_QUEUED // 2 and not self.closing:
            self.queue_full = False
            if self.can_write.is_set() and transport is not None:
                transport.resume_reading()
        if self.eof and self.idle():
            self._close()

    async def _asgi(self, req: _Request, raw_path: bytes, path: str, query: bytes) -> None:
        """Answer ``req`` with the ASGI app, then go on with the queue (or close)."""
        body = b"".join(req.body)
        sent_body = False
        response = _Response(req.method, req.keep_alive)

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if self.closing or self.transport is None or response.done:
                return
            out = response.encode(message)
            if out is not None:
                self.transport.write(out)
                await self.can_write.wait()

        try:
            await self.server.app(self._scope(req, raw_path, path, query), receive, send)
        except Exception:
            log.exception("%s %s crashed", req.method, path)
        self._asgi_done(response)

    def _scope(self, req: _Request, raw_path: bytes, path: str, query: bytes) -> dict[str, Any]:
        """The ASGI scope of ``req`` on this connection."""
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.local,
            "client": self.client,
            "scheme": self.server.scheme,
            "method": req.method,
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": req.headers,
            "state": {},
        }

    def _asgi_done(self, response: _Response) -> None:
        """After the app: a 500 if it answered nothing; the connection closed if the
        answer is cut short or asked for it, else the next queued request answered."""
        keep_alive = response.keep_alive
        if not response.done:
            if response.started or self.closing:
                keep_alive = False
            elif self.transport is not None:
                self.transport.write(
                    _json_response(500, b'{"error":"internal error of the tracker"}', False)
                )
                keep_alive = False
        self.busy = False
        self.last_active = time.monotonic()
        if not keep_alive:
            self._close()
        else:
            self._run()

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None and not self.closing:
            body = ('{"error":"' + message + '"}').encode()
            self.transport.write(_json_response(status, body, False))
        self._close()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def idle(self) -> bool:
        return not self.busy and not self.queue


class _Refused(Exception):
    """Raised in a parser callback to stop at a limit (``_Connection.refusal`` says which)."""


class HttpServer:
    """Serve ``hot`` (and through it the ASGI app) on listening sockets until ``stop``;
    HTTPS when given an ``ssl_context``."""

    def __init__(
        self,
        hot: HotRoutes,
        *,
        max_body: int = MAX_BODY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.hot = hot
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context else "http"
        self.app: ASGIApp = hot.app
        self.max_body = max_body
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Future[None]] = set()
        self.address: tuple[str, int] | None = None
        self._servers: list[asyncio.Server] = []
        self._stop = asyncio.Event()

    async def serve(self, sock: socket.socket, ready: Callable[[], None]) -> None:
        """Accept on ``sock``, call ``ready`` once accepting, return after ``stop``."""
        if not AVAILABLE:
            raise RuntimeError("the tracker's HTTP server needs httptools")
        loop = asyncio.get_running_loop()
        name = sock.getsockname()
        self.address = (str(name[0]), int(name[1]))
        server = await loop.create_server(
            lambda: _Connection(self),
            sock=sock,
            backlog=2048,
            ssl=self.ssl_context,
            # a client that never finishes its handshake holds a socket this long at most
            ssl_handshake_timeout=HANDSHAKE_SECONDS if self.ssl_context else None,
        )
        self._servers.append(server)
        sweeper = asyncio.ensure_future(self._sweep())
        ready()
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            await self._shutdown(server)

    def stop(self) -> None:
        self._stop.set()

    async def _sweep(self) -> None:
        """Close connections idle for ``IDLE_SECONDS``, and answer 408 to requests not
        complete ``REQUEST_SECONDS`` after they began (one timer for all of them)."""
        while True:
            await asyncio.sleep(min(IDLE_SECONDS, REQUEST_SECONDS) / 3)
            now = time.monotonic()
            for conn in list(self.connections):
                since = conn.receiving_since
                if since is not None and since < now - REQUEST_SECONDS:
                    conn._fail(408, f"the request did not arrive within {REQUEST_SECONDS:g} s")
                elif conn.idle() and conn.last_active < now - IDLE_SECONDS:
                    conn._close()

    async def _shutdown(self, server: asyncio.Server, timeout: float = 5.0) -> None:
        server.close()
        for conn in list(self.connections):
            if conn.idle():
                conn._close()
            else:
                # a stream that never ends by itself (the /v1/events SSE) ends when its
                # client goes: tell it so, instead of waiting out ``timeout`` for it
                conn.disconnected.set()
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)
