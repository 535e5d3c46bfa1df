"""An async client of the tracker's REST API, for peers and the CLI.

Every failure comes out as a ``p2pshare.errors`` exception, translated here once::

    connection refused, DNS, reset     -> Unreachable
    no answer in time                  -> TimedOut
    401                                -> Unauthenticated    (a private network: no or wrong key)
    403                                -> PermissionDenied   (wrong or missing token)
    404                                -> NotFound           (unknown or expired peer, no provider)
    400, 422                           -> UsageError         (the tracker's message)
    429                                -> Busy               (over the rate limit; retry later)
    any other status, a malformed body -> RemoteError
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from p2pshare.errors import (
    Busy,
    NotFound,
    PermissionDenied,
    RemoteError,
    TimedOut,
    Unauthenticated,
    Unreachable,
    UsageError,
)
from p2pshare.tracker.client_auth import TrackerAuth
from p2pshare.tracker.models import (
    FileEntry,
    FilesResponse,
    HeartbeatResponse,
    PatchFilesRequest,
    PeerRef,
    PeersResponse,
    PreviousRegistration,
    ProvidersResponse,
    RegisterRequest,
    RegisterResponse,
    ReplaceFilesRequest,
    SearchHit,
    SearchResponse,
)

__all__ = ["TrackerClient"]

M = TypeVar("M", bound=BaseModel)


class TrackerClient:
    """Talks to one tracker at ``base_url`` (``http://host:port`` or ``https://...``,
    whose certificate ``verify`` checks: see ``p2pshare.tls``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        network_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            trust_env=False,
            verify=verify,
            auth=TrackerAuth(network_key) if network_key else None,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def register(
        self,
        address: str,
        files: Sequence[FileEntry],
        *,
        previous: tuple[str, str] | None = None,
    ) -> RegisterResponse:
        """Join the network; keep the token: it alone updates or removes the registration.
        ``previous``: the (peer id, token) of this peer's last registration, which the
        new one replaces at once (without it, a live registration of the same address
        gives way only once the tracker's dial-back finds this peer there)."""
        before = PreviousRegistration(peer_id=previous[0], token=previous[1]) if previous else None
        body = RegisterRequest(address=address, files=list(files), previous=before)
        return await self._call("POST", "/v1/peers", RegisterResponse, body=body)

    async def heartbeat(self, peer_id: str, token: str) -> HeartbeatResponse:
        """Renew the lease; ``NotFound`` means it ran out: register again."""
        return await self._call(
            "POST", f"/v1/peers/{peer_id}/heartbeat", HeartbeatResponse, token=token
        )

    async def replace_files(
        self, peer_id: str, token: str, files: Sequence[FileEntry]
    ) -> FilesResponse:
        """Make ``files`` the whole index of this peer at the tracker."""
        body = ReplaceFilesRequest(files=list(files))
        return await self._call(
            "PUT", f"/v1/peers/{peer_id}/files", FilesResponse, body=body, token=token
        )

    async def patch_files(
        self,
        peer_id: str,
        token: str,
        *,
        add: Sequence[FileEntry] = (),
        remove: Sequence[str] = (),
    ) -> FilesResponse:
        """Remove the content ids ``remove``, then add the files ``add``."""
        body = PatchFilesRequest(add=list(add), remove=list(remove))
        return await self._call(
            "PATCH", f"/v1/peers/{peer_id}/files", FilesResponse, body=body, token=token
        )

    async def logout(self, peer_id: str, token: str) -> None:
        """Leave: the registration and its files are removed at once."""
        await self._send("DELETE", f"/v1/peers/{peer_id}", token=token)

    async def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Hits for a name query (words or a glob), one per content id."""
        params = {"q": query, "limit": limit}
        return (await self._call("GET", "/v1/search", SearchResponse, params=params)).hits

    async def providers(self, content_id: str) -> ProvidersResponse:
        """The live peers that provide ``content_id``; ``NotFound`` if none does."""
        return await self._call("GET", f"/v1/files/{content_id}/providers", ProvidersResponse)

    async def peers(self, limit: int = 100) -> list[PeerRef]:
        """Live peers, the most recently heard of first."""
        params = {"limit": limit}
        return (await self._call("GET", "/v1/peers", PeersResponse, params=params)).peers

    async def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: BaseModel | None = None,
        token: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> M:
        response = await self._send(method, path, body=body, token=token, params=params)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise RemoteError(
                f"tracker {self.base_url} sent a malformed {model.__name__}: {exc}"
            ) from exc

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        token: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        content = body.model_dump_json().encode() if body is not None else None
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.TimeoutException as exc:
            raise TimedOut(f"tracker {self.base_url} did not answer in time") from exc
        except (httpx.ConnectError, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            hint = _TLS_HINT if _tls_failed(exc) else ""
            raise Unreachable(f"cannot reach tracker {self.base_url}: {exc}{hint}") from exc
        except httpx.HTTPError as exc:
            raise RemoteError(f"tracker {self.base_url}: {exc}") from exc
        status = response.status_code
        if status >= 400:
            message = _message(response)
            if status == 401:
                raise Unauthenticated(f"tracker {self.base_url} refused us: {message}")
            if status == 403:
                raise PermissionDenied(message)
            if status == 404:
                raise NotFound(message)
            if status in (400, 422):
                raise UsageError(message)
            if status == 429:
                raise Busy(f"tracker {self.base_url}: {message}")
            raise RemoteError(f"tracker {self.base_url} answered {status}: {message}")
        return response


_TLS_HINT = " (TLS failed: do this process and the tracker have the same tls and network_key?)"


def _tls_failed(exc: BaseException) -> bool:
    """Whether an ``ssl.SSLError`` lies under ``exc`` (httpx wraps httpcore's wrap)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _message(response: httpx.Response) -> str:
    """The ``error`` of a tracker's error body, or the start of whatever it sent."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return response.text[:200] or response.reason_phrase
