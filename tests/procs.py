"""Start and stop real p2pshare processes in tests.

``spawn`` starts a command and returns once a line of its stdout matches ``ready``
(the process keeps running; the rest of its output is drained in the background
and kept in ``output(proc)`` for failure messages). ``start_tracker`` runs a
tracker on port 0 with its registry in ``tmp_path``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

TRACKER_READY = re.compile(r"p2pshare tracker listening on (?P<url>http://\S+)")

_outputs: dict[int, list[str]] = {}
_drains: dict[int, threading.Thread] = {}


def output(proc: subprocess.Popen[str]) -> str:
    """Everything the process has written to stdout/stderr so far (merged)."""
    return "".join(_outputs.get(proc.pid, []))


def spawn(
    argv: list[str],
    ready: re.Pattern[str],
    *,
    timeout: float = 20,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start ``argv`` and wait until a line of its output matches ``ready``.

    Fails the test with the process's output if it exits first or ``timeout`` passes.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=full_env,
        cwd=cwd,
    )
    lines: list[str] = []
    _outputs[proc.pid] = lines
    found: queue.Queue[re.Match[str] | None] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        matched = False
        with proc.stdout:
            for line in proc.stdout:
                lines.append(line)
                if not matched and (m := ready.search(line)):
                    matched = True
                    found.put(m)
        if not matched:
            found.put(None)

    thread = threading.Thread(target=drain, name=f"drain-{proc.pid}", daemon=True)
    _drains[proc.pid] = thread
    thread.start()
    try:
        match = found.get(timeout=timeout)
    except queue.Empty:
        stop(proc)
        raise AssertionError(
            f"{argv!r} printed nothing matching {ready.pattern!r} within {timeout}s:\n"
            + output(proc)
        ) from None
    if match is None:
        code = proc.wait(timeout=10)
        raise AssertionError(f"{argv!r} exited with {code} before it was ready:\n" + output(proc))
    return proc, match


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, *, timeout: float = 10) -> int:
    """Send ``sig``, wait up to ``timeout`` seconds, then kill; return the exit code.

    Once it returns, ``output(proc)`` holds everything the process wrote.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    code = proc.wait(timeout=timeout)
    drain = _drains.pop(proc.pid, None)
    if drain is not None:
        drain.join(timeout=timeout)
    return code


def wait_until(
    predicate: Callable[[], T], timeout: float = 10, what: str = "a condition", every: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def p2pshare(*args: str) -> list[str]:
    """The argv that runs ``p2pshare ARGS`` with this interpreter."""
    return [sys.executable, "-m", "p2pshare", *args]


@dataclass
class Tracker:
    """A running tracker process."""

    proc: subprocess.Popen[str]
    url: str
    db: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop(self.proc, sig)


def start_tracker(
    tmp_path: Path,
    *,
    db: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
    **flags: object,
) -> Tracker:
    """A tracker on 127.0.0.1, port 0, registry in ``tmp_path/tracker.db`` (or ``db``).

    ``flags`` become command-line options (``host="::1"`` -> ``--host ::1``); settings
    without a flag go through ``env``, e.g. ``{"P2PSHARE_TRACKER_LEASE_SECONDS": "5"}``.
    """
    db = db or tmp_path / "tracker.db"
    argv = p2pshare("tracker", "--port", "0", "--db", str(db))
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    proc, match = spawn(argv, TRACKER_READY, timeout=timeout, env=env, cwd=tmp_path)
    return Tracker(proc=proc, url=match["url"], db=db)
