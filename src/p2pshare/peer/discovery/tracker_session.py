"""The tracker session: this peer's registration at the tracker, kept alive.

Joins with the whole index, heartbeats within the lease, patches the index with
what changed, joins again after a lost lease or an outage, and logs out at the
end. The rules (states, backoff, the index diff) are the pure
``core.tracker_session``; this module makes the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from p2pshare import errors
from p2pshare.core.tracker_session import Backoff, Registration, index_diff
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.models import FileEntry, PeerRef

log = logging.getLogger(__name__)

STATUS_FRESH = 2.0  # seconds an answer of the tracker is taken as its state now
STATUS_PROBE = 1.0  # seconds a status waits for the tracker to answer


class TrackerSession:
    """Keeps this peer registered at one tracker."""

    def __init__(
        self,
        *,
        client: TrackerClient,
        registration: Registration,
        address: Callable[[], str],
        files: Callable[[], list[FileEntry]],
        on_join: Callable[[list[PeerRef]], None],
        seen_at: Callable[[str], bool] = lambda host: False,
        heartbeat_seconds: float = 0.0,
    ) -> None:
        """``seen_at(host)``: the tracker sees this peer's requests come from ``host``;
        True if this peer's address changed for it (it then registers again)."""
        self.registration = registration
        self._client = client
        self._address = address
        self._files = files
        self._on_join = on_join
        self._seen_at = seen_at
        self._heartbeat_seconds = heartbeat_seconds
        self._dirty = asyncio.Event()
        self._sent: dict[str, FileEntry] = {}  # the index as the tracker has it
        self._backoff = Backoff()
        self._task: asyncio.Task[None] | None = None

    def files_changed(self) -> None:
        """The index changed: patch the tracker's copy soon."""
        self._dirty.set()

    async def start(self) -> None:
        """Join now (a failure is kept in ``registration.state`` and retried), then keep
        the registration alive in a task."""
        with contextlib.suppress(errors.P2PShareError):
            await self._join_or_note()
        self._task = asyncio.create_task(self._keep_alive(), name="tracker")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        reg = self.registration
        if reg.token:
            with contextlib.suppress(errors.P2PShareError):
                await self._client.logout(reg.peer_id, reg.token)

    async def join(self) -> None:
        """Register with the whole index; raises the tracker client's errors."""
        reply = await self._client.register(self._address(), self._files())
        if reply.seen_from and self._seen_at(reply.seen_from):
            # the address the tracker sees replaces ours: register it in place of this one
            previous = (reply.peer_id, reply.token)
            reply = await self._client.register(self._address(), self._files(), previous=previous)
        self.registration.registered(
            peer_id=reply.peer_id,
            token=reply.token,
            lease_seconds=reply.lease_seconds,
            now=time.time(),
        )
        self.registration.note_reachability(reply.reachable, reply.reachability)
        self._dirty.clear()
        self._sent = {f.content_id: f for f in self._files()}
        self._on_join(list(reply.neighbours))

    async def _join_or_note(self) -> None:
        """``join``; a failure is noted in the state and logged, then raised."""
        try:
            await self.join()
        except errors.Unauthenticated as exc:
            self.registration.refused(str(exc))
            log.error("tracker %s refused this peer: %s", self.registration.url, exc)
            raise
        except errors.P2PShareError as exc:
            self.registration.unreachable(str(exc))
            log.warning("tracker %s: %s", self.registration.url, exc)
            raise

    async def _keep_alive(self) -> None:
        reg = self.registration
        while True:
            if not reg.joined:
                try:
                    await self._join_or_note()
                except errors.P2PShareError:
                    await asyncio.sleep(self._backoff.next())
                    continue
                self._backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._dirty.wait(), reg.heartbeat_every(self._heartbeat_seconds)
                )
            try:
                if self._dirty.is_set():
                    self._dirty.clear()
                    await self._send_changes()
                else:
                    await self._heartbeat()
                reg.answered(time.time())
            except (errors.NotFound, errors.PermissionDenied):
                reg.lost()
            except errors.P2PShareError as exc:
                reg.unreachable(str(exc))
                await asyncio.sleep(self._backoff.next())

    async def refresh(self, *, within: float = STATUS_FRESH, timeout: float = STATUS_PROBE) -> None:
        """Make ``registration.state`` true now: a status is read by a person, and the
        last heartbeat may be a lease-third old (20 s said "registered" of a dead
        tracker). Asks the tracker only when the last answer is older than ``within``."""
        reg = self.registration
        if not reg.stale(time.time(), within):
            return
        try:
            async with asyncio.timeout(timeout):
                await self._heartbeat()
            reg.answered(time.time())
        except TimeoutError:
            reg.silent(f"no answer in {timeout:g} s")
        except (errors.NotFound, errors.PermissionDenied):
            reg.lost()
            self._dirty.set()  # the keep-alive loop joins again now
        except errors.P2PShareError as exc:
            reg.silent(str(exc))

    async def _heartbeat(self) -> None:
        reg = self.registration
        beat = await self._client.heartbeat(reg.peer_id, reg.token)
        reg.note_reachability(beat.reachable, beat.reachability)

    async def _send_changes(self) -> None:
        """Patch the tracker's index of this peer with what changed since it was sent."""
        now = {f.content_id: f for f in self._files()}
        add, remove = index_diff(self._sent, now)
        reg = self.registration
        if not add and not remove:
            await self._heartbeat()
            return
        self._sent = now  # a failure below re-registers with the whole index
        await self._client.patch_files(reg.peer_id, reg.token, add=add, remove=remove)
