"""Several Pis and a lab server on one machine: network namespaces joined by veth pairs (ip netns, tc netem).

The lab server's namespace has one veth pair per Pi (10.77.N.1 on the server's side, 10.77.N.2
on Pi N's), so cutting or degrading one Pi's link leaves the others alone. Needs root
(CAP_SYS_ADMIN, CAP_NET_ADMIN): `netns_unavailable()` says why not, for a skip.

`call_in_namespace` runs a function of the test in a thread that joined a namespace: what it
starts (a broker, banc.py, a probe's sockets and threads) lives in that namespace, so the
test kit's classes work on a Pi unchanged.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import Optional, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000  # <sched.h>: setns() joins a network namespace
NETNS_DIR = "/run/netns"  # where `ip netns add` pins its namespaces


def call_in_namespace(ns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a new thread joined to network namespace `ns` and return what it returns (or raise what it raises).

    A network namespace belongs to a thread, and what the thread creates inherits it: its
    sockets, its child processes (fork copies the calling thread's namespaces) and its threads.
    Python 3.11 has no os.setns, hence libc's.
    """
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_unavailable() -> Optional[str]:
    """Why network namespaces cannot be used here (None when they can)."""
    name = f"bancprobe{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        return "ip (iproute2) is not installed"
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` is not permitted here: {exc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    return None


class LabNetwork:
    """A lab server namespace and one namespace per Pi, each Pi on its own link to the server."""

    def __init__(self, pis: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.server_ns = f"blab{tag}"
        self.pi_ns = [f"bpi{n}{tag}" for n in range(1, pis + 1)]
        self._server_if = [f"bl{n}{tag}" for n in range(1, pis + 1)]
        self._pi_if = [f"bp{n}{tag}" for n in range(1, pis + 1)]
        self.created: list[str] = []

    def server_address(self, pi: int) -> str:
        """The lab server's address as Pi `pi` (1-based) reaches it."""
        return f"10.77.{pi}.1"

    @property
    def server_addresses(self) -> tuple[str, ...]:
        """Every address of the lab server."""
        return tuple(self.server_address(n) for n in range(1, len(self.pi_ns) + 1))

    def start(self) -> LabNetwork:
        """Create the namespaces and links, all up."""
        for ns in (self.server_ns, *self.pi_ns):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for n, (pi_ns, server_if, pi_if) in enumerate(zip(self.pi_ns, self._server_if, self._pi_if), start=1):
            _ip("link", "add", server_if, "netns", self.server_ns, "type", "veth", "peer", "name", pi_if, "netns", pi_ns)
            _ip("-n", self.server_ns, "addr", "add", f"10.77.{n}.1/24", "dev", server_if)
            _ip("-n", pi_ns, "addr", "add", f"10.77.{n}.2/24", "dev", pi_if)
            _ip("-n", self.server_ns, "link", "set", server_if, "up")
            _ip("-n", pi_ns, "link", "set", pi_if, "up")
        return self

    def exec_prefix(self, pi: int) -> list[str]:
        """The command prefix that runs a program on Pi `pi`."""
        return ["ip", "netns", "exec", self.pi_ns[pi - 1]]

    def call_in(self, pi: int, fn: Callable[[], T]) -> T:
        """Run `fn` on Pi `pi` (in its namespace); what it starts stays there."""
        return call_in_namespace(self.pi_ns[pi - 1], fn)

    def cut(self, pi: int) -> None:
        """Cut Pi `pi`'s link silently: the server's end goes down, so the Pi's packets vanish (no error comes back).

        Not `tc netem loss 100%`: some kernels have no netem. A veth whose peer is down drops
        what it is given, which is what TCP sees of a pulled cable.
        """
        _ip("-n", self.server_ns, "link", "set", self._server_if[pi - 1], "down")

    def restore(self, pi: int) -> None:
        """Give Pi `pi` its clean link back (up, no queueing discipline)."""
        _ip("-n", self.server_ns, "link", "set", self._server_if[pi - 1], "up")
        for ns, dev in ((self.pi_ns[pi - 1], self._pi_if[pi - 1]), (self.server_ns, self._server_if[pi - 1])):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"],
                           check=False, capture_output=True)

    def degrade(self, pi: int, qdisc: str) -> None:
        """Put a tc queueing discipline on both ends of Pi `pi`'s link ("netem delay 80ms loss 10%", "tbf rate ...")."""
        self.restore(pi)
        for ns, dev in ((self.pi_ns[pi - 1], self._pi_if[pi - 1]), (self.server_ns, self._server_if[pi - 1])):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", *qdisc.split()],
                           check=True, capture_output=True, text=True)

    def netem_available(self) -> bool:
        """True when this kernel has tc's netem (loss, delay)."""
        probe = subprocess.run(["ip", "netns", "exec", self.server_ns, "tc", "qdisc", "add", "dev", "lo", "root",
                                "netem", "delay", "1ms"], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "exec", self.server_ns, "tc", "qdisc", "del", "dev", "lo", "root"],
                       check=False, capture_output=True)
        return probe.returncode == 0

    def close(self) -> None:
        """Delete the namespaces (their links go with them)."""
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self.created.clear()

    def __enter__(self) -> LabNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
