"""A wake-up for tasks that wait for "something changed", with no state to clear.

``asyncio.Event`` is level-triggered: a waiter that finds it set returns at once,
and from Python 3.12 on ``asyncio.wait_for`` of a set event returns without ever
yielding to the loop. Several tasks looping on one event that a single other
task clears then spin forever and starve the loop (a peer froze on every
download under 3.12). A ``Pulse`` wakes only the tasks already waiting when it
fires; a wait that starts later always suspends until the next fire.
"""

from __future__ import annotations

import asyncio
import contextlib


class Pulse:
    """Wakes the tasks waiting at the moment ``fire`` is called, and no later ones."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None = None) -> bool:
        """Suspend until the next ``fire`` (True) or ``timeout`` seconds (False)."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
                return True
        return False
