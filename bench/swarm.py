"""Swarm benchmark: one seeder, N downloaders starting together, over loopback.

Both tools in the same run, each on its own (127.0.0.1 only):

* aria2 BitTorrent: opentracker (whitelisted info hash), one seeding aria2c and N
  leeching aria2c, each its own process and listen port, DHT/LPD/PEX off. Leechers keep
  seeding until the last one is done (``--seed-time`` long, ``--seed-ratio=0``); each
  one's completion time is written by an ``--on-bt-download-complete`` hook.
* p2pshare: ``p2pshare tracker``, one seeding peer and N downloading peers; the N
  downloads are started at once through each peer's control API and followed by
  long-polling it until "complete" or "failed". Peers still downloading serve the
  pieces they have (partial sharing).

The time is from the start until the last downloader holds the whole file; every copy
is then checked with ``cmp`` against the source. Printed: seconds, aggregate MB/s
(N x size / time), the ratio aria2 time / p2pshare time (goal > 1), peak RSS (VmHWM)
of the seeder and of the largest downloader, and CPU seconds per kind of process.

    .venv/bin/python bench/swarm.py [--quick] [--size MiB] [--leechers N]
        [--runs N] [--only aria2,p2pshare] [--markdown bench/SWARM.md]

Every process started here runs in its own process group and is stopped on exit
(also on failure, timeout or Ctrl-C); their group ids are in bench/work/swarm/pids.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
from bench import (  # noqa: E402
    LOOPBACK,
    MB,
    MIB,
    P2PSHARE,
    PEER_READY,
    ROOT,
    TRACKER_READY,
    WORK,
    BenchError,
    aria2_args,
    cpu_busy,
    cpu_seconds,
    drop_outputs,
    fmt,
    free_port,
    fresh_dir,
    http_json,
    info_hash,
    machine_info,
    make_source,
    p2pshare_available,
    same_bytes,
    scrape_complete,
    table,
    wait_idle,
    wait_line,
    wait_port,
)

SWORK = WORK / "swarm"


def log(msg: str) -> None:
    print(f"[swarm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- processes


class Procs(bench.Procs):
    """bench.py's process groups, plus stopping many at once (a swarm has ten)."""

    def stop_many(self, procs: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
        """SIGTERM them all at once, then wait, then SIGKILL what is left."""
        for p in procs:
            if p.pid in self.live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        for p in procs:
            self.stop(p, grace=0.1)

    def stop_all(self) -> None:
        self.stop_many([p for _, p in self.live.values()], grace=3.0)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and of its waited-for children)."""
    return sum(cpu_seconds(pid))


def status_mb(pid: int, key: str) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Role:
    """A process of the swarm, with what it cost during the timed part."""

    kind: str  # tracker, seeder, leecher
    proc: subprocess.Popen[bytes]
    cpu0: float = 0.0
    cpu: float = 0.0
    hwm_mb: float = 0.0

    def mark(self) -> None:
        self.cpu0 = cpu_s(self.proc.pid)

    def measure(self) -> None:
        self.cpu = cpu_s(self.proc.pid) - self.cpu0
        self.hwm_mb = status_mb(self.proc.pid, "VmHWM")


@dataclass
class Result:
    tool: str
    leechers: int
    size: int
    seconds: float | None = None
    finish_s: list[float] = field(default_factory=list)  # each leecher, from the start
    cpu_by_kind: dict[str, float] = field(default_factory=dict)
    seeder_hwm_mb: float = 0.0
    leecher_hwm_mb: float = 0.0
    cpu_busy_before_pct: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def mbps(self) -> float | None:
        return self.leechers * self.size / self.seconds / MB if self.seconds else None

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "aggregate_mbps": None if self.mbps is None else round(self.mbps, 1),
            "finish_s": [round(x, 2) for x in self.finish_s],
            "cpu_s_by_kind": {k: round(v, 2) for k, v in self.cpu_by_kind.items()},
            "seeder_vmhwm_mb": round(self.seeder_hwm_mb, 1),
            "largest_leecher_vmhwm_mb": round(self.leecher_hwm_mb, 1),
            "cpu_busy_before_pct": self.cpu_busy_before_pct,
            "error": self.error,
            **self.extra,
        }


def summarize(res: Result, roles: list[Role]) -> None:
    for r in roles:
        r.measure()
        res.cpu_by_kind[r.kind] = res.cpu_by_kind.get(r.kind, 0.0) + r.cpu
    res.seeder_hwm_mb = max((r.hwm_mb for r in roles if r.kind == "seeder"), default=0.0)
    res.leecher_hwm_mb = max((r.hwm_mb for r in roles if r.kind == "leecher"), default=0.0)


class CpuSampler:
    """Samples each role's CPU share every second: how busy each kind was over time."""

    def __init__(self, roles: list[Role]) -> None:
        self.roles = roles
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last = {r.proc.pid: cpu_s(r.proc.pid) for r in self.roles}
        while not self._stop.wait(1.0):
            row: dict[str, float] = {}
            for r in self.roles:
                now = cpu_s(r.proc.pid)
                row[r.kind] = row.get(r.kind, 0.0) + now - last[r.proc.pid]
                last[r.proc.pid] = now
            self.samples.append(row)


# ---------------------------------------------------------------- aria2


HOOK = """#!/bin/sh
# aria2c runs this when a torrent is complete (before it seeds): $3 is the file.
date +%s.%N > "$3.done.tmp" && mv "$3.done.tmp" "$3.done"
"""


class Aria2Swarm:
    tool = "aria2"

    def __init__(self, procs: Procs, src: Path, n: int, timeout: float) -> None:
        self.procs, self.src, self.n, self.timeout = procs, src, n, timeout
        self.d = SWORK / "bt"
        self.torrent = self.d / f"{src.name}.torrent"
        self.base: list[Role] = []

    def setup(self) -> None:
        d = fresh_dir(self.d)
        (d / "hook.sh").write_text(HOOK)
        (d / "hook.sh").chmod(0o755)
        tport = free_port()
        r = subprocess.run(
            ["mktorrent", "-a", f"http://{LOOPBACK}:{tport}/announce", "-l", "20", "-t", "2"]
            + ["-o", str(self.torrent), str(self.src)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if r.returncode != 0:
            raise BenchError(f"mktorrent exited {r.returncode}: {r.stderr.strip()[-300:]}")
        ih = info_hash(self.torrent.read_bytes())
        # Debian's opentracker tracks only whitelisted hashes; it chroots into -d.
        (d / "whitelist").write_text(ih.hex() + "\n")
        tracker = self.procs.start(
            "opentracker",
            ["opentracker", "-i", LOOPBACK, "-p", str(tport), "-P", str(tport)]
            + ["-d", str(d), "-w", "whitelist"],
            d / "opentracker.log",
            cwd=d,
        )
        wait_port(tport, tracker, 10, "opentracker")
        seeder = self.procs.start(
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
        self.base = [Role("tracker", tracker), Role("seeder", seeder)]
        deadline = time.monotonic() + 30
        while True:
            if seeder.poll() is not None:
                raise BenchError(f"seeding aria2c exited with {seeder.returncode}")
            with contextlib.suppress(OSError):
                if scrape_complete(tport, ih) >= 1:
                    break
            if time.monotonic() > deadline:
                raise BenchError("the seeding aria2c did not announce within 30s")
            time.sleep(0.1)
        log(f"aria2: opentracker on :{tport}, seeder announced")

    def run(self, res: Result, settle: float) -> None:
        outs = [fresh_dir(self.d / f"dl{i}") for i in range(self.n)]
        # All listen ports first: picking one while others start could race.
        ports = [free_port() for _ in range(self.n)]
        time.sleep(settle)
        leechers: list[Role] = []
        try:
            for r in self.base:
                r.mark()
            t0_wall = time.time()
            t0 = time.perf_counter()
            for i, out in enumerate(outs):
                proc = self.procs.start(
                    f"aria2c-leech{i}",
                    [
                        *aria2_args(ports[i], self.d / f"dl{i}.log"),
                        f"--dir={out}",
                        "--seed-ratio=0",
                        "--seed-time=1000",  # minutes: stopped by us when all are done
                        "--file-allocation=falloc",
                        f"--bt-stop-timeout={int(self.timeout)}",
                        f"--on-bt-download-complete={self.d / 'hook.sh'}",
                        self.torrent,
                    ],
                    self.d / f"dl{i}.out",
                )
                leechers.append(Role("leecher", proc))
            roles = self.base + leechers
            markers = [out / (self.src.name + ".done") for out in outs]
            with CpuSampler(roles) as sampler:
                while not all(m.exists() for m in markers):
                    for i, r in enumerate(leechers):
                        if r.proc.poll() is not None and not markers[i].exists():
                            raise BenchError(
                                f"aria2c leecher {i} exited {r.proc.returncode} before done"
                            )
                    if time.perf_counter() - t0 > self.timeout:
                        done = sum(m.exists() for m in markers)
                        raise BenchError(f"{done}/{self.n} done after {self.timeout:.0f}s")
                    time.sleep(0.05)
            wall = time.perf_counter() - t0
            res.finish_s = sorted(float(m.read_text()) - t0_wall for m in markers)
            res.seconds = res.finish_s[-1]
            res.extra["cpu_samples"] = sampler.samples
            res.extra["poll_wall_s"] = round(wall, 3)
            summarize(res, roles)
        finally:
            self.procs.stop_many([r.proc for r in leechers])
        for i, out in enumerate(outs):
            if not same_bytes(self.src, out / self.src.name):
                raise BenchError(f"aria2c leecher {i}'s copy differs from the source")
        log(f"aria2: all {self.n} copies identical to the source (cmp)")
        drop_outputs(*outs)

    def teardown(self) -> None:
        self.procs.stop_many([r.proc for r in self.base])


# ---------------------------------------------------------------- p2pshare


class P2PSwarm:
    tool = "p2pshare"

    def __init__(self, procs: Procs, src: Path, n: int, timeout: float) -> None:
        self.procs, self.src, self.n, self.timeout = procs, src, n, timeout
        self.d = SWORK / "p2p"
        self.base: list[Role] = []
        self.turl = ""
        self.seed_api = ""
        self.cid = ""

    def start_peer(self, name: str, share: Path, data: Path) -> tuple[Role, str, str]:
        logfile = self.d / f"{name}.log"
        proc = self.procs.start(
            name,
            [P2PSHARE, "peer", "--host", LOOPBACK, "--share", share, "--data", data]
            + ["--tracker", self.turl, "--port", "0", "--api-port", "0"],
            logfile,
        )
        kind = "seeder" if name == "seeder" else "leecher"
        return Role(kind, proc), str(logfile), name

    def wait_peer(self, role: Role, logfile: str, name: str, timeout: float) -> str:
        m = wait_line(Path(logfile), PEER_READY, role.proc, timeout, f"peer {name}")
        return m.group(2).rstrip(",.")

    def setup(self) -> None:
        d = fresh_dir(self.d)
        tlog = d / "tracker.log"
        tracker = self.procs.start(
            "p2pshare-tracker",
            [P2PSHARE, "tracker", "--host", LOOPBACK, "--port", "0", "--db", d / "tracker.db"],
            tlog,
        )
        self.base = [Role("tracker", tracker)]
        self.turl = wait_line(tlog, TRACKER_READY, tracker, 60, "tracker").group(1).rstrip(",.")
        t0 = time.perf_counter()
        seeder, slog, _ = self.start_peer("seeder", self.src.parent, d / "seeder-data")
        self.base.append(seeder)
        size = self.src.stat().st_size
        self.seed_api = self.wait_peer(seeder, slog, "seeder", 120 + size / (20 * MB))
        log(f"p2pshare: seeder ready in {time.perf_counter() - t0:.1f}s, api {self.seed_api}")
        files = http_json("GET", f"{self.seed_api}/v1/files")["files"]
        hit = [f for f in files if f["name"] == self.src.name and f["size"] == size]
        if not hit:
            raise BenchError(f"the seeder does not share {self.src.name}: {files}")
        self.cid = hit[0]["content_id"]
        # Wait until the tracker lists the seeder as a provider.
        url = f"{self.turl}/v1/files/{self.cid}/providers"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(BenchError, OSError):
                if http_json("GET", url, timeout=5)["providers"]:
                    break
            if time.monotonic() > deadline:
                raise BenchError("the tracker does not list the seeder within 60s")
            time.sleep(0.2)
        log(f"p2pshare: tracker {self.turl} lists the seeder of {self.cid[:16]}")

    def run(self, res: Result, settle: float) -> None:
        d = self.d
        leechers: list[Role] = []
        apis: list[str] = []
        outs = [fresh_dir(d / f"out{i}") for i in range(self.n)]
        dirs = [(fresh_dir(d / f"share{i}"), fresh_dir(d / f"data{i}")) for i in range(self.n)]
        try:
            started = [self.start_peer(f"leech{i}", *dirs[i]) for i in range(self.n)]
            leechers = [s[0] for s in started]
            apis = [self.wait_peer(*s, 60) for s in started]
            time.sleep(settle)
            roles = self.base + leechers
            for r in roles:
                r.mark()
            served0 = self.served(apis)
            views: list[dict[str, Any] | None] = [None] * self.n
            finish: list[float | None] = [None] * self.n
            errors: list[str] = []
            t0 = time.perf_counter()
            deadline = t0 + self.timeout

            def follow(i: int) -> None:
                try:
                    body = {"content_id": self.cid, "out_dir": str(outs[i])}
                    view = http_json("POST", f"{apis[i]}/v1/downloads", body)
                    path = f"{apis[i]}/v1/downloads/{self.cid}"
                    while view["state"] not in ("complete", "failed"):
                        if time.perf_counter() > deadline:
                            raise BenchError(f"leecher {i}: {view['state']} at the deadline")
                        q = urllib.parse.urlencode({"after": view["version"], "wait": 5})
                        view = http_json("GET", f"{path}?{q}", timeout=30)
                    finish[i] = time.perf_counter() - t0
                    views[i] = view
                except (BenchError, OSError, ValueError) as exc:
                    errors.append(f"leecher {i}: {exc}")

            threads = [
                threading.Thread(target=follow, args=(i,), daemon=True) for i in range(self.n)
            ]
            with CpuSampler(roles) as sampler:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(max(0.0, deadline - time.perf_counter()) + 40)
            if errors:
                raise BenchError("; ".join(errors))
            failed = [
                f"leecher {i}: {v['error']}"
                for i, v in enumerate(views)
                if v and v["state"] == "failed"
            ]
            if failed or None in finish:
                raise BenchError("; ".join(failed) or "a download did not end")
            summarize(res, roles)
            served1 = self.served(apis)
            res.finish_s = sorted(f for f in finish if f is not None)
            res.seconds = res.finish_s[-1]
            res.extra["cpu_samples"] = sampler.samples
            res.extra["served_mb"] = {
                k: round((served1.get(k, 0) - served0.get(k, 0)) / MB, 1) for k in served1
            }
            res.extra["download_views"] = [
                {k: v[k] for k in ("seconds", "providers", "banned", "rate")} for v in views if v
            ]
            paths = [Path(v["path"]) if v and v.get("path") else None for v in views]
        finally:
            self.procs.stop_many([r.proc for r in leechers])
        for i, p in enumerate(paths):
            if p is None or not same_bytes(self.src, p):
                raise BenchError(f"p2pshare leecher {i}'s copy differs from the source ({p})")
        log(f"p2pshare: all {self.n} copies identical to the source (cmp)")
        drop_outputs(*outs, *(x for pair in dirs for x in pair))

    def served(self, apis: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, api in [("seeder", self.seed_api)] + [
            (f"leech{i}", a) for i, a in enumerate(apis)
        ]:
            with contextlib.suppress(BenchError, OSError, ValueError, KeyError):
                out[name] = int(http_json("GET", f"{api}/v1/status", timeout=10)["bytes_served"])
        return out

    def teardown(self) -> None:
        self.procs.stop_many([r.proc for r in self.base])


# ---------------------------------------------------------------- report


def report(results: dict[str, list[Result]], n: int, size: int, info: dict[str, Any]) -> str:
    rows = [
        [
            "tool",
            "last done s",
            "first done s",
            "agg MB/s",
            "seeder HWM MB",
            "max leecher HWM MB",
            "CPU s tracker/seeder/leechers",
        ]
    ]
    best: dict[str, float] = {}
    for tool, runs in results.items():
        for k, r in enumerate(runs):
            label = tool if len(runs) == 1 else f"{tool} #{k + 1}"
            if r.error or r.seconds is None:
                rows.append([label, "FAILED", "-", "-", "-", "-", (r.error or "")[:60]])
                continue
            best[tool] = min(best.get(tool, r.seconds), r.seconds)
            c = r.cpu_by_kind
            rows.append(
                [
                    label,
                    f"{r.seconds:.2f}",
                    f"{r.finish_s[0]:.2f}",
                    fmt(r.mbps),
                    f"{r.seeder_hwm_mb:.0f}",
                    f"{r.leecher_hwm_mb:.0f}",
                    f"{c.get('tracker', 0):.1f} / {c.get('seeder', 0):.1f} / "
                    f"{c.get('leecher', 0):.1f}",
                ]
            )
    text = [
        f"swarm: 1 seeder + {n} leechers, {size // MIB} MiB file, loopback; "
        f"{info['nproc']} CPUs ({info['cpu']}), {info['mem_gib']} GiB; MB = 10^6 bytes",
        f"(all {n + 2} processes of a swarm share the {info['nproc']} CPUs)",
        "",
        table(rows),
    ]
    if "aria2" in best and "p2pshare" in best:
        ratio = best["aria2"] / best["p2pshare"]
        text += [
            "",
            f"ratio aria2 time / p2pshare time: {ratio:.2f} (goal > 1: "
            f"{'met' if ratio > 1 else 'NOT met'})",
        ]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/swarm.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 MiB, 3 leechers")
    ap.add_argument("--size", type=int, default=None, help="file size in MiB (default 512)")
    ap.add_argument("--leechers", type=int, default=None, help="downloaders (default 8)")
    ap.add_argument("--runs", type=int, default=1, help="rounds, each tool once per round")
    ap.add_argument("--only", default="aria2,p2pshare", help="tools: aria2, p2pshare")
    ap.add_argument("--settle", type=float, default=4.0, help="pause before each timed run (s)")
    ap.add_argument("--timeout", type=float, default=None, help="hard limit per run (s)")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        help="wait up to S s for idle CPUs (at start and before each run)",
    )
    ap.add_argument("--markdown", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    size_mib = args.size or (64 if args.quick else 512)
    n = args.leechers or (3 if args.quick else 8)
    tools = [t.strip() for t in args.only.split(",") if t.strip()]
    if set(tools) - {"aria2", "p2pshare"} or n < 1 or size_mib < 1 or args.runs < 1:
        ap.error("bad --only, --size, --leechers or --runs")
    size = size_mib * MIB
    timeout = args.timeout or 120 + n * size / (5 * MB)
    SWORK.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with &
    if "p2pshare" in tools and (why := p2pshare_available()):
        log(f"p2pshare unavailable: {why}")
        return 1
    info = machine_info()
    info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    procs = Procs()
    results: dict[str, list[Result]] = {t: [] for t in tools}
    parts: dict[str, Aria2Swarm | P2PSwarm] = {}
    try:
        src = make_source(size)
        if args.wait_idle > 0:
            wait_idle(args.wait_idle)
        for t in tools:
            part = (Aria2Swarm if t == "aria2" else P2PSwarm)(procs, src, n, timeout)
            try:
                part.setup()
                parts[t] = part
            except BenchError as exc:
                log(f"{t}: setup FAILED: {exc}")
                results[t].append(Result(t, n, size, error=f"setup: {exc}"))
                part.teardown()
        for k in range(args.runs):
            for t, part in list(parts.items()):
                res = Result(t, n, size)
                if args.wait_idle > 0:  # other work on the machine, or our own writeback
                    wait_idle(args.wait_idle)
                res.cpu_busy_before_pct = busy = cpu_busy()
                if busy > 20:
                    log(f"warning: CPUs {busy:.0f}% busy before {t}: figures will be noisy")
                log(f"{t} run {k + 1}/{args.runs}: {n} leechers, {size_mib} MiB")
                try:
                    part.run(res, args.settle)
                    log(
                        f"{t}: last done at {res.seconds:.2f}s ({fmt(res.mbps)} MB/s aggregate), "
                        f"finish times {[round(x, 1) for x in res.finish_s]}, CPU s "
                        f"{ {kk: round(v, 1) for kk, v in res.cpu_by_kind.items()} }"
                    )
                except BenchError as exc:
                    res.error = str(exc)
                    log(f"{t}: FAILED: {exc}")
                results[t].append(res)
    finally:
        for part in parts.values():
            part.teardown()
        procs.stop_all()
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    command = ".venv/bin/python bench/swarm.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = {
        "command": command.strip(),
        "machine": info,
        "leechers": n,
        "bytes": size,
        "settle_s": args.settle,
        "results": {t: [r.to_json() for r in rs] for t, rs in results.items()},
    }
    (SWORK / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    text = report(results, n, size, info)
    print()
    print(text)
    print(f"\nresults: {(SWORK / 'results.json').relative_to(ROOT)}")
    if args.markdown:
        args.markdown.write_text(markdown(out, text))
        print(f"written: {args.markdown}")
    failed = any(r.error for rs in results.values() for r in rs)
    return 1 if failed else 0


def markdown(out: dict[str, Any], text: str) -> str:
    m = out["machine"]
    return (
        "# Swarm benchmark (issue 4, benchmark 1)\n\n"
        f"Command: `{out['command']}`  \n"
        f"Date: {m['date_utc']}, p2pshare at commit `{m['git_commit']}`"
        + (" with uncommitted changes to src/" if m.get("src_modified") else "")
        + "  \n"
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}; {m['tools']['aria2c']}  \n"
        f"Load average at start / end: {' '.join(m['loadavg_start'])} / "
        f"{' '.join(m['loadavg_end'])}\n\n"
        "```\n" + text + "\n```\n"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
