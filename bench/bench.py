"""Measure p2pshare beside reference tools in one run and print the ratios.

Run through ``bench/run``, which installs the reference tools and the venv first.
Everything listens on 127.0.0.1 only; every process started here is stopped on exit.

Parts:

* transfer: one provider -> one downloader of one file over loopback, written to disk
  and checked byte for byte against the source: nginx + curl, BitTorrent (opentracker +
  two aria2c) and p2pshare (tracker + providing peer + downloading peer + ``p2pshare get``).
* indexing: ``mktorrent -t 2 -l 20``, ``sha256sum`` and ``p2pshare hash --json``.
* memory: peak RSS (VmHWM) of the serving and the downloading peer during the transfers.

Results go to stdout as a table and to bench/work/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
PIDFILE = WORK / "pids"
P2PSHARE = ROOT / ".venv" / "bin" / "p2pshare"
MB = 1_000_000  # figures are in MB/s with MB = 10**6 bytes
MIB = 1 << 20
LOOPBACK = "127.0.0.1"

GOALS = {
    "p2pshare/nginx-curl": 0.8,
    "p2pshare/aria2": 3.0,
    "p2pshare/mktorrent": 1.0,
}
MEM_GOAL_MB = 150.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class BenchError(Exception):
    """A part of the bench could not run or gave a wrong result."""


# ---------------------------------------------------------------- processes


class Procs:
    """Long-running processes started by the bench, each in its own process group.

    Their group ids are also written to bench/work/pids so that bench/run can kill
    them if this Python process itself dies without running its ``finally``.
    """

    def __init__(self, pidfile: Path = PIDFILE) -> None:
        self.live: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self.pidfile = pidfile
        pidfile.write_text("")

    def _sync_pidfile(self) -> None:
        self.pidfile.write_text("".join(f"{pid}\n" for pid in self.live))

    def start(
        self,
        name: str,
        argv: Sequence[str | Path],
        logfile: Path,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with logfile.open("wb") as out:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        self.live[proc.pid] = (name, proc)
        self._sync_pidfile()
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.pid not in self.live:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        # Whatever is left in the group (the leader or children it forked) goes now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        del self.live[proc.pid]
        self._sync_pidfile()

    def stop_all(self) -> None:
        for _name, proc in list(self.live.values()):
            self.stop(proc, grace=3.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on {port} within {timeout:.0f}s")


def wait_line(
    logfile: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float, what: str
) -> re.Match[str]:
    """Wait until a line of the process's log matches ``pattern``."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = logfile.read_text(errors="replace")
        for line in text.splitlines():
            m = rx.search(line)
            if m:
                return m
        if proc.poll() is not None:
            tail = "\n".join(text.splitlines()[-15:])
            raise BenchError(f"{what} exited with {proc.returncode} before ready:\n{tail}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready within {timeout:.0f}s (log: {logfile})")
        time.sleep(0.05)


def run_timed(
    argv: Sequence[str | Path], logfile: Path, timeout: float, cwd: Path | None = None
) -> tuple[float, int, str]:
    """Run a command to its end; return (wall seconds, exit code, its output)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with logfile.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        with PIDFILE.open("a") as pids:
            pids.write(f"{proc.pid}\n")
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise BenchError(f"{argv[0]} did not finish within {timeout:.0f}s") from None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        elapsed = time.perf_counter() - t0
    return elapsed, rc, logfile.read_text(errors="replace")


# ---------------------------------------------------------------- memory


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (via /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


class MemWatch:
    """Samples a process tree: the leader's VmHWM, each descendant's VmHWM, and the
    largest sum of VmRSS over the tree seen at one instant."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.hwm_kb: dict[int, int] = {}
        self.peak_tree_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        total = 0
        for p in _tree(self.pid):
            hwm = _status_kb(p, "VmHWM")
            rss = _status_kb(p, "VmRSS")
            if hwm is not None:
                self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), hwm)
            total += rss or 0
        self.peak_tree_rss_kb = max(self.peak_tree_rss_kb, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def result(self) -> dict[str, Any]:
        leader = self.hwm_kb.get(self.pid, 0)
        others = {p: kb for p, kb in self.hwm_kb.items() if p != self.pid}
        return {
            "vmhwm_mb": round(leader / 1024, 1),
            "children_vmhwm_mb": [round(kb / 1024, 1) for kb in others.values()],
            "peak_tree_rss_mb": round(self.peak_tree_rss_kb / 1024, 1),
        }


# ---------------------------------------------------------------- helpers


def same_bytes(a: Path, b: Path) -> bool:
    if not b.is_file() or a.stat().st_size != b.stat().st_size:
        return False
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def drop_outputs(*paths: Path) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
    subprocess.run(["sync"], check=False)


def fresh_dir(p: Path) -> Path:
    drop_outputs(p)
    p.mkdir(parents=True)
    return p


def write_random(path: Path, size: int) -> None:
    """``path`` = ``size`` random bytes, written 16 MiB at a time."""
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, 16 * MIB)
            out.write(os.urandom(n))
            left -= n


def http_json(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 30,
    token: str | None = None,
) -> Any:
    """The JSON answer of one HTTP call; ``BenchError`` with the body on an error status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{method} {url}: {exc.code} {exc.read()[:300]!r}") from None


def make_source(size: int) -> Path:
    """bench/work/src-<size>/data-<size>.bin of random bytes, made once and reused."""
    label = f"{size // MIB}M"
    d = WORK / f"src-{label}"
    f = d / f"data-{label}.bin"
    d.mkdir(parents=True, exist_ok=True)
    if f.is_file() and f.stat().st_size == size:
        log(f"reusing {f.relative_to(ROOT)}")
    else:
        log(f"writing {size // MIB} MiB of random bytes to {f.relative_to(ROOT)}")
        tmp = f.with_suffix(".tmp")
        write_random(tmp, size)
        tmp.rename(f)
    # Warm the page cache once: every tool then reads the source from memory.
    with f.open("rb") as src:
        while src.read(16 * MIB):
            pass
    subprocess.run(["sync"], check=False)
    return f


@dataclass
class Series:
    """Wall-clock seconds of N runs of one measurement."""

    name: str
    size: int
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def mbps(self, secs: float | None) -> float | None:
        return self.size / secs / MB if secs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "bytes": self.size,
            "seconds": [round(s, 4) for s in self.seconds],
            "best_s": _r(self.best, 4),
            "median_s": _r(self.median, 4),
            "mbps_best": _r(self.mbps(self.best), 1),
            "mbps_median": _r(self.mbps(self.median), 1),
            "error": self.error,
            **self.extra,
        }


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def cpu_busy(seconds: float = 1.0) -> float:
    """Share (0-100) of all CPUs busy over ``seconds``, from /proc/stat."""

    def snap() -> tuple[int, int]:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals) - idle, sum(vals)

    b0, t0 = snap()
    time.sleep(seconds)
    b1, t1 = snap()
    return round(100 * (b1 - b0) / max(1, t1 - t0), 1)


def wait_idle(limit: float, threshold: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while (busy := cpu_busy(2.0)) > threshold:
        if time.monotonic() > deadline:
            log(f"CPUs still {busy:.0f}% busy after {limit:.0f}s; going on")
            return
        log(f"waiting for the CPUs to settle ({busy:.0f}% busy)")
    log(f"CPUs idle enough ({busy:.0f}% busy)")


def guarded(series: Series, fn: Callable[[], None]) -> None:
    """Run one part; a failure is recorded on its series and the bench goes on.

    The machine's CPU use just before is recorded too: other work on the machine
    makes every figure noisy, so a busy figure explains an outlier.
    """
    busy = cpu_busy()
    series.extra["cpu_busy_before_pct"] = busy
    if busy > 20:
        log(f"warning: the CPUs are {busy:.0f}% busy before {series.name}: figures will be noisy")
    try:
        fn()
    except BenchError as exc:
        series.error = str(exc)
        log(f"{series.name}: FAILED: {exc}")


# ---------------------------------------------------------------- nginx + curl


def fsync_seconds(path: Path) -> float:
    """Time to force a just-written file to the disk (what p2pshare does before "done")."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- BitTorrent


def bdecode(data: bytes, i: int = 0) -> tuple[Any, int]:
    """Decode one bencoded value at ``data[i:]``; return it and the offset after it."""
    c = data[i : i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1 : j]), j + 1
    if c in (b"l", b"d"):
        items: list[Any] = []
        i += 1
        while data[i : i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        if c == b"l":
            return items, i + 1
        return dict(zip(items[::2], items[1::2], strict=True)), i + 1
    if c.isdigit():
        j = data.index(b":", i)
        n = int(data[i:j])
        return data[j + 1 : j + 1 + n], j + 1 + n
    raise ValueError(f"bad bencode at {i}")


def info_hash(torrent: bytes) -> bytes:
    if torrent[:1] != b"d":
        raise ValueError("a torrent file is a bencoded dict")
    i = 1
    while torrent[i : i + 1] != b"e":
        key, i = bdecode(torrent, i)
        start = i
        _, i = bdecode(torrent, i)
        if key == b"info":
            return hashlib.sha1(torrent[start:i]).digest()
    raise ValueError("no info dict in torrent")


def scrape_complete(tracker_port: int, ih: bytes) -> int:
    q = urllib.parse.quote_from_bytes(ih)
    url = f"http://{LOOPBACK}:{tracker_port}/scrape?info_hash={q}"
    with urllib.request.urlopen(url, timeout=2) as resp:
        body: bytes = resp.read()
    decoded, _ = bdecode(body)
    files = decoded.get(b"files", {})
    entry = files.get(ih, {})
    return int(entry.get(b"complete", 0))


def aria2_args(port: int, logfile: Path) -> list[str]:
    return [
        "aria2c",
        f"--listen-port={port}",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        f"--interface={LOOPBACK}",
        "--check-integrity=false",
        "--console-log-level=warn",
        "--quiet=true",
        "--auto-save-interval=0",
        f"--log={logfile}",
        "--log-level=" + os.environ.get("BENCH_ARIA2_LOG", "notice"),
    ]


class Part:
    """One transfer measurement: set up once, then run once per round, then tear down.

    The rounds of all parts are interleaved (nginx, aria2, p2pshare, nginx, ...) so
    that a burst of other work on the machine touches every tool alike.
    """

    name = "part"
    # Seconds to wait before each timed run, after the previous output is deleted and
    # synced, so that every run of every tool starts from the same state: writeback
    # done, and on a VM with free page reporting (virtio-balloon, as here) the freed
    # memory handed back to the host, so that each tool pays the same first-touch cost
    # when it writes its output (perf showed curl's page-cache copy take 2 s of CPU
    # in one run and 0.2 s in the next, right after a delete).
    settle = 0.0

    def __init__(self, procs: Procs, src: Path, timeout: float, s: Series) -> None:
        self.procs = procs
        self.src = src
        self.timeout = timeout
        self.s = s

    def setup(self) -> None:
        """Start the servers."""

    def run(self, i: int, runs: int) -> None:
        """One timed download, verified."""

    def teardown(self) -> None:
        """Stop what setup started (also after a failure)."""


class NginxPart(Part):
    name = "nginx+curl"

    def __init__(self, procs: Procs, src: Path, timeout: float, s: Series, durable: Series) -> None:
        super().__init__(procs, src, timeout, s)
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None
        self.d = WORK / "nginx"
        self.url = ""

    def setup(self) -> None:
        d = fresh_dir(self.d)
        (d / "tmp").mkdir()
        port = free_port()
        conf = d / "nginx.conf"
        conf.write_text(
            f"""# written by bench/bench.py
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {d}/tmp;
    server {{
        listen {LOOPBACK}:{port};
        root {self.src.parent};
    }}
}}
"""
        )
        self.proc = self.procs.start(
            "nginx", ["nginx", "-p", d, "-c", conf, "-g", "daemon off;"], d / "stdout.log"
        )
        wait_port(port, self.proc, 10, "nginx")
        self.url = f"http://{LOOPBACK}:{port}/{self.src.name}"

    def run(self, i: int, runs: int) -> None:
        out = self.d / "out.bin"
        drop_outputs(out)
        time.sleep(self.settle)
        secs, rc, text = run_timed(
            ["curl", "-s", "-S", "--max-time", str(int(self.timeout)), "-o", out, self.url],
            self.d / "curl.log",
            self.timeout + 10,
        )
        if rc != 0:
            raise BenchError(f"curl exited {rc}: {text.strip()[-300:]}")
        sync_s = fsync_seconds(out)
        if not same_bytes(self.src, out):
            raise BenchError("curl's output differs from the source")
        drop_outputs(out)
        self.s.seconds.append(secs)
        self.durable.seconds.append(secs + sync_s)
        log(
            f"nginx+curl run {i + 1}/{runs}: {secs:.3f}s, {self.s.size / secs / MB:.0f} MB/s; "
            f"+fsync {sync_s:.3f}s"
        )

    def teardown(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
        self.durable.error = self.s.error


class Aria2Part(Part):
    name = "aria2"

    def __init__(self, procs: Procs, src: Path, timeout: float, s: Series, durable: Series) -> None:
        super().__init__(procs, src, timeout, s)
        self.durable = durable
        self.d = WORK / "bt"
        self.torrent = self.d / f"{src.name}.torrent"
        self.tracker: subprocess.Popen[bytes] | None = None
        self.seeder: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        d = fresh_dir(self.d)
        tport = free_port()
        _, rc, text = run_timed(
            [
                "mktorrent",
                "-a",
                f"http://{LOOPBACK}:{tport}/announce",
                "-l",
                "20",
                "-t",
                "2",
                "-o",
                self.torrent,
                self.src,
            ],
            d / "mktorrent.log",
            600,
        )
        if rc != 0:
            raise BenchError(f"mktorrent exited {rc}: {text.strip()[-300:]}")
        ih = info_hash(self.torrent.read_bytes())
        # Debian's opentracker is built in whitelist mode: it tracks only listed info
        # hashes. It chroots into -d, so the list is named relative to that folder.
        (d / "whitelist").write_text(ih.hex() + "\n")
        self.tracker = self.procs.start(
            "opentracker",
            ["opentracker", "-i", LOOPBACK, "-p", str(tport), "-P", str(tport)]
            + ["-d", str(d), "-w", "whitelist"],
            d / "opentracker.log",
            cwd=d,
        )
        wait_port(tport, self.tracker, 10, "opentracker")
        self.seeder = self.procs.start(
            "aria2c-seed",
            [
                *aria2_args(free_port(), d / "seed.log"),
                f"--dir={self.src.parent}",
                "--seed-ratio=0",
                "--bt-seed-unverified=true",
                "--file-allocation=none",
                self.torrent,
            ],
            d / "seed.out",
        )
        deadline = time.monotonic() + 30
        while True:
            if self.seeder.poll() is not None:
                raise BenchError(f"seeding aria2c exited with {self.seeder.returncode}")
            with contextlib.suppress(OSError):
                if scrape_complete(tport, ih) >= 1:
                    break
            if time.monotonic() > deadline:
                raise BenchError("the seeding aria2c did not announce within 30s")
            time.sleep(0.1)

    def run(self, i: int, runs: int) -> None:
        out = fresh_dir(self.d / "dl")
        time.sleep(self.settle)
        secs, rc, text = run_timed(
            [
                *aria2_args(free_port(), self.d / f"dl-{i}.log"),
                f"--dir={out}",
                "--seed-time=0",
                "--file-allocation=falloc",
                f"--bt-stop-timeout={int(self.timeout)}",
                self.torrent,
            ],
            self.d / f"dl-{i}.out",
            self.timeout + 10,
        )
        if rc != 0:
            raise BenchError(f"downloading aria2c exited {rc}: {text.strip()[-300:]}")
        got = out / self.src.name
        sync_s = fsync_seconds(got)
        if not same_bytes(self.src, got):
            raise BenchError("aria2c's output differs from the source")
        drop_outputs(out)
        self.s.seconds.append(secs)
        self.durable.seconds.append(secs + sync_s)
        log(
            f"aria2 run {i + 1}/{runs}: {secs:.3f}s, {self.s.size / secs / MB:.0f} MB/s; "
            f"+fsync {sync_s:.3f}s"
        )

    def teardown(self) -> None:
        for proc in (self.seeder, self.tracker):
            if proc is not None:
                self.procs.stop(proc)
        self.durable.error = self.s.error


# ---------------------------------------------------------------- p2pshare


def p2pshare_available() -> str | None:
    """None if the p2pshare CLI has the commands the bench drives, else why not."""
    if not P2PSHARE.exists():
        return f"{P2PSHARE.relative_to(ROOT)} is missing"
    try:
        r = subprocess.run(
            [str(P2PSHARE), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return "p2pshare --help timed out"
    missing = [
        c for c in ("tracker", "peer", "get", "hash") if not re.search(rf"\b{c}\b", r.stdout)
    ]
    if r.returncode != 0 or missing:
        return f"p2pshare CLI lacks: {', '.join(missing) or 'a working --help'}"
    return None


TRACKER_READY = r"p2pshare tracker listening on (http://\S+)"
PEER_READY = r"p2pshare peer listening on grpc (\S+?),? control API (http://\S+)"


def start_peer(
    procs: Procs, name: str, share: Path, data: Path, tracker_url: str, ready_timeout: float
) -> tuple[subprocess.Popen[bytes], str]:
    logfile = WORK / "p2p" / f"{name}.log"
    proc = procs.start(
        name,
        [
            P2PSHARE,
            "peer",
            "--host",
            LOOPBACK,
            "--share",
            share,
            "--data",
            data,
            "--tracker",
            tracker_url,
            "--port",
            "0",
            "--api-port",
            "0",
        ],
        logfile,
    )
    m = wait_line(logfile, PEER_READY, proc, ready_timeout, f"peer {name}")
    return proc, m.group(2).rstrip(",.")


def content_id_of(src: Path, api: str, timeout: float) -> str:
    """Find the file through the network's search; fall back to ``p2pshare hash``."""
    log_search = WORK / "p2p" / "search.log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, rc, text = run_timed(
            [P2PSHARE, "search", src.name, "--json", "--api", api], log_search, 60
        )
        if rc == 0:
            with contextlib.suppress(ValueError):
                hits = json.loads(text[text.find("[") :])
                for hit in hits:
                    if (
                        hit.get("name") == src.name
                        and int(hit.get("size", -1)) == src.stat().st_size
                    ):
                        return str(hit["content_id"])
        time.sleep(0.5)
    log("search did not find the file; using p2pshare hash")
    _, rc, text = run_timed([P2PSHARE, "hash", src, "--json"], WORK / "p2p" / "hash.log", timeout)
    if rc != 0:
        raise BenchError(f"p2pshare hash exited {rc}: {text.strip()[-300:]}")
    return str(parse_json_object(text)["content_id"])


def parse_json_object(text: str) -> dict[str, Any]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise BenchError(f"no JSON object in output: {text.strip()[-300:]}")
    obj: dict[str, Any] = json.loads(text[start : end + 1])
    return obj


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, its waited-for children included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    hz = os.sysconf("SC_CLK_TCK")
    return (utime + cutime) / hz, (stime + cstime) / hz


PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def start_spy(procs: Procs, pid: int, stem: Path) -> subprocess.Popen[bytes]:
    """py-spy (installed into .venv on demand) sampling ``pid`` into STEM.txt (collapsed)."""
    if not PY_SPY.exists():
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"],
            check=True,
            timeout=300,
        )
    return procs.start(
        f"py-spy {pid}",
        [
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            f"{stem}.txt",
        ],
        stem.with_suffix(".log"),
    )


def summarize_profile(stem: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in a collapsed profile."""
    path = stem.with_name(stem.name + ".txt")
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            leaf = re.sub(r" \(.*/", " (", frames[-1])
            self_n[leaf] = self_n.get(leaf, 0) + n
            # inclusive: p2pshare's own functions only, lines merged
            mine = {
                re.sub(r" \((?:.*/)?p2pshare/(.*):\d+\)$", r" (\1)", f)
                for f in frames
                if re.search(r"\((?:.*/)?p2pshare/", f)
            }
            for f in mine:
                incl_n[f] = incl_n.get(f, 0) + n

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [(f, round(100 * n / total, 1)) for f, n in ranked] if total else []

    return {"samples": total, "self_pct": share(self_n), "inclusive_pct": share(incl_n)}


class P2PPart(Part):
    name = "p2pshare"

    def __init__(
        self,
        procs: Procs,
        src: Path,
        timeout: float,
        s: Series,
        mem: dict[str, Any],
        out_root: Path | None = None,
    ) -> None:
        super().__init__(procs, src, timeout, s)
        self.mem = mem
        self.d = WORK / "p2p"
        self.out_root = out_root or self.d
        self.tracker: subprocess.Popen[bytes] | None = None
        self.provider: subprocess.Popen[bytes] | None = None
        self.pwatch: MemWatch | None = None
        self.turl = ""
        self.cid = ""
        self.dl_mem: list[dict[str, Any]] = []
        self.cpu: list[dict[str, float]] = []

    def setup(self) -> None:
        d = fresh_dir(self.d)
        tlog = d / "tracker.log"
        self.tracker = self.procs.start(
            "p2pshare-tracker",
            [P2PSHARE, "tracker", "--host", LOOPBACK, "--port", "0", "--db", d / "tracker.db"],
            tlog,
        )
        turl = wait_line(tlog, TRACKER_READY, self.tracker, 60, "p2pshare tracker").group(1)
        self.turl = turl.rstrip(",.")
        log(f"p2pshare tracker at {self.turl}")
        # The provider hashes the whole file in its initial scan before it says ready.
        t0 = time.perf_counter()
        ready_timeout = 120 + self.s.size / (20 * MB)
        self.provider, papi = start_peer(
            self.procs, "provider", self.src.parent, d / "provider-data", self.turl, ready_timeout
        )
        ready = time.perf_counter() - t0
        log(f"providing peer ready in {ready:.1f}s, control API {papi}")
        self.s.extra["provider_ready_s"] = round(ready, 2)
        self.pwatch = MemWatch(self.provider.pid).__enter__()
        self.cid = content_id_of(self.src, papi, self.timeout)
        log(f"content id {self.cid}")
        self.s.extra["content_id"] = self.cid

    def run(self, i: int, runs: int, profiling: bool = False) -> None:
        assert self.provider is not None
        d = self.d
        share = fresh_dir(self.out_root / "dl-share")
        data = fresh_dir(self.out_root / "dl-data")
        out = fresh_dir(self.out_root / "out")
        downloader, dapi = start_peer(self.procs, "downloader", share, data, self.turl, 60)
        spies: list[subprocess.Popen[bytes]] = []
        try:
            if profiling:
                spies = [
                    start_spy(self.procs, downloader.pid, d / "profile-downloader"),
                    start_spy(self.procs, self.provider.pid, d / "profile-provider"),
                ]
            time.sleep(max(self.settle, 1.0 if spies else 0.0))  # py-spy needs ~1 s to attach
            cpu0 = (cpu_seconds(downloader.pid), cpu_seconds(self.provider.pid))
            with MemWatch(downloader.pid) as dwatch:
                secs, rc, text = run_timed(
                    [P2PSHARE, "get", self.cid, "-o", out, "--api", dapi],
                    d / f"get-{i}.log",
                    self.timeout,
                )
            cpu1 = (cpu_seconds(downloader.pid), cpu_seconds(self.provider.pid))
            for spy in spies:  # py-spy writes its profile on SIGINT
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(spy.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(20)
        finally:
            for spy in spies:
                self.procs.stop(spy)
            self.procs.stop(downloader)
        if rc != 0:
            raise BenchError(f"p2pshare get exited {rc}: {text.strip()[-400:]}")
        got = out / self.src.name
        if not got.is_file():
            files = [p for p in out.rglob("*") if p.is_file()]
            if len(files) != 1:
                raise BenchError(f"p2pshare get left {len(files)} files in {out}")
            got = files[0]
        if not same_bytes(self.src, got):
            raise BenchError("p2pshare get's output differs from the source")
        drop_outputs(share, data, out)
        if profiling:
            self.s.extra["profile"] = {
                "seconds": round(secs, 3),
                "downloader": summarize_profile(d / "profile-downloader"),
                "provider": summarize_profile(d / "profile-provider"),
            }
            log(f"profiled run (not counted): {secs:.3f}s; profiles in {d}/profile-*")
            return
        self.dl_mem.append(dwatch.result())
        cpu = {
            "downloader_cpu_s": round(sum(cpu1[0]) - sum(cpu0[0]), 2),
            "downloader_sys_s": round(cpu1[0][1] - cpu0[0][1], 2),
            "provider_cpu_s": round(sum(cpu1[1]) - sum(cpu0[1]), 2),
            "provider_sys_s": round(cpu1[1][1] - cpu0[1][1], 2),
        }
        self.cpu.append(cpu)
        self.s.extra["cpu_seconds"] = self.cpu
        self.s.seconds.append(secs)
        log(
            f"p2pshare run {i + 1}/{runs}: {secs:.3f}s, {self.s.size / secs / MB:.0f} MB/s, "
            f"downloader VmHWM {self.dl_mem[-1]['vmhwm_mb']} MB, CPU s (of which sys): "
            f"downloader {cpu['downloader_cpu_s']} ({cpu['downloader_sys_s']}), "
            f"provider {cpu['provider_cpu_s']} ({cpu['provider_sys_s']})"
        )

    def teardown(self) -> None:
        if self.pwatch is not None:
            self.pwatch.__exit__()
            self.mem["serving_peer"] = self.pwatch.result()
        if self.dl_mem:
            self.mem["downloading_peer"] = max(self.dl_mem, key=lambda m: m["vmhwm_mb"])
            self.mem["downloading_peer_runs"] = self.dl_mem
        for proc in (self.provider, self.tracker):
            if proc is not None:
                self.procs.stop(proc)


# ---------------------------------------------------------------- indexing


def bench_index(
    src: Path, runs: int, timeout: float, with_p2p: bool
) -> tuple[dict[str, Series], str | None]:
    d = fresh_dir(WORK / "index")
    size = src.stat().st_size
    out: dict[str, Series] = {
        "mktorrent": Series("mktorrent -t 2 -l 20", size),
        "sha256sum": Series("sha256sum", size),
    }
    p2p_err: str | None = None
    if with_p2p:
        out["p2pshare hash (wall)"] = Series("p2pshare hash (wall)", size)
        out["p2pshare hash (in-process)"] = Series("p2pshare hash (in-process)", size)

    def mktorrent() -> None:
        t = d / "x.torrent"
        for _ in range(runs):
            drop_outputs(t)
            argv: list[str | Path] = [
                "mktorrent",
                "-t",
                "2",
                "-l",
                "20",
                "-a",
                "http://127.0.0.1:1/a",
                "-o",
                t,
                src,
            ]
            secs, rc, text = run_timed(argv, d / "mktorrent.log", timeout)
            if rc != 0:
                raise BenchError(f"mktorrent exited {rc}: {text.strip()[-300:]}")
            out["mktorrent"].seconds.append(secs)
        drop_outputs(t)

    def sha256sum() -> None:
        for _ in range(runs):
            secs, rc, text = run_timed(["sha256sum", src], d / "sha256sum.log", timeout)
            if rc != 0:
                raise BenchError(f"sha256sum exited {rc}")
            out["sha256sum"].seconds.append(secs)
            out["sha256sum"].extra["sha256"] = text.split()[0]

    def p2p() -> None:
        for _ in range(runs):
            secs, rc, text = run_timed([P2PSHARE, "hash", src, "--json"], d / "hash.log", timeout)
            if rc != 0:
                raise BenchError(f"p2pshare hash exited {rc}: {text.strip()[-300:]}")
            obj = parse_json_object(text)
            out["p2pshare hash (wall)"].seconds.append(secs)
            out["p2pshare hash (in-process)"].seconds.append(float(obj["seconds"]))
            out["p2pshare hash (wall)"].extra["reported"] = obj

    guarded(out["mktorrent"], mktorrent)
    guarded(out["sha256sum"], sha256sum)
    if with_p2p:
        guarded(out["p2pshare hash (wall)"], p2p)
        p2p_err = out["p2pshare hash (wall)"].error
        out["p2pshare hash (in-process)"].error = p2p_err
    for name, series in out.items():
        if series.best:
            log(f"index {name}: best {series.best:.3f}s, {series.mbps(series.best):.0f} MB/s")
    return out, p2p_err


# ---------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = _status_kb_file(Path("/proc/meminfo"), "MemTotal") or 0

    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]

    return {
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "src_modified": src_modified(),
        "tools": {
            "nginx": first_line(["nginx", "-v"]),
            "curl": first_line(["curl", "--version"]),
            "aria2c": first_line(["aria2c", "--version"]),
            "mktorrent": first_line(["mktorrent", "-h"]),
            "sha256sum": first_line(["sha256sum", "--version"]),
        },
    }


def src_modified() -> bool:
    """Whether p2pshare's code has uncommitted changes: then the figures are of no commit."""
    try:
        r = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "pyproject.toml"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(r.stdout.strip())


def _status_kb_file(path: Path, key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def ratio(a: Series | None, b: Series | None, use: str = "best") -> float | None:
    if a is None or b is None:
        return None
    sa, sb = (a.best, b.best) if use == "best" else (a.median, b.median)
    if not sa or not sb:
        return None
    return round(sb / sa, 3)  # throughput ratio = inverse time ratio


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def iter_series(groups: dict[str, dict[str, Series]]) -> Iterator[tuple[str, str, Series]]:
    for g, d in groups.items():
        for k, s in d.items():
            yield g, k, s


def results_markdown(r: dict[str, Any]) -> str:
    """bench/work/results.json as the Markdown tables of bench/RESULTS.md."""
    m = r["machine"]
    cfg = r["config"]
    lines = [
        f"Command: `{r['command']}`  ",
        f"Date: {m['date_utc']}, p2pshare at commit `{m['git_commit']}`"
        + (" with uncommitted changes to src/" if m.get("src_modified") else "")
        + "  ",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}  ",
        f"Tools: {m['tools']['nginx']}; {m['tools']['curl'].split(' (')[0]}; "
        f"{m['tools']['aria2c']}; {m['tools']['mktorrent'].split(' (')[0]}; "
        f"{m['tools']['sha256sum']}  ",
        f"File: {cfg['bytes'] // MIB} MiB of random bytes, {cfg['runs']} runs each "
        f"(transfer runs interleaved); MB = 10^6 bytes",
        "",
        "| measurement | best s | median s | MB/s best | MB/s median |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, key in (("transfer", "transfer"), ("index", "indexing")):
        for name, s in r[key].items():
            if s.get("error"):
                lines.append(f"| {group}: {name} | - | - | {s['error'][:60]} | - |")
            else:
                lines.append(
                    f"| {group}: {name} | {s['best_s']:.3f} | {s['median_s']:.3f} "
                    f"| {s['mbps_best']:.1f} | {s['mbps_median']:.1f} |"
                )
    lines += ["", "| ratio (throughput) | best | median | goal |", "|---|---:|---:|---|"]
    for k, v in r["ratios_best"].items():
        goal = r["goals"].get(k)
        med = r["ratios_median"].get(k)
        lines.append(
            f"| {k} | {fmt(v, '.2f')} | {fmt(med, '.2f')} | "
            f"{'-' if goal is None else f'>= {goal}'} |"
        )
    mem = r.get("memory") or {}
    if mem:
        lines += ["", "| peak memory (MB) | VmHWM | tree peak RSS | goal |", "|---|---:|---:|---|"]
        for who in ("serving_peer", "downloading_peer"):
            if mem.get(who):
                lines.append(
                    f"| {who.replace('_', ' ')} | {mem[who]['vmhwm_mb']:.1f} "
                    f"| {mem[who]['peak_tree_rss_mb']:.1f} | < {MEM_GOAL_MB:.0f} |"
                )
    p2p = r["transfer"].get("p2pshare", {})
    if p2p.get("cpu_seconds"):
        lines += [
            "",
            "| p2pshare run | s | downloader CPU s (sys) | provider CPU s (sys) |",
            "|---|---:|---:|---:|",
        ]
        for n, (secs, c) in enumerate(zip(p2p["seconds"], p2p["cpu_seconds"], strict=False)):
            lines.append(
                f"| {n + 1} | {secs:.3f} | {c['downloader_cpu_s']} ({c['downloader_sys_s']}) "
                f"| {c['provider_cpu_s']} ({c['provider_sys_s']}) |"
            )
    busy = {
        k: s.get("cpu_busy_before_pct")
        for key in ("transfer", "indexing")
        for k, s in r[key].items()
        if s.get("cpu_busy_before_pct") is not None
    }
    if busy:
        lines += [
            "",
            "CPU busy (%) just before each part, from other work on the machine: "
            + ", ".join(f"{k} {v}" for k, v in busy.items()),
        ]
    return "\n".join(lines) + "\n"


def run_transfers(todo: list[Part], runs: int, profile: bool) -> None:
    """Set every part up, run them in interleaved rounds, tear them down."""
    live: list[Part] = []
    try:
        for part in todo:
            part.s.extra["cpu_busy_before_pct"] = busy = cpu_busy()
            if busy > 20:
                log(f"warning: the CPUs are {busy:.0f}% busy before {part.name}: noisy figures")
            try:
                part.setup()
                live.append(part)
            except BenchError as exc:
                part.s.error = f"setup: {exc}"
                log(f"{part.name}: FAILED: {exc}")
                part.teardown()
        for i in range(runs):
            for part in list(live):
                try:
                    part.run(i, runs)
                except BenchError as exc:
                    part.s.error = str(exc)
                    log(f"{part.name}: FAILED: {exc}")
                    live.remove(part)
                    part.teardown()
        for part in live:
            if profile and isinstance(part, P2PPart):
                try:
                    part.run(runs, runs, profiling=True)
                except BenchError as exc:
                    log(f"profiled run FAILED: {exc}")
    finally:
        for part in live:
            part.teardown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--runs", type=int, default=None, help="runs of each measurement (default 3; --quick: 1)"
    )
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the test file in MiB")
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 MiB file, 1 run")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="one extra, uncounted p2pshare run under py-spy (bench/work/p2p/profile-*)",
    )
    ap.add_argument(
        "--p2p-out",
        type=Path,
        default=None,
        help="diagnostic: folder for the downloading peer's share, data and output "
        "(e.g. /dev/shm to take the disk out); default bench/work/p2p",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for the CPUs to be under 15%% busy",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=4.0,
        metavar="SECONDS",
        help="pause before each timed transfer, after the last output was deleted "
        "(evens out cold-memory costs on VMs; default 4)",
    )
    ap.add_argument(
        "--only",
        default="nginx,aria2,p2pshare,index",
        help="comma-separated parts to run (nginx, aria2, p2pshare, index)",
    )
    ap.add_argument(
        "--markdown",
        action="store_true",
        help="run nothing: print bench/work/results.json as Markdown tables (for RESULTS.md)",
    )
    args = ap.parse_args(argv)
    if args.markdown:
        print(results_markdown(json.loads((WORK / "results.json").read_text())), end="")
        return 0
    if args.quick:
        args.size_mib = 64
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"nginx", "aria2", "p2pshare", "index"}
    if unknown or args.runs < 1 or args.size_mib < 1:
        ap.error(f"bad arguments: {', '.join(unknown) or '--runs/--size-mib must be >= 1'}")

    WORK.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    # Generous bounds: 60 s plus the time to move the file at 2 MB/s.
    timeout = 60 + size / (2 * MB)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Procs()
    Part.settle = args.settle
    info = machine_info()
    if info["src_modified"]:
        log("note: src/ has uncommitted changes: these figures are of no commit")
    transfer: dict[str, Series] = {}
    index: dict[str, Series] = {}
    mem: dict[str, Any] = {}
    p2p_missing = p2pshare_available() if ("p2pshare" in parts or "index" in parts) else None
    if p2p_missing:
        log(f"p2pshare parts skipped: {p2p_missing}")
    try:
        src = make_source(size)
        if args.wait_idle > 0:
            wait_idle(args.wait_idle)
        todo: list[Part] = []
        if "nginx" in parts:
            s = transfer["nginx+curl"] = Series("nginx+curl", size)
            sd = transfer["nginx+curl+fsync"] = Series("nginx+curl, then fsync", size)
            todo.append(NginxPart(procs, src, timeout, s, sd))
        if "aria2" in parts:
            a = transfer["aria2"] = Series("aria2 (BitTorrent)", size)
            ad = transfer["aria2+fsync"] = Series("aria2, then fsync", size)
            todo.append(Aria2Part(procs, src, timeout, a, ad))
        if "p2pshare" in parts:
            p = transfer["p2pshare"] = Series("p2pshare", size)
            if p2p_missing:
                p.error = f"skipped: {p2p_missing}"
            else:
                todo.append(P2PPart(procs, src, timeout, p, mem, args.p2p_out))
        run_transfers(todo, args.runs, args.profile)
        if "index" in parts:
            index, _ = bench_index(src, args.runs, timeout, with_p2p=not p2p_missing)
            if p2p_missing:
                for name in ("p2pshare hash (wall)", "p2pshare hash (in-process)"):
                    index[name] = Series(name, size, error=f"skipped: {p2p_missing}")
    finally:
        procs.stop_all()

    pairs: dict[str, tuple[Series | None, Series | None]] = {
        "p2pshare/nginx-curl": (transfer.get("p2pshare"), transfer.get("nginx+curl")),
        "p2pshare/aria2": (transfer.get("p2pshare"), transfer.get("aria2")),
        "p2pshare/(nginx-curl+fsync)": (
            transfer.get("p2pshare"),
            transfer.get("nginx+curl+fsync"),
        ),
        "p2pshare/(aria2+fsync)": (transfer.get("p2pshare"), transfer.get("aria2+fsync")),
        "p2pshare/mktorrent": (index.get("p2pshare hash (in-process)"), index.get("mktorrent")),
        "p2pshare/mktorrent (wall)": (index.get("p2pshare hash (wall)"), index.get("mktorrent")),
        "p2pshare/sha256sum": (index.get("p2pshare hash (in-process)"), index.get("sha256sum")),
    }
    ratios = {k: ratio(a, b) for k, (a, b) in pairs.items()}
    ratios_median = {k: ratio(a, b, "median") for k, (a, b) in pairs.items()}
    failures = [
        f"{k}: {s.error}" for _, k, s in iter_series({"t": transfer, "i": index}) if s.error
    ]
    results = {
        "command": "bench/run " + " ".join(sys.argv[1:]),
        "machine": info,
        "config": {
            "bytes": size,
            "runs": args.runs,
            "parts": sorted(parts),
            "mb": MB,
            "settle_s": args.settle,
        },
        "transfer": {k: s.to_json() for k, s in transfer.items()},
        "indexing": {k: s.to_json() for k, s in index.items()},
        "memory": mem,
        "ratios_best": ratios,
        "ratios_median": ratios_median,
        "goals": {**GOALS, "peer VmHWM MB <": MEM_GOAL_MB},
        "failures": failures,
    }
    (WORK / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print()
    print(
        f"p2pshare bench: {size // MIB} MiB, best of {args.runs}; "
        f"{info['nproc']} CPUs ({info['cpu']}), {info['mem_gib']} GiB; MB = 10^6 bytes"
    )
    rows = [["measurement", "best s", "median s", "MB/s best", "MB/s median"]]
    for g, k, s in iter_series({"transfer": transfer, "index": index}):
        if s.error:
            rows.append(
                [f"{g}: {k}", "-", "-", "FAILED" if "skipped" not in s.error else "skip", "-"]
            )
        else:
            rows.append(
                [
                    f"{g}: {k}",
                    fmt(s.best, ".3f"),
                    fmt(s.median, ".3f"),
                    fmt(s.mbps(s.best)),
                    fmt(s.mbps(s.median)),
                ]
            )
    print(table(rows))
    print()
    rrows = [["ratio (throughput)", "best", "median", "goal", "met"]]
    for k, v in ratios.items():
        goal = GOALS.get(k)
        rrows.append(
            [
                k,
                fmt(v, ".2f"),
                fmt(ratios_median.get(k), ".2f"),
                "-" if goal is None else f">= {goal}",
                "-" if v is None or goal is None else ("yes" if v >= goal else "NO"),
            ]
        )
    print(table(rrows))
    if mem:
        print()
        mrows = [["memory (MB)", "VmHWM", "tree peak RSS", "goal", "met"]]
        for who in ("serving_peer", "downloading_peer"):
            m = mem.get(who)
            if m:
                mrows.append(
                    [
                        who.replace("_", " "),
                        f"{m['vmhwm_mb']:.1f}",
                        f"{m['peak_tree_rss_mb']:.1f}",
                        f"< {MEM_GOAL_MB:.0f}",
                        "yes" if m["vmhwm_mb"] < MEM_GOAL_MB else "NO",
                    ]
                )
        print(table(mrows))
    print(f"\nresults: {(WORK / 'results.json').relative_to(ROOT)}")
    if failures:
        print("\nFAILED or skipped:")
        for f in failures:
            print(f"  {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
