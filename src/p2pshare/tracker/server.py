"""Run the tracker: the REST API on a socket bound here (port 0 allowed), purging of
expired peers in the background, a clean stop on SIGTERM or SIGINT.

Once it accepts connections it prints one line to stdout::

    p2pshare tracker listening on http://HOST:PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Generator

import uvicorn

from p2pshare.config import TrackerSettings
from p2pshare.errors import ConfigError, UsageError
from p2pshare.tracker.app import create_app
from p2pshare.tracker.registry import Registry, SqliteRegistry

__all__ = ["READY_LINE", "bind", "run", "serve"]

log = logging.getLogger(__name__)

READY_LINE = "p2pshare tracker listening on {url}"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS |= {"error": logging.ERROR}


def run(settings: TrackerSettings) -> None:
    """Serve until SIGTERM or SIGINT; raise a ``UsageError`` for a bad setting."""
    level = settings.log_level.lower()
    if level not in _LEVELS:
        raise ConfigError(f"tracker.log_level: must be one of {', '.join(_LEVELS)}")
    logging.basicConfig(
        level=_LEVELS[level], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn that announces itself once serving and stops on a signal with exit 0."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

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
            print(READY_LINE.format(url=self.url), flush=True)


async def purge_forever(registry: Registry, interval: float) -> None:
    """Delete expired peers every ``interval`` seconds, in small batches."""
    while True:
        await asyncio.sleep(interval)
        try:
            while registry.purge(time.time()) > 0:
                await asyncio.sleep(0)
        except Exception:
            log.exception("purging expired peers failed")


async def serve(settings: TrackerSettings) -> None:
    """Serve the tracker described by ``settings`` until a signal stops it."""
    sock = bind(settings.host, settings.port)
    try:
        registry = SqliteRegistry(settings.db, lease_seconds=settings.lease_seconds)
    except Exception:
        sock.close()
        raise
    purger: asyncio.Task[None] | None = None
    try:
        app = create_app(registry, neighbour_sample=settings.neighbour_sample)
        config = uvicorn.Config(
            app,
            log_level=_LEVELS.get(settings.log_level.lower(), logging.WARNING),
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config, _url(sock))
        purger = asyncio.create_task(
            purge_forever(registry, min(settings.lease_seconds / 2, 30.0)), name="purge"
        )
        await server.serve(sockets=[sock])
    finally:
        if purger is not None:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
        registry.close()
        sock.close()
        sys.stdout.flush()
