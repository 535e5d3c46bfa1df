"""Wake-ups for tasks that wait for "something changed", without timeouts that can
swallow a cancellation.

``asyncio.Event`` is level-triggered: a waiter that finds it set returns at once,
and from Python 3.12 on ``asyncio.wait_for`` of a set event returns without ever
yielding to the loop. Several tasks looping on one event that a single other
task clears then spin forever and starve the loop (a peer froze on every
download under 3.12). A ``Pulse`` wakes only the tasks already waiting when it
fires; a wait that starts later always suspends until the next fire.

Both waits here await a plain future that a timer or a fire completes: nothing is
cancelled to end a wait, so a cancellation of the waiting task is never mistaken
for a timeout (``asyncio.timeout`` and ``wait_for`` on Python 3.11 can lose one
that arrives as the timeout expires, and a download task then never stopped).
"""

from __future__ import annotations

import asyncio


async def _wait(waiters: set[asyncio.Future[bool]], timeout: float | None) -> bool:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    waiters.add(future)
    timer = None
    if timeout is not None:
        timer = loop.call_later(max(timeout, 0.0), _settle, future, False)
    try:
        return await future
    finally:
        waiters.discard(future)
        if timer is not None:
            timer.cancel()


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class Pulse:
    """Wakes the tasks waiting at the moment ``fire`` is called, and no later ones."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[bool]] = set()

    def fire(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            _settle(future, True)

    async def wait(self, timeout: float | None = None) -> bool:
        """Suspend until the next ``fire`` (True) or ``timeout`` seconds (False)."""
        return await _wait(self._waiters, timeout)


class Flag:
    """A level-triggered wake-up for the one task that clears it (a supervisor): a
    ``set`` between two waits is not lost. The waiter must ``clear`` before it acts,
    so that only another task can set it again, and a loop on it cannot spin."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[bool]] = set()

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            _settle(future, True)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout: float | None = None) -> bool:
        """Return at once if set (True), else suspend until ``set`` (True) or ``timeout``
        seconds (False)."""
        if self._set:
            return True
        return await _wait(self._waiters, timeout)
