"""Overlay throughput: iperf3 between two containers on different nodes over a VXLAN network,
against iperf3 between the two node namespaces directly, in the same run; then the same over an
encrypted network; and the time from a task being attached on one node to its name resolving
in a container on another node (the data-plane part of it: managers' propagation excluded).

    sudo python3 bench/overlay.py [--seconds 5]

Nodes are network namespaces on a bridge (tests/overlay/fabric.py), so "direct" is veth +
bridge + veth, and "overlay" adds VXLAN, the network namespace's bridge and a veth at each end.
Last line: overlay_gbps=… direct_gbps=… ratio=… encrypted_gbps=… dns_ready_ms=…
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from overlay import dnsmsg, sh  # noqa: E402
from overlay.model import Endpoint, EncryptionKey, NetworkSpec, ServiceDNS  # noqa: E402
from tests.overlay.fabric import Fabric  # noqa: E402

PLAIN = NetworkSpec("benchplain00000", "plain", 7001, "10.250.1.0/24", "10.250.1.1")
SECRET = NetworkSpec("benchsecret0000", "secret", 7002, "10.250.2.0/24", "10.250.2.1", encrypted=True)


def iperf(server_argv: list[str], client_argv: list[str], address: str, seconds: int) -> float:
    """Gbit/s received by the server in one TCP stream."""
    srv = subprocess.Popen([*server_argv, "iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            r = subprocess.run([*client_argv, "iperf3", "-c", address, "-p", "5201", "-t", str(seconds), "-J"],
                               capture_output=True, text=True)
            try:
                return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
            except (ValueError, KeyError):
                time.sleep(0.1)   # the server was not listening yet
        raise RuntimeError(f"iperf3 failed: {r.stdout[-400:]}{r.stderr[-400:]}")
    finally:
        srv.kill()
        srv.wait()


def pair(f: Fabric, spec: NetworkSpec):
    a, b = f.nodes
    eps, cs = [], []
    for node, host in ((a, 2), (b, 3)):
        node.net.ensure_network(spec)
        c = f.container()
        ip = f"{spec.subnet.rsplit('.', 1)[0]}.{host}/24"
        mac = node.net.attach(spec.id, c.pid, "eth0", ip, default_route=True)
        eps.append(Endpoint(f"t{host}", spec.id, ip, mac, node.addr))
        cs.append(c)
    for node in (a, b):
        node.net.set_remote_endpoints(spec.id, eps)
    return cs, eps


def dns_ready_ms(f: Fabric, eps: list[Endpoint]) -> float:
    """A new task attached on node a; node b learns of it (endpoints and DNS) as the worker
    agent would on the managers' message; a container on b sees it in `tasks.svc`."""
    a, b = f.nodes
    watcher = eps[1]
    svc = [ServiceDNS("svc", vip="10.250.1.100", task_ips=(watcher.address,))]
    b.net.set_dns_records(PLAIN.id, svc)
    new = f.container()
    t0 = time.monotonic()
    mac = a.net.attach(PLAIN.id, new.pid, "eth0", "10.250.1.9/24", default_route=True)
    ep = Endpoint("t9", PLAIN.id, "10.250.1.9/24", mac, a.addr)
    b.net.set_remote_endpoints(PLAIN.id, [*eps, ep])
    b.net.set_dns_records(PLAIN.id, [ServiceDNS("svc", vip="10.250.1.100", task_ips=(watcher.address, ep.address))])
    container = f.containers[1]

    def resolve() -> list[str]:
        def ask():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)
            s.sendto(dnsmsg.build_query("tasks.svc"), (PLAIN.gateway, 53))
            return dnsmsg.parse_a_answers(s.recv(4096))[1]
        return sh.in_netns(container.nsfs, ask)

    while "10.250.1.9" not in resolve():
        time.sleep(0.001)
    return (time.monotonic() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/overlay.py needs root (network namespaces)")
    with tempfile.TemporaryDirectory() as tmp:
        f = Fabric(2, Path(tmp))
        try:
            f.up()
            a, b = f.nodes
            (c1, c2), eps = pair(f, PLAIN)
            key = [EncryptionKey(1, os.urandom(16))]
            for node in (a, b):
                node.net.set_encryption_keys(key)
            (s1, s2), _ = pair(f, SECRET)
            node_exec = lambda n: ["ip", "netns", "exec", n.ns]   # noqa: E731
            direct = iperf(node_exec(b), node_exec(a), b.addr, args.seconds)
            overlay = iperf(c2.argv(), c1.argv(), "10.250.1.3", args.seconds)
            encrypted = iperf(s2.argv(), s1.argv(), "10.250.2.3", args.seconds)
            ready = dns_ready_ms(f, eps)
        finally:
            f.down()
    print(f"direct: {direct:.2f} Gbit/s, overlay: {overlay:.2f} Gbit/s, encrypted (user-space ESP): "
          f"{encrypted:.3f} Gbit/s, one TCP stream, {args.seconds}s each; name resolvable on the other "
          f"node {ready:.1f} ms after attach")
    print(f"overlay_gbps={overlay:.2f} direct_gbps={direct:.2f} ratio={overlay / direct:.2f} "
          f"encrypted_gbps={encrypted:.3f} dns_ready_ms={ready:.1f}")


if __name__ == "__main__":
    main()
