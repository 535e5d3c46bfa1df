"""Measures the web page against its goals (issue 15), in Debian's Chromium driven by
Playwright, against real processes on 127.0.0.1:

- first paint of the page (``first-contentful-paint``), fresh tab each time;
- a search's first hits on screen after Enter, on the demo network (tracker + alice,
  bob, carol as ``p2pshare demo`` builds it), from the page's own clock (the submit
  handler to the first row in the table) and from outside (key press to row seen);
- how far the progress bar lags the peer's own state: the peer's ``/v1/downloads/ID``
  read every 20 ms beside the page's record of each view it drew; the lag of a sample
  is the time from the peer holding N bytes to the page showing at least N;
- 50 downloads at once: every download's final state reaches the page (no event
  lost), and the page's main thread never blocks long (long tasks, frame gaps).

    .venv/bin/python bench/web.py [--runs 20] [--json out.json]

Needs /usr/bin/chromium (scripts/install-chromium) and the dev group (playwright).
Prints a Markdown table; bench/WEB.md keeps the figures of a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from p2pshare.demo import _sample_files
from p2pshare.localnet import LocalNetwork, PeerProc, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FREEZE_WATCH = """() => {
  window.benchLong = [];
  window.benchGaps = [];
  new PerformanceObserver(l => l.getEntries().forEach(e => benchLong.push(e.duration)))
    .observe({type: 'longtask', buffered: true});
  let last = performance.now();
  const tick = now => { benchGaps.push(now - last); last = now; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": pct(values, 0.95),
        "max": max(values),
    }


def first_paint(page: Page, url: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        page.goto("about:blank")
        page.goto(url)
        page.wait_for_function(
            "() => performance.getEntriesByName('first-contentful-paint').length > 0"
        )
        out.append(
            page.evaluate(
                "() => performance.getEntriesByName('first-contentful-paint')[0].startTime"
            )
        )
    return out


def first_hits(page: Page, url: str, runs: int) -> tuple[list[float], list[float]]:
    inside, outside = [], []
    page.goto(url)
    page.wait_for_selector("#peer-line:has-text('registered')")
    for i in range(runs):
        query = "holiday" if i % 2 == 0 else "holiday video"
        page.fill("#q", query)
        page.evaluate("() => document.querySelector('#hits tbody').replaceChildren()")
        start = time.perf_counter()
        page.press("#q", "Enter")
        page.wait_for_selector("#hits tbody tr", timeout=10_000)
        outside.append((time.perf_counter() - start) * 1000)
        page.wait_for_function("() => window.p2pshareTrace.firstHit !== null")
        inside.append(page.evaluate("() => p2pshareTrace.firstHit - p2pshareTrace.searchStarted"))
        page.wait_for_selector("#search-state:has-text('found (')")  # the search is over
    return inside, outside


def progress_lag(page: Page, fetcher: PeerProc, seed: PeerProc) -> list[float]:
    cid = next(
        f["content_id"]
        for f in httpx.get(seed.api + "/v1/files").json()["files"]
        if f["name"] == "lag.bin"
    )
    page.goto(fetcher.api + "/#transfers")
    page.wait_for_selector("#peer-line:has-text('peer ')")
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def watch() -> None:
        with httpx.Client() as client:
            while not done.is_set():
                view = client.get(f"{fetcher.api}/v1/downloads/{cid}")
                if view.status_code == 200:
                    samples.append((time.time(), view.json()["bytes_done"]))
                    if view.json()["state"] == "complete":
                        return
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    httpx.post(fetcher.api + "/v1/downloads", json={"content_id": cid}).raise_for_status()
    watcher.start()
    watcher.join(120)
    done.set()
    page.wait_for_selector("#transfers li.card[data-state=complete]")
    shown = page.evaluate(f"() => p2pshareTrace.downloads['{cid}']")
    drawn = [(t / 1000, b) for t, b, _ in shown]
    lags = []
    for t_peer, b in samples:
        if b == 0:
            continue
        t_page = next((t for t, got in drawn if got >= b and t >= t_peer - 1), None)
        if t_page is not None:
            lags.append(max(0.0, t_page - t_peer) * 1000)
    return lags


def fifty(page: Page, fetcher: PeerProc, seed: PeerProc, count: int) -> dict[str, Any]:
    files = [
        f
        for f in httpx.get(seed.api + "/v1/files").json()["files"]
        if f["name"].startswith("many-")
    ]
    page.goto(fetcher.api + "/#transfers")
    page.wait_for_selector("#peer-line:has-text('peer ')")
    page.evaluate(FREEZE_WATCH)
    start = time.perf_counter()
    with httpx.Client() as client:
        for f in files:
            client.post(
                fetcher.api + "/v1/downloads", json={"content_id": f["content_id"]}
            ).raise_for_status()
    page.wait_for_function(
        "n => [...document.querySelectorAll('#transfers li.card[data-state=complete] h3')]"
        ".filter(h => h.textContent.startsWith('many-')).length >= n",
        arg=count,
        timeout=120_000,
    )
    seconds = time.perf_counter() - start
    api_views = {v["content_id"]: v for v in httpx.get(fetcher.api + "/v1/downloads").json()}
    page_views = page.evaluate(
        "() => Object.fromEntries(Object.entries(p2pshareTrace.downloads)"
        ".map(([k, v]) => [k, v[v.length - 1]]))"
    )
    lost = [
        cid
        for cid in (f["content_id"] for f in files)
        if page_views.get(cid, [0, -1, ""])[1:] != [api_views[cid]["bytes_done"], "complete"]
    ]
    events = page.evaluate(
        "() => Object.values(p2pshareTrace.downloads).reduce((n, v) => n + v.length, 0)"
    )
    long_tasks = page.evaluate("() => benchLong")
    gaps = page.evaluate("() => benchGaps")
    return {
        "downloads": len(files),
        "seconds": seconds,
        "views_drawn": events,
        "lost": len(lost),
        "long_tasks": len(long_tasks),
        "longest_task_ms": max(long_tasks, default=0.0),
        "frame_gap_p95_ms": pct(gaps, 0.95) if gaps else 0.0,
        "frame_gap_max_ms": max(gaps, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--many", type=int, default=50, help="concurrent downloads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="p2pshare-web-bench-"))
    net = LocalNetwork(root)
    results: dict[str, Any] = {}
    try:
        tracker = net.start_tracker()
        for name in ("alice", "bob", "carol"):
            (root / name / "share").mkdir(parents=True, exist_ok=True)
        _sample_files(root / "alice" / "share", root / "bob" / "share")
        alice_share = root / "alice" / "share"
        (alice_share / "lag.bin").write_bytes(bytes(range(256)) * (48 << 12))  # 48 MiB
        for i in range(args.many):
            (alice_share / f"many-{i:03}.bin").write_bytes(i.to_bytes(4, "big") * (1 << 18))
        config = root / "carol.toml"  # 16 MiB/s: the lag download takes a few seconds
        config.write_text(f"[peer]\nmax_download_rate = {16 << 20}\n")
        alice = net.start_peer("alice", tracker=tracker.url)
        net.start_peer("bob", tracker=tracker.url)
        carol = net.start_peer("carol", "--config", str(config), tracker=tracker.url)
        wait_for(
            lambda: httpx.get(carol.api + "/v1/status").json()["tracker"]["state"] == "registered",
            20,
            "carol to register",
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page()
            results["first_paint_ms"] = summary(first_paint(page, carol.api + "/", args.runs))
            inside, outside = first_hits(page, carol.api + "/", args.runs)
            results["first_hits_ms"] = summary(inside)
            results["first_hits_from_keypress_ms"] = summary(outside)
            results["progress_lag_ms"] = summary(progress_lag(page, carol, alice))
            results["concurrent"] = fifty(page, carol, alice, args.many)
            browser.close()
    finally:
        net.stop_all()

    print("| measure | n | median | p95 | max |\n|---|---|---|---|---|")
    for key in ("first_paint_ms", "first_hits_ms", "first_hits_from_keypress_ms"):
        s = results[key]
        print(f"| {key} | {s['n']} | {s['median']:.1f} | {s['p95']:.1f} | {s['max']:.1f} |")
    s = results["progress_lag_ms"]
    print(f"| progress_lag_ms | {s['n']} | {s['median']:.1f} | {s['p95']:.1f} | {s['max']:.1f} |")
    print()
    print(json.dumps(results["concurrent"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
