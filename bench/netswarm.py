"""Swarm benchmark on a network lab: separate hosts with shaped uplinks (issue 13).

Every host is a network namespace on one bridge (``p2pshare.netlab``), one per
process as the system is deployed: a tracker host, one seeder, N downloaders. Each
host's **upload** is shaped with tc htb (default 40 Mbit/s); downloads are not. The
seeder holds a random file (default 64 MiB); all downloaders start at once; the clock
stops when the last one holds the whole file, verified. Three systems, alternating run
by run, each run on a fresh lab (new namespaces, new processes, empty folders):

* ``p2pshare``: ``p2pshare tracker`` on the tracker host, a seeding peer, a peer on each
  downloader (bound to 0.0.0.0, ``--advertise`` its host address, control API on the
  host address with a token); downloads started through each control API at once and
  followed by long-polling until "complete".
* ``aria2``: BitTorrent. opentracker on the tracker host (whitelisted info hash),
  a ``mktorrent`` torrent, ``aria2c`` seeding and one ``aria2c`` per downloader (DHT,
  LPD, PEX off), started before the clock like p2pshare's peers, the torrent added
  over its JSON-RPC at the clock; leechers keep seeding until the last is done; each
  one's finish time comes from its ``--on-bt-download-complete`` hook.
* ``nginx``: nginx on the seeder (sendfile), ``curl`` on each downloader.

Reported per run: each downloader's finish time, the last, its ratio to the minimum
distribution time T_min = max(F/u_s, F/d_min, N*F/(u_s + sum u_i)) (Kumar & Ross 2006;
downloads are unshaped, so F/d_min is 0), and what each host uploaded and received,
read from its veth counters, in copies of the file (frames with their headers, so
one copy of the payload reads about 1.03). ``--hard``: 12 downloaders with uplinks of
10, 40 and 100 Mbit/s in turn, 1% of the packets to every host lost, one downloader
joining late and one leaving mid-way (the clock stops with the last of the others).

    bench/run netswarm [--runs N] [--size-mib N] [--downloaders N] [--uplink-mbit X]
        [--seeder-mbit X] [--hard] [--delay-ms D] [--only p2pshare,aria2,nginx] [--markdown FILE]

Needs root (network namespaces). No added delay unless ``--delay-ms`` (this kernel
has no netem: each host's link then runs through a user-space forwarder, see
p2pshare/netlab.py, which costs some CPU). Everything runs on 10.77.K.0/24
addresses on a bridge of this machine; nothing leaves it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
from bench import (  # noqa: E402
    MIB,
    P2PSHARE,
    ROOT,
    WORK,
    BenchError,
    cpu_busy,
    drop_outputs,
    fresh_dir,
    http_json,
    info_hash,
    machine_info,
    make_source,
    same_bytes,
    table,
)
from p2pshare.netlab import Host, LabError, NetLab, unavailable  # noqa: E402

NWORK = WORK / "netswarm"
TRACKER_PORT = 8460
PEER_PORT = 8461
API_PORT = 8462
BT_TRACKER_PORT = 6969
BT_PORT = 6881
ARIA2_RPC_PORT = 6800
HTTP_PORT = 8080
TOOLS = ("p2pshare", "aria2", "nginx")


def log(msg: str) -> None:
    print(f"[netswarm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- the testbed


@dataclass
class Testbed:
    """What one run looks like: the file, the hosts' uplinks, who joins late or leaves."""

    size: int
    seeder_mbit: float
    uplinks_mbit: list[float]  # one per downloader
    loss_pct: float = 0.0
    delay_ms: float = 0.0  # one way between two hosts: each host's link holds half
    late: int | None = None  # index of the downloader that starts late
    late_s: float = 0.0
    leaver: int | None = None  # index of the downloader that leaves mid-way
    leave_s: float = 0.0

    @property
    def n(self) -> int:
        return len(self.uplinks_mbit)

    def finishers(self) -> list[int]:
        return [i for i in range(self.n) if i != self.leaver]

    def t_min(self) -> float:
        """Kumar & Ross's minimum distribution time for the downloaders that finish
        (downloads unshaped: no F/d_min term); every uplink, the leaver's too, counted."""
        bits = self.size * 8
        n = len(self.finishers())
        total = self.seeder_mbit + sum(self.uplinks_mbit)
        return max(bits / (self.seeder_mbit * 1e6), n * bits / (total * 1e6))


@dataclass
class Result:
    tool: str
    run: int
    seconds: float | None = None
    finish_s: dict[int, float] = field(default_factory=dict)
    uploaded: dict[str, int] = field(default_factory=dict)  # host -> bytes
    received: dict[str, int] = field(default_factory=dict)
    cpu_busy_before_pct: float = 0.0
    cpu_busy_during_pct: float = 0.0
    loadavg: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Run:
    """One system on one fresh lab; subclasses start the processes and time the downloads."""

    tool = ""

    def __init__(self, lab: NetLab, bed: Testbed, src: Path, res: Result, timeout: float):
        self.lab, self.bed, self.src, self.res, self.timeout = lab, bed, src, res, timeout
        self.d = fresh_dir(NWORK / "runs" / f"{res.run}-{self.tool}")
        half = bed.delay_ms / 2
        self.tracker = lab.add_host("tracker", uplink_mbit=bed.seeder_mbit, delay_ms=half)
        self.seeder = lab.add_host("seed", uplink_mbit=bed.seeder_mbit, delay_ms=half)
        self.downloaders = [
            lab.add_host(f"d{i}", uplink_mbit=u, delay_ms=half)
            for i, u in enumerate(bed.uplinks_mbit)
        ]
        if bed.loss_pct:
            for h in lab.hosts.values():
                lab.set_loss(h, bed.loss_pct)
        self.outs = [fresh_dir(self.d / f"out{i}") for i in range(bed.n)]
        self.finish: dict[int, float] = {}
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.t0 = self.t0_wall = 0.0

    def start(self, host: Host, name: str, argv: Sequence[object], **env: str) -> Any:
        logfile = self.d / f"{name}.log"
        with logfile.open("wb") as out:
            return self.lab.popen(
                host,
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )

    # subclasses
    def setup(self) -> None:
        raise NotImplementedError

    def begin(self, i: int) -> None:
        """Start downloader ``i``'s download; ``done(i)`` is called when it holds the file."""
        raise NotImplementedError

    def leave(self, i: int) -> None:
        raise NotImplementedError

    def output_of(self, i: int) -> Path:
        return self.outs[i] / self.src.name

    def done(self, i: int) -> None:
        """Downloader ``i`` holds the whole file now (the first call counts)."""
        with self.lock:
            self.finish.setdefault(i, time.perf_counter() - self.t0)

    def measure(self) -> None:
        """Start every downloader (the late one later), wait for all, record the figures."""
        bed = self.bed
        finish, lock = self.finish, self.lock
        before = self.lab.counters()
        received0 = {n: h.rx_bytes for n, h in self.lab.hosts.items()}
        stat0 = _cpu_snap()
        self.t0_wall, self.t0 = time.time(), time.perf_counter()
        for i in range(bed.n):
            if i != bed.late:
                self.begin(i)
        events: list[tuple[float, Callable[[], None]]] = []
        if bed.late is not None:
            late = bed.late
            events.append((bed.late_s, lambda: self.begin(late)))
        if bed.leaver is not None:
            leaver = bed.leaver
            events.append((bed.leave_s, lambda: self.leave(leaver)))
        events.sort(key=lambda e: e[0])
        want = set(bed.finishers())
        samples: list[dict[str, int]] = []
        next_sample = 0.0
        while True:
            now = time.perf_counter() - self.t0
            while events and events[0][0] <= now:
                events.pop(0)[1]()
            if now >= next_sample:
                samples.append(self.lab.counters())
                next_sample += 1.0
            self.poll()
            with lock:
                if want <= finish.keys():
                    break
            if self.failures:
                raise BenchError("; ".join(self.failures))
            if now > self.timeout:
                raise BenchError(f"{len(want & finish.keys())}/{len(want)} done after {now:.0f}s")
            time.sleep(0.02)
        after = self.lab.counters()
        received1 = {n: h.rx_bytes for n, h in self.lab.hosts.items()}
        self.res.cpu_busy_during_pct = _cpu_busy_since(stat0)
        self.res.finish_s = {i: finish[i] for i in sorted(finish)}
        self.res.seconds = max(finish[i] for i in want)
        self.res.uploaded = {k: after[k] - before[k] for k in after}
        self.res.received = {k: received1[k] - received0[k] for k in received1}
        self.res.extra["upload_mbit_per_s"] = _rates(samples)
        for i in want:
            if not same_bytes(self.src, self.output_of(i)):
                raise BenchError(f"{self.tool}: downloader {i}'s copy differs from the source")
        log(f"{self.tool}: all {len(want)} copies identical to the source (cmp)")

    def poll(self) -> None:
        """Called every 20 ms while the clock runs."""


def _cpu_snap() -> tuple[int, int]:
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def _cpu_busy_since(snap: tuple[int, int]) -> float:
    b1, t1 = _cpu_snap()
    return round(100 * (b1 - snap[0]) / max(1, t1 - snap[1]), 1)


def _rates(samples: list[dict[str, int]]) -> dict[str, list[float]]:
    """Per host, Mbit/s uploaded in each second of the run."""
    out: dict[str, list[float]] = {}
    for a, b in zip(samples, samples[1:], strict=False):
        for k in b:
            out.setdefault(k, []).append(round((b[k] - a[k]) * 8 / 1e6, 1))
    return out


# ---------------------------------------------------------------- nginx + curl


NGINX_CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    server {{
        listen {addr}:{port};
        root {root};
    }}
}}
"""


class NginxRun(Run):
    tool = "nginx"

    def setup(self) -> None:
        (self.d / "tmp").mkdir()
        conf = self.d / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                d=self.d, addr=self.seeder.address, port=HTTP_PORT, root=self.src.parent
            )
        )
        proc = self.start(self.seeder, "nginx", ["nginx", "-c", conf, "-p", self.d])
        url = f"http://{self.seeder.address}:{HTTP_PORT}/{self.src.name}"
        _wait(lambda: _http_ok(url, "HEAD"), 15, "nginx to answer", proc)
        self.url = url
        self.curls: dict[int, subprocess.Popen[bytes]] = {}

    def begin(self, i: int) -> None:
        self.curls[i] = self.start(
            self.downloaders[i], f"curl{i}", ["curl", "-sS", "-o", self.output_of(i), self.url]
        )

    def poll(self) -> None:
        for i, proc in self.curls.items():
            if i in self.finish or proc.poll() is None:
                continue
            if proc.returncode == 0:
                self.done(i)
            elif i != self.bed.leaver:
                self.failures.append(f"curl {i} exited {proc.returncode}")

    def leave(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.curls[i].pid, signal.SIGKILL)


# ---------------------------------------------------------------- BitTorrent


HOOK = """#!/bin/sh
# aria2c runs this when a torrent is complete (before it seeds): $3 is the file.
date +%s.%N > "$3.done.tmp" && mv "$3.done.tmp" "$3.done"
"""


def aria2_argv(host: Host, logfile: Path) -> list[str | Path]:
    return [
        "aria2c",
        f"--listen-port={BT_PORT}",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        f"--interface={host.address}",
        "--check-integrity=false",
        "--console-log-level=warn",
        "--quiet=true",
        "--auto-save-interval=0",
        "--seed-ratio=0",
        f"--log={logfile}",
        "--log-level=" + os.environ.get("BENCH_ARIA2_LOG", "notice"),
    ]


class Aria2Run(Run):
    tool = "aria2"
    piece_log2 = 18  # mktorrent's default: 256 KiB

    def setup(self) -> None:
        d = self.d
        (d / "hook.sh").write_text(HOOK)
        (d / "hook.sh").chmod(0o755)
        announce = f"http://{self.tracker.address}:{BT_TRACKER_PORT}/announce"
        torrent = d / f"{self.src.name}.torrent"
        r = subprocess.run(
            ["mktorrent", "-a", announce, "-l", str(self.piece_log2), "-t", "2"]
            + ["-o", str(torrent), str(self.src)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if r.returncode != 0:
            raise BenchError(f"mktorrent exited {r.returncode}: {r.stderr.strip()[-300:]}")
        self.torrent = torrent
        ih = info_hash(torrent.read_bytes())
        (d / "whitelist").write_text(ih.hex() + "\n")
        tracker = self.start(
            self.tracker,
            "opentracker",
            ["opentracker", "-i", self.tracker.address, "-p", str(BT_TRACKER_PORT)]
            + ["-P", str(BT_TRACKER_PORT), "-d", d, "-w", "whitelist"],
        )
        scrape = (
            f"http://{self.tracker.address}:{BT_TRACKER_PORT}/scrape?info_hash="
            + urllib.parse.quote_from_bytes(ih)
        )
        _wait(lambda: _http_ok(scrape), 10, "opentracker to answer", tracker)
        seeder = self.start(
            self.seeder,
            "aria2c-seed",
            [
                *aria2_argv(self.seeder, d / "seed-aria2.log"),
                f"--dir={self.src.parent}",
                "--bt-seed-unverified=true",
                "--file-allocation=none",
                torrent,
            ],
        )
        _wait(lambda: _scrape_complete(scrape, ih) >= 1, 30, "the seeder to announce", seeder)
        # Every leecher's aria2c runs before the clock starts, as every p2pshare peer
        # does; the download is added over its RPC when the clock says so. (Started at
        # the clock instead, aria2's seeder sent nothing for the first ~2.3 s.)
        self.secret = secrets.token_hex(8)
        self.leechers: dict[int, subprocess.Popen[bytes]] = {}
        for i, host in enumerate(self.downloaders):
            self.leechers[i] = self.start(
                host,
                f"aria2c-d{i}",
                [
                    *aria2_argv(host, self.d / f"d{i}-aria2.log"),
                    "--enable-rpc=true",
                    "--rpc-listen-all=true",
                    f"--rpc-listen-port={ARIA2_RPC_PORT}",
                    f"--rpc-secret={self.secret}",
                    f"--on-bt-download-complete={self.d / 'hook.sh'}",
                ],
            )
        for i, proc in self.leechers.items():
            _wait(lambda i=i: self.rpc(i, "aria2.getVersion"), 10, f"aria2c {i}'s RPC", proc)

    def rpc(self, i: int, method: str, *params: Any) -> Any:
        url = f"http://{self.downloaders[i].address}:{ARIA2_RPC_PORT}/jsonrpc"
        body = {"jsonrpc": "2.0", "id": "b", "method": method,
                "params": [f"token:{self.secret}", *params]}  # fmt: skip
        return http_json("POST", url, body, timeout=5)["result"]

    def begin(self, i: int) -> None:
        options = {
            "dir": str(self.outs[i]),
            "seed-time": "1000",  # minutes: stopped with the lab when all are done
            "file-allocation": "falloc",
            "bt-stop-timeout": str(int(self.timeout)),
        }
        torrent = base64.b64encode(self.torrent.read_bytes()).decode()
        self.rpc(i, "aria2.addTorrent", torrent, [], options)

    def poll(self) -> None:
        for i, proc in self.leechers.items():
            marker = self.outs[i] / (self.src.name + ".done")
            if i in self.finish:
                continue
            if marker.exists():
                self.done(i)
            elif proc.poll() is not None and i != self.bed.leaver:
                self.failures.append(f"aria2c {i} exited {proc.returncode} before done")

    def measure(self) -> None:
        super().measure()
        # Finish times from the hook's clock (the poll saw them up to 20 ms late).
        for i in self.res.finish_s:
            marker = self.outs[i] / (self.src.name + ".done")
            with contextlib.suppress(OSError, ValueError):
                self.res.finish_s[i] = float(marker.read_text()) - self.t0_wall
        self.res.seconds = max(self.res.finish_s[i] for i in self.bed.finishers())

    def leave(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.leechers[i].pid, signal.SIGKILL)


def _scrape_complete(url: str, ih: bytes) -> int:
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(url, timeout=2) as resp:
            decoded, _ = bench.bdecode(resp.read())
        return int(decoded.get(b"files", {}).get(ih, {}).get(b"complete", 0))
    return 0


# ---------------------------------------------------------------- p2pshare


class P2PRun(Run):
    tool = "p2pshare"

    def setup(self) -> None:
        d = self.d
        self.token = secrets.token_urlsafe(24)
        self.piece_env = {}
        if self.piece_kib:
            self.piece_env["P2PSHARE_PEER_PIECE_SIZE"] = str(self.piece_kib * 1024)
        tracker = self.start(
            self.tracker,
            "tracker",
            [P2PSHARE, "tracker", "--host", "0.0.0.0", "--port", str(TRACKER_PORT)]
            + ["--db", d / "tracker.db"],
        )
        self.turl = f"http://{self.tracker.address}:{TRACKER_PORT}"
        _wait(lambda: _http_ok(self.turl + "/healthz"), 30, "the tracker", tracker)
        hosts = [self.seeder, *self.downloaders]
        self.peers: dict[str, subprocess.Popen[bytes]] = {}
        for h in hosts:
            share = self.src.parent if h is self.seeder else fresh_dir(d / f"{h.name}-share")
            self.peers[h.name] = self.start(
                h,
                f"peer-{h.name}",
                [P2PSHARE, "peer", "--host", "0.0.0.0", "--port", str(PEER_PORT)]
                + ["--advertise", f"{h.address}:{PEER_PORT}", "--api-port", str(API_PORT)]
                + ["--tracker", self.turl, "--share", share, "--data", d / f"{h.name}-data"],
                P2PSHARE_PEER_API_HOST=h.address,
                P2PSHARE_PEER_API_TOKEN=self.token,
                **self.piece_env,
            )
        for h in hosts:
            url = self.api(h) + "/healthz"
            _wait(partial(_http_ok, url), 60, f"peer {h.name}", self.peers[h.name])
        size = self.src.stat().st_size
        self.cid = ""

        def shared() -> bool:
            files = self.call("GET", self.seeder, "/v1/files")["files"]
            hit = [f for f in files if f["name"] == self.src.name and f["size"] == size]
            self.cid = hit[0]["content_id"] if hit else ""
            return bool(self.cid)

        _wait(shared, 120, "the seeder to share the file", self.peers["seed"])
        providers = f"{self.turl}/v1/files/{{}}/providers"
        _wait(
            lambda: bool(http_json("GET", providers.format(self.cid))["providers"]),
            60,
            "the tracker to list the seeder",
            tracker,
        )
        self.followers: dict[int, threading.Thread] = {}
        self.views: dict[int, dict[str, Any]] = {}
        self.served0 = self.served()

    def api(self, h: Host) -> str:
        return f"http://{h.address}:{API_PORT}"

    def call(self, method: str, h: Host, path: str, body: Any = None, timeout: float = 30) -> Any:
        return http_json(method, self.api(h) + path, body, timeout, token=self.token)

    def begin(self, i: int) -> None:
        h = self.downloaders[i]

        def follow() -> None:
            try:
                body = {"content_id": self.cid, "out_dir": str(self.outs[i])}
                view = self.call("POST", h, "/v1/downloads", body)
                while view["state"] not in ("complete", "failed"):
                    q = urllib.parse.urlencode({"after": view["version"], "wait": 5})
                    view = self.call("GET", h, f"/v1/downloads/{self.cid}?{q}")
                if view["state"] == "complete":
                    self.done(i)
                elif i != self.bed.leaver:
                    self.failures.append(f"downloader {i}: {view.get('error')}")
                self.views[i] = view
            except (BenchError, OSError, ValueError) as exc:
                if i != self.bed.leaver:
                    self.failures.append(f"downloader {i}: {exc}")

        t = threading.Thread(target=follow, daemon=True)
        self.followers[i] = t
        t.start()

    def leave(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.peers[f"d{i}"].pid, signal.SIGKILL)

    def measure(self) -> None:
        super().measure()
        served1 = self.served()
        self.res.extra["bytes_served"] = {
            k: served1.get(k, 0) - self.served0.get(k, 0) for k in served1
        }
        self.res.extra["download_views"] = {
            i: {k: v.get(k) for k in ("seconds", "providers", "banned", "rate")}
            for i, v in self.views.items()
        }

    def served(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in [self.seeder, *self.downloaders]:
            with contextlib.suppress(BenchError, OSError, ValueError, KeyError):
                out[h.name] = int(self.call("GET", h, "/v1/status", timeout=5)["bytes_served"])
        return out

    piece_kib = 0


# ---------------------------------------------------------------- helpers


def _http_ok(url: str, method: str = "GET") -> bool:
    with contextlib.suppress(OSError, ValueError):
        req = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(req, timeout=2) as resp:
            return bool(200 <= resp.status < 300)
    return False


def _wait(
    predicate: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(BenchError, OSError, ValueError, KeyError):
            if predicate():
                return
        if proc.poll() is not None:
            raise BenchError(f"waiting for {what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


RUNS: dict[str, type[Run]] = {"p2pshare": P2PRun, "aria2": Aria2Run, "nginx": NginxRun}


def one_run(tool: str, bed: Testbed, src: Path, k: int, timeout: float, settle: float) -> Result:
    res = Result(tool, k)
    time.sleep(settle)
    res.cpu_busy_before_pct = cpu_busy()
    res.loadavg = Path("/proc/loadavg").read_text().split()[:3]
    if res.cpu_busy_before_pct > 20:
        log(f"warning: CPUs {res.cpu_busy_before_pct:.0f}% busy before {tool}: noisy figures")
    log(f"{tool} run {k}: {bed.n} downloaders, {bed.size // MIB} MiB, load {res.loadavg}")
    try:
        with NetLab() as lab:
            run = RUNS[tool](lab, bed, src, res, timeout)
            run.setup()
            run.measure()
            outs = list(run.outs)
        drop_outputs(*outs)
        s = res.seconds or 0.0
        log(
            f"{tool}: last done at {s:.2f}s ({s / bed.t_min():.2f} x T_min), seeder sent "
            f"{res.uploaded.get('seed', 0) / bed.size:.2f} copies, finish "
            f"{[round(x, 1) for x in res.finish_s.values()]}"
        )
    except (BenchError, LabError, OSError) as exc:
        res.error = str(exc)
        log(f"{tool}: FAILED: {exc}")
    return res


# ---------------------------------------------------------------- report


def report(results: list[Result], bed: Testbed) -> str:
    tmin = bed.t_min()
    f = bed.size
    rows = [
        [
            "run",
            "last s",
            "/ T_min",
            "each downloader done (s)",
            "seeder sent",
            "downloaders sent (each)",
            "downloaders got (max)",
            "CPU busy",
        ]
    ]
    for r in results:
        label = f"{r.tool} #{r.run}"
        if r.error or r.seconds is None:
            rows.append([label, "FAILED", "-", (r.error or "")[:70], "-", "-", "-", "-"])
            continue
        dl = [r.uploaded.get(f"d{i}", 0) / f for i in range(bed.n)]
        got = [r.received.get(f"d{i}", 0) / f for i in bed.finishers()]
        rows.append(
            [
                label,
                f"{r.seconds:.1f}",
                f"{r.seconds / tmin:.2f}",
                " ".join(f"{r.finish_s[i]:.1f}" for i in sorted(r.finish_s)),
                f"{r.uploaded.get('seed', 0) / f:.2f}",
                f"{sum(dl):.2f} (" + " ".join(f"{x:.2f}" for x in dl) + ")",
                f"{max(got):.2f}",
                f"{r.cpu_busy_during_pct:.0f}%",
            ]
        )
    medians: dict[str, float] = {}
    for tool in TOOLS:
        times = [r.seconds for r in results if r.tool == tool and r.seconds is not None]
        if times:
            medians[tool] = statistics.median(times)
    text = [
        f"T_min = {tmin:.2f} s (F = {f // MIB} MiB, seeder {bed.seeder_mbit:g} Mbit/s, "
        f"downloaders {_uplinks(bed)} Mbit/s up, downloads unshaped"
        + (f", {bed.loss_pct:g}% loss" if bed.loss_pct else "")
        + (f", {bed.delay_ms:g} ms one-way delay" if bed.delay_ms else ", no added delay")
        + ")",
        "copies: bytes on the host's link (frames with headers) / file size",
        *([f"d{bed.late} starts at {bed.late_s:g} s"] if bed.late is not None else []),
        *(
            [f"d{bed.leaver} is killed at {bed.leave_s:g} s (not waited for, not listed)"]
            if bed.leaver is not None
            else []
        ),
        "each downloader done: d0, d1, ... in order",
        "",
        table(rows),
        "",
    ]
    for tool, m in medians.items():
        text.append(f"{tool:9s} median last done {m:6.2f} s = {m / tmin:.2f} x T_min")
    if "p2pshare" in medians and "aria2" in medians:
        ratio = medians["aria2"] / medians["p2pshare"]
        text.append(f"aria2 / p2pshare time (median): {ratio:.2f} (> 1: p2pshare faster)")
    if "p2pshare" in medians and "nginx" in medians:
        text.append(f"nginx / p2pshare time (median): {medians['nginx'] / medians['p2pshare']:.2f}")
    return "\n".join(text)


def _uplinks(bed: Testbed) -> str:
    values = sorted(set(bed.uplinks_mbit))
    if len(values) == 1:
        return f"{bed.n} x {values[0]:g}"
    return ", ".join(f"{bed.uplinks_mbit.count(v)} x {v:g}" for v in values)


def markdown(out: dict[str, Any], text: str) -> str:
    m = out["machine"]
    return (
        "# Swarm on a network lab (issue 13)\n\n"
        f"Command: `{out['command']}`  \n"
        f"Date: {m['date_utc']}, p2pshare at commit `{m['git_commit']}`"
        + (" with uncommitted changes to src/" if m.get("src_modified") else "")
        + "  \n"
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}; {m['tools']['aria2c']}; "
        f"{m['tools']['nginx']}  \n"
        f"Load average at start / end: {' '.join(m['loadavg_start'])} / "
        f"{' '.join(m['loadavg_end'])}\n\n"
        "```\n" + text + "\n```\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/netswarm.py", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="rounds, each tool once per round")
    ap.add_argument("--size-mib", type=int, default=64, help="file size (MiB)")
    ap.add_argument("--downloaders", type=int, default=None, help="default 6 (--hard: 12)")
    ap.add_argument("--uplink-mbit", type=float, default=40.0, help="every host's upload")
    ap.add_argument(
        "--seeder-mbit", type=float, default=None, help="the seeder's upload (default: as all)"
    )
    ap.add_argument(
        "--hard",
        action="store_true",
        help="12 downloaders, uplinks 10/40/100 Mbit/s, 1%% loss, one late, one leaving",
    )
    ap.add_argument("--loss-pct", type=float, default=None, help="packet loss (default 0, hard 1)")
    ap.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="one-way delay between two hosts (a user-space forwarder per host; default 0)",
    )
    ap.add_argument("--only", default=",".join(TOOLS), help="tools: p2pshare, aria2, nginx")
    ap.add_argument("--p2p-piece-kib", type=int, default=0, help="p2pshare piece size (0: default)")
    ap.add_argument("--bt-piece-kib", type=int, default=256, help="torrent piece size")
    ap.add_argument("--settle", type=float, default=2.0, help="pause before each run (s)")
    ap.add_argument("--timeout", type=float, default=None, help="hard limit per run (s)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.only.split(",") if t.strip()]
    if set(tools) - set(TOOLS) or args.runs < 1 or args.size_mib < 1:
        ap.error("bad --only, --runs or --size-mib")
    if why := unavailable():
        log(f"cannot run: {why}")
        return 1
    n = args.downloaders or (12 if args.hard else 6)
    size = args.size_mib * MIB
    seeder_mbit = args.seeder_mbit or args.uplink_mbit
    if args.hard:
        uplinks = [(10.0, 40.0, 100.0)[i % 3] for i in range(n)]
        loss = 1.0 if args.loss_pct is None else args.loss_pct
        bed = Testbed(size, seeder_mbit, uplinks, loss)
        t = bed.t_min()
        bed.late, bed.late_s = n - 1, round(0.3 * t, 1)
        bed.leaver, bed.leave_s = n - 2, round(0.5 * t, 1)
    else:
        bed = Testbed(size, seeder_mbit, [args.uplink_mbit] * n, args.loss_pct or 0.0)
    bed.delay_ms = args.delay_ms
    log2 = (args.bt_piece_kib * 1024).bit_length() - 1
    if 1 << log2 != args.bt_piece_kib * 1024:
        ap.error("--bt-piece-kib must be a power of two")
    Aria2Run.piece_log2 = log2
    P2PRun.piece_kib = args.p2p_piece_kib
    # the slowest: nginx sends every copy from the seeder
    timeout = args.timeout or 60 + 2.5 * n * size * 8 / (args.uplink_mbit * 1e6)
    NWORK.mkdir(parents=True, exist_ok=True)
    drop_outputs(NWORK / "runs")  # logs of each run are kept until the next bench
    signal.signal(signal.SIGINT, signal.default_int_handler)
    info = machine_info()
    info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    src = make_source(size)
    log(f"T_min = {bed.t_min():.2f}s; timeout per run {timeout:.0f}s")
    results: list[Result] = []
    for k in range(1, args.runs + 1):
        for tool in tools:
            results.append(one_run(tool, bed, src, k, timeout, args.settle))
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    command = "bench/run netswarm " + " ".join(sys.argv[1:] if argv is None else argv)
    out = {
        "command": command.strip(),
        "machine": info,
        "testbed": {
            "bytes": size,
            "seeder_mbit": bed.seeder_mbit,
            "uplinks_mbit": bed.uplinks_mbit,
            "loss_pct": bed.loss_pct,
            "delay_ms": bed.delay_ms,
            "late": [bed.late, bed.late_s],
            "leaver": [bed.leaver, bed.leave_s],
            "t_min_s": round(bed.t_min(), 3),
        },
        "results": [
            {
                "tool": r.tool,
                "run": r.run,
                "seconds": r.seconds,
                "ratio_t_min": None if r.seconds is None else round(r.seconds / bed.t_min(), 3),
                "finish_s": {str(i): round(x, 3) for i, x in r.finish_s.items()},
                "uploaded_bytes": r.uploaded,
                "received_bytes": r.received,
                "cpu_busy_before_pct": r.cpu_busy_before_pct,
                "cpu_busy_during_pct": r.cpu_busy_during_pct,
                "loadavg_before": r.loadavg,
                "error": r.error,
                **r.extra,
            }
            for r in results
        ],
    }
    name = "results-hard.json" if args.hard else "results.json"
    (NWORK / name).write_text(json.dumps(out, indent=2) + "\n")
    text = report(results, bed)
    print()
    print(text)
    print(f"\nresults: {(NWORK / name).relative_to(ROOT)}")
    if args.markdown:
        args.markdown.write_text(markdown(out, text))
        print(f"written: {args.markdown}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
