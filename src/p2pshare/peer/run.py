"""Run a peer process in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal

from p2pshare.config import PeerSettings
from p2pshare.peer.api.control import api_token_for, create_app
from p2pshare.peer.node import PeerNode
from p2pshare.peer.transfer import heap
from p2pshare.serving import HttpServer, bind, bound_url, quiet_logs


async def serve(settings: PeerSettings) -> None:
    quiet_logs(settings.log_level)
    # bind the control API first: a port in use fails before any work is done
    sock = bind(settings.api_host, settings.api_port, key="peer.api_port")
    node = PeerNode(settings)
    await node.start()
    try:
        bound = sock.getsockname()[0]
        token, note = api_token_for(settings, node.data_dir, bound)
    except BaseException:
        await node.stop()
        raise
    hosts = frozenset(h.lower() for h in settings.api_allowed_hosts) if token is None else None
    app = create_app(node, token=token, allowed_hosts=hosts)
    http = HttpServer(app, sock, log_level=settings.log_level)
    try:
        await http.start()
        if note:
            print(f"p2pshare peer: {note}", flush=True)
        # what start-up built (modules, servers, the share index) lives as long as the
        # process: out of the collector's way, a full collection no longer walks it and
        # stops the event loop for ~0.1 s (bench/OVERLAY.md), only what came after
        gc.freeze()
        print(
            f"p2pshare peer listening on grpc {node.address}, control API {bound_url(sock)}",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await http.stop()
        await node.stop()


def run(settings: PeerSettings) -> None:
    heap.few_arenas()
    asyncio.run(serve(settings))
