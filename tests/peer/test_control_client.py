"""The CLI's control API client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from p2pshare import errors
from p2pshare.cli.control_client import ControlClient

TOKEN = "s3cret"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str | None, bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, doc: object, *, close: bool = False) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if close:
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def _handle(self, body: bytes) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append((self.command, self.path, auth, body))
        if self.path.startswith("/v1/private") and auth != f"Bearer {TOKEN}":
            self._answer(401, {"error": "this control API needs a token"})
        elif self.path.startswith("/v1/missing"):
            self._answer(404, {"error": "no such download"})
        elif self.path.startswith("/v1/closing"):
            self._answer(200, {"ok": True}, close=True)
        elif self.path.startswith("/v1/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in range(3):
                event = f"event: change\ndata: {json.dumps({'n': n})}\n\n".encode()
                # an event split across chunks, as a server may flush it
                for part in (event[:7], event[7:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
        else:
            self._answer(200, {"path": self.path, "body": body.decode()})


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_get_and_post_carry_params_and_json(server: str) -> None:
    with ControlClient(server) as client:
        assert (
            client.get("/v1/downloads/x", after=3, wait=None)["path"] == "/v1/downloads/x?after=3"
        )
        assert json.loads(client.post("/v1/downloads", {"content_id": "ab"})["body"]) == {
            "content_id": "ab"
        }


def test_the_token_is_looked_for_only_when_the_peer_asks(server: str) -> None:
    looked: list[int] = []

    def find() -> str:
        looked.append(1)
        return TOKEN

    with ControlClient(server, token=find) as client:
        client.get("/v1/open")
        assert looked == []
        assert client.post("/v1/private", {"a": 1})["body"] == '{"a": 1}'
        client.get("/v1/private")
    assert looked == [1]
    auths = [(path, auth) for _, path, auth, _ in _Handler.seen]
    assert auths == [
        ("/v1/open", None),
        ("/v1/private", None),
        ("/v1/private", f"Bearer {TOKEN}"),
        ("/v1/private", f"Bearer {TOKEN}"),
    ]


def test_a_missing_token_says_where_to_put_one(server: str) -> None:
    with ControlClient(server) as client, pytest.raises(errors.PermissionDenied) as exc:
        client.get("/v1/private")
    assert "needs a token" in str(exc.value) and "P2PSHARE_API_TOKEN" in str(exc.value)


def test_an_error_answer_becomes_our_error_with_the_peers_message(server: str) -> None:
    with ControlClient(server) as client, pytest.raises(errors.NotFound, match="no such download"):
        client.get("/v1/missing")


def test_a_connection_the_peer_closed_is_dialled_again(server: str) -> None:
    with ControlClient(server) as client:
        assert client.get("/v1/closing") == {"ok": True}
        assert client.get("/v1/after")["path"] == "/v1/after"


def test_no_peer_at_the_address_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        client = ControlClient(f"http://127.0.0.1:{port}")
        with client, pytest.raises(errors.Unreachable, match="no peer answers"):
            client.get("/v1/status")


def test_events_arrive_whole_across_chunks(server: str) -> None:
    with ControlClient(server) as client:
        got = []
        with pytest.raises(errors.Unreachable, match="ended the stream"):
            for doc in client.events("/v1/events", q="x"):
                got.append(doc)
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_url_that_is_no_http_url_is_a_usage_error() -> None:
    with pytest.raises(errors.UsageError, match="--api"):
        ControlClient("ftp://127.0.0.1:1")
