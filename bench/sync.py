"""Folder sync benchmark (issue 16): a file changed in place at a publisher, N
subscribers following it, over loopback.

p2pshare: a tracker, one publishing peer sharing a random file, N subscribing peers,
each with a subscription of the file into a folder of its own (one-way, outside its
share). Once every subscriber holds the first version, each run writes ``--change-mib``
of random bytes in place into the publisher's file (one ``pwrite``, at an offset that
does not start a piece: the change touches two pieces) and waits until every
subscriber reports the new version in place (its subscription's ``replaced`` event,
timed by the subscriber's clock). Measured per run:

* the time from the publisher's write to the last subscriber's new verified version
  in place (goal < 2 s);
* the bytes each subscriber downloaded for it, against the bytes of the pieces the
  change touched (goal <= 1.1 x);
* the bytes it took from its old copy instead.

Each copy is then compared with the publisher's file (SHA-256).

The page cache (``--cache``): a subscriber's old copy may or may not be in memory
when a change comes, and copying its unchanged pieces costs much more from the disk.
``cold`` runs start with the page cache dropped (``sync; echo 3 >
/proc/sys/vm/drop_caches``, root only), then the publisher's file read once (it is
the file just worked on): every subscriber's old copy comes from the disk. ``warm``
runs drop nothing (the old copies are what the previous run wrote, mostly cached).
``both`` (the default) alternates, cold first; each row says which it was. The same
for both tools.

    .venv/bin/python bench/sync.py [--quick] [--size-mib 256] [--change-mib 1]
        [--subscribers 5] [--runs 4] [--cache both|cold|warm] [--markdown bench/SYNC.md]

Every process started here runs in its own process group and is stopped on exit
(also on failure, timeout or Ctrl-C); their group ids are in bench/work/sync/pids.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (  # noqa: E402
    LOOPBACK,
    MIB,
    P2PSHARE,
    PEER_READY,
    TRACKER_READY,
    WORK,
    BenchError,
    Procs,
    cpu_busy,
    free_port,
    fresh_dir,
    http_json,
    machine_info,
    table,
    wait_line,
    write_random,
)

SWORK = WORK / "sync"
NAME = "data.bin"
GOAL_SECONDS = 2.0
GOAL_RATIO = 1.1


def log(msg: str) -> None:
    print(f"[sync {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def events(api: str) -> list[dict[str, Any]]:
    subs = http_json("GET", api + "/v1/subscriptions", timeout=10)["subscriptions"]
    return subs[0]["events"] if subs else []


def wait_events(apis: list[str], action: str, counts: list[int], timeout: float) -> list[dict]:
    """The first event ``action`` after ``counts[i]`` events at each subscriber."""
    found: list[dict[str, Any] | None] = [None] * len(apis)
    deadline = time.monotonic() + timeout
    while None in found:
        if time.monotonic() > deadline:
            missing = [i for i, f in enumerate(found) if f is None]
            raise BenchError(f"subscribers {missing} got no {action!r} within {timeout} s")
        for i, api in enumerate(apis):
            if found[i] is None:
                new = events(api)[counts[i] :]
                failed = [e for e in new if e["action"] == "failed"]
                if failed:
                    raise BenchError(f"subscriber {i}: {failed[0]}")
                hit = [e for e in new if e["action"] == action]
                if hit:
                    found[i] = hit[0]
        time.sleep(0.02)
    return [f for f in found if f is not None]


class P2PTool:
    """p2pshare: a tracker, a publishing peer, N subscribing peers (one-way folders)."""

    name = "p2pshare"

    def __init__(self, procs: Procs, n: int) -> None:
        self.procs, self.n = procs, n
        self.root = fresh_dir(SWORK / "p2pshare")
        self.src = self.root / "publisher" / "share" / NAME
        self.folders = [self.root / f"sub{i}" / "folder" for i in range(n)]
        self.apis: list[str] = []
        self._counts: list[int] = []

    def _peer(self, name: str, tracker: str, seed: str = "") -> tuple[str, str]:
        root = fresh_dir(self.root / name)
        share = root / "share"
        share.mkdir()
        logfile = self.root / f"{name}.log"
        argv = [P2PSHARE, "peer", "--host", LOOPBACK, "--share", share, "--data", root / "data"]
        argv += ["--tracker", tracker, "--port", "0", "--api-port", "0"]
        if seed:
            argv += ["--seed", seed]
        proc = self.procs.start(f"p2p-{name}", argv, logfile)
        m = wait_line(logfile, PEER_READY, proc, 60, f"peer {name}")
        return m.group(1).rstrip(","), m.group(2).rstrip(",.")

    def start(self, size: int) -> float:
        tlog, db = self.root / "tracker.log", self.root / "tracker.db"
        tproc = self.procs.start(
            "p2p-tracker", [P2PSHARE, "tracker", "--port", "0", "--db", db], tlog
        )
        tracker = wait_line(tlog, TRACKER_READY, tproc, 30, "tracker").group(1)
        pub_addr, _ = self._peer("publisher", tracker)
        write_random(self.src, size)
        self.apis = [self._peer(f"sub{i}", tracker, pub_addr)[1] for i in range(self.n)]
        start = time.time()
        for api, folder in zip(self.apis, self.folders, strict=True):
            http_json(
                "POST", api + "/v1/subscriptions", {"query": NAME, "into": str(folder)}, timeout=10
            )
        first = wait_events(self.apis, "added", [0] * self.n, 300)
        return max(e["at"] for e in first) - start

    def before_change(self) -> None:
        self._counts = [len(events(api)) for api in self.apis]

    def wait_change(self, t0: float) -> list[dict[str, Any]]:
        got = wait_events(self.apis, "replaced", self._counts, 60)
        return [
            {
                "seconds": e["at"] - t0,
                "fetched": e["fetched"],
                "reused": e["reused"],
                "steps": e["steps"],
            }
            for e in got
        ]


class SyncthingTool:
    """Syncthing (Debian's package): the publisher's folder send-only, N receive-only
    copies, every device connected to every other on loopback, no discovery, relays or
    NAT; the file-system watcher on with its shortest delay (1 s; Syncthing's default is
    10 s). A receiver has the new version when its local version of the file is the
    publisher's (REST API polled every 20 ms); its bytes in are from its connections."""

    name = "syncthing"
    KEY = "p2pshare-bench"

    def __init__(self, procs: Procs, n: int) -> None:
        self.procs, self.n = procs, n
        self.root = fresh_dir(SWORK / "syncthing")
        self.homes = [self.root / f"dev{i}" for i in range(n + 1)]  # 0: the publisher
        self.dirs = [h / "folder" for h in self.homes]
        self.src = self.dirs[0] / NAME
        self.folders = self.dirs[1:]
        self.guis: list[str] = []
        self._before: list[int] = []
        self._version: Any = None

    def _get(self, i: int, path: str) -> Any:
        req = urllib.request.Request(self.guis[i] + path, headers={"X-API-Key": self.KEY})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def start(self, size: int) -> float:
        ids, ports, guis = [], [], []
        for home in self.homes:
            home.mkdir(parents=True)
            made = subprocess.run(
                ["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            ids.append(re.search(r"Device ID: (\S+)", made.stdout + made.stderr).group(1))  # type: ignore[union-attr]
            ports.append(free_port())
            guis.append(free_port())
        for i, home in enumerate(self.homes):
            self.dirs[i].mkdir()
            (self.dirs[i] / ".stfolder").mkdir()
            kind = "sendonly" if i == 0 else "receiveonly"
            devices = "".join(f'<device id="{d}" introducedBy=""></device>' for d in ids)
            peers = "".join(
                f'<device id="{d}" name="dev{j}" compression="metadata" introducer="false">'
                f"<address>tcp://{LOOPBACK}:{ports[j]}</address></device>"
                for j, d in enumerate(ids)
            )
            (home / "config.xml").write_text(
                f'<configuration version="36">'
                f'<folder id="bench" label="bench" path="{self.dirs[i]}" type="{kind}"'
                f' rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="1">'
                f"{devices}</folder>{peers}"
                f'<gui enabled="true" tls="false"><address>{LOOPBACK}:{guis[i]}</address>'
                f"<apikey>{self.KEY}</apikey></gui>"
                f"<options><listenAddress>tcp://{LOOPBACK}:{ports[i]}</listenAddress>"
                "<globalAnnounceEnabled>false</globalAnnounceEnabled>"
                "<localAnnounceEnabled>false</localAnnounceEnabled>"
                "<relaysEnabled>false</relaysEnabled><natEnabled>false</natEnabled>"
                "<urAccepted>-1</urAccepted><startBrowser>false</startBrowser>"
                "<autoUpgradeIntervalH>0</autoUpgradeIntervalH>"
                "<crashReportingEnabled>false</crashReportingEnabled></options>"
                "</configuration>\n"
            )
        write_random(self.src, size)
        self.guis = [f"http://{LOOPBACK}:{g}" for g in guis]
        start = time.time()
        for i, home in enumerate(self.homes):
            self.procs.start(
                f"st-dev{i}",
                ["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart"],
                self.root / f"dev{i}.log",
            )
        deadline = time.monotonic() + 300
        while True:
            try:
                if all(self._has_publishers_version(i) for i in range(1, self.n + 1)):
                    return time.time() - start
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise BenchError("syncthing: the first version did not reach every receiver")
            time.sleep(0.1)

    def _has_publishers_version(self, i: int) -> bool:
        pub = self._get(0, f"/rest/db/file?folder=bench&file={NAME}")["local"]
        mine = self._get(i, f"/rest/db/file?folder=bench&file={NAME}")["local"]
        return (
            bool(pub["version"])
            and mine["version"] == pub["version"]
            and (self._version is None or pub["version"] != self._version)
        )

    def _bytes_in(self, i: int) -> int:
        return int(self._get(i, "/rest/system/connections")["total"]["inBytesTotal"])

    def before_change(self) -> None:
        self._version = self._get(0, f"/rest/db/file?folder=bench&file={NAME}")["local"]["version"]
        self._before = [self._bytes_in(i) for i in range(1, self.n + 1)]

    def wait_change(self, t0: float) -> list[dict[str, Any]]:
        done: dict[int, float] = {}
        deadline = time.monotonic() + 60
        while len(done) < self.n:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"syncthing: receivers {set(range(1, self.n + 1)) - set(done)} late"
                )
            for i in range(1, self.n + 1):
                if i not in done and self._has_publishers_version(i):
                    done[i] = time.time() - t0
            time.sleep(0.02)
        time.sleep(0.5)  # the connections' counters are updated every few hundred ms
        return [
            {
                "seconds": done[i],
                "fetched": self._bytes_in(i) - self._before[i - 1],
                "reused": None,
                "steps": {},
            }
            for i in range(1, self.n + 1)
        ]


def drop_caches(keep: Path) -> bool:
    """Drop the page cache (False if not allowed), then read ``keep`` back into it."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        log(f"cannot drop the page cache ({exc}): a warm run instead")
        return False
    with keep.open("rb") as f:
        while f.read(8 << 20):
            pass
    return True


def run_tool(tool: Any, args: argparse.Namespace) -> dict[str, Any]:
    size, change = args.size_mib * MIB, args.change_mib * MIB
    piece = MIB
    out: dict[str, Any] = {"tool": tool.name, "runs": []}
    first = tool.start(size)
    out["first_sync_s"] = round(first, 2)
    log(f"{tool.name}: first version at every subscriber {first:.2f} s after the start")
    for r in range(args.runs):
        time.sleep(args.settle)
        cold = args.cache == "cold" or (args.cache == "both" and r % 2 == 0)
        cold = cold and drop_caches(tool.src)
        load = os.getloadavg()[0]
        busy = cpu_busy()
        tool.before_change()
        offset = (size // 2 // piece) * piece + piece // 3 + r * 7 * piece
        offset = min(offset, size - change)
        touched = (offset + change - 1) // piece - offset // piece + 1
        data = os.urandom(change)
        t0 = time.time()
        fd = os.open(tool.src, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        got = tool.wait_change(t0)
        seconds = [g["seconds"] for g in got]
        fetched = [g["fetched"] for g in got]
        want = sha256(tool.src)
        if not all(sha256(f / NAME) == want for f in tool.folders):
            raise BenchError(f"{tool.name}: a subscriber's copy differs from the publisher's")
        steps = {
            k: round(statistics.median(g["steps"][k] - t0 for g in got), 3)
            for k in ("heard", "seeded", "downloaded", "landed")
            if all(k in g["steps"] for g in got)
        }
        row = {
            "changed_pieces_bytes": touched * piece,
            "seconds_to_last": round(max(seconds), 3),
            "seconds_median": round(statistics.median(seconds), 3),
            "seconds": [round(x, 3) for x in seconds],
            "fetched_bytes": fetched,
            "reused_bytes": [g["reused"] for g in got],
            "max_ratio": round(max(fetched) / (touched * piece), 3),
            "steps_median_s": steps,
            "cpu_busy_before_pct": busy,
            "load_average_1min": round(load, 2),
            "cache": "cold" if cold else "warm",
            "identical": True,
        }
        out["runs"].append(row)
        log(
            f"{tool.name} run {r + 1} ({row['cache']}): every subscriber in "
            f"{row['seconds_to_last']} s (median {row['seconds_median']}), received "
            f"{max(fetched) / MIB:.2f} MiB at most for "
            f"{touched} changed MiB pieces ({row['max_ratio']} x); steps {steps}"
        )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    SWORK.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"machine": machine_info(), "size_mib": args.size_mib}
    out.update(change_mib=args.change_mib, subscribers=args.subscribers, tools=[])
    for name in args.only.split(","):
        procs = Procs(SWORK / "pids")
        try:
            if name == "syncthing" and shutil.which("syncthing") is None:
                log("syncthing is not installed: skipped (bench/run sync installs it)")
                continue
            tool = (P2PTool if name == "p2pshare" else SyncthingTool)(procs, args.subscribers)
            out["tools"].append(run_tool(tool, args))
        finally:
            procs.stop_all()
    return out


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    rows = [
        [
            "tool",
            "run",
            "cache",
            "load",
            "to every subscriber (s)",
            "median (s)",
            "received / changed pieces",
            "median steps: heard, seeded, downloaded, landed (s)",
        ]
    ]
    verdict = []
    for t in res["tools"]:
        for i, r in enumerate(t["runs"], 1):
            rows.append(
                [
                    t["tool"],
                    str(i),
                    r.get("cache", "warm"),
                    f"{r.get('load_average_1min', 0):.1f}",
                    f"{r['seconds_to_last']:.2f}",
                    f"{r['seconds_median']:.2f}",
                    f"{max(r['fetched_bytes']) / MIB:.2f} / "
                    f"{r['changed_pieces_bytes'] / MIB:.0f} MiB ({r['max_ratio']:.2f} x)",
                    ", ".join(f"{v:.2f}" for v in r["steps_median_s"].values()),
                ]
            )
        worst_t = max(r["seconds_to_last"] for r in t["runs"])
        worst_r = max(r["max_ratio"] for r in t["runs"])
        ok_t, ok_r = worst_t < GOAL_SECONDS, worst_r <= GOAL_RATIO
        verdict.append(
            f"{t['tool']}: first version everywhere in {t['first_sync_s']} s; time < "
            f"{GOAL_SECONDS} s: {'yes' if ok_t else '**no**'} (worst {worst_t:.2f} s); bytes <= "
            f"{GOAL_RATIO} x the changed pieces: {'yes' if ok_r else '**no**'}"
            f" (worst {worst_r:.2f} x)"
        )
    head = (
        f"{m['date_utc']} ({m['git_commit']}), {m['nproc']} CPUs, {m['mem_gib']} GiB: "
        f"{res['size_mib']} MiB file, {res['change_mib']} MiB changed in place, "
        f"{res['subscribers']} subscribers.\n\n" + "".join(f"- {v}\n" for v in verdict) + "\n"
    )
    return head + table(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--change-mib", type=int, default=1)
    p.add_argument("--subscribers", type=int, default=5)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument(
        "--cache",
        choices=("both", "cold", "warm"),
        default="both",
        help="drop the page cache before each run (cold), never (warm), or every other run",
    )
    p.add_argument("--settle", type=float, default=3.0, help="seconds between runs")
    p.add_argument("--quick", action="store_true", help="32 MiB, 2 subscribers, 1 run")
    p.add_argument("--markdown", type=Path, help="append the results as markdown here")
    p.add_argument("--only", default="p2pshare,syncthing", help="tools, comma-separated")
    args = p.parse_args()
    if args.quick:
        args.size_mib, args.subscribers, args.runs = 32, 2, 1
    try:
        res = run(args)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    (SWORK / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    print(text)
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write("\n" + text)
    mine = [t for t in res["tools"] if t["tool"] == "p2pshare"]
    if not mine:
        return 0
    worst_t = max(r["seconds_to_last"] for r in mine[0]["runs"])
    worst_r = max(r["max_ratio"] for r in mine[0]["runs"])
    return 0 if worst_t < GOAL_SECONDS and worst_r <= GOAL_RATIO else 2


if __name__ == "__main__":
    sys.exit(main())
