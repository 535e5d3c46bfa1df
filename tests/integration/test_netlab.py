"""p2pshare across hosts: each host a network namespace of ``p2pshare.netlab``.

One peer per host, as the system is deployed: peers bind 0.0.0.0 and advertise their
host's address; their control APIs listen on that address with a token, so the test
(in the root namespace) drives them over the lab's bridge. Needs root: without it,
or where namespaces cannot be made, every test here is skipped with the reason.
Files are small and uplinks modest so that the whole module takes well under a minute.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from p2pshare.localnet import (
    PEER_READY,
    LocalNetwork,
    PeerProc,
    TrackerProc,
    p2pshare_argv,
    spawn,
    wait_for,
)
from p2pshare.netlab import Host, NetLab
from tests.integration.helpers import api, sha256, write_random

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("netlab")]

TOKEN = "netlab-test-control-api-token"
TRACKER_PORT, PEER_PORT, API_PORT = 8460, 8461, 8462
TRACKER_READY = re.compile(r"p2pshare tracker listening on (?P<url>\S+)")
SMALL_PIECES = {"P2PSHARE_PEER_PIECE_SIZE": str(256 << 10)}


def start_tracker(net: LocalNetwork, host: Host, *extra: str) -> TrackerProc:
    db = net.root / "tracker.db"
    argv = p2pshare_argv("tracker", "--host", "0.0.0.0", "--port", str(TRACKER_PORT),
                         "--db", str(db), *extra)  # fmt: skip
    proc, _ = spawn(host.exec_argv(argv), TRACKER_READY, log=net.root / "logs" / "tracker.log",
                    name="tracker")  # fmt: skip
    url = f"http://{host.address}:{TRACKER_PORT}"
    tracker = TrackerProc(proc.name, proc.popen, proc.log, url=url, db=db)
    net.procs.append(tracker)
    return tracker


def start_peer(
    net: LocalNetwork,
    host: Host,
    tracker: str,
    env: dict[str, str] | None = None,
    *,
    advertise: bool = True,
) -> PeerProc:
    share, data = net.root / host.name / "share", net.root / host.name / "data"
    share.mkdir(parents=True, exist_ok=True)
    argv = p2pshare_argv(
        "peer",
        "--share", str(share),
        "--data", str(data),
        "--host", "0.0.0.0",
        "--port", str(PEER_PORT),
        *(("--advertise", f"{host.address}:{PEER_PORT}") if advertise else ()),
        "--api-port", str(API_PORT),
        "--tracker", tracker,
    )  # fmt: skip
    env = {"P2PSHARE_PEER_API_HOST": host.address, "P2PSHARE_PEER_API_TOKEN": TOKEN, **(env or {})}
    log = net.root / "logs" / f"{host.name}.log"
    proc, match = spawn(host.exec_argv(argv), PEER_READY, log=log, name=host.name, env=env)
    peer = PeerProc(proc.name, proc.popen, proc.log, address=match["address"],
                    api=f"http://{host.address}:{API_PORT}", share=share, data=data)  # fmt: skip
    net.procs.append(peer)
    return peer


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``p2pshare ARGS`` from the root namespace, with the control APIs' token."""
    return subprocess.run(
        p2pshare_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "P2PSHARE_API_TOKEN": TOKEN},
    )


def status(peer: PeerProc) -> dict[str, object]:
    result: dict[str, object] = api(peer, "/v1/status", token=TOKEN)
    return result


def content_id(peer: PeerProc, name: str) -> str:
    def found() -> bool:
        files = api(peer, "/v1/files", token=TOKEN)["files"]
        return any(f["name"] == name for f in files)

    wait_for(found, 30, f"{peer.name} to share {name}")
    files = api(peer, "/v1/files", token=TOKEN)["files"]
    return str(next(f["content_id"] for f in files if f["name"] == name))


def search(peer: PeerProc, query: str, *args: str) -> list[dict[str, object]]:
    done = cli("search", query, "--json", "--api", peer.api, *args)
    assert done.returncode == 0, done.stderr
    hits: list[dict[str, object]] = json.loads(done.stdout)
    return hits


def test_a_file_on_one_host_is_found_and_downloaded_from_another(
    lab: NetLab, net: LocalNetwork
) -> None:
    t, a, b = lab.add_host("tracker"), lab.add_host("a"), lab.add_host("b")
    original = write_random(net.root / "a" / "share" / "report.pdf", 3 << 20)
    tracker = start_tracker(net, t)
    holder = start_peer(net, a, tracker.url)
    fetcher = start_peer(net, b, tracker.url)
    cid = content_id(holder, "report.pdf")

    wait_for(lambda: search(fetcher, "report"), 15, "the tracker to index a's file")
    hits = search(fetcher, "report")
    assert [h["content_id"] for h in hits] == [cid]
    assert {p["address"] for p in hits[0]["providers"]} == {f"{a.address}:{PEER_PORT}"}  # type: ignore[attr-defined]

    got = cli("get", cid[:12], "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(fetcher.share / "report.pdf") == sha256(original)
    assert a.tx_bytes > 3 << 20  # the bytes crossed the lab, from a's link


def test_a_peer_bound_to_every_address_advertises_what_the_tracker_sees_and_is_dialled(
    lab: NetLab, net: LocalNetwork
) -> None:
    """One peer per machine, set up with no --advertise: it used to register
    127.0.0.1:8461, which the tracker handed to other hosts, who then dialled themselves."""
    t, a, b = lab.add_host("tracker"), lab.add_host("a"), lab.add_host("b")
    original = write_random(net.root / "a" / "share" / "plain.iso", 1 << 20)
    tracker = start_tracker(net, t)
    holder = start_peer(net, a, tracker.url, advertise=False)
    fetcher = start_peer(net, b, tracker.url, advertise=False)
    cid = content_id(holder, "plain.iso")

    wait_for(lambda: str(status(holder)["tracker"]["reachable"]).startswith("yes"), 20,  # type: ignore[index]
             "the tracker to dial a back")  # fmt: skip
    assert status(holder)["address"] == f"{a.address}:{PEER_PORT}"
    got = cli("get", cid, "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(fetcher.share / "plain.iso") == sha256(original)


def test_downloaders_on_separate_hosts_with_shaped_uplinks_all_get_the_file(
    lab: NetLab, net: LocalNetwork
) -> None:
    size = 6 << 20
    t = lab.add_host("tracker")
    seed = lab.add_host("seed", uplink_mbit=40)
    hosts = [lab.add_host(f"d{i}", uplink_mbit=40) for i in range(3)]
    original = write_random(net.root / "seed" / "share" / "film.mkv", size)
    tracker = start_tracker(net, t)
    seeder = start_peer(net, seed, tracker.url, SMALL_PIECES)
    peers = [start_peer(net, h, tracker.url, SMALL_PIECES) for h in hosts]
    cid = content_id(seeder, "film.mkv")
    wait_for(lambda: search(peers[0], "film"), 15, "the tracker to index the file")

    sent0 = lab.counters()
    t0 = time.monotonic()
    gets = [
        subprocess.Popen(
            p2pshare_argv("get", cid, "--api", p.api),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "P2PSHARE_API_TOKEN": TOKEN},
        )
        for p in peers
    ]
    try:
        for g in gets:
            _, err = g.communicate(timeout=60)
            assert g.returncode == 0, err
    finally:
        for g in gets:
            g.kill()
    seconds = time.monotonic() - t0
    sent = {k: v - sent0[k] for k, v in lab.counters().items()}

    for p in peers:
        assert sha256(p.share / "film.mkv") == sha256(original)
    # what the hosts sent adds up to at least the three copies that arrived
    assert sum(sent.values()) >= 3 * size
    assert sent["seed"] >= size
    # 40 Mbit/s: at least F/u_s = 1.26 s; the lab's shaping holds
    assert seconds > size * 8 / 40e6
    copies = {k: round(v / size, 2) for k, v in sent.items()}
    print(f"swarm of 3 on 40 Mbit/s uplinks: {seconds:.1f}s, copies sent {copies}")


def test_with_the_tracker_down_the_overlay_finds_a_file_across_hosts(
    lab: NetLab, net: LocalNetwork
) -> None:
    t, a, b, c = (lab.add_host(n) for n in ("tracker", "a", "b", "c"))
    write_random(net.root / "a" / "share" / "field recording.flac", 1 << 20)
    tracker = start_tracker(net, t)
    holder = start_peer(net, a, tracker.url)
    b_peer = start_peer(net, b, tracker.url)
    seeker = start_peer(net, c, tracker.url)
    cid = content_id(holder, "field recording.flac")
    for p in (holder, b_peer, seeker):
        wait_for(lambda p=p: status(p)["neighbours"], 15, f"{p.name} to have neighbours")
    tracker.stop(signal.SIGKILL)

    hits = search(seeker, "field", "--source", "overlay")
    assert [h["content_id"] for h in hits] == [cid]
    assert {p["address"] for p in hits[0]["providers"]} == {f"{a.address}:{PEER_PORT}"}  # type: ignore[attr-defined]


def test_a_download_whose_provider_link_is_cut_and_restored_completes(
    lab: NetLab, net: LocalNetwork
) -> None:
    size = 8 << 20
    t = lab.add_host("tracker")
    far = lab.add_host("far", uplink_mbit=20)  # 8 MiB take 3.4 s
    near = lab.add_host("near")
    original = write_random(net.root / "far" / "share" / "disk.img", size)
    tracker = start_tracker(net, t)
    provider = start_peer(net, far, tracker.url, SMALL_PIECES)
    fetcher = start_peer(net, near, tracker.url, SMALL_PIECES)
    cid = content_id(provider, "disk.img")
    wait_for(lambda: search(fetcher, "disk"), 15, "the tracker to index the file")

    getting = subprocess.Popen(
        p2pshare_argv("get", cid, "--api", fetcher.api),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "P2PSHARE_API_TOKEN": TOKEN},
    )
    try:
        wait_for(lambda: int(status(provider)["pieces_served"]) >= 4, 20, "some pieces to pass")  # type: ignore[call-overload]
        lab.cut(far)
        cut_at = far.tx_bytes
        time.sleep(3)
        assert getting.poll() is None, "the download ended while its only provider was cut off"
        assert far.tx_bytes == cut_at  # nothing crossed the cut link
        lab.restore(far)
        _, err = getting.communicate(timeout=45)
    finally:
        getting.kill()
    assert getting.returncode == 0, err
    assert sha256(fetcher.share / "disk.img") == sha256(original)


# ---------------------------------------------------------------- the lab itself

SINK = (
    "import socket, sys, time\n"
    "s = socket.create_server(('0.0.0.0', 5001))\n"
    "print('ready', flush=True)\n"
    "c, _ = s.accept()\n"
    "n, t0 = 0, None\n"
    "while data := c.recv(1 << 20):\n"
    "    t0 = t0 or time.monotonic()\n"
    "    n += len(data)\n"
    "print(n, time.monotonic() - t0, flush=True)\n"
)


def test_a_host_upload_is_shaped_to_its_uplink_and_counted_on_its_link(lab: NetLab) -> None:
    a, b = lab.add_host("a", uplink_mbit=20), lab.add_host("b")
    sink = lab.popen(b, [sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    assert sink.stdout.readline().strip() == "ready"
    size = 4 << 20
    sent0 = a.tx_bytes
    send = f"import socket; socket.create_connection(('{b.address}', 5001)).sendall(bytes({size}))"
    assert lab.run(a, [sys.executable, "-c", send], timeout=30).returncode == 0
    got, seconds = sink.communicate(timeout=30)[0].split()
    assert int(got) == size
    mbit = size * 8 / float(seconds) / 1e6
    assert 15 < mbit < 22, f"{mbit:.1f} Mbit/s on a 20 Mbit/s uplink"
    assert size <= a.tx_bytes - sent0 < size * 1.1  # the payload and its headers


CONNECT = (
    "import socket, statistics, sys, time\n"
    "times = []\n"
    "for _ in range(5):\n"
    "    t0 = time.perf_counter()\n"
    "    socket.create_connection((sys.argv[1], 5001)).close()\n"
    "    times.append(time.perf_counter() - t0)\n"
    "print(statistics.median(times) * 1000)\n"
)
ACCEPT = (
    "import socket\n"
    "s = socket.create_server(('0.0.0.0', 5001))\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    s.accept()[0].close()\n"
)


def test_a_delay_holds_every_frame_both_ways(lab: NetLab) -> None:
    a, b = lab.add_host("a", delay_ms=5), lab.add_host("b", delay_ms=5)
    server = lab.popen(b, [sys.executable, "-c", ACCEPT], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    done = lab.run(a, [sys.executable, "-c", CONNECT, b.address], capture_output=True, text=True)
    server.stdout.close()
    # a TCP connect is one round trip: a -> b and back, each through two delayed links
    assert 19 < float(done.stdout) < 80, done.stdout + done.stderr


CRASH = (
    "import sys, time\n"
    "from p2pshare.netlab import NetLab\n"
    "lab = NetLab(); lab.start()\n"
    "host = lab.add_host('a', uplink_mbit=10)\n"
    "lab.popen(host, ['sleep', '60'])\n"
    "print(lab.tag, flush=True)\n"
    "time.sleep(60)\n"
)


def lab_names(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names + os.listdir("/sys/class/net") if n.startswith(tag)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_lab_leaves_nothing_behind_when_killed(lab: NetLab, sig: signal.Signals) -> None:
    with subprocess.Popen([sys.executable, "-c", CRASH], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            tag = proc.stdout.readline().strip()
            assert len(lab_names(tag)) == 3  # namespace, bridge, veth
            proc.send_signal(sig)
            proc.wait(15)
            if sig == signal.SIGKILL:  # no chance to clean up: the next lab removes it
                assert lab_names(tag)
                NetLab().close()  # a lab never started does nothing
                with NetLab():
                    pass
            wait_for(lambda: not lab_names(tag), 10, f"{tag}'s namespace and links to go")
        finally:
            proc.kill()
