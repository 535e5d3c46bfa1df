"""The supervisor of a tracker's worker processes, as a program of its own.

Once the tracker (``tracker.server``) has forked its workers, it replaces itself with
this program (``os.execv``: the same pid, so the workers stay its children), which
only waits for them: the CLI, FastAPI, pydantic and the app that the tracker had
imported would otherwise stay in the supervisor's memory for the whole run (a peak of
~58 MB against ~10 MB here). Hence it imports nothing beyond a few stdlib modules
(not even prometheus_client: see ``_mark_process_dead``), and it runs as a script
with ``-I -S`` (no site-packages, no environment variables, no current directory on
the path): it needs the stdlib alone, whatever the environment.

Usage, by the tracker alone::

    python -I -S .../p2pshare/tracker/supervisor.py \
        READY_FD METRICS LOG_LEVEL LOG_FORMAT READY_LINE PID...

``READY_FD``: the read end of the pipe where each worker writes one byte once it
serves; ``METRICS``: the folder of the workers' metrics, removed at the end;
``READY_LINE``: printed once every worker serves; ``PID``: the workers.

The tracker blocks SIGTERM and SIGINT before it forks and execs (the workers unblock
them); this program unblocks them once its handlers are in place: a signal that
arrives in between waits for them, so it stops the workers as one that arrives later.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["STOP_SIGNALS", "main", "supervise"]

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

# prometheus_client's live gauge modes (``Gauge._MULTIPROC_MODES`` starting with
# "live"): a dead process's files of these no longer hold
_LIVE_GAUGE_MODES = ("liveall", "livemin", "livemax", "livesum", "livemostrecent")


def _mark_process_dead(pid: int, metrics: str) -> None:
    """What ``prometheus_client.multiprocess.mark_process_dead`` does, without its
    import (~13 MB more memory, its HTTP server and all): remove the live gauge files
    of ``pid``."""
    for mode in _LIVE_GAUGE_MODES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(metrics, f"gauge_{mode}_{pid}.db"))


def _remove_folder(path: str) -> None:
    """Remove the metrics folder: it holds only the workers' files (shutil's rmtree
    would add its imports for that)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                os.remove(entry.path)
        os.rmdir(path)


def _log_error(log_level: str, log_format: str, message: str, *args: object) -> None:
    """Log an error as the tracker would. logging is imported only here, when a
    worker failed: it is a sixth of this program's memory."""
    import logging

    logging.basicConfig(level=log_level.upper(), format=log_format)
    # named as when imported: run as a script it is ``__main__``
    logging.getLogger("p2pshare.tracker.supervisor").error(message, *args)


def supervise(
    ready_fd: int, children: list[int], metrics: str, ready_line: str, logs: tuple[str, str]
) -> int:
    """Wait for the workers ``children``; return the tracker's exit status.

    Print ``ready_line`` once each has written its byte to ``ready_fd``; pass SIGTERM
    and SIGINT on to them; stop them all if one does not start or exits with an error
    (status 1), logging it with ``logs`` (the level and format).
    """
    workers = len(children)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    with os.fdopen(ready_fd, "rb") as ready:
        # each worker writes one byte once it serves; EOF early means one failed
        got = 0
        while got < workers:
            chunk = ready.read1(workers - got)
            if not chunk:
                break
            got += len(chunk)
    if got == workers and not stopping:
        print(ready_line, flush=True)
    elif not stopping:
        _log_error(*logs, "a tracker worker did not start: stopping the others")
        stop(signal.SIGTERM, None)
    status = 0
    alive = set(children)
    while alive:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        alive.discard(pid)
        # as prometheus_client documents: the live gauges of a dead worker no longer hold
        _mark_process_dead(pid, metrics)
        if code != 0 and not stopping:
            _log_error(
                *logs, "tracker worker %d exited (status %d): stopping the others", pid, code
            )
            status = 1
            stop(signal.SIGTERM, None)
    return status if got == workers else 1


def main(argv: list[str]) -> int:
    """Run the program with ``argv`` (as in the module's docstring); return the exit
    status. The metrics folder goes in any case."""
    ready_fd, metrics, log_level, log_format, ready_line, *pids = argv
    try:
        children = [int(p) for p in pids]
        return supervise(int(ready_fd), children, metrics, ready_line, (log_level, log_format))
    finally:
        _remove_folder(metrics)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
