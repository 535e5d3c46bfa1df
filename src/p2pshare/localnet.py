"""A local p2pshare network of real processes: a tracker and peers on 127.0.0.1.

Used by ``p2pshare demo``, the integration tests and the benchmarks, so all three
start processes the same way: free ports chosen by the OS (port 0), each process
telling its bound address on one line of stdout, its output kept in a log file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from p2pshare.config import NETWORK_KEY_ENV
from p2pshare.errors import P2PShareError

TRACKER_READY = re.compile(r"p2pshare tracker listening on (?P<url>https?://\S+)")
PEER_READY = re.compile(
    r"p2pshare peer listening on grpc (?P<address>\S+), control API (?P<api>http://\S+)"
)


class StartFailed(P2PShareError):
    """A process of the local network exited or hung before it was ready."""


@dataclass
class Proc:
    """A started process; its output goes to ``log``."""

    name: str
    popen: subprocess.Popen[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` (SIGKILL for a crash) and wait; kill if it does not exit."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout)


@dataclass
class TrackerProc(Proc):
    url: str = ""
    db: Path = Path()


@dataclass
class PeerProc(Proc):
    address: str = ""
    api: str = ""
    share: Path = Path()
    data: Path = Path()


def spawn(
    argv: list[str],
    ready: re.Pattern[str],
    *,
    log: Path,
    name: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Proc, re.Match[str]]:
    """Start ``argv``; return once a line of its stdout matches ``ready``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = log.open("a", encoding="utf-8")
    popen = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=sink,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
    )
    assert popen.stdout is not None
    found: list[re.Match[str]] = []
    seen = threading.Event()

    def drain(stream: IO[str]) -> None:
        for line in stream:
            sink.write(line)
            sink.flush()
            if not found:
                match = ready.search(line)
                if match:
                    found.append(match)
                    seen.set()
        seen.set()
        stream.close()
        sink.close()

    threading.Thread(target=drain, args=(popen.stdout,), daemon=True).start()
    proc = Proc(name, popen, log)
    if not seen.wait(timeout) or not found:
        proc.stop(signal.SIGKILL)
        tail = proc.output()[-2000:]
        raise StartFailed(f"{name} did not start (see {log}):\n{tail}")
    return proc, found[0]


def p2pshare_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pshare", *args]


def network_env(
    *,
    network_key: str | None = None,
    tls: str = "off",
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
) -> dict[str, str]:
    """The environment that makes a tracker and peers one private network
    (``network_key``) encrypted as ``tls`` says ("auto", or "files" with ``cert``,
    ``key`` and ``ca``): give it to ``LocalNetwork(env=...)``."""
    env = {"P2PSHARE_NETWORK_KEY": network_key} if network_key else {}
    settings = {"TLS": tls, "TLS_CERT": cert, "TLS_KEY": key, "TLS_CA": ca}
    for prefix in ("P2PSHARE_TRACKER_", "P2PSHARE_PEER_"):
        env.update({prefix + name: str(v) for name, v in settings.items() if v is not None})
    return env


@dataclass
class LocalNetwork:
    """Processes of one local network, all under ``root``; stop them with ``stop_all``.

    ``env`` goes to every process (see ``network_env``). With ``network_key`` a
    private network: every process gets the key through ``$P2PSHARE_NETWORK_KEY``.
    An ``env`` given to one process overrides both, e.g. to start an outsider with
    another key, or none with ``""``.
    """

    root: Path
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    network_key: str | None = None

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        key = {} if self.network_key is None else {NETWORK_KEY_ENV: self.network_key}
        return {**key, **self.env, **(env or {})}

    def start_tracker(
        self,
        *extra: str,
        name: str = "tracker",
        db: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> TrackerProc:
        db = db or self.root / f"{name}.db"
        proc, match = spawn(
            p2pshare_argv("tracker", "--port", "0", "--db", str(db), *extra),
            TRACKER_READY,
            log=self.root / "logs" / f"{name}.log",
            name=name,
            env=self._env(env),
        )
        tracker = TrackerProc(proc.name, proc.popen, proc.log, url=match["url"], db=db)
        self.procs.append(tracker)
        return tracker

    def start_peer(
        self,
        name: str,
        *extra: str,
        tracker: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> PeerProc:
        share, data = self.root / name / "share", self.root / name / "data"
        share.mkdir(parents=True, exist_ok=True)
        argv = p2pshare_argv(
            "peer",
            "--share", str(share),
            "--data", str(data),
            "--port", "0",
            "--api-port", "0",
            "--tracker", tracker if tracker is not None else "",
            *extra,
        )  # fmt: skip
        proc, match = spawn(
            argv,
            PEER_READY,
            log=self.root / "logs" / f"{name}.log",
            name=name,
            env=self._env(env),
            cwd=cwd,
        )
        peer = PeerProc(
            proc.name,
            proc.popen,
            proc.log,
            address=match["address"],
            api=match["api"],
            share=share,
            data=data,
        )
        self.procs.append(peer)
        return peer

    def stop_all(self) -> None:
        """Stop every process: all are told at once, then each is waited for."""
        for proc in self.procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate()`` until it is true; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
