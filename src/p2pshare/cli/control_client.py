"""A small synchronous client of a peer's control API, for the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from typing import Any, NoReturn

import httpx

from p2pshare import errors


class _Token(httpx.Auth):
    """The control API's token, looked for only when the peer asks for one (a 401):
    a peer on loopback needs none, and finding one may mean reading the config."""

    def __init__(self, find: Callable[[], str | None]) -> None:
        self._find = find
        self._token: str | None = None
        self._looked = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401 and not self._looked:
            self._looked = True
            self._token = self._find()
            if self._token is not None:
                request.headers["Authorization"] = f"Bearer {self._token}"
                yield request


class ControlClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``token`` finds the control API's token when the peer demands one."""
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, auth=_Token(token))

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise errors.Unreachable(
                f"no peer answers at {self.base_url}; start one with 'p2pshare peer'"
                " or point --api at it"
            ) from exc
        except httpx.TimeoutException as exc:
            raise errors.TimedOut(f"the peer at {self.base_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise errors.Unreachable(f"cannot talk to {self.base_url}: {exc}") from exc
        if response.is_success:
            return response.json()
        self._raise(response)

    def _raise(self, response: httpx.Response) -> NoReturn:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text
        if response.status_code == 404:
            raise errors.NotFound(message)
        if response.status_code in (400, 422):
            raise errors.UsageError(message)
        if response.status_code == 401:
            raise errors.PermissionDenied(
                f"{message}. Set $P2PSHARE_API_TOKEN, or api_token in the config, or run"
                " where the peer's data folder (with its api-token file) is readable"
            )
        if response.status_code == 403:
            raise errors.PermissionDenied(message)
        raise errors.RemoteError(f"{response.status_code}: {message}")

    def events(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """The ``data`` of each server-sent event at ``path``, as they come, forever."""
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if not response.is_success:
                    response.read()
                    self._raise(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        doc = json.loads("\n".join(data))
                        data = []
                        if isinstance(doc, dict):
                            yield doc
        except httpx.ConnectError as exc:
            raise errors.Unreachable(
                f"no peer answers at {self.base_url}; start one with 'p2pshare peer'"
                " or point --api at it"
            ) from exc
        except httpx.HTTPError as exc:
            raise errors.Unreachable(f"lost the peer at {self.base_url}: {exc}") from exc
        except ValueError as exc:
            raise errors.RemoteError(f"the peer at {self.base_url} sent a bad event") from exc
        raise errors.Unreachable(f"the peer at {self.base_url} ended the stream")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)
