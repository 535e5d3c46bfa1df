"""``p2pshare demo``: a whole network on this machine, in about ten seconds.

Starts a tracker and three peers (real processes on 127.0.0.1), gives two peers
the same file and the first one a few more, then from the third peer runs the
same commands a person would: ``search``, ``get``, and checks the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from p2pshare.errors import DownloadFailed
from p2pshare.localnet import LocalNetwork, p2pshare_argv

console = Console()
SAMPLE_SIZE = 64 << 20


def _sample_files(peer1: Path, peer2: Path) -> Path:
    """Write the sample files; returns the one both peers hold."""
    shared = peer1 / "holiday-video-2026.mp4"
    block = os.urandom(1 << 20)
    with shared.open("wb") as f:
        for i in range(SAMPLE_SIZE >> 20):
            f.write(hashlib.sha256(block + i.to_bytes(4, "big")).digest() * (1 << 15))
    (peer2 / "holiday-video-2026.mp4").write_bytes(shared.read_bytes())
    (peer1 / "notes").mkdir(exist_ok=True)
    (peer1 / "notes" / "packing-list.txt").write_text("passport\ncharger\nsunscreen\n")
    (peer2 / "recipes-holiday-cookies.md").write_text("# Cookies\n\nflour, butter, sugar\n")
    return shared


def _run(title: str | None, *args: str) -> str:
    """Run one p2pshare command as a person would; show it and its output under ``title``."""
    argv = p2pshare_argv(*args)
    if title:
        console.print(f"\n[bold]{title}[/]\n[dim]$ p2pshare {shlex.join(args)}[/]")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if title and done.stdout:
        sys.stdout.write(done.stdout)
        sys.stdout.flush()
    if done.returncode != 0:
        raise DownloadFailed(f"p2pshare {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_demo(workdir: Path | None, *, keep: bool = False) -> None:
    root = Path(workdir or tempfile.mkdtemp(prefix="p2pshare-demo-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    net = LocalNetwork(root)
    console.print(f"[bold]p2pshare demo[/] in {root}")
    try:
        tracker = net.start_tracker()
        console.print(f"tracker  {tracker.url}")
        for name in ("alice", "bob", "carol"):
            (root / name / "share").mkdir(parents=True, exist_ok=True)
        original = _sample_files(root / "alice" / "share", root / "bob" / "share")
        peers = [net.start_peer(name, tracker=tracker.url) for name in ("alice", "bob", "carol")]
        for p in peers:
            console.print(f"peer     {p.name:6} grpc {p.address}  control API {p.api}")
        for p in peers:
            console.print(f"web page {p.name:6} {p.api}/")
        carol = peers[2]

        _run("carol searches the network for 'holiday':", "search", "holiday", "--api", carol.api)
        hits = _run(None, "search", "holiday video", "--json", "--api", carol.api)
        hit = json.loads(hits)[0]
        out_dir = root / "carol" / "downloads"
        start = time.perf_counter()
        _run(
            f"carol downloads it from {len(hit['providers'])} peers at once:",
            *("get", hit["content_id"][:12], "-o", str(out_dir), "--api", carol.api),
        )
        seconds = time.perf_counter() - start
        fetched = out_dir / hit["name"]
        same = _sha256(fetched) == _sha256(original)
        _run("carol's status:", "status", "--api", carol.api)

        table = Table(title="summary", show_header=False, box=None)
        table.add_row("processes", "1 tracker, 3 peers (real gRPC and HTTP on 127.0.0.1)")
        table.add_row("search hits for 'holiday video'", str(len(json.loads(hits))))
        table.add_row("providers used", ", ".join(p["address"] for p in hit["providers"]))
        table.add_row("downloaded", f"{fetched} ({hit['size'] >> 20} MiB in {seconds:.2f} s)")
        table.add_row("sha256 equal to the original", "yes" if same else "NO")
        table.add_row("logs", str(root / "logs"))
        console.print()
        console.print(table)
        if not same:
            raise DownloadFailed("the downloaded file differs from the original")
        if keep:
            console.print("\nthe network keeps running: open a web page above; Ctrl-C stops it")
            while all(p.alive() for p in peers):
                time.sleep(1)
    finally:
        net.stop_all()
