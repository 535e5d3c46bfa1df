"""The network key on the tracker's REST API, client side (see ``p2pshare.core.auth``):
``TrackerAuth`` signs every request of an ``httpx`` client. The tracker checks the
proofs in ``p2pshare.tracker.auth``."""

from __future__ import annotations

import os
import time
from collections.abc import Generator

import httpx

from p2pshare.core.auth import HEADER, HTTP_PURPOSE, NONCE_BYTES, CallSigner
from p2pshare.core.auth import http_call as _http_call

__all__ = ["TrackerAuth"]


class TrackerAuth(httpx.Auth):
    """Signs every request of an ``httpx`` client with the network key."""

    requires_request_body = True

    def __init__(self, network_key: str) -> None:
        self._signer = CallSigner(network_key, HTTP_PURPOSE)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        call = _http_call(request.method, request.url.path, request.url.query.decode("latin-1"))
        request.headers[HEADER] = self._signer.sign(
            call, now=time.time(), nonce=os.urandom(NONCE_BYTES), body=request.content
        )
        yield request
