#!/usr/bin/env python3
"""Tracker under load, beside opentracker, and search over a million files.

Run on its own (as root: it installs wrk and opentracker from Debian if missing)::

    .venv/bin/python bench/tracker_load.py [--quick] [--skip-search] [--workers N]

Everything runs on 127.0.0.1 and is bounded in time. Figures go to
``bench/work/tracker_results.json`` and a summary to stdout.

1. Load: a registry of 10,000 peers with 10 files each is written straight through
   ``SqliteRegistry`` (the tracker's own store), then the real ``p2pshare tracker``
   serves it. wrk (``bench/tracker_mix.lua``) sends 80% heartbeats, each with its
   peer's own token, and 20% searches for one or two words that occur in names, at
   64 and 256 connections, then at a fixed offered rate of 2,000 requests/s.
   opentracker's announce rate is measured at the same connections
   (``bench/tracker_announce.lua``). The tracker's peak RSS (VmHWM, all of its
   processes) is read from /proc.
2. Search: 20,000 peers with 50 files each (1,000,000 files), sequential and
   concurrent searches of a fixed count, latency of each measured by the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
OUT = WORK / "tracker"
RESULTS = WORK / "tracker_results.json"
LOOPBACK = "127.0.0.1"
LEASE = 86_400  # no lease runs out during a run
GOALS = {"p99_ms_at_2000": 20.0, "throughput_vs_opentracker": 0.5, "rss_mb": 300.0}
SEARCH_GOAL_P99_MS = 10.0

sys.path.insert(0, str(ROOT / "src"))

from p2pshare.tracker.models import FileEntry  # noqa: E402
from p2pshare.tracker.registry import SqliteRegistry, tidy  # noqa: E402


class BenchError(Exception):
    """The benchmark could not run (a tool missing, a process that did not start)."""


# -- tools and machine --------------------------------------------------------------------


def ensure_tools() -> None:
    """Install wrk and opentracker from Debian packages if they are missing."""
    missing = [t for t in ("wrk", "opentracker") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchError(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    print(f"installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL
    )


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# -- data ---------------------------------------------------------------------------------

_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "br",
    "cr",
    "dr",
    "fr",
    "gr",
    "pl",
    "st",
    "tr",
    "ch",
    "sh",
    "th",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "x", "nd", "rt", "st"]
_EXTS = [
    "mkv",
    "mp4",
    "avi",
    "iso",
    "flac",
    "mp3",
    "pdf",
    "epub",
    "zip",
    "tar.gz",
    "jpg",
    "png",
    "txt",
    "deb",
]


def vocabulary(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct pronounceable words of 3 to 12 letters."""
    out: set[str] = set()
    while len(out) < n:
        w = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(rng.choice((1, 2, 2, 3)))
        )
        if 3 <= len(w) <= 12:
            out.add(w)
    return sorted(out)


def file_name(vocab: list[str], rng: random.Random) -> str:
    """A name like ``tralon-ves brandi (2014)/chaxo_pleart.mkv``: Zipf-ish word choice."""
    n = len(vocab)

    def word() -> str:
        # a few words are common, most are rare, as in real names
        return vocab[min(int(rng.paretovariate(0.9)) - 1, n - 1) if rng.random() < 0.3 else
                     rng.randrange(n)]  # fmt: skip

    parts = [word() for _ in range(rng.randint(2, 5))]
    sep = rng.choice(("-", " ", "_", "."))
    stem = sep.join(parts)
    if rng.random() < 0.3:
        stem += f" ({rng.randint(1970, 2025)})"
    if rng.random() < 0.2:
        stem = word() + "/" + stem
    return f"{stem}.{rng.choice(_EXTS)}"


def build_registry(
    db: Path, peers: int, files_per_peer: int, vocab: list[str], seed: int
) -> list[tuple[str, str]]:
    """Write ``peers`` registrations into a fresh registry; return their (peer_id, token)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    rng = random.Random(seed)
    registry = SqliteRegistry(db, lease_seconds=LEASE, rng=random.Random(seed))
    now = time.time()
    creds: list[tuple[str, str]] = []
    try:
        for p in range(peers):
            files = [
                FileEntry.model_construct(
                    content_id=rng.randbytes(32).hex(),
                    name=file_name(vocab, rng),
                    size=rng.randrange(1, 1 << 33),
                )
                for _ in range(files_per_peer)
            ]
            address = f"10.{p >> 16 & 255}.{p >> 8 & 255}.{p & 255}:8461"
            reg = registry.register(address, files, now, neighbours=0)
            creds.append((reg.peer_id, reg.token))
            if p % 1_000 == 999:
                # as the tracker's tidy task does every 2 s: the change log is trimmed as
                # it grows, and later rows reuse its pages (trimmed only at the end, it
                # would leave 10 MB of free pages in the file, mapped by every worker)
                tidy(db)
    finally:
        registry.close()
    tidy(db)
    return creds


# -- processes ----------------------------------------------------------------------------


@dataclass
class Server:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    def pids(self) -> list[int]:
        """The process and its children (tracker workers)."""
        out = [self.popen.pid]
        with contextlib.suppress(OSError):
            kids = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
            out += [int(k) for k in kids.split()]
        return out

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def start_tracker(
    db: Path, log: Path, workers: int | None, rate_limit: float, search_cache_mb: int | None
) -> Server:
    exe = Path(sys.executable).parent / "p2pshare"
    argv = [str(exe), "tracker", "--host", LOOPBACK, "--port", "0", "--db", str(db)]
    env = {
        **os.environ,
        "P2PSHARE_TRACKER_LEASE_SECONDS": str(LEASE),
        # every simulated peer comes from 127.0.0.1: one client to the per-address
        # rate limit, which would answer most of the load with 429
        "P2PSHARE_TRACKER_RATE_LIMIT": str(rate_limit),
        # the simulated peers run no gRPC server: nothing would answer the tracker's
        # dial-back (and --churn's would dial 11.x.x.x); the registry built above is
        # written as unchecked, handed out at once, as a tracker with checks off does
        "P2PSHARE_TRACKER_VERIFY_ADDRESSES": "false",
        # and they all come from 127.0.0.1: one client to the per-address caps
        "P2PSHARE_TRACKER_MAX_PEERS_PER_CLIENT": "0",
        "P2PSHARE_TRACKER_MAX_FILES_PER_CLIENT": "0",
        "P2PSHARE_TRACKER_FILES_PER_SECOND": "0",
    }
    if workers is not None:
        env["P2PSHARE_TRACKER_WORKERS"] = str(workers)
    if search_cache_mb is not None:
        env["P2PSHARE_TRACKER_SEARCH_CACHE_MB"] = str(search_cache_mb)
    sink = log.open("wb")
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sink, env=env)
    assert popen.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = popen.stdout.readline().decode(errors="replace")
        if not line:
            break
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            popen.stdout.close()
            return Server(popen, int(m[1]), log)
    popen.kill()
    raise BenchError(f"the tracker did not start: {log.read_text(errors='replace')[-1000:]}")


def start_opentracker(d: Path, hashes: list[str]) -> Server:
    d.mkdir(parents=True, exist_ok=True)
    # Debian's opentracker is built in whitelist mode; it chroots into -d
    (d / "whitelist").write_text("".join(h + "\n" for h in hashes))
    port = free_port()
    log = d / "opentracker.log"
    popen = subprocess.Popen(
        ["opentracker", "-i", LOOPBACK, "-p", str(port), "-P", str(port)]
        + ["-d", str(d), "-w", "whitelist"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=d,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return Server(popen, port, log)
        if popen.poll() is not None:
            break
        time.sleep(0.05)
    popen.kill()
    raise BenchError(f"opentracker did not start: {log.read_text(errors='replace')[-500:]}")


def vm_hwm_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


class Churn:
    """Registers new peers (10 files each, names as in the registry) through the
    tracker's REST API at ``rate`` per second, on a thread, while in a ``with``: peers
    joining while the load runs, which change the index and so the searches' answers."""

    def __init__(self, url: str, rate: float, vocab: list[str], seed: int) -> None:
        self.url, self.rate, self.vocab = url, rate, vocab
        self.rng = random.Random(seed)
        self.registered = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def __enter__(self) -> Churn:
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = []
        while len(files) < 10:
            name = file_name(self.vocab, self.rng)
            entry = {"content_id": self.rng.randbytes(32).hex(), "name": name, "size": 1}
            with contextlib.suppress(ValueError):  # a name the tracker would refuse
                FileEntry.model_validate(entry)
                files.append(entry)
        return files

    def _run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            body = {
                "address": f"11.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:1",
                "files": self._files(),
            }
            request = urllib.request.Request(
                self.url + "/v1/peers",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                r.read()
            n += 1
            self.registered = n
            self._stop.wait(max(0.0, start + n / self.rate - time.monotonic()))
        self.seconds = time.monotonic() - start


def search_counts(url: str) -> tuple[int, int]:
    """The tracker's searches answered from kept answers, and run, from ``/metrics`` (each
    worker adds its counts every half second: wait that long first)."""
    time.sleep(0.6)
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = dict.fromkeys(("kept", "run"), 0)
    for m in re.finditer(r'^p2pshare_tracker_searches_total\{answer="(\w+)"\} (\S+)$', text, re.M):
        counts[m[1]] = int(float(m[2]))
    return counts["kept"], counts["run"]


# -- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return round(float(m[1]) * _UNITS[m[2]], 3)


def wrk(
    url: str,
    script: Path,
    args: list[str],
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", "5s", "-s", str(script), url, "--", *args]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=seconds + 60,
    )
    out = proc.stdout
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr[-500:]} {out[-500:]}")
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if set(pct) != {"50", "75", "90", "99"}:
        raise BenchError(f"cannot read wrk's latency distribution in:\n{out}")
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert total is not None
    return {
        "connections": connections,
        "seconds": seconds,
        "requests": int(total[1]),
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), 1),  # type: ignore[index]
        "p50_ms": _ms(pct["50"]),
        "p90_ms": _ms(pct["90"]),
        "p99_ms": _ms(pct["99"]),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


# -- search client ------------------------------------------------------------------------


async def _search_worker(
    port: int, queries: list[str], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        for q in queries:
            req = f"GET /v1/search?q={q} HTTP/1.1\r\nHost: tracker\r\n\r\n".encode()
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"content-length: (\d+)", head, re.I)
            if m is None:
                raise BenchError(f"no content-length in {head!r}")
            await reader.readexactly(int(m[1]))
            latencies.append((time.perf_counter() - t0) * 1e3)
            status = int(head.split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def search_latency(port: int, queries: list[str], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    chunks = [queries[i::concurrency] for i in range(concurrency)]

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(_search_worker(port, c, latencies, statuses) for c in chunks))
        return time.perf_counter() - t0

    elapsed = asyncio.run(run())
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(latencies[-1], 3),
        "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
    }


def search_queries(vocab: list[str], n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        q = rng.choice(vocab)
        if rng.random() < 0.5:
            q += "+" + rng.choice(vocab)
        out.append(q)
    return out


# -- the runs -----------------------------------------------------------------------------


def run_load(args: argparse.Namespace, report: dict[str, Any]) -> None:
    peers, per_peer = (2_000, 10) if args.quick else (10_000, 10)
    seconds = 3 if args.quick else 10
    rng = random.Random(4)
    vocab = vocabulary(5_000, rng)
    db = OUT / "load.db"
    t0 = time.monotonic()
    creds = build_registry(db, peers, per_peer, vocab, seed=4)
    print(f"load: registered {peers} peers x {per_peer} files in {time.monotonic() - t0:.1f}s")
    peers_file, words_file = OUT / "peers.txt", OUT / "words.txt"
    peers_file.write_text("".join(f"{i} {t}\n" for i, t in creds))
    words_file.write_text("\n".join(vocab) + "\n")
    mix = BENCH / "tracker_mix.lua"
    wargs = [str(peers_file), str(words_file), "20"]
    load: dict[str, Any] = {"peers": peers, "files_per_peer": per_peer, "runs": []}
    report["load"] = load

    hashes = [rng.randbytes(20).hex() for _ in range(100)]
    (OUT / "hashes.txt").write_text("".join(h + "\n" for h in hashes))
    ot_args = [str(OUT / "hashes.txt"), str(peers)]
    ot_script = BENCH / "tracker_announce.lua"
    load["opentracker"] = []
    tracker = start_tracker(
        db, OUT / "tracker-load.log", args.workers, args.rate_limit, args.search_cache_mb
    )
    ot = start_opentracker(OUT / "opentracker", hashes)
    try:
        url = f"http://{LOOPBACK}:{tracker.port}"
        ot_url = f"http://{LOOPBACK}:{ot.port}"
        load["tracker_processes"] = len(tracker.pids())
        # warm up: the tracker keeps search answers (search_cache_mb), and a tracker that
        # has served for a while has most of them; 10 s of the mix keep ~90% of them
        warm = 3 if args.quick else 10
        wrk(url, mix, wargs, connections=64, seconds=warm)
        wrk(ot_url, ot_script, ot_args, connections=64, seconds=warm)
        # the two servers take turns, so that both see the same machine: on a shared
        # VM the speed of the CPUs moves by a third from one minute to the next
        for rnd in range(args.rounds):
            for c in (64, 256):
                before = search_counts(url)
                with Churn(url, args.churn, vocab, seed=len(load["runs"])) as churn:
                    r = wrk(url, mix, wargs, connections=c, seconds=seconds)
                r["round"] = rnd
                if args.churn:
                    r["registrations_per_s"] = round(churn.registered / max(churn.seconds, 1e-9), 1)
                r["searches_kept"], r["searches_run"] = (
                    now - then for now, then in zip(search_counts(url), before, strict=True)
                )
                load["runs"].append(r)
                print(
                    f"load: p2pshare tracker c={c}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms,"
                    f" p99 {r['p99_ms']} ms, non-2xx {r['non_2xx']}, socket errors"
                    f" {r['socket_errors']}; searches answered from kept answers"
                    f" {r['searches_kept']}, run {r['searches_run']}"
                    + (
                        f"; {r['registrations_per_s']} registrations/s"
                        if "registrations_per_s" in r
                        else ""
                    ),
                    flush=True,
                )
                r = wrk(ot_url, ot_script, ot_args, connections=c, seconds=seconds)
                r["round"] = rnd
                load["opentracker"].append(r)
                print(
                    f"load: opentracker announce c={c}: {r['rps']:.0f} req/s,"
                    f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, non-2xx {r['non_2xx']}",
                    flush=True,
                )
        rate, threads, conns = 2000, 2, 64
        r = wrk(
            url,
            mix,
            [*wargs, str(rate / threads)],
            connections=conns,
            seconds=seconds,
            threads=threads,
            env={"P2P_FIXED_RATE": "1"},
        )
        r["offered_rps"] = rate
        load["fixed_rate"] = r
        print(
            f"load: p2pshare tracker at {rate} req/s offered ({r['rps']:.0f} done, c={conns}):"
            f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, non-2xx {r['non_2xx']}",
            flush=True,
        )
        load["rss_mb"] = vm_hwm_mb(tracker.pids())
        load["rss_mb_per_process"] = [vm_hwm_mb([pid]) for pid in tracker.pids()]
        print(
            f"load: tracker VmHWM {load['rss_mb']} MB ({load['tracker_processes']} processes:"
            f" {', '.join(str(m) for m in load['rss_mb_per_process'])} MB)"
        )
    finally:
        tracker.stop()
        ot.stop()
    best = max(r["rps"] for r in load["runs"])
    best_ot = max(r["rps"] for r in load["opentracker"])
    load["ratio_vs_opentracker"] = round(best / best_ot, 3)
    # each turn against the opentracker turn right after it, at the same connections
    load["ratio_by_turn"] = [
        {
            "round": a["round"],
            "connections": a["connections"],
            "ratio": round(a["rps"] / b["rps"], 3),
        }
        for a, b in zip(load["runs"], load["opentracker"], strict=True)
    ]


def run_search(args: argparse.Namespace, report: dict[str, Any]) -> None:
    peers, per_peer = (2_000, 50) if args.quick else (20_000, 50)
    n = 1_000 if args.quick else 5_000
    rng = random.Random(5)
    vocab = vocabulary(20_000, rng)
    db = OUT / "search.db"
    t0 = time.monotonic()
    build_registry(db, peers, per_peer, vocab, seed=5)
    built = time.monotonic() - t0
    print(f"search: indexed {peers * per_peer} files ({peers} peers) in {built:.1f}s", flush=True)
    search: dict[str, Any] = {"files": peers * per_peer, "peers": peers, "runs": []}
    report["search"] = search
    tracker = start_tracker(
        db, OUT / "tracker-search.log", args.workers, args.rate_limit, args.search_cache_mb
    )
    try:
        search_latency(tracker.port, search_queries(vocab, 200, rng), 1)  # warm up
        for conc in (1, 8, 32):
            r = search_latency(tracker.port, search_queries(vocab, n, rng), conc)
            search["runs"].append(r)
            print(
                f"search: {r['requests']} searches, {conc} at a time: {r['rps']:.0f} req/s,"
                f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, non-2xx {r['non_2xx']}",
                flush=True,
            )
        search["rss_mb"] = vm_hwm_mb(tracker.pids())
    finally:
        tracker.stop()


def verdicts(report: dict[str, Any]) -> list[str]:
    lines = []
    load = report.get("load")
    if load:
        fr = load["fixed_rate"]
        lines.append(
            f"p99 at {fr['offered_rps']} req/s: {fr['p99_ms']} ms (goal < 20 ms):"
            f" {'MET' if fr['p99_ms'] < 20 else 'MISSED'}"
        )
        ratio = load["ratio_vs_opentracker"]
        lines.append(
            f"saturation throughput / opentracker: {ratio:.2f} (goal >= 0.5):"
            f" {'MET' if ratio >= 0.5 else 'MISSED'}"
        )
        lines.append(
            f"tracker RSS with {load['peers']} peers: {load['rss_mb']} MB (goal < 300 MB):"
            f" {'MET' if load['rss_mb'] < 300 else 'MISSED'}"
        )
        bad = sum(r["non_2xx"] for r in [*load["runs"], fr])
        lines.append(f"non-2xx answers: {bad} (must be 0): {'MET' if bad == 0 else 'MISSED'}")
    search = report.get("search")
    if search:
        # the goal is checked one at a time and 8 at a time; 32 at a time is reported
        # too, but on two CPUs shared with the Python client it measures queueing
        worst = max(r["p99_ms"] for r in search["runs"] if r["concurrency"] <= 8)
        lines.append(
            f"search p99 over {search['files']} files, up to 8 at a time: {worst} ms"
            f" (goal < 10 ms): {'MET' if worst < SEARCH_GOAL_P99_MS else 'MISSED'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2,000 peers, 3 s runs")
    parser.add_argument("--skip-search", action="store_true", help="no 1M-file search run")
    parser.add_argument("--skip-load", action="store_true", help="no load run")
    parser.add_argument(
        "--rounds", type=int, default=2, help="turns of each server at each connection count"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="P2PSHARE_TRACKER_WORKERS for the tracker"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0,
        help="P2PSHARE_TRACKER_RATE_LIMIT for the tracker (default 0: off, since all the"
        " load comes from 127.0.0.1)",
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0,
        help="new peers registered per second while the tracker's load runs (default 0)",
    )
    parser.add_argument(
        "--search-cache-mb",
        type=int,
        default=None,
        help="P2PSHARE_TRACKER_SEARCH_CACHE_MB for the tracker (default: the tracker's; 0:"
        " every search searches the index)",
    )
    args = parser.parse_args(argv)
    ensure_tools()
    OUT.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "command": " ".join(["bench/tracker_load.py", *(argv or sys.argv[1:])]),
        "quick": args.quick,
    }
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    report["commit"] = git.stdout.strip()
    try:
        if not args.skip_load:
            run_load(args, report)
        if not args.skip_search:
            run_search(args, report)
    except BenchError as exc:
        print(f"tracker_load: {exc}", file=sys.stderr)
        return 1
    report["verdicts"] = verdicts(report)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"\nmachine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB")
    for line in report["verdicts"]:
        print(line)
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
