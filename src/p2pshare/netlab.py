"""A network lab on one Linux machine: hosts as network namespaces on one bridge.

Each host is a network namespace with its own address (``10.77.K.X/24``, a private
range that never leaves the machine), joined to a bridge in the root namespace by a
veth pair. The host's **upload** (its side of the veth, egress) can be shaped with
``tc htb``; its **download** can lose a share of packets (a classic-BPF classifier
sends them to a class whose queue holds nothing). A link can be cut and restored.
Processes run inside a host through ``ip netns exec``; the bridge has an address
(``10.77.K.1``) so the root namespace can reach every host.

What this kernel cannot do: there is no ``netem`` (no delay qdisc) and no ``gact``
action, and modules cannot be loaded. A **delay** is therefore made in user space,
and only for hosts that ask for one (``delay_ms``): the host's veth is then not on
the bridge but joined to it by a small forwarder (``netlab_delay.c``, compiled on
first use with the system's C compiler) that holds every frame, both ways, for
``delay_ms``. Without it hosts see the bridge's sub-millisecond round trips.

Clean-up is guaranteed as far as a process can guarantee it: ``NetLab`` is a context
manager, registers itself with ``atexit``, turns SIGTERM/SIGHUP into ``SystemExit``
(when no other handler is set) so that its ``finally`` runs, and every lab first
removes what earlier labs of a process that no longer runs left behind. Every name
it makes starts with ``p2nl`` then the creating process id (base 36, 5 characters)
and a counter, so a leftover names its owner and labs of live processes are never
touched.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2: ``unavailable()`` says
why a lab cannot be made here, for tests to skip with that reason.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from p2pshare.errors import P2PShareError

PREFIX = "p2nl"
"""First characters of every namespace, bridge and veth a lab makes."""
SUBNET_BASE = "10.77"
"""Labs take ``10.77.K.0/24`` with the first K that no interface of this machine uses."""
_NAME = re.compile(rf"^{PREFIX}([0-9a-z]{{5}})([0-9a-z])")
_LOCK = Path("/run/p2pshare-netlab.lock")
_DELAY_SOURCE = Path(__file__).with_name("netlab_delay.c")
_counter = itertools.count()
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class LabError(P2PShareError):
    """A command that builds or changes the lab failed (message: the command and why)."""


def _base36(n: int, width: int) -> str:
    out = ""
    while n:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
    return out.rjust(width, "0")[-width:]


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")
    return done


def unavailable() -> str | None:
    """Why no lab can be made on this machine, or ``None`` if one can."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces (run as root, as CI does)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs iproute2 ({tool!r} is not on PATH)"
    probe = f"{PREFIX}{_base36(os.getpid(), 5)}z-probe"
    made = _run(["ip", "netns", "add", probe], check=False)
    _run(["ip", "netns", "del", probe], check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1), 36) if match else None


def _netns_names() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    return [p.name for p in Path("/sys/class/net").iterdir()]


def _kill_namespace_processes(namespace: str) -> None:
    pids = _run(["ip", "netns", "pids", namespace], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def clean_leftovers(*, only_dead: bool = True) -> list[str]:
    """Remove the namespaces and links of labs whose creating process is gone
    (``only_dead=False``: of every lab, also live ones); return what was removed."""
    removed: list[str] = []
    for ns in _netns_names():
        owner = _owner(ns)
        if owner is None or (only_dead and _pid_alive(owner)):
            continue
        _kill_namespace_processes(ns)
        if _run(["ip", "netns", "del", ns], check=False).returncode == 0:
            removed.append(ns)
    for link in _link_names():
        owner = _owner(link)
        if owner is None or (only_dead and _pid_alive(owner)):
            continue
        if _run(["ip", "link", "del", link], check=False).returncode == 0:
            removed.append(link)
    return removed


def delay_binary() -> Path:
    """The delay forwarder, compiled once into the user's cache (``LabError`` if it
    cannot be: no C compiler)."""
    source = _DELAY_SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p2pshare"
    binary = cache / f"netlab-delay-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise LabError("a delay needs a C compiler (cc) to build its forwarder; none found")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".{os.getpid()}.tmp")
    _run([compiler, "-O2", "-o", str(tmp), str(_DELAY_SOURCE)])
    tmp.rename(binary)
    return binary


@dataclass
class Host:
    """One machine of the lab: a namespace, its address and its link to the bridge."""

    name: str
    namespace: str
    address: str
    outer: str
    """The veth end on the bridge (root namespace): its rx counters are the host's upload."""
    inner: str = "eth0"
    """The veth end inside the namespace, where the upload is shaped."""
    uplink_mbit: float | None = None
    loss_pct: float = 0.0
    delay_ms: float = 0.0
    """Added to each direction of the host's link: two such hosts are 2 x this apart."""
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def exec_argv(self, argv: Sequence[str | Path]) -> list[str]:
        """``argv`` run inside this host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *map(str, argv)]

    @property
    def tx_bytes(self) -> int:
        """Bytes this host sent onto its link (its upload), frames with their headers."""
        return _counter_of(self.outer, "rx_bytes")

    @property
    def rx_bytes(self) -> int:
        """Bytes the link delivered to this host (its download)."""
        return _counter_of(self.outer, "tx_bytes")


def _counter_of(link: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{link}/statistics/{name}").read_text())


class NetLab:
    """Hosts on one bridge; ``with NetLab() as lab: lab.add_host("a", uplink_mbit=40)``.

    Every method that changes the network raises ``LabError`` when a command fails.
    ``close()`` (also on leaving the ``with``, at exit and on SIGTERM/SIGHUP) kills
    the processes started through ``popen``, then removes namespaces, veths and bridge.
    """

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{_base36(os.getpid(), 5)}{_DIGITS[next(_counter) % 36]}"
        self.bridge = f"{self.tag}b"
        self.hosts: dict[str, Host] = {}
        self.subnet = ""
        self.gateway = ""
        self._closed = False
        self._made = False
        self._per_packet = False
        self._forwarders: list[subprocess.Popen[str]] = []
        self._old_handlers: dict[int, Any] = {}

    # ---------------------------------------------------------------- life cycle

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Remove leftovers of dead labs, make the bridge and take a free /24."""
        if why := unavailable():
            raise LabError(why)
        clean_leftovers()
        atexit.register(self.close)
        self._trap_signals()
        _LOCK.parent.mkdir(parents=True, exist_ok=True)
        with _LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = _run(["ip", "-4", "-o", "addr", "show"]).stdout
            k = next(
                (k for k in range(1, 255) if f" {SUBNET_BASE}.{k}." not in used),
                None,
            )
            if k is None:
                raise LabError(f"no free {SUBNET_BASE}.K.0/24 left on this machine")
            self.subnet = f"{SUBNET_BASE}.{k}"
            self.gateway = f"{self.subnet}.1"
            self._made = True
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])

    def _trap_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def leave(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                self._old_handlers[sig] = signal.signal(sig, leave)

    def close(self) -> None:
        """Kill this lab's processes, remove its namespaces, veths and bridge (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            for proc in host.procs:
                _kill_group(proc)
        for fwd in self._forwarders:
            _kill_group(fwd)
            for pipe in (fwd.stdout, fwd.stderr):
                if pipe is not None:
                    pipe.close()
        for host in self.hosts.values():
            _kill_namespace_processes(host.namespace)
            if host.delay_ms:
                _run(["ip", "link", "del", _bridge_end(host)], check=False)
            _run(["ip", "link", "del", host.outer], check=False)
            _run(["ip", "netns", "del", host.namespace], check=False)
        if self._made:
            _run(["ip", "link", "del", self.bridge], check=False)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)
        self._old_handlers.clear()

    # ---------------------------------------------------------------- hosts and links

    def add_host(
        self,
        name: str,
        *,
        uplink_mbit: float | None = None,
        loss_pct: float = 0.0,
        delay_ms: float = 0.0,
    ) -> Host:
        """A new host on the bridge, its upload shaped to ``uplink_mbit`` (None: not),
        ``loss_pct`` percent of the packets to it dropped (1-100 or 0), every frame
        in or out held ``delay_ms`` (a forwarder process; 0: none)."""
        if delay_ms < 0:
            raise LabError(f"delay must be >= 0 ms, not {delay_ms}")
        binary = delay_binary() if delay_ms else None
        if not self._made or self._closed:
            raise LabError("the lab is not started (use it as a context manager)")
        if name in self.hosts:
            raise LabError(f"there is already a host {name!r}")
        index = len(self.hosts)
        if index > 200:
            raise LabError("at most 200 hosts in one lab")
        host = Host(
            name=name,
            namespace=f"{self.tag}-{name}",
            address=f"{self.subnet}.{index + 10}",
            outer=f"{self.tag}v{index}",
        )
        self.hosts[name] = host
        ns = host.namespace
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", host.outer, "type", "veth", "peer", "name", host.inner,
              "netns", ns])  # fmt: skip
        if binary is None:
            _run(["ip", "link", "set", host.outer, "master", self.bridge])
        else:
            self._delay(host, binary, delay_ms)
        _run(["ip", "link", "set", host.outer, "up"])
        inside = ["ip", "netns", "exec", ns]
        _run([*inside, "ip", "addr", "add", f"{host.address}/24", "dev", host.inner])
        _run([*inside, "ip", "link", "set", host.inner, "up"])
        _run([*inside, "ip", "link", "set", "lo", "up"])
        _run([*inside, "ip", "route", "add", "default", "via", self.gateway], check=False)
        if self._per_packet:
            self._one_packet_per_skb(host)
        if uplink_mbit is not None:
            self.shape(host, uplink_mbit)
        if loss_pct:
            self.set_loss(host, loss_pct)
        return host

    def _delay(self, host: Host, binary: Path, delay_ms: float) -> None:
        """Join ``host.outer`` to the bridge through a veth pair and a forwarder."""
        near, far = _forwarder_end(host), _bridge_end(host)
        _run(["ip", "link", "add", near, "type", "veth", "peer", "name", far])
        _run(["ip", "link", "set", far, "master", self.bridge])
        for link in (far, near, host.outer):
            _run(["ip", "link", "set", link, "up"])
        fwd = subprocess.Popen(
            [str(binary), host.outer, near, str(round(delay_ms * 1000))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._forwarders.append(fwd)
        assert fwd.stdout is not None
        if fwd.stdout.readline().strip() != "ready":
            _kill_group(fwd)
            err = fwd.stderr.read().strip() if fwd.stderr else ""
            raise LabError(f"the delay forwarder of {host.name} did not start: {err}")
        host.delay_ms = delay_ms

    def shape(self, host: Host, uplink_mbit: float) -> None:
        """Limit the host's upload to ``uplink_mbit`` Mbit/s (tc htb on its veth egress)."""
        if uplink_mbit <= 0:
            raise LabError(f"uplink must be > 0 Mbit/s, not {uplink_mbit}")
        rate = f"{uplink_mbit}mbit"
        # burst: ~2 ms at the rate but at least a few full frames; quantum: one big frame.
        burst = max(16_000, int(uplink_mbit * 1e6 / 8 * 0.002))
        tc = ["ip", "netns", "exec", host.namespace, "tc"]
        _run([*tc, "qdisc", "replace", "dev", host.inner, "root", "handle", "1:", "htb",
              "default", "10"])  # fmt: skip
        _run([*tc, "class", "replace", "dev", host.inner, "parent", "1:", "classid", "1:10",
              "htb", "rate", rate, "ceil", rate, "burst", str(burst), "cburst", str(burst),
              "quantum", "65536"])  # fmt: skip
        host.uplink_mbit = uplink_mbit

    def unshape(self, host: Host) -> None:
        """Take the upload limit off."""
        _run(["ip", "netns", "exec", host.namespace, "tc", "qdisc", "del", "dev", host.inner,
              "root"], check=False)  # fmt: skip
        host.uplink_mbit = None

    def set_loss(self, host: Host, loss_pct: float) -> None:
        """Drop about ``loss_pct`` percent (1-100) of the packets the bridge sends to the
        host: a classic-BPF classifier (``ld rand; mod``) sends them to an htb class whose
        queue holds nothing (no ``netem`` or ``gact`` on this kernel)."""
        every = round(100 / loss_pct) if loss_pct else 0
        if loss_pct and not 1 <= every <= 100:
            raise LabError(f"loss must be between 1 and 100 percent, not {loss_pct}")
        _run(["tc", "qdisc", "del", "dev", host.outer, "root"], check=False)
        host.loss_pct = 0.0
        if not loss_pct:
            return
        # A classifier sees one skb, and a sender's TCP hands down up to 64 KiB in one
        # (GSO): loss per packet needs every host to send packets one by one.
        if not self._per_packet:
            self._per_packet = True
            for each in self.hosts.values():
                self._one_packet_per_skb(each)
        tc = ["tc"]
        dev = ["dev", host.outer]
        _run([*tc, "qdisc", "add", *dev, "root", "handle", "1:", "htb", "default", "10"])
        for cls in ("1:10", "1:99"):
            _run([*tc, "class", "add", *dev, "parent", "1:", "classid", cls, "htb",
                  "rate", "100gbit", "quantum", "65536"])  # fmt: skip
        _run([*tc, "qdisc", "add", *dev, "parent", "1:99", "handle", "99:", "pfifo", "limit",
              "0"])  # fmt: skip
        # A = random(); A %= every; if A == 0 -> class 1:99 (dropped) else no match.
        rand = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM
        code = f"5,32 0 0 {rand},148 0 0 {every},21 0 1 0,6 0 0 4294967295,6 0 0 0"
        _run([*tc, "filter", "add", *dev, "parent", "1:", "protocol", "all", "prio", "1",
              "bpf", "bytecode", code, "flowid", "1:99"])  # fmt: skip
        host.loss_pct = 100 / every

    def _one_packet_per_skb(self, host: Host) -> None:
        _run(["ip", "netns", "exec", host.namespace, "ip", "link", "set", "dev", host.inner,
              "gso_max_segs", "1"])  # fmt: skip

    def cut(self, host: Host) -> None:
        """Cut the host's link: nothing goes in or out until ``restore``."""
        _run(["ip", "link", "set", host.outer, "down"])

    def restore(self, host: Host) -> None:
        """Bring the host's link back."""
        _run(["ip", "link", "set", host.outer, "up"])

    # ---------------------------------------------------------------- processes

    def popen(self, host: Host, argv: Sequence[str | Path], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host`` in a process group of its own; ``close`` kills it."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            host.exec_argv(argv), start_new_session=True, **kwargs
        )
        host.procs.append(proc)
        return proc

    def run(
        self, host: Host, argv: Sequence[str | Path], *, timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside ``host`` to its end (killed after ``timeout`` s)."""
        return subprocess.run(host.exec_argv(argv), timeout=timeout, check=False, **kwargs)

    def counters(self) -> dict[str, int]:
        """Bytes each host has uploaded so far, by host name."""
        return {name: h.tx_bytes for name, h in self.hosts.items()}


def _forwarder_end(host: Host) -> str:
    return f"{host.outer}x"


def _bridge_end(host: Host) -> str:
    return f"{host.outer}w"


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group, SIGKILL it if it is not gone within 3 s."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
