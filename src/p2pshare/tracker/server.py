"""Run the tracker: the REST API on a socket bound here (port 0 allowed), purging of
expired peers in the background, a clean stop on SIGTERM or SIGINT.

Once it accepts connections it prints one line to stdout::

    p2pshare tracker listening on http://HOST:PORT

(``https://`` when ``tls`` is on: then every worker serves HTTPS, see ``p2pshare.tls``.)

With ``workers`` > 1 (``P2PSHARE_TRACKER_WORKERS``; 0: one per CPU) the process forks
that many worker processes, each with its own socket on the same port
(``SO_REUSEPORT``: the kernel spreads connections evenly) and its own connection to
the one SQLite file; the registry's state is all in that file, so any worker answers
any request. The first process then becomes their supervisor, a small program of its
own (``tracker.supervisor``, exec'd: the same pid, a sixth of a worker's memory): it
prints the line once every worker serves, passes SIGTERM/SIGINT on, and stops them
all if one dies. Workers die with it (``PR_SET_PDEATHSIG``), even when it is killed
with SIGKILL. It also makes a temporary
directory for the run, removed when it stops, where each worker keeps its request
metrics: ``/metrics`` sums them, whichever worker answers (see ``tracker.metrics``).

With a network key, each worker checks proofs of the key with its own replay
memory (see ``p2pshare.tracker.auth``).

The workers run asyncio's own event loop, not uvloop: with the tracker's HTTP
server (``tracker.http_server``) both answer as many requests a second, but under a
steady load uvloop accepted new connections slowly and served some connections far
less often than others: at 256 connections its p99 latency was 480-710 ms against
37-45 ms for asyncio's loop, and the first request of a new connection waited 1.4 s
(median) when 256 connected at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import uvicorn
from fastapi import FastAPI

from p2pshare.config import TrackerSettings
from p2pshare.serving import LOG_FORMAT, bind, bound_url, quiet_logs
from p2pshare.tracker import http_server, supervisor
from p2pshare.tracker.app import HotRoutes, create_app, with_hot_routes
from p2pshare.tracker.dial_back import GrpcHello
from p2pshare.tracker.limits import FileRate, RequestLimits
from p2pshare.tracker.metrics import TrackerMetrics, share_across_workers
from p2pshare.tracker.models import MAX_FILES_PER_REQUEST
from p2pshare.tracker.registry import (
    HEARTBEAT_FLUSH_SECONDS,
    ClientLimits,
    Registry,
    SqliteRegistry,
    tidy,
)

if TYPE_CHECKING:
    from p2pshare import tls

__all__ = ["READY_LINE", "bind", "run", "serve", "workers_of"]

log = logging.getLogger(__name__)

READY_LINE = "p2pshare tracker listening on {url}"


def run(settings: TrackerSettings) -> None:
    """Serve until SIGTERM or SIGINT; raise a ``ConfigError`` for a bad setting."""
    quiet_logs(settings.log_level)
    security = None
    if settings.tls != "off":
        # imported only here: its X.509 (and gRPC) modules would add ~30 MB to every
        # worker of a plain tracker. Before any fork: bad certificate files stop the
        # process with one clear error.
        from p2pshare import tls

        security = tls.load(settings, section="tracker", names=(settings.host,))
    workers = workers_of(settings)
    if workers <= 1:
        asyncio.run(serve(settings, security=security))
    else:
        _supervise(settings, workers, security)


def workers_of(settings: TrackerSettings) -> int:
    """How many worker processes serve the port (``workers`` 0: one per CPU)."""
    return settings.workers or os.cpu_count() or 1


class _Server(uvicorn.Server):
    """uvicorn that announces itself once serving and stops on a signal with exit 0."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready()


async def purge_forever(registry: Registry, interval: float) -> None:
    """Delete expired peers every ``interval`` seconds, in small batches."""
    while True:
        await asyncio.sleep(interval)
        try:
            while registry.purge(time.time()) > 0:
                await asyncio.sleep(0)
        except Exception:
            log.exception("purging expired peers failed")


async def _serve_own(
    app: HotRoutes,
    sock: socket.socket,
    ready: Callable[[], None],
    ssl_context: ssl.SSLContext | None,
) -> None:
    """Serve with ``http_server.HttpServer`` until SIGINT or SIGTERM."""
    server = http_server.HttpServer(app, ssl_context=ssl_context)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve(sock, ready)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


TIDY_SECONDS = 2.0


async def tidy_forever(db: Path, interval: float) -> None:
    """Tidy the registry every ``interval`` seconds (``registry.tidy``: a step of the
    name index's merge, a WAL checkpoint), on a thread: the write lock and the fsync it
    may take never stall the event loop."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(tidy, db)
        except Exception:
            log.exception("tidying the registry failed")


async def flush_forever(registry: Registry, metrics: TrackerMetrics, interval: float) -> None:
    """Write renewed leases to the file every ``interval`` seconds, and count searches."""
    while True:
        await asyncio.sleep(interval)
        try:
            registry.flush(time.time())
        except Exception:
            log.exception("writing renewed leases failed")
        metrics.count_searches(*registry.search_counts())


async def serve(
    settings: TrackerSettings,
    *,
    security: tls.Tls | None = None,
    sock: socket.socket | None = None,
    ready: Callable[[], None] | None = None,
    purge: bool = True,
    shared_metrics: Path | None = None,
) -> None:
    """Serve the tracker described by ``settings`` until a signal stops it.

    ``security``: serve HTTPS with it (else plain HTTP); ``sock``: a bound socket to
    serve on (else one is bound here); ``ready``: called once serving (else the ready
    line is printed); ``purge``: whether this process deletes expired peers (one
    worker of several does); ``shared_metrics``: the directory of the workers' metrics
    (a worker of several, after ``metrics.share_across_workers``).
    """
    ssl_context = security.server_context() if security else None
    if sock is None:
        sock = bind(settings.host, settings.port, key="tracker.port")
    if ready is None:
        url = bound_url(sock, "https" if security else "http")

        def ready() -> None:
            print(READY_LINE.format(url=url), flush=True)

    try:
        registry = _open_registry(settings)
    except Exception:
        sock.close()
        raise
    tasks: list[asyncio.Task[None]] = []
    api: FastAPI | None = None
    try:
        api = _create_api(settings, registry, security, shared_metrics)
        app = with_hot_routes(api)
        tasks += _upkeep_tasks(settings, registry, api.state.metrics, purge=purge)
        if http_server.AVAILABLE and os.environ.get("P2PSHARE_TRACKER_HTTP") != "uvicorn":
            await _serve_own(app, sock, ready, ssl_context)
        else:
            await _serve_uvicorn(app, settings, sock, ready, ssl_context)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if api is not None and api.state.address_check is not None:
            await api.state.address_check.close()
        registry.close()
        sock.close()
        sys.stdout.flush()


def _open_registry(settings: TrackerSettings) -> SqliteRegistry:
    """The registry in ``settings.db``, with the per-client limits and the search cache
    of ``settings``; checkpoints are left to ``tidy_forever``."""
    return SqliteRegistry(
        settings.db,
        lease_seconds=settings.lease_seconds,
        auto_checkpoint=False,
        search_cache_bytes=settings.search_cache_mb << 20,
        client_limits=ClientLimits(
            max_peers_per_client=settings.max_peers_per_client,
            max_files_per_client=settings.max_files_per_client,
            max_files_per_peer=settings.max_files_per_peer,
        ),
    )


def _create_api(
    settings: TrackerSettings,
    registry: Registry,
    security: tls.Tls | None,
    shared_metrics: Path | None,
) -> FastAPI:
    """The REST API over ``registry``, with the request and file rates of ``settings``
    and, if it verifies addresses, a dial-back to each registering peer."""
    limits = RequestLimits(rate=settings.rate_limit, burst=settings.rate_burst)
    file_rate = None
    if settings.files_per_second > 0:
        burst = settings.max_files_per_peer or MAX_FILES_PER_REQUEST
        file_rate = FileRate(rate=settings.files_per_second, burst=burst)
    dial = None
    if settings.verify_addresses:
        dial = GrpcHello(tls=security, network_key=settings.network_key)
    return create_app(
        registry,
        neighbour_sample=settings.neighbour_sample,
        limits=limits,
        network_key=settings.network_key,
        shared_metrics=shared_metrics,
        dial=dial,
        file_rate=file_rate,
    )


def _upkeep_tasks(
    settings: TrackerSettings, registry: Registry, metrics: TrackerMetrics, *, purge: bool
) -> list[asyncio.Task[None]]:
    """The background work of a worker: renewed leases written and searches counted;
    with ``purge`` (one process of several), expired peers purged and the file tidied."""
    tasks = []
    if purge:
        interval = min(settings.lease_seconds / 2, 30.0)
        tasks.append(asyncio.create_task(purge_forever(registry, interval), name="purge"))
        tasks.append(asyncio.create_task(tidy_forever(settings.db, TIDY_SECONDS), name="tidy"))
    tasks.append(
        asyncio.create_task(
            flush_forever(registry, metrics, HEARTBEAT_FLUSH_SECONDS), name="flush leases"
        )
    )
    return tasks


async def _serve_uvicorn(
    app: HotRoutes,
    settings: TrackerSettings,
    sock: socket.socket,
    ready: Callable[[], None],
    ssl_context: ssl.SSLContext | None,
) -> None:
    """Serve with uvicorn (no httptools, or ``P2PSHARE_TRACKER_HTTP=uvicorn``) until
    SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        # the client address is the socket's, as in the own server: X-Forwarded-For
        # from anyone would let a client pick its rate-limit bucket
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    # uvicorn makes its SSL context only from files; ours is made in memory
    config.load()
    config.ssl = ssl_context
    server = _Server(config, ready)
    await server.serve(sockets=[sock])


# -- several worker processes ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl
        os._exit(1)


def _worker(
    settings: TrackerSettings,
    security: tls.Tls | None,
    sock: socket.socket,
    ready_fd: int,
    purge: bool,
    metrics: Path,
) -> int:
    def ready() -> None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)

    try:
        share_across_workers(metrics)
        asyncio.run(
            serve(
                settings,
                security=security,
                sock=sock,
                ready=ready,
                purge=purge,
                shared_metrics=metrics,
            )
        )
    except BaseException:
        log.exception("tracker worker %d failed", os.getpid())
        return 1
    return 0


METRICS_PREFIX = "p2pshare-tracker-metrics-"


def _remove_dead_runs_metrics() -> None:
    """Remove the metrics folders of trackers whose supervisor died without removing
    its own (SIGKILL): the folder's name holds that supervisor's pid."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{METRICS_PREFIX}*-*"):
        pid = folder.name.removeprefix(METRICS_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or folder.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _supervise(settings: TrackerSettings, workers: int, security: tls.Tls | None) -> NoReturn:
    """Fork ``workers`` processes that serve one port, then become their supervisor
    (``tracker.supervisor``, which exits with the tracker's status)."""
    # the workers' metrics files, of this run alone: an earlier run's counts must not
    # add up with this one's
    _remove_dead_runs_metrics()
    metrics = Path(tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-"))
    try:
        _fork_workers(settings, workers, security, metrics)
    except BaseException:  # the supervisor program removes it once it runs
        shutil.rmtree(metrics, ignore_errors=True)
        raise


def _fork_workers(
    settings: TrackerSettings, workers: int, security: tls.Tls | None, metrics: Path
) -> NoReturn:
    # a plain bind first: it fails if anything, even another tracker's workers, holds
    # the port, where a SO_REUSEPORT bind could silently share it
    probe = bind(settings.host, settings.port, key="tracker.port")
    host, port = probe.getsockname()[:2]
    probe.close()
    socks: list[socket.socket] = []
    try:
        socks += [bind(host, port, key="tracker.port", reuse_port=True) for _ in range(workers)]
        # create or upgrade the schema once, before the workers race to do it
        SqliteRegistry(settings.db, lease_seconds=settings.lease_seconds).close()
    except BaseException:
        for s in socks:
            s.close()
        raise
    url = bound_url(socks[0], "https" if security else "http")
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    # held from here until the supervisor program has its handlers (it unblocks them):
    # a SIGTERM meanwhile still stops the workers cleanly, not by PR_SET_PDEATHSIG
    signal.pthread_sigmask(signal.SIG_BLOCK, supervisor.STOP_SIGNALS)
    children: list[int] = []
    for i, sock in enumerate(socks):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, supervisor.STOP_SIGNALS)
                os.close(read_fd)
                for other in socks:
                    if other is not sock:
                        other.close()
                _die_with_parent(parent)
                code = _worker(settings, security, sock, write_fd, purge=i == 0, metrics=metrics)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    os.close(write_fd)
    for sock in socks:
        sock.close()
    os.set_inheritable(read_fd, True)
    argv = [sys.executable, "-I", "-S", supervisor.__file__, str(read_fd), str(metrics)]
    argv += [settings.log_level, LOG_FORMAT]
    argv += [READY_LINE.format(url=url), *map(str, children)]
    # the same pid in a small program (see ``tracker.supervisor``): the workers stay its
    # children and keep their PR_SET_PDEATHSIG. Should exec fail, the error stops this
    # process and the workers with it.
    os.execv(sys.executable, argv)
