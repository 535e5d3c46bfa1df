"""The state of one download as users see it: progress, rate, providers, why it waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RATE_WINDOW = 2.0  # seconds of arrivals that the rate shown is measured over


@dataclass(frozen=True)
class Ban:
    """A provider banned from a download, and why ("sent a bad piece: ...")."""

    address: str
    reason: str


@dataclass
class Download:
    """One download, as the control API shows it."""

    content_id: str
    out_dir: Path
    # starting, downloading, paused (partial file and record kept), complete, failed,
    # cancelled (partial file and record deleted)
    state: str = "starting"
    name: str = ""
    size: int = 0
    pieces: int = 0
    pieces_done: int = 0
    bytes_done: int = 0
    path: str | None = None
    error: str | None = None
    why_stalled: str | None = None
    providers: list[str] = field(default_factory=list)
    banned: list[Ban] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    version: int = 0
    received: int = 0  # bytes received by this run of the peer (not those resumed from disk)
    listener: Callable[[], None] | None = field(default=None, repr=False)  # told of each change
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _window: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    @property
    def done(self) -> bool:
        return self.state in ("complete", "failed", "cancelled")

    @property
    def rate(self) -> float:
        """Bytes per second over the last two seconds, up to now: a stall brings it to
        zero within two seconds (it kept the last speed while nothing arrived)."""
        if self.done or self.state == "paused" or not self._window:
            return 0.0
        now = time.monotonic()
        t0, b0 = self._window[0]
        for t, b in self._window:  # the newest point at least RATE_WINDOW old
            if now - t < RATE_WINDOW:
                break
            t0, b0 = t, b
        return (self.bytes_done - b0) / (now - t0) if now > t0 else 0.0

    def complete(self, path: Path) -> None:
        """The verified file is in place: say so to watchers at once."""
        self.path = str(path)
        self.state = "complete"
        self.why_stalled = None
        self.finished = time.monotonic()
        self.touch()

    def restart(self) -> None:
        """A paused download runs again: forget the end and the rate of the last run."""
        self.state = "starting"
        self.error = self.why_stalled = None
        self.finished = None
        self._window.clear()
        self.touch()

    def touch(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        if self.listener is not None:
            self.listener()

    def add_bytes(self, n: int) -> None:
        now = time.monotonic()
        self.bytes_done += n
        self.received += n
        self.pieces_done += 1
        self._window.append((now, self.bytes_done))
        # keep one point older than the window: the rate is measured from it
        while len(self._window) > 1 and now - self._window[1][0] >= RATE_WINDOW:
            self._window.popleft()
        self.touch()

    async def wait_change(self, after: int, timeout: float, min_interval: float = 0.25) -> None:
        """Return when ``version`` exceeds ``after``, or after ``timeout`` seconds.

        Progress alone wakes a watcher at most every ``min_interval`` seconds (a piece
        arrives every millisecond; answering each would tax the download itself);
        the end of the download wakes it at once.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.version <= after and not self.done:
                    await self._changed.wait()
                while not self.done and (left := start + min_interval - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)
