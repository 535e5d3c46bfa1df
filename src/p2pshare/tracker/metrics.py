"""The tracker's Prometheus metrics (``/metrics``), whole for the tracker even when
several worker processes serve it.

Requests are counted by route, method and status, their latency by route and method;
live peers and their files are gauges read from the registry when ``/metrics`` is
scraped. Searches are counted by whether a kept answer served them (``SearchCache``):
each process adds its registry's counts every half second, and before it answers
``/metrics``.

One process keeps its counts in memory. With several workers (``tracker.server``) the
counts of each worker go to its own file in a directory the supervisor makes for the
run (prometheus_client's multiprocess mode), and whichever worker answers ``/metrics``
sums every worker's files: counters and histograms are the tracker's, not the
answering worker's. The gauges need no summing: every worker reads the one SQLite
registry, so the answering worker sets them just before it reads the files (the most
recently set value wins).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from p2pshare.tracker.registry import RegistryStats

__all__ = ["TrackerMetrics", "share_across_workers"]

_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_across_workers(directory: Path) -> None:
    """Make the metrics this process (a worker) creates from now on write to its own
    file in ``directory``, where ``TrackerMetrics(shared=directory)`` of any worker sums them.

    Call it once in each worker, after the fork and before the app is made.
    prometheus_client picks memory or files once, when it is imported (which the
    supervisor did before forking): this sets its choice for this process.
    """
    os.environ[_DIR_VARIABLE] = str(directory)  # where prometheus_client puts the files
    prometheus_values.ValueClass = _worker_value_class(os.getpid())


def _worker_value_class(pid: int) -> Any:
    # the library's file-backed value: ``pid`` names this worker's files
    base: Any = prometheus_values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]

    class WorkerValue(base):  # type: ignore[misc]
        """A value in this worker's file, updated without the library's lock and pid
        check: they guard against threads and forks, and a worker updates its metrics
        from its event loop's thread only, after its fork. They would double the cost
        of counting a request (three updates: counter, histogram sum and bucket). It
        uses the library's private attributes: the test of a tracker with 2 workers
        fails if they change."""

        def inc(self, amount: float) -> None:
            self._value += amount
            self._file.write_value(self._key, self._value, 0.0)

    return WorkerValue


class TrackerMetrics:
    """The tracker's metrics; ``shared``: the directory of the workers' files (after
    ``share_across_workers``), None for one process."""

    def __init__(self, *, shared: Path | None = None) -> None:
        own = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "p2pshare_tracker_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "p2pshare_tracker_request_seconds",
            "Time to answer an HTTP request, by route and method.",
            ["route", "method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=own,
        )
        self._searches = Counter(
            "p2pshare_tracker_searches",
            "Searches answered, by whether an answer kept from an earlier search served"
            " them (kept) or the index was searched (run).",
            ["answer"],
            registry=own,
        )
        self._searches_counted = (0, 0)
        # livemostrecent: across workers, the value the scraping worker just set; the
        # files of a dead worker's live gauges are removed (``mark_process_dead``)
        self._peers = Gauge(
            "p2pshare_tracker_live_peers",
            "Peers whose lease runs.",
            registry=own,
            multiprocess_mode="livemostrecent",
        )
        self._files = Gauge(
            "p2pshare_tracker_files",
            "Files shared by live peers (per peer).",
            registry=own,
            multiprocess_mode="livemostrecent",
        )
        if shared is None:
            self._exposed = own
        else:
            # the workers' files alone: ``own`` too would show this worker's counts twice.
            # Not auto_describe: registering would then read every worker's files, and
            # a worker starting beside this one may have just created its own, still
            # empty (a struct.error that stopped this worker, so the whole tracker)
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=str(shared))  # type: ignore[no-untyped-call]

    def count_searches(self, kept: int, run: int) -> None:
        """Add what the registry's running counts of searches grew by since the last call."""
        last_kept, last_run = self._searches_counted
        if kept > last_kept:
            self._searches.labels("kept").inc(kept - last_kept)
        if run > last_run:
            self._searches.labels("run").inc(run - last_run)
        self._searches_counted = (kept, run)

    def exposition(self, stats: RegistryStats) -> bytes:
        """The Prometheus text of every metric, the gauges set from ``stats``."""
        self._peers.set(stats.peers)
        self._files.set(stats.files)
        return generate_latest(self._exposed)
