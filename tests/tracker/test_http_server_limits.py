"""The tracker's own HTTP server in process: a request that never finishes arriving
gets 408 and its connection is closed, so trickling clients hold nothing for long."""

from __future__ import annotations

import asyncio
import socket

import pytest

from p2pshare.tracker import http_server
from p2pshare.tracker.app import create_app, with_hot_routes
from p2pshare.tracker.registry import SqliteRegistry

pytestmark = pytest.mark.skipif(not http_server.AVAILABLE, reason="needs httptools")


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /v1/search?q=a HTTP/1.1\r\nHost: t\r\n",  # headers that never end
        b'POST /v1/peers HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"address"',  # short body
    ],
)
async def test_a_request_not_complete_in_time_gets_408(tmp_path, monkeypatch, partial):
    monkeypatch.setattr(http_server, "REQUEST_SECONDS", 0.3)
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    server = http_server.HttpServer(with_hot_routes(create_app(registry)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    ready = asyncio.Event()
    serving = asyncio.create_task(server.serve(sock, ready.set))
    await ready.wait()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(partial)
        answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"did not arrive within" in answer
        writer.close()
        # others are served as before
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/search?q=a HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 ")
        writer.close()
    finally:
        server.stop()
        await serving
        sock.close()
        registry.close()
