"""VXLAN networks across nodes: reachability, MTU, static forwarding (no flooding), isolation,
endpoints following tasks, and removal leaving nothing."""
from __future__ import annotations

import json
import os

import pytest

from overlay import names, sh
from overlay.model import Endpoint, NetworkSpec

pytestmark = pytest.mark.root

NET1 = NetworkSpec("net1aaaaaaaaaaaa", "front", 4097, "10.200.1.0/24", "10.200.1.1")
NET2 = NetworkSpec("net2bbbbbbbbbbbb", "back", 4098, "10.200.2.0/24", "10.200.2.1")


def place(fabric, spec, placements):
    """placements: [(node, ip, default_route)] -> containers; programs every node's endpoints."""
    out, eps = [], []
    for node, ip, default in placements:
        node.net.ensure_network(spec)
        c = fabric.container()
        mac = node.net.attach(spec.id, c.pid, "eth0", ip, default_route=default)
        eps.append(Endpoint(f"task-{ip}", spec.id, ip, mac, node.addr))
        out.append(c)
    for node in {n.index: n for n, _, _ in placements}.values():
        node.net.set_remote_endpoints(spec.id, eps)
    return out, eps


def test_containers_on_two_nodes_ping_and_connect_without_flooding(fabric):
    f = fabric(2)
    a, b = f.nodes
    cap = f.capture()
    (c1, c2), _ = place(f, NET1, [(a, "10.200.1.2/24", True), (b, "10.200.1.3/24", True)])
    c2.serve_name("c2", 8000)
    assert c1.probe("ping", "10.200.1.3", "3").returncode == 0
    assert c2.probe("ping", "10.200.1.2", "2").returncode == 0
    assert c1.probe("connect", "10.200.1.3", "8000", "3", "hello over vxlan").stdout.strip() \
        == "c2|hello over vxlan"
    # MTU: the underlay's 1500 less the VXLAN encapsulation; a full-size packet passes unfragmented.
    assert a.net.mtu(NET1.id) == 1450
    assert c1.links()["eth0"]["mtu"] == 1450
    assert c1.probe("ping", "10.200.1.3", "1", "2", str(1450 - 28)).returncode == 0
    assert c1.probe("ping", "10.200.1.3", "1", "2", str(1451 - 28), check=False).returncode != 0
    frames = cap.stop()
    inner = [x for x in map(cap.vxlan_inner, frames) if x is not None]
    assert len(inner) >= 10, "overlay traffic crossed the underlay as VXLAN"
    for frame in inner:
        assert not frame[0] & 1, f"broadcast/multicast frame flooded across hosts: {frame[:14].hex()}"
        assert frame[12:14] != b"\x08\x06", "ARP crossed hosts"
    # The kernel answered the ARP locally from the static neighbour entry.
    neigh = json.loads(c1.run("ip", "-j", "neigh", "show", "10.200.1.3").stdout)
    assert neigh and neigh[0]["lladdr"] == "02:42:0a:c8:01:03"
    # The VXLAN device is as specified.
    vx = json.loads(a.run("ip", "-n", a.net.network_namespace(NET1.id), "-j", "-d", "link", "show", "vxlan0").stdout)[0]
    info = vx["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"], info["learning"], info["proxy"]) == \
        (4097, 4789, a.addr, False, True)


def test_two_networks_are_isolated(fabric):
    f = fabric(2)
    a, b = f.nodes
    (x1, x2), _ = place(f, NET1, [(a, "10.200.1.2/24", True), (b, "10.200.1.3/24", True)])
    (y1, y2), _ = place(f, NET2, [(a, "10.200.2.2/24", True), (b, "10.200.2.3/24", True)])
    assert x1.probe("ping", "10.200.1.3").returncode == 0
    assert y1.probe("ping", "10.200.2.3").returncode == 0
    for target in ("10.200.2.2", "10.200.2.3"):
        assert x1.probe("ping", target, "1", "1", check=False).returncode != 0, f"net1 reached {target}"
    for target in ("10.200.1.2", "10.200.1.3"):
        assert y2.probe("ping", target, "1", "1", check=False).returncode != 0, f"net2 reached {target}"
    # A container on both networks (eth0, eth1) reaches both; still nothing leaks between them.
    both = f.container()
    a.net.attach(NET1.id, both.pid, "eth0", "10.200.1.9/24", default_route=True)
    a.net.attach(NET2.id, both.pid, "eth1", "10.200.2.9/24")
    assert set(both.links()) >= {"eth0", "eth1"}
    assert both.probe("ping", "10.200.1.2").returncode == 0
    assert both.probe("ping", "10.200.2.2").returncode == 0
    assert x1.probe("ping", "10.200.2.9", "1", "1", check=False).returncode != 0


def test_endpoints_follow_tasks_and_programming_is_idempotent(fabric):
    f = fabric(2)
    a, b = f.nodes
    (c1, c2), eps = place(f, NET1, [(a, "10.200.1.2/24", True), (b, "10.200.1.3/24", True)])
    ns = a.net.network_namespace(NET1.id)

    def entries():
        fdb = a.run("bridge", "-n", ns, "fdb", "show", "dev", "vxlan0").stdout
        neigh = a.run("ip", "-n", ns, "neigh", "show", "dev", "vxlan0").stdout
        return sorted(line for line in fdb.splitlines() if "02:42" in line), sorted(neigh.splitlines())

    before = entries()
    assert len(before[0]) == 2 and len(before[1]) == 1   # self (dst) + master entries, one neighbour
    a.net.set_remote_endpoints(NET1.id, eps)
    assert entries() == before
    # The task on b stops: its entries leave a at once and a's container cannot reach it.
    a.net.set_remote_endpoints(NET1.id, eps[:1])
    assert entries() == ([], [])
    assert c1.probe("ping", "10.200.1.3", "1", "1", check=False).returncode != 0
    # A replacement task starts on b with a new address.
    c3 = f.container()
    mac3 = b.net.attach(NET1.id, c3.pid, "eth0", "10.200.1.4/24", default_route=True)
    new = [eps[0], Endpoint("task-3", NET1.id, "10.200.1.4/24", mac3, b.addr)]
    a.net.set_remote_endpoints(NET1.id, new)
    b.net.set_remote_endpoints(NET1.id, new)
    assert c1.probe("ping", "10.200.1.4").returncode == 0
    with pytest.raises(ValueError, match="endpoints\\[0\\].network_id"):
        a.net.set_remote_endpoints(NET1.id, [Endpoint("t", NET2.id, "10.200.2.5/24", "02:42:0a:c8:02:05", b.addr)])


def test_detach_and_remove_network_leave_nothing(fabric):
    f = fabric(2)
    a, b = f.nodes
    spec = NetworkSpec("enc9cccccccccccc", "secret", 4099, "10.200.9.0/24", "10.200.9.1", encrypted=True)
    (c1, c2), _ = place(f, NET1, [(a, "10.200.1.2/24", True), (b, "10.200.1.3/24", True)])
    a.net.ensure_network(spec)
    a.net.attach(spec.id, c1.pid, "eth1", "10.200.9.2/24")
    a.net.detach(NET1.id, c1.pid)
    assert "eth0" not in c1.links()
    assert a.net.attachments(NET1.id) == {}
    ns = a.net.network_namespace(NET1.id)
    assert sh.netns_exists(ns)
    for nid in (NET1.id, spec.id):
        a.net.remove_network(nid)
    assert not sh.netns_exists(ns)
    assert "eth1" not in c1.links()
    tag = names.tag(a.prefix)
    assert tag not in a.run("ip", "-o", "link", "show").stdout
    assert a.run("ip", "rule", "show").stdout.count(hex(names.fwmark(a.prefix))) == 0
    assert names.nft_table(a.prefix) not in a.run("nft", "list", "tables").stdout
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_espd(p, a.prefix)]
    # b still works on its own; removing twice is harmless.
    a.net.remove_network(NET1.id)
    assert b.net.networks() == [NET1.id]


def _is_espd(pid: str, prefix: str) -> bool:
    try:
        return names.tun(prefix) in open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return False


def test_bad_input_is_refused_with_the_field_named(fabric):
    f = fabric(1)
    (a,) = f.nodes
    a.net.ensure_network(NET1)
    c = f.container()
    with pytest.raises(ValueError, match="^ip: 10.9.9.9/24"):
        a.net.attach(NET1.id, c.pid, "eth0", "10.9.9.9/24")
    with pytest.raises(ValueError, match="^ip: 10.200.1.1"):
        a.net.attach(NET1.id, c.pid, "eth0", "10.200.1.1/24")
    with pytest.raises(ValueError, match="^network_id"):
        a.net.attach("nope", c.pid, "eth0", "10.200.1.5/24")
    with pytest.raises(ValueError, match="^network.vni"):
        a.net.ensure_network(NetworkSpec("other", "o", 4097, "10.201.0.0/24", "10.201.0.1"))
    with pytest.raises(ValueError, match="^network.subnet"):
        a.net.ensure_network(NetworkSpec("other", "o", 5000, "10.200.1.0/25", "10.200.1.1"))
    with pytest.raises(ValueError, match="^node_addr"):
        type(a.net)("10.1.2.3", "zz", underlay_netns=a.ns)
    assert "eth0" not in c.links()
