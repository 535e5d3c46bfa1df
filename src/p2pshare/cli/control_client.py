"""A small synchronous client of a peer's control API, for the CLI.

It speaks HTTP/1.1 with the standard library's ``http.client`` over one kept-alive
connection. Every CLI command runs in a fresh process, and importing a full HTTP
client (httpx and its transports) took longer than most commands' whole work: about
a tenth of a second of each ``p2pshare get``, ``ls`` or ``status``.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

from p2pshare import errors


class ControlClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``token`` finds the control API's token when the peer demands one (a 401):
        a peer on loopback needs none, and finding one may mean reading the config."""
        self.base_url = base_url.rstrip("/")
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.UsageError(f"--api: {base_url!r} is not an http:// or https:// URL")
        try:
            port = url.port
        except ValueError as exc:
            raise errors.UsageError(f"--api: {base_url!r} has a bad port") from exc
        self._scheme, self._host, self._port = url.scheme, url.hostname, port
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._find_token = token
        self._token: str | None = None
        self._looked = False
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            https = self._scheme == "https"
            kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _send(
        self, method: str, path: str, body: bytes | None, *, fresh: bool = False
    ) -> http.client.HTTPResponse:
        """One exchange, the token added if the peer asked for it; a kept-alive
        connection the peer closed meanwhile is dialled again once."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        reused = self._conn is not None and not fresh
        conn = self._connect()
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            return conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if not reused:
                raise
            return self._send(method, path, body, fresh=True)

    def _exchange(self, method: str, path: str, body: bytes | None) -> http.client.HTTPResponse:
        """The response to a request (its body not yet read); p2pshare errors for a peer
        that cannot be reached."""
        try:
            response = self._send(method, path, body)
            if response.status == 401 and not self._looked:
                self._looked = True
                refusal = response.read()
                self._token = self._find_token()
                if self._token is None:
                    self._raise(401, refusal)
                response = self._send(method, path, body)
            return response
        except ConnectionRefusedError as exc:
            raise errors.Unreachable(
                f"no peer answers at {self.base_url}; start one with 'p2pshare peer'"
                " or point --api at it"
            ) from exc
        except TimeoutError as exc:
            raise errors.TimedOut(f"the peer at {self.base_url} did not answer in time") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise errors.Unreachable(f"cannot talk to {self.base_url}: {exc}") from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        if params:
            path += "?" + urlencode(params)
        body = None if json_body is None else json.dumps(json_body).encode()
        response = self._exchange(method, path, body)
        try:
            text = response.read()
        except TimeoutError as exc:
            raise errors.TimedOut(f"the peer at {self.base_url} did not answer in time") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise errors.Unreachable(f"lost the peer at {self.base_url}: {exc}") from exc
        if not 200 <= response.status < 300:
            self._raise(response.status, text)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise errors.RemoteError(
                f"the peer at {self.base_url} sent no JSON ({response.status})"
            ) from exc

    def _raise(self, status: int, body: bytes) -> NoReturn:
        text = body.decode("utf-8", "replace")
        try:
            doc = json.loads(body)
            message = (doc.get("error") if isinstance(doc, dict) else None) or text
        except ValueError:
            message = text
        if status == 404:
            raise errors.NotFound(message)
        if status in (400, 422):
            raise errors.UsageError(message)
        if status == 401:
            raise errors.PermissionDenied(
                f"{message}. Set $P2PSHARE_API_TOKEN, or api_token in the config, or run"
                " where the peer's data folder (with its api-token file) is readable"
            )
        if status == 403:
            raise errors.PermissionDenied(message)
        raise errors.RemoteError(f"{status}: {message}")

    def events(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """The ``data`` of each server-sent event at ``path``, as they come, forever."""
        if params:
            path += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        # a stream of its own: it waits for events as long as they take to come
        stream = ControlClient(self.base_url, timeout=10.0, token=self._find_token)
        stream._token, stream._looked = self._token, self._looked
        with stream:
            response = stream._exchange("GET", path, None)
            if not 200 <= response.status < 300:
                self._raise(response.status, response.read())
            sock = stream._conn.sock if stream._conn is not None else None
            if isinstance(sock, socket.socket):
                sock.settimeout(None)
            data: list[str] = []
            try:
                for raw in response:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        doc = json.loads("\n".join(data))
                        data = []
                        if isinstance(doc, dict):
                            yield doc
            except (OSError, http.client.HTTPException) as exc:
                raise errors.Unreachable(f"lost the peer at {self.base_url}: {exc}") from exc
            except ValueError as exc:
                raise errors.RemoteError(f"the peer at {self.base_url} sent a bad event") from exc
        raise errors.Unreachable(f"the peer at {self.base_url} ended the stream")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json_body=body)
