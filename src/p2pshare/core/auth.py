"""Proof of the network key on every call of a private network.

A caller holding the network key sends one value with each call (an HTTP header or
gRPC metadata, named ``HEADER``)::

    v1.<milliseconds since the epoch>.<nonce: 32 hex digits>.<MAC: 43 base64url characters>

The MAC is HMAC-SHA256 under a key derived from the network key for one purpose
(``derive_key``: the tracker's REST API and the peers' gRPC each get their own, and
so would anything else that derives from the network key), over the version, the
call (HTTP method and path and query, or the gRPC method name and the address the
caller dialled: ``grpc_call``), the time, the nonce and, for HTTP, the SHA-256 of
the body. Naming the receiver matters: a proof captured on its way to one peer is
refused by every other peer, whose own names it does not carry. The verifier
(``CallVerifier``) accepts a value once: a wrong MAC, a time more than ``window``
seconds from its clock, or a nonce it has already accepted is refused. So a captured
call cannot be replayed and a caller without the key learns nothing.

The replay memory is bounded: it forgets nonces whose time has left the window, and
when it is full it forgets the oldest and from then on refuses every call at or
before that time (``floor``), so what it forgot can never be replayed; under such a
flood, a caller whose clock lags by more than the memory's span is refused.

Pure: the clock (``now``) and the nonce are arguments.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac

from p2pshare.errors import Unauthenticated

__all__ = [
    "GRPC_PURPOSE",
    "HEADER",
    "HTTP_PURPOSE",
    "NONCE_BYTES",
    "NO_PROOF",
    "CallSigner",
    "CallVerifier",
    "derive_key",
    "grpc_call",
    "http_call",
]

HEADER = "x-p2pshare-auth"
"""The HTTP header and the gRPC metadata key (lower case, as gRPC requires)."""
HTTP_PURPOSE = "tracker-http"
GRPC_PURPOSE = "peer-grpc"
NONCE_BYTES = 16
WINDOW_SECONDS = 60.0
MEMORY = 200_000
"""Nonces remembered at most (about 30 MB when full): 3,000 calls a second for a minute."""

NO_PROOF = "this is a private network: the call needs proof of the network key (set network_key)"

_VERSION = "v1"
_EMPTY_BODY = hashlib.sha256(b"").digest()


def derive_key(network_key: str, purpose: str) -> bytes:
    """The key for ``purpose``: HMAC-SHA256 of a label under the network key, so no two
    uses of the key material share a key."""
    label = f"p2pshare {purpose} key v1".encode()
    return hmac.new(network_key.encode(), label, hashlib.sha256).digest()


def _message(purpose: str, call: str, millis: int, nonce: str, body_hash: bytes) -> bytes:
    return b"\n".join(
        (
            _VERSION.encode(),
            purpose.encode(),
            call.encode("utf-8", "surrogateescape"),
            str(millis).encode(),
            nonce.encode(),
            body_hash,
        )
    )


def _mac(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def http_call(method: str, path: str, query: str) -> str:
    """What an HTTP request's MAC names: method, percent-decoded path, raw query."""
    return f"{method.upper()} {path}?{query}" if query else f"{method.upper()} {path}"


def grpc_call(method: str, receiver: str) -> str:
    """What a gRPC call's MAC names: the method and the receiver, as the address the
    caller dialled (the one the receiver advertises)."""
    return f"{method} to {receiver}"


class CallSigner:
    """Makes the ``HEADER`` value of calls for one purpose of one network."""

    def __init__(self, network_key: str, purpose: str) -> None:
        self._purpose = purpose
        self._key = derive_key(network_key, purpose)

    def sign(self, call: str, *, now: float, nonce: bytes, body: bytes = b"") -> str:
        """The value proving the key for ``call`` (see ``http_call``, or the gRPC
        method name) at ``now`` (seconds since the epoch) with a fresh random ``nonce``."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
        millis = int(now * 1000)
        nonce_hex = nonce.hex()
        body_hash = hashlib.sha256(body).digest() if body else _EMPTY_BODY
        mac = _mac(self._key, _message(self._purpose, call, millis, nonce_hex, body_hash))
        return f"{_VERSION}.{millis}.{nonce_hex}.{mac}"


class CallVerifier:
    """Checks ``HEADER`` values for one purpose of one network, each accepted once."""

    def __init__(
        self,
        network_key: str,
        purpose: str,
        *,
        window: float = WINDOW_SECONDS,
        memory: int = MEMORY,
    ) -> None:
        if memory < 1:
            raise ValueError("memory must be at least 1")
        self._purpose = purpose
        self._key = derive_key(network_key, purpose)
        self._window_ms = int(window * 1000)
        self._memory = memory
        self._seen: set[str] = set()
        self._by_time: list[tuple[int, str]] = []  # a heap: the oldest first
        self.floor = -1
        """Calls at or before this time (ms) are refused: their nonces may be forgotten."""

    def __len__(self) -> int:
        return len(self._seen)

    def verify(self, value: str | None, *calls: str, now: float, body: bytes = b"") -> None:
        """Accept ``value`` for one of ``calls`` at ``now`` once; else ``Unauthenticated``.
        Several calls: the same call named by each of the receiver's addresses."""
        if not value:
            raise Unauthenticated(NO_PROOF)
        version, _, rest = value.partition(".")
        millis_text, _, rest = rest.partition(".")
        nonce, _, mac = rest.partition(".")
        if (
            version != _VERSION
            or not (millis_text.isascii() and millis_text.isdigit() and len(millis_text) < 16)
            or len(nonce) != 2 * NONCE_BYTES
            or not mac
        ):
            raise Unauthenticated("malformed network key proof")
        millis = int(millis_text)
        body_hash = hashlib.sha256(body).digest() if body else _EMPTY_BODY
        given = mac.encode("ascii", "replace")
        if not any(
            hmac.compare_digest(
                _mac(self._key, _message(self._purpose, call, millis, nonce, body_hash)).encode(),
                given,
            )
            for call in calls
        ):
            raise Unauthenticated(
                "wrong network key"
                if len(calls) == 1
                else "wrong network key, or a proof made for another receiver"
            )
        now_ms = int(now * 1000)
        if abs(now_ms - millis) > self._window_ms:
            raise Unauthenticated(
                f"the call's time is {(now_ms - millis) / 1000:+.0f} s off this clock"
                f" (at most {self._window_ms / 1000:.0f} s): check the clocks"
            )
        self._forget(now_ms - self._window_ms)
        if millis <= self.floor:
            raise Unauthenticated("the call is too old for the replay memory; send it again")
        if nonce in self._seen:
            raise Unauthenticated("replayed call refused")
        if len(self._seen) >= self._memory:
            old_millis, old_nonce = heapq.heappop(self._by_time)
            self._seen.discard(old_nonce)
            self.floor = max(self.floor, old_millis)
            if millis <= self.floor:
                raise Unauthenticated("the call is too old for the replay memory; send it again")
        self._seen.add(nonce)
        heapq.heappush(self._by_time, (millis, nonce))

    def _forget(self, before_ms: int) -> None:
        """Drop nonces of calls before ``before_ms``: the window refuses those anyway."""
        by_time = self._by_time
        while by_time and by_time[0][0] < before_ms:
            self._seen.discard(heapq.heappop(by_time)[1])
