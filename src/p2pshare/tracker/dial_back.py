"""The tracker dials a registered address back: does it answer ``Hello`` as the peer
that registered it? (design: *Addresses*; the rule is ``core.reachability``.)

``AddressCheck.start`` is called once a registration is made; the check runs as a
task of its own, after the answer is sent, so a registration costs no more time.
At most ``concurrency`` dial-backs run at once per tracker process and at most
``MAX_PENDING`` wait; beyond that a registration is settled as "not checked: the
tracker is busy" (not handed out) rather than queued without bound. A check ends
with ``Registry.settle``: reachable or not, with the reason the peer reads in its
heartbeat answers.

``GrpcHello`` is the real dial: one gRPC ``Hello`` on a channel of its own (TLS and
the network key's proof as a peer would use them), closed after the call. gRPC is
imported only when the first dial is made: a tracker that never dials (a benchmark,
``verify_addresses = false``) does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from p2pshare.core.addresses import is_loopback, loopback_mismatch
from p2pshare.core.auth import GRPC_PURPOSE, HEADER, NONCE_BYTES, CallSigner, grpc_call
from p2pshare.core.rate import ClientBuckets, client_key
from p2pshare.core.reachability import RETRY_DELAYS, Answer, Failure, judge
from p2pshare.tracker.registry import Registry
from p2pshare.tracker.slices import run_sliced

if TYPE_CHECKING:
    from p2pshare.tls import Tls

__all__ = ["MAX_PENDING", "AddressCheck", "Dial", "GrpcHello"]

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 3.0
"""Seconds a dial-back waits for ``Hello``'s answer."""
MAX_PENDING = 10_000
"""Dial-backs waiting in one tracker process at most; later ones are not made."""
DIALS_PER_SECOND = 1.0
DIAL_BURST = 16
"""Dial-backs one client address (not this machine's) may cause: on average, and at
once. Beyond them a registration is not dialled (nor handed out) until a heartbeat
asks again (``RECHECK_SECONDS``)."""
DIAL_LIMITED = (
    "not checked yet: too many registrations from your address to dial back at once"
    " (the tracker tries again within a minute)"
)
RECHECK_SECONDS = 30.0
"""A registration whose address did not answer is dialled again at most this often."""
BUSY = "not checked: the tracker was too busy to dial you back (register again later)"
_HELLO = "/p2pshare.v1.Peer/Hello"

Dial = Callable[[str], Awaitable[Answer]]
"""Calls ``Hello`` at an address: the peer id it answered with, or why not."""


class AddressCheck:
    """Dials registered addresses back and records the verdicts in ``registry``."""

    def __init__(
        self,
        registry: Registry,
        dial: Dial,
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = 16,
        retry_delays: tuple[float, ...] | None = None,
    ) -> None:
        self._registry = registry
        self._dial = dial
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._delays = RETRY_DELAYS if retry_delays is None else retry_delays
        self._tasks: set[asyncio.Task[None]] = set()
        self._rechecked: dict[str, float] = {}  # peer id -> when it was last dialled again
        self._own: set[str] = set()  # this machine's addresses that clients came from
        # dial-backs that one client address may cause: the tracker itself must not be
        # a tool that dials a third party's port at the rate of registrations
        self._dials: ClientBuckets[str] = ClientBuckets(rate=DIALS_PER_SECOND, burst=DIAL_BURST)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def note_own_address(self, host: str) -> None:
        """``host`` is one of this machine's own addresses (a request came from it to
        it): a peer there may advertise a loopback address."""
        if len(self._own) < 64:
            self._own.add(host)

    def start(self, peer_id: str, address: str, client: str | None) -> None:
        """Check registration ``peer_id`` of ``address``, made from ``client``."""
        refusal = None
        if len(self._tasks) >= MAX_PENDING:
            refusal = BUSY
        elif self._over_dial_rate(client):
            refusal = DIAL_LIMITED
        self._note_dialled(peer_id)
        if refusal is not None:
            self._registry.settle(
                peer_id, reachable=False, reason=refusal, evict_holders=False, now=self._clock()
            )
            return
        task = asyncio.ensure_future(self._check(peer_id, address, client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def recheck(self, peer_id: str) -> None:
        """Dial a registration that did not answer again, at most once every
        ``RECHECK_SECONDS`` (its heartbeats ask): a peer that opened its port, or that
        read its id too late for the first dial, becomes reachable without registering
        again."""
        if self._clock() - self._rechecked.get(peer_id, -math.inf) < RECHECK_SECONDS:
            return
        found = self._registry.address_of(peer_id)
        if found is not None:
            self.start(peer_id, *found)

    def _note_dialled(self, peer_id: str) -> None:
        """Remember when ``peer_id`` was last checked (``recheck`` waits after it)."""
        now = self._clock()
        if len(self._rechecked) >= MAX_PENDING:
            cutoff = now - RECHECK_SECONDS
            self._rechecked = {p: t for p, t in self._rechecked.items() if t > cutoff}
        if len(self._rechecked) < MAX_PENDING:
            self._rechecked[peer_id] = now

    def _over_dial_rate(self, client: str | None) -> bool:
        if client is None or is_loopback(client) or client in self._own:
            return False  # this machine: tests, one host
        return bool(self._dials.check(client_key(client), time.monotonic()))

    async def _check(self, peer_id: str, address: str, client: str | None) -> None:
        why_not = loopback_mismatch(address, client, this_machine=self._own)
        try:
            async with self._slots:
                for tries_left in range(len(self._delays), -1, -1):
                    if why_not is not None:
                        answer = Answer(failure="loopback", detail=why_not)
                    else:
                        answer = await self._dial(address)
                    now = self._clock()
                    holders = self._registry.holders(peer_id, now)
                    verdict = judge(address, peer_id, holders, answer, tries_left=tries_left)
                    if verdict.retry:
                        await asyncio.sleep(self._delays[len(self._delays) - tries_left])
                        continue
                    steps = self._registry.settle_steps(
                        peer_id,
                        reachable=verdict.reachable,
                        reason=verdict.reason,
                        evict_holders=verdict.evict_holders,
                        now=now,
                    )
                    await run_sliced(steps)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dialling %s back failed", address)

    async def close(self) -> None:
        """Cancel the checks in progress (the tracker stops)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class GrpcHello:
    """``Dial`` over gRPC, as a peer would call: TLS with ``tls``, proof of
    ``network_key`` in the call's metadata."""

    def __init__(
        self,
        *,
        timeout: float = HELLO_TIMEOUT,
        tls: Tls | None = None,
        network_key: str | None = None,
    ) -> None:
        self._timeout = timeout
        self._tls = tls
        self._signer = CallSigner(network_key, GRPC_PURPOSE) if network_key else None

    async def __call__(self, address: str) -> Answer:
        import grpc  # noqa: PLC0415 - see the module's docstring

        from p2pshare._proto import peer_pb2 as pb  # noqa: PLC0415
        from p2pshare._proto import peer_pb2_grpc as pb_grpc  # noqa: PLC0415

        options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
        if self._tls is None:
            channel = grpc.aio.insecure_channel(address, options=options)
        else:
            options += self._tls.channel_options()
            channel = grpc.aio.secure_channel(address, self._tls.channel_credentials(), options)
        metadata: tuple[tuple[str, str], ...] = ()
        if self._signer is not None:
            call = grpc_call(_HELLO, address)  # the proof names the peer it is for
            proof = self._signer.sign(call, now=time.time(), nonce=os.urandom(NONCE_BYTES))
            metadata = ((HEADER, proof),)
        try:
            stub = pb_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
            reply = await stub.Hello(pb.HelloRequest(), timeout=self._timeout, metadata=metadata)
            return Answer(peer_id=reply.peer.peer_id)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            return Answer(failure=_failure(exc.code(), details), detail=details)
        finally:
            await channel.close(None)


def _failure(code: Any, details: str) -> Failure:
    """What a failed ``Hello`` means (``core.reachability.Failure``)."""
    name = getattr(code, "name", str(code))
    text = details.lower()
    if name == "DEADLINE_EXCEEDED":
        return "timeout"
    if name in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return "denied"
    if "dns" in text or "resolve" in text or "name or service not known" in text:
        return "dns"
    if "refused" in text:
        return "refused"
    if "handshake" in text or "ssl" in text or "certificate" in text:
        return "denied"
    if name == "UNAVAILABLE" and ("timed out" in text or "timeout" in text):
        return "timeout"
    return "protocol"
