"""Running a registry write that comes in slices (``Registry.*_steps``) on the event
loop: one slice, then every other ready callback and request, then the next."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TypeVar

__all__ = ["run_sliced"]

T = TypeVar("T")


async def run_sliced(steps: Generator[None, None, T]) -> T:
    """Run a registry write's steps, letting the event loop serve others after each
    slice (a 60,000-file write no longer stalls ``/healthz``); its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)
