"""Kernel load balancing for a service VIP (nftables numgen, no IPVS): connections spread over
every backend, and a backend that leaves is out of the very next connection."""
from __future__ import annotations

import pytest

from overlay.model import Endpoint, NetworkSpec, ServiceVIP

pytestmark = pytest.mark.root

NET = NetworkSpec("vipnet1aaaaaaaa", "lb", 4301, "10.220.0.0/24", "10.220.0.1")
VIP = "10.220.0.100"


def test_vip_spreads_connections_and_drops_a_backend_at_once(fabric):
    f = fabric(2)
    a, b = f.nodes
    for node in (a, b):
        node.net.ensure_network(NET)
    placements = [(a, "10.220.0.2"), (b, "10.220.0.3"), (b, "10.220.0.4")]
    eps, backends = [], []
    for i, (node, ip) in enumerate(placements):
        c = f.container()
        mac = node.net.attach(NET.id, c.pid, "eth0", f"{ip}/24", default_route=True)
        c.serve_name(f"replica{i + 1}", 8000)
        eps.append(Endpoint(f"t{i}", NET.id, f"{ip}/24", mac, node.addr))
        backends.append(ip)
    client = f.container()
    mac = a.net.attach(NET.id, client.pid, "eth0", "10.220.0.50/24", default_route=True)
    eps.append(Endpoint("client", NET.id, "10.220.0.50/24", mac, a.addr))
    for node in (a, b):
        node.net.set_remote_endpoints(NET.id, eps)

    def set_backends(ips):
        for node in (a, b):
            node.net.set_service_vips(NET.id, [ServiceVIP("svc", NET.id, VIP, (("tcp", 8000),), tuple(ips))])

    set_backends(backends)
    counts = client.probe_json("spread", VIP, "8000", "60")
    assert set(counts) == {"replica1", "replica2", "replica3"}, counts
    assert min(counts.values()) >= 5, counts
    # replica2 stops: from the next connection on it is never chosen.
    set_backends([backends[0], backends[2]])
    counts = client.probe_json("spread", VIP, "8000", "40")
    assert set(counts) == {"replica1", "replica3"}, counts
    # A container attached afterwards gets the same VIPs.
    late = f.container()
    mac = b.net.attach(NET.id, late.pid, "eth0", "10.220.0.51/24", default_route=True)
    eps.append(Endpoint("late", NET.id, "10.220.0.51/24", mac, b.addr))
    for node in (a, b):
        node.net.set_remote_endpoints(NET.id, eps)
    assert set(late.probe_json("spread", VIP, "8000", "20")) == {"replica1", "replica3"}
    # Only the service's ports are balanced; no backend left refuses at once instead of hanging.
    assert client.probe("connect", VIP, "8001", "1", check=False).returncode != 0
    set_backends([])
    out = client.probe("connect", VIP, "8000", "5", check=False)
    assert out.returncode != 0 and "refused" in out.stdout.lower(), out.stdout


def test_vip_without_ports_balances_every_port(fabric):
    f = fabric(1)
    (a,) = f.nodes
    a.net.ensure_network(NET)
    for i, ip in enumerate(("10.220.0.2", "10.220.0.3")):
        c = f.container()
        a.net.attach(NET.id, c.pid, "eth0", f"{ip}/24", default_route=True)
        c.serve_name(f"r{i}", 9000)
    client = f.container()
    a.net.attach(NET.id, client.pid, "eth0", "10.220.0.50/24", default_route=True)
    a.net.set_service_vips(NET.id, [ServiceVIP("svc", NET.id, VIP, (), ("10.220.0.2", "10.220.0.3"))])
    assert set(client.probe_json("spread", VIP, "9000", "30")) == {"r0", "r1"}
    a.net.detach(NET.id, client.pid)
    assert "shoal" not in client.run("nft", "list", "tables").stdout
