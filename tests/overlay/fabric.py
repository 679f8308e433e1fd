"""A simulated cluster underlay for the overlay tests and the bench: n node namespaces, each
with one address on a bridge that lives in a namespace of its own, plus containers (processes
in fresh network namespaces) and a packet capture on that bridge."""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from overlay import names, sh
from overlay.node import NodeNetworks, purge

REPO = Path(__file__).resolve().parents[2]
PYTHON = os.path.realpath(sys.executable)
SUBNET = "10.99.0."
_counter = itertools.count(1)


def node_prefix(tag: str, i: int) -> str:
    return f"{tag}n{i}"


def host_leftovers(tag: str) -> list[str]:
    """What of this fabric the host can still see: namespaces, links, nft tables."""
    out = [f"netns {n}" for n in (os.listdir(sh.NETNS_DIR) if sh.NETNS_DIR.exists() else []) if tag in n]
    links = sh.run(["ip", "-o", "link", "show"], check=False).stdout
    tags = [names.tag(node_prefix(tag, i)) for i in range(10)]
    out += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
            if any(t in line for t in tags) or tag in line]
    tables = sh.run(["nft", "list", "tables"], check=False).stdout
    out += [f"nft {line}" for line in tables.splitlines() if any(t in line for t in tags)]
    return out


@dataclass
class Node:
    index: int
    ns: str
    addr: str
    prefix: str
    net: NodeNetworks | None = None

    @property
    def nsfs(self) -> str:
        return sh.named(self.ns)

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        r = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True, timeout=timeout,
                           cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.ns}: {' '.join(argv)}: {r.stdout}{r.stderr}")
        return r


@dataclass
class Container:
    """A process in a network namespace of its own, standing in for a container."""
    proc: subprocess.Popen
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def nsfs(self) -> str:
        return sh.of_pid(self.pid)

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.nsfs}", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"container {self.pid}: {' '.join(argv)}: {r.stdout}{r.stderr}")
        return r

    def probe(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run(PYTHON, "-m", "tests.overlay.probe", *args, check=check, timeout=timeout)

    def probe_json(self, *args: str) -> dict:
        return json.loads(self.probe(*args).stdout.strip().splitlines()[-1])

    def start(self, *argv: str, wait_line: bool = True) -> subprocess.Popen:
        """A long-running process inside the container (a server); killed with the container."""
        p = subprocess.Popen(self.argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                             start_new_session=True)
        self.children.append(p)
        if wait_line:
            line = p.stdout.readline()
            if not line:
                raise AssertionError(f"server in container {self.pid} exited: {p.wait()}")
        return p

    def serve_name(self, name: str, port: int = 8000) -> subprocess.Popen:
        return self.start(PYTHON, "-m", "tests.overlay.probe", "serve-name", name, str(port))

    def links(self) -> dict:
        return {link["ifname"]: link for link in json.loads(self.run("ip", "-j", "-d", "link", "show").stdout)}

    def stop(self) -> None:
        for p in [*self.children, self.proc]:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)


class Capture:
    """Every frame a node sends into the fabric: AF_PACKET in the switch namespace, counting
    each frame once, as it enters the bridge from a node's port."""

    def __init__(self, switch_ns: str):
        self.frames: list[bytes] = []
        self._stop = False

        def open_sock() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.settimeout(0.1)
            return s

        self.sock = sh.in_netns(sh.named(switch_ns), open_sock)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
                if addr[0].startswith("p") and addr[2] != socket.PACKET_OUTGOING:
                    self.frames.append(data)
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self) -> list[bytes]:
        time.sleep(0.2)
        self._stop = True
        self.thread.join(2)
        self.sock.close()
        return self.frames

    @staticmethod
    def ipv4(frame: bytes) -> tuple[int, bytes] | None:
        """(protocol, IP payload) of an IPv4 frame, else None."""
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return None
        ihl = (frame[14] & 0xF) * 4
        return frame[23], frame[14 + ihl:]

    @staticmethod
    def vxlan_inner(frame: bytes) -> bytes | None:
        """The inner Ethernet frame of a VXLAN datagram, else None."""
        got = Capture.ipv4(frame)
        if not got or got[0] != 17:
            return None
        udp = got[1]
        if struct.unpack("!H", udp[2:4])[0] != 4789:
            return None
        return udp[16:]


class Fabric:
    def __init__(self, n: int, run_dir: Path, **node_kwargs):
        self.tag = f"ov{os.getpid() % 100000}x{next(_counter)}"
        self.switch = f"{self.tag}-sw"
        self.nodes = [Node(i, f"{self.tag}-n{i}", f"{SUBNET}{i + 1}", node_prefix(self.tag, i)) for i in range(n)]
        self.run_dir = run_dir
        self.node_kwargs = node_kwargs
        self.containers: list[Container] = []

    def up(self) -> None:
        sh.netns_add(self.switch)
        sh.run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        sh.run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        for node in self.nodes:
            sh.netns_add(node.ns)
            port = f"p{node.index}"
            sh.run(["ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", node.ns])
            sh.run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
            sh.run(["ip", "-n", node.ns, "addr", "add", f"{node.addr}/24", "dev", "eth0"])
            sh.run(["ip", "-n", node.ns, "link", "set", "eth0", "up"])
        for node in self.nodes:
            node.net = NodeNetworks(node.addr, node.prefix, self.run_dir / node.prefix, underlay_netns=node.ns,
                                    **self.node_kwargs)

    def container(self) -> Container:
        proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "1000"], start_new_session=True)
        c = Container(proc)
        self.containers.append(c)
        deadline = time.monotonic() + 5
        # unshare has made the namespace once /proc/PID/ns/net differs from ours
        while os.stat(c.nsfs).st_ino == os.stat("/proc/self/ns/net").st_ino:
            if time.monotonic() > deadline:
                raise AssertionError("unshare --net did not start")
            time.sleep(0.01)
        return c

    def capture(self) -> Capture:
        return Capture(self.switch)

    def down(self) -> None:
        errors = []
        for node in self.nodes:
            if node.net:
                try:
                    node.net.close()
                except Exception as exc:
                    errors.append(exc)
        for c in self.containers:
            c.stop()
        for node in self.nodes:
            try:
                purge(node.prefix, node.nsfs)   # a no-op after a clean close()
            except Exception as exc:
                errors.append(exc)
            sh.netns_del(node.ns)
        sh.netns_del(self.switch)
        if errors:
            raise errors[0]


class FakeResolver:
    """Stands in for the host's resolvers, on the host's loopback: answers `name -> address`
    from its table (UDP and TCP), NXDOMAIN for anything else, and records what it was asked."""

    def __init__(self, table: dict[str, str], host: str = "127.0.0.1", port: int = 0):
        from overlay import dnsmsg
        self.table, self.asked, self._dnsmsg = table, [], dnsmsg
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(8)
        for target in (self._udp_loop, self._tcp_loop):
            threading.Thread(target=target, daemon=True).start()

    def _answer(self, data: bytes) -> bytes:
        q = self._dnsmsg.parse_query(data)
        self.asked.append(q.name)
        if q.name in self.table:
            return self._dnsmsg.response(q, [self.table[q.name]])
        return self._dnsmsg.response(q, [], rcode=self._dnsmsg.RCODE_NXDOMAIN)

    def _udp_loop(self) -> None:
        while True:
            try:
                data, addr = self.udp.recvfrom(65535)
                self.udp.sendto(self._answer(data), addr)
            except OSError:
                return

    def _tcp_loop(self) -> None:
        while True:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            with c:
                f = c.makefile("rb")
                (n,) = struct.unpack("!H", f.read(2))
                out = self._answer(f.read(n))
                c.sendall(struct.pack("!H", len(out)) + out)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()
