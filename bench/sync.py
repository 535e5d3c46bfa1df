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

    .venv/bin/python bench/sync.py [--quick] [--size-mib 256] [--change-mib 1]
        [--subscribers 5] [--runs 3] [--markdown bench/SYNC.md]

Every process started here runs in its own process group and is stopped on exit
(also on failure, timeout or Ctrl-C); their group ids are in bench/work/sync/pids.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
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
    fresh_dir,
    machine_info,
    table,
    wait_line,
)

SWORK = WORK / "sync"
NAME = "data.bin"
GOAL_SECONDS = 2.0
GOAL_RATIO = 1.1


def log(msg: str) -> None:
    print(f"[sync {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def start_peer(procs: Procs, name: str, tracker: str, seed: str = "") -> tuple[Any, str, str]:
    root = fresh_dir(SWORK / name)
    share = root / "share"
    share.mkdir()
    logfile = SWORK / f"{name}.log"
    argv = [P2PSHARE, "peer", "--host", LOOPBACK, "--share", share, "--data", root / "data"]
    argv += ["--tracker", tracker, "--port", "0", "--api-port", "0"]
    if seed:
        argv += ["--seed", seed]
    proc = procs.start(name, argv, logfile)
    m = wait_line(logfile, PEER_READY, proc, 60, f"peer {name}")
    return proc, m.group(1).rstrip(","), m.group(2).rstrip(",.")


def events(api: str) -> list[dict[str, Any]]:
    subs = http("GET", api + "/v1/subscriptions")["subscriptions"]
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    SWORK.mkdir(parents=True, exist_ok=True)
    procs = Procs(SWORK / "pids")
    size, change = args.size_mib * MIB, args.change_mib * MIB
    piece = MIB
    out: dict[str, Any] = {"machine": machine_info(), "size_mib": args.size_mib}
    out.update(change_mib=args.change_mib, subscribers=args.subscribers, runs=[])
    try:
        tlog = SWORK / "tracker.log"
        tproc = procs.start(
            "tracker", [P2PSHARE, "tracker", "--port", "0", "--db", SWORK / "tracker.db"], tlog
        )
        (SWORK / "tracker.db").unlink(missing_ok=True)
        tracker = wait_line(tlog, TRACKER_READY, tproc, 30, "tracker").group(1)
        _, pub_addr, pub_api = start_peer(procs, "publisher", tracker)
        src = SWORK / "publisher" / "share" / NAME
        log(f"writing {args.size_mib} MiB of random bytes")
        write_random(src, size)
        subs = [start_peer(procs, f"sub{i}", tracker, pub_addr) for i in range(args.subscribers)]
        apis = [api for _, _, api in subs]
        folders = [SWORK / f"sub{i}" / "folder" for i in range(args.subscribers)]
        start = time.time()
        for api, folder in zip(apis, folders, strict=True):
            http("POST", api + "/v1/subscriptions", {"query": NAME, "into": str(folder)})
        first = wait_events(apis, "added", [0] * len(apis), 300)
        out["first_sync_s"] = round(max(e["at"] for e in first) - start, 2)
        log(f"first version at every subscriber {out['first_sync_s']} s after subscribing")
        for r in range(args.runs):
            time.sleep(args.settle)
            busy = cpu_busy()
            counts = [len(events(api)) for api in apis]
            offset = (size // 2 // piece) * piece + piece // 3 + r * 7 * piece
            offset = min(offset, size - change)
            touched = (offset + change - 1) // piece - offset // piece + 1
            data = os.urandom(change)
            t0 = time.time()
            fd = os.open(src, os.O_WRONLY)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
            got = wait_events(apis, "replaced", counts, 60)
            seconds = [e["at"] - t0 for e in got]
            fetched = [e["fetched"] for e in got]
            reused = [e["reused"] for e in got]
            want = sha256(src)
            same = all(sha256(f / NAME) == want for f in folders)
            if not same:
                raise BenchError("a subscriber's copy differs from the publisher's file")
            steps = {
                k: round(statistics.median(e["steps"][k] - t0 for e in got), 3)
                for k in ("heard", "seeded", "downloaded", "landed")
                if all(k in e["steps"] for e in got)
            }
            row = {
                "steps_median_s": steps,
                "changed_pieces_bytes": touched * piece,
                "seconds_to_last": round(max(seconds), 3),
                "seconds_median": round(statistics.median(seconds), 3),
                "seconds": [round(s, 3) for s in seconds],
                "fetched_bytes": fetched,
                "reused_bytes": reused,
                "max_ratio": round(max(fetched) / (touched * piece), 3),
                "cpu_busy_before_pct": busy,
                "identical": same,
            }
            out["runs"].append(row)
            log(
                f"run {r + 1}: every subscriber in {row['seconds_to_last']} s (median "
                f"{row['seconds_median']}), fetched {max(fetched) / MIB:.2f} MiB at most for "
                f"{touched} changed pieces ({row['max_ratio']} x), reused "
                f"{min(reused) / MIB:.0f} MiB; median steps from the write {steps}"
            )
    finally:
        procs.stop_all()
    return out


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    rows = [["run", "to every subscriber (s)", "median (s)", "fetched / changed pieces", "reused"]]
    for i, r in enumerate(res["runs"], 1):
        rows.append(
            [
                str(i),
                f"{r['seconds_to_last']:.2f}",
                f"{r['seconds_median']:.2f}",
                f"{max(r['fetched_bytes']) / MIB:.2f} / {r['changed_pieces_bytes'] / MIB:.0f} MiB"
                f" ({r['max_ratio']:.2f} x)",
                f"{min(r['reused_bytes']) / MIB:.0f} MiB",
            ]
        )
    worst_t = max(r["seconds_to_last"] for r in res["runs"])
    worst_r = max(r["max_ratio"] for r in res["runs"])
    head = (
        f"{m['date_utc']} ({m['git_commit']}), {m['nproc']} CPUs, {m['mem_gib']} GiB: "
        f"{res['size_mib']} MiB file, {res['change_mib']} MiB changed in place, "
        f"{res['subscribers']} subscribers; first version everywhere in "
        f"{res['first_sync_s']} s.\n\n"
        f"Goals: time < {GOAL_SECONDS} s: {'yes' if worst_t < GOAL_SECONDS else '**no**'} "
        f"(worst {worst_t:.2f} s); bytes <= {GOAL_RATIO} x the changed pieces: "
        f"{'yes' if worst_r <= GOAL_RATIO else '**no**'} (worst {worst_r:.2f} x)\n\n"
    )
    return head + table(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--change-mib", type=int, default=1)
    p.add_argument("--subscribers", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--settle", type=float, default=3.0, help="seconds between runs")
    p.add_argument("--quick", action="store_true", help="32 MiB, 2 subscribers, 1 run")
    p.add_argument("--markdown", type=Path, help="append the results as markdown here")
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
    worst_t = max(r["seconds_to_last"] for r in res["runs"])
    worst_r = max(r["max_ratio"] for r in res["runs"])
    return 0 if worst_t < GOAL_SECONDS and worst_r <= GOAL_RATIO else 2


if __name__ == "__main__":
    sys.exit(main())
