"""Overlay search benchmark: 100 peers on loopback, flooding against random walks.

Every peer is the real stack (share, overlay, gRPC server on 127.0.0.1,
``p2pshare.peer.rpc.loopback``), several peers per process (``--processes``, one per
CPU by default), joined into a random graph where every peer has ``--degree``
neighbours. Content is held by 1%
and by 10% of the peers. For each strategy (flooding with TTL 2 to 5, random
walks with 16 and 32 walkers) it runs ``--queries`` searches from random peers
that do not hold the file and reports the success rate (at least one hit),
messages per query (queries sent from peer to peer), and the p50/p95 latency to the
first hit and until the query is over (every stream closed).

    .venv/bin/python bench/overlay.py [--peers 100] [--queries 60] [--processes N]
        [--markdown bench/OVERLAY.md]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import platform
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from p2pshare.peer.rpc.loopback import start_peer

ITEMS_PER_CLASS = 5
TIMEOUT = 3.0


@dataclass
class Row:
    strategy: str
    held_by: str
    success: float
    messages: float
    first_p50: float
    first_p95: float
    done_p50: float
    done_p95: float
    cpu_ms: float


def random_graph(n: int, degree: int, rng: random.Random) -> set[tuple[int, int]]:
    """Edges of a random graph where every node has ``degree`` neighbours: a ring
    lattice (each node linked to its ``degree / 2`` nearest on each side) shuffled by
    many random double-edge swaps, which keep every degree and the graph simple."""
    edges = {
        (min(i, (i + k) % n), max(i, (i + k) % n))
        for i in range(n)
        for k in range(1, degree // 2 + 1)
    }
    listed = list(edges)
    for _ in range(20 * len(listed)):
        i, j = rng.randrange(len(listed)), rng.randrange(len(listed))
        (a, b), (c, d) = listed[i], listed[j]
        if len({a, b, c, d}) < 4:
            continue
        new1, new2 = (min(a, d), max(a, d)), (min(c, b), max(c, b))
        if new1 in edges or new2 in edges:
            continue
        edges -= {listed[i], listed[j]}
        edges |= {new1, new2}
        listed[i], listed[j] = new1, new2
    return edges


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Worker:
    """A process running some of the peers, driven over a pipe (see ``_serve``)."""

    def __init__(self, root: Path, indexes: list[int], capacity: int) -> None:
        self.indexes = indexes
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(
            target=_worker_main, args=(child, root, indexes, capacity), daemon=True
        )
        self.proc.start()

    def ask(self, *command: object) -> Any:
        self.conn.send(command)
        return self.conn.recv()


def _worker_main(conn: Connection, root: Path, indexes: list[int], capacity: int) -> None:
    asyncio.run(_serve(conn, root, indexes, capacity))


async def _serve(conn: Connection, root: Path, indexes: list[int], capacity: int) -> None:
    peers = {i: await start_peer(root, f"p{i}", capacity=capacity, seed=i) for i in indexes}
    gc.freeze()  # as a peer process does once started (p2pshare.peer.run)
    conn.send({i: p.address for i, p in peers.items()})
    while True:
        # wait for the next command on a thread: the loop keeps serving the peers meanwhile
        command = await asyncio.to_thread(conn.recv)
        match command:
            case ("link", links):
                now = time.monotonic()
                for i, address, name in links:
                    peers[i].overlay.table.heard_from(address, now, peer_id=name)
                conn.send(None)
            case ("query", i, name, ttl, walkers):
                start = time.perf_counter()
                first_at = None
                async for _hit in peers[i].overlay.search_overlay(
                    query=name, ttl=ttl, walkers=walkers, limit=10, timeout=TIMEOUT
                ):
                    first_at = first_at or time.perf_counter()
                end = time.perf_counter()
                conn.send((first_at - start if first_at else None, end - start))
            case ("messages",):
                conn.send(
                    (sum(p.overlay.messages_sent for p in peers.values()), time.process_time())
                )
            case _:
                for p in peers.values():
                    await p.stop()
                conn.send(None)
                return


def run(args: argparse.Namespace) -> list[Row]:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="p2pshare-overlay-bench-"))
    # names share no word prefix across classes: a query matches its own item only
    classes = {"1%": max(1, args.peers // 100), "10%": max(1, args.peers // 10)}
    kinds = {"1%": "rare", "10%": "common"}
    holders: dict[str, list[int]] = {}
    for label, count in classes.items():
        for item in range(ITEMS_PER_CLASS):
            name = f"{kinds[label]}{item} file"
            holders[name] = rng.sample(range(args.peers), count)
            for i in holders[name]:
                path = root / f"p{i}" / "share" / f"{name}.bin"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(64))
    workers = [
        Worker(root, list(range(w, args.peers, args.processes)), args.degree * 2)
        for w in range(args.processes)
    ]
    owner: dict[int, Worker] = {}
    address: dict[int, str] = {}
    for w in workers:
        address.update(w.conn.recv())
        owner.update((i, w) for i in w.indexes)
    links: dict[Worker, list[tuple[int, str, str]]] = {w: [] for w in workers}
    for a, b in random_graph(args.peers, args.degree, rng):
        links[owner[a]].append((a, address[b], f"p{b}"))
        links[owner[b]].append((b, address[a], f"p{a}"))
    for w in workers:
        w.ask("link", links[w])
    strategies = [(f"flood TTL {t}", t, 0) for t in (2, 3, 4, 5)]
    strategies += [(f"walk {w}×{t}", t, w) for w in (16, 32) for t in (4, 8)]
    rows = []
    try:
        for label in classes:
            names = [n for n in holders if n.startswith(kinds[label])]
            for strategy, ttl, walkers in strategies:
                before = [sum(x) for x in zip(*(w.ask("messages") for w in workers), strict=True)]
                found, first, done = 0, [], []
                for _ in range(args.queries):
                    name = rng.choice(names)
                    i = rng.choice([i for i in range(args.peers) if i not in holders[name]])
                    first_hit, over = owner[i].ask("query", i, name, ttl, walkers)
                    done.append(over)
                    if first_hit is not None:
                        found += 1
                        first.append(first_hit)
                after = [sum(x) for x in zip(*(w.ask("messages") for w in workers), strict=True)]
                messages, cpu = after[0] - before[0], after[1] - before[1]
                rows.append(
                    Row(
                        strategy,
                        label,
                        found / args.queries,
                        messages / args.queries,
                        percentile(first, 50) * 1000,
                        percentile(first, 95) * 1000,
                        percentile(done, 50) * 1000,
                        percentile(done, 95) * 1000,
                        cpu / args.queries * 1000,
                    )
                )
    finally:
        for w in workers:
            w.ask("stop")
            w.proc.join(10)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def table(rows: list[Row]) -> str:
    lines = [
        "| strategy | content held by | success | messages/query "
        "| first hit p50 / p95 (ms) | query over p50 / p95 (ms) | CPU/query (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.strategy} | {r.held_by} of peers | {r.success:.0%} | {r.messages:.0f} "
            f"| {r.first_p50:.1f} / {r.first_p95:.1f} | {r.done_p50:.1f} / {r.done_p95:.1f} "
            f"| {r.cpu_ms:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--degree", type=int, default=8)
    parser.add_argument("--queries", type=int, default=60, help="queries per row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="processes the peers run in"
    )
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    started = time.time()
    rows = run(args)
    report = "\n".join(
        [
            "# Overlay search benchmark",
            "",
            f"`bench/overlay.py --peers {args.peers} --degree {args.degree} --queries"
            f" {args.queries} --seed {args.seed} --processes {args.processes}` at commit"
            f" {commit()},"
            f" {time.strftime('%Y-%m-%d', time.gmtime(started))}; {machine()}.",
            "",
            f"{args.peers} peers with real gRPC servers on 127.0.0.1, spread over"
            f" {args.processes} processes (one event loop each); a random"
            f" {args.degree}-regular graph;"
            f" {ITEMS_PER_CLASS} files held by 1% and {ITEMS_PER_CLASS} by 10% of the peers;"
            f" {args.queries} queries per row from random peers that do not hold the file;"
            f" deadline {TIMEOUT:.0f} s. Messages: queries sent from one peer to the next."
            " CPU: the peers' processes' CPU time per query (all threads), which does not"
            " depend on the machine's load as latency does. A walk row `w×t` is w walkers"
            " of t hops.",
            "",
            table(rows),
            "",
        ]
    )
    print(report)
    if args.markdown:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
